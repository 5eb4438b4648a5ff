import Foundation
import Testbed
import Testing

@Suite("A machine whose Docker engine stops answering or fails", .serialized, .timeLimit(.minutes(4)))
struct FrozenEngineTests {
    /// m12: no other suite uses it, because its engine is frozen and made to fail here.
    static let frozen = "m12"

    @Test(
        "dockerd frozen (its sshd answers): six leases at once all run on the other machine within seconds; the machine is out of placement until a pass after the thaw"
    )
    func frozenEngine() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-frozen")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(
            resource: "box",
            dockerfile: "FROM busybox\nRUN echo \(UUID().uuidString) > /id",
            machine: testbed.machine(Self.frozen)
        )
        try await cli.ok("machine", "create", "m2", testbed.machine("m2").login, testbed.machine("m2").host)
        // The image is on both machines (built ahead), so a lease is a `docker run` on either.
        try await waitUntil(seconds: 120, "the image built on both machines") { try await cli.ok("resources", "list").contains(" 2/2 ") }

        let dockerd = try String(contentsOfFile: "\(testbed.machine(Self.frozen).directory)/dockerd.pid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let pid = try #require(Int32(dockerd))
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }

        let started = ContinuousClock.now
        async let creates = withThrowingTaskGroup(of: (String, CLI.Result, Duration).self) { group in
            for index in 0..<6 {
                group.addTask {
                    let result = try await cli.run(["lease", "create", "box", "f\(index)", "-q"])
                    return ("f\(index)", result, ContinuousClock.now - started)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let results = try await creates
        for (name, result, took) in results.sorted(by: { $0.0 < $1.0 }) {
            #expect(result.status == 0, "\(name): \(result.stderr)")
            print("\(name) answered after \(took)")
        }
        // The engine's silence costs a `docker run` there its probe's seconds (3 + 8), not the
        // command's minute-long deadline. Timed by the master's own metric of each command, not
        // by the whole create: how long m2 then takes to start the lease is the load's business.
        let samples = try await scrape(master.port).samples
        let runs = samples.value("resalloc_remote_command_seconds_count", ["machine": Self.frozen, "command": "run"]) ?? 0
        let within30 = samples.first {
            $0.name == "resalloc_remote_command_seconds_bucket" && $0.labels["machine"] == Self.frozen && $0.labels["command"] == "run"
                && Double($0.labels["le"] ?? "") == 30
        }?.value
        #expect(runs >= 1, "a lease was placed on \(Self.frozen) first")
        #expect(within30 == runs, "every docker run on \(Self.frozen) was given up within 30 s: \(within30 ?? -1) of \(runs)")
        let leases = try await cli.ok("lease", "list")
        for index in 0..<6 {
            let line = leases.split(separator: "\n").first { $0.hasPrefix("f\(index) ") } ?? ""
            #expect(line.contains(" m2 ") && line.contains("running"), "\(leases)")
        }
        let machines = try await cli.ok("machine", "list")
        #expect(machines.contains("the Docker engine does not answer (its sshd does)"), "\(machines)")

        // Thawed, a pass finds the engine answering and puts the machine back.
        kill(pid, SIGCONT)
        let pass = try await CLI.master("cleanup", "--db", master.databasePath, "--key", testbed.keys["ed25519"]!)
        #expect(pass.status == 0, "\(pass.stdout) \(pass.stderr)")
        let back = try await cli.ok("machine", "list")
        #expect(back.split(separator: "\n").contains { $0.hasPrefix(Self.frozen) && $0.contains(" ok") }, "\(back)")
        for index in 0..<6 { try await cli.ok("lease", "delete", "f\(index)") }
    }

    @Test("docker rm failing: tried three times, then the engine's reason in one line; the lease stays deleting until a pass finishes it")
    func failingRemove() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-rm-fails")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine(Self.frozen))
        try await cli.ok("lease", "create", "box", "stuck", "-q")
        let container = "resalloc-\(try masterID(master.databasePath).prefix(8))-1"
        // A file the engine cannot unlink (immutable, set from the host): a real rm failure.
        try await testbed.docker(Self.frozen, ["exec", container, "touch", "/stuck"])
        let upper = try await testbed.docker(Self.frozen, ["inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", container])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try await Testbed.run(["chattr", "+i", "\(upper)/stuck"])
        defer { _ = try? Subprocess.runBlocking(["chattr", "-i", "\(upper)/stuck"], timeout: .seconds(10)) }

        let refused = try await cli.run(["lease", "delete", "stuck"])
        #expect(refused.status != 0)
        let said = refused.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(said.contains("docker rm on machine \(Self.frozen) failed: ") && said.contains("operation not permitted"), "\(said)")
        #expect(!said.contains("\n"), "one line: \(said)")
        let rms = try await scrape(master.port).samples.value("resalloc_remote_command_seconds_count", ["machine": Self.frozen, "command": "rm"])
        #expect(rms == 3)
        #expect(try await cli.ok("lease", "list").contains("deleting"))

        // The engine can remove it again: the next pass finishes the deletion.
        try await Testbed.run(["chattr", "-i", "\(upper)/stuck"])
        let pass = try await CLI.master("cleanup", "--db", master.databasePath, "--key", testbed.keys["ed25519"]!)
        #expect(pass.status == 0, "\(pass.stdout) \(pass.stderr)")
        #expect(try await cli.ok("lease", "list").contains("stuck") == false)
        #expect(try await leaseContainers(testbed, Self.frozen).isEmpty)
    }
}

@Suite("A lease deleted while it is being created", .timeLimit(.minutes(3)))
struct DeletedWhileCreatedTests {
    @Test("Deleted mid-build: the creator is told so, and neither the lease nor its container is left")
    func deletedMidBuild() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-deleted-mid-build")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        // A build of 15 s, on an image new to the machine: the lease is deleted while it runs
        // (a build cannot see a file the test would make, and has no network to be told by).
        try await cli.setUpAdmin(
            resource: "slow",
            dockerfile: "FROM busybox\nRUN sleep 15 && echo \(UUID().uuidString) > /id",
            machine: testbed.machine("m2")
        )
        let (create, _, errors) = try cli.start("lease", "create", "slow", "doomed")
        defer { create.kill9() }
        try await waitUntil(seconds: 60, "the lease being created") { try await cli.ok("lease", "list").contains("creating") }
        try await cli.ok("lease", "delete", "doomed")
        #expect(try await create.wait(timeout: .seconds(120)) != 0)
        let said = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        #expect(said.contains("lease doomed was deleted while it was being created"), "\(said)")
        #expect(try await cli.ok("lease", "list").contains("doomed") == false)
        #expect(try await leaseContainers(testbed, "m2", master: try masterID(master.databasePath)).isEmpty)
    }
}
