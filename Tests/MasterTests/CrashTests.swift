import AsyncHTTPClient
import Foundation
import Store
import Testbed
import Testing

/// A `resalloc-master serve` process that the test can stop (SIGTERM or kill -9) and start again
/// on the same database and port. With `logPath`, its log goes there at level info.
final class MasterProcess {
    let databasePath: String
    private(set) var port = freeLoopbackPort()
    let keyPath: String
    let logPath: String?
    /// The SSH gateway's port; 0 (off) unless a test asks for it.
    private(set) var sshPort: Int
    private var process: Subprocess?
    /// It answered once: a restart keeps its ports.
    private var answered = false
    /// Its master id, once it answered; a test may remove the database before the end.
    private var startedAs: String?
    /// Without a log of the test's, errors still go somewhere a failure to start can quote.
    private var errorsPath: String { "\(NSTemporaryDirectory())/resalloc-master-errors-\(port)" }

    /// More `serve` flags.
    let extraArguments: [String]
    /// Variables added to the test's own environment.
    let environment: [String: String]

    init(
        databasePath: String,
        keyPath: String,
        logPath: String? = nil,
        sshPort: Int = 0,
        extraArguments: [String] = [],
        environment: [String: String] = [:]
    ) {
        self.databasePath = databasePath
        self.keyPath = keyPath
        self.logPath = logPath
        self.sshPort = sshPort
        self.extraArguments = extraArguments
        self.environment = environment
    }

    deinit {
        // A test that forgot to stop it, or threw first, leaves nothing running.
        process?.kill9()
        try? FileManager.default.removeItem(atPath: errorsPath)
        // Its containers go with it, on a thread of their own: deinit cannot wait.
        guard let id = startedAs else { return }
        Task.detached { await (try? await Testbed.shared())?.removeContainers(ofMaster: id) }
    }

    /// A port drawn by `freeLoopbackPort()` was free when drawn, but a server elsewhere on this
    /// machine may bind it before the master does: a first start that fails on that alone is
    /// tried again on new ports, at most this many times. A restart keeps its ports, which the
    /// test's clients already use.
    static let startAttempts = 3

    /// Starts it and returns once it answers `GET /health`.
    func start() async throws { try await start(attempt: 1) }

    private func start(attempt: Int) async throws {
        let errors = logPath ?? errorsPath
        let log: Subprocess.Stream = .file(errors)
        let logged = (try? FileManager.default.attributesOfItem(atPath: errors)[.size] as? Int) ?? 0
        process = try Subprocess.start(
            [
                CLI.masterBinary, "serve", "--port", String(port), "--db", databasePath, "--key", keyPath,
                "--log-level", logPath == nil ? "error" : "info", "--reconcile-every", "0", "--ssh-port", String(sshPort),
            ] + (extraArguments.contains("--tenant-networks") ? [] : ["--tenant-networks", "off"]) + extraArguments,
            environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
            stdout: log,
            stderr: log
        )
        let health = HTTPClientRequest(url: "http://127.0.0.1:\(port)/health")
        for _ in 0..<200 {
            if let status = process?.exitStatus {
                let said = String(decoding: (FileManager.default.contents(atPath: errors) ?? Data()).dropFirst(logged), as: UTF8.self)
                if said.contains("Address already in use"), !answered, attempt < Self.startAttempts {
                    print("the master's port \(port) (or \(sshPort)) was taken before it bound it; trying new ones")
                    if logPath == nil { try? FileManager.default.removeItem(atPath: errors) }
                    port = freeLoopbackPort()
                    if sshPort != 0 { sshPort = freeLoopbackPort() }
                    return try await start(attempt: attempt + 1)
                }
                throw TestbedError("the master exited with status \(status) on start, saying: \(said.suffix(2000))")
            }
            if (try? await HTTPClient.shared.execute(health, timeout: .seconds(2)))?.status == .ok {
                if startedAs == nil, FileManager.default.fileExists(atPath: databasePath) { startedAs = try? masterID(databasePath) }
                answered = true
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestbedError("the master did not answer on port \(port) within 10 s")
    }

    /// SIGTERM: what systemd or an operator's `kill` sends.
    func terminate() { process?.signal(SIGTERM) }

    /// Waits for the master to exit; its status.
    func wait(timeout: Duration) async throws -> Int32 {
        guard let process else { throw TestbedError("the master was never started") }
        return try await process.wait(timeout: timeout)
    }

    func kill9() { process?.kill9() }

    /// Its resident memory now, in bytes (`VmRSS` of the running master).
    func residentBytes() throws -> Int {
        guard let pid = process?.pid else { throw TestbedError("the master is not running") }
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { throw TestbedError("no VmRSS in /proc/\(pid)/status") }
        return kib * 1024
    }
}

@Suite("Crash safety", .timeLimit(.minutes(5)))
struct CrashTests {
    @Test("kill -9 of the master at several points of lease creation: cron's cleanup settles every lease at once")
    func killDuringCreation() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-crash")
        let databasePath = "\(directory)/resalloc.db"
        let master = MasterProcess(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!)
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        defer { master.kill9() }
        try await master.start()
        let machine = testbed.machine("m2")
        // A resource that is new to the machine, so the first creations build as well as run.
        try await cli.setUpAdmin(resource: "crashy", dockerfile: "FROM busybox\nRUN echo \(UUID().uuidString) > /id", machine: machine)
        let id = try masterID(databasePath)

        for (index, delay) in [0, 30, 80, 150, 250, 400, 700, 1200].enumerated() {
            let create = try cli.start("lease", "create", "crashy", "crash\(index)").process
            try await Task.sleep(for: .milliseconds(delay))
            master.kill9()
            // The CLI sees the connection drop and exits.
            try await create.wait(timeout: .seconds(30))
            if index < 7 { try await master.start() }
        }

        // The default --stuck-after (10 minutes) has not passed: the dead processes' leases are
        // settled because their incarnations are known to be gone.
        let result = try await cleanup(databasePath, testbed)
        #expect(result.status == 0, "\(result.stderr)")
        var (leases, containers) = try await leasesAndContainers(databasePath, testbed, "m2", master: id)
        #expect(leases.allSatisfy { $0.state == .running || $0.state == .failed }, "\(leases.map { "\($0.name):\($0.state)" })")
        // A `docker run` the last killed process had sent may still land on the machine after
        // that pass failed its lease; the next pass (cron's next run) removes what it made. Each
        // pass keeps every running lease's container.
        var live = Set(leases.filter { $0.state == .running }.map { $0.containerName(masterID: id) })
        let passesUntil = ContinuousClock.now + .seconds(60)
        while live != containers && ContinuousClock.now < passesUntil {
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await cleanup(databasePath, testbed).status == 0)
            let before = live
            (leases, containers) = try await leasesAndContainers(databasePath, testbed, "m2", master: id)
            live = Set(leases.filter { $0.state == .running }.map { $0.containerName(masterID: id) })
            #expect(live == before, "a later pass changed a settled lease: \(leases.map { "\($0.name):\($0.state)" })")
        }
        #expect(live == containers, "leases \(leases.map { "\($0.name):\($0.state)" }), containers \(containers)")
        // Running ones really run, and resalloc ssh reaches them.
        for container in containers {
            #expect(try await testbed.docker("m2", ["inspect", "--format", "{{.State.Running}}", container]) == "true\n")
        }
        try await master.start()
        let running = leases.filter { $0.state == .running }
        print("after the kills: \(running.count) leases running, \(leases.count - running.count) failed")
        for lease in running {
            #expect(try await cli.ok("ssh", lease.name, "--", "cat", "/id").count == 37, "resalloc ssh \(lease.name)")
        }
        if !containers.isEmpty { try await testbed.docker("m2", ["rm", "-f"] + Array(containers)) }
    }

    @Test("after kill -9 mid-creation, the restarted master alone makes leases and containers agree within seconds")
    func restartSettles() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-restart")
        let databasePath = "\(directory)/resalloc.db"
        let master = MasterProcess(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!)
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        defer { master.kill9() }
        try await master.start()
        // A build of 20 s keeps the creations in `creating`, so that the kill finds
        // them there however loaded the host is.
        try await cli.setUpAdmin(
            resource: "box",
            dockerfile: "FROM busybox\nRUN sleep 20 && echo \(UUID().uuidString) > /id",
            machine: testbed.machine("m2")
        )
        let id = try masterID(databasePath)
        let creates = try (0..<4).map { try cli.start("lease", "create", "box", "inflight\($0)").process }
        // Kill once a creation is under way on the machine.
        // Each look opens the file anew, so that what it reads is never an older snapshot.
        let asked = ContinuousClock.now
        var looks = 0
        // Each different thing seen, with when.
        var seen: [String] = []
        while ContinuousClock.now - asked < .seconds(60) {
            looks += 1
            let leases = try await AppDatabase(path: databasePath).leaseListings(ownerID: nil).map(\.lease)
            let look = leases.map { "\($0.name):\($0.state)" }.joined(separator: " ")
            if seen.last?.hasSuffix(look) != true { seen.append("\(ContinuousClock.now - asked): \(look)") }
            if leases.contains(where: { $0.state == .creating }) { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        master.kill9()
        for create in creates { try await create.wait(timeout: .seconds(30)) }
        let store = try AppDatabase(path: databasePath)
        let before = try await store.leaseListings(ownerID: nil).map(\.lease)
        #expect(
            before.contains { $0.state == .creating },
            "after \(looks) looks in \(ContinuousClock.now - asked) (saw \(seen)): \(before.map { "\($0.name):\($0.state)" })"
        )

        let restarted = ContinuousClock.now
        try await master.start()  // serve's start pass, no cleanup, --reconcile-every 0
        var settled = false
        while ContinuousClock.now - restarted < .seconds(10) {
            let (leases, containers) = try await leasesAndContainers(databasePath, testbed, "m2", master: id)
            let live = Set(leases.filter { $0.state == .running }.map { $0.containerName(masterID: id) })
            if leases.allSatisfy({ $0.state == .running || $0.state == .failed }) && live == containers {
                settled = true
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(settled, "leases and containers still disagree 10 s after the restart")
        let (_, containers) = try await leasesAndContainers(databasePath, testbed, "m2", master: id)
        if !containers.isEmpty { try await testbed.docker("m2", ["rm", "-f"] + Array(containers)) }
    }

    @Test("kill -9 during pool handouts and refills: after a restart every container is a lease's or a slot's, and the pool is full")
    func killDuringHandouts() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-crash-pool")
        let databasePath = "\(directory)/resalloc.db"
        let master = MasterProcess(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!)
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        defer { master.kill9() }
        try await master.start()
        try await cli.setUpAdmin(resource: "pooled", dockerfile: "FROM busybox\nRUN echo \(UUID().uuidString) > /id", machine: testbed.machine("m9"))
        try await cli.ok("resources", "pool", "pooled", "3")
        let id = try masterID(databasePath)
        let store = try AppDatabase(path: databasePath)

        for (index, delay) in [400, 0, 40, 120, 250, 500].enumerated() {
            let create = try cli.start("lease", "create", "pooled", "p\(index)").process
            if index % 2 == 1 { _ = try await cli.run(["resources", "pool", "pooled", index % 4 == 1 ? "4" : "3"]) }
            try await Task.sleep(for: .milliseconds(delay))
            master.kill9()
            try await create.wait(timeout: .seconds(30))
            try await master.start()
        }
        try await cli.ok("resources", "pool", "pooled", "3")

        // A refill that fails (a loaded machine's `docker run` past its deadline) is tried again
        // after `WarmPool.retryAfter`: the pool may be full only after that.
        let restarted = ContinuousClock.now
        var last = ""
        while ContinuousClock.now - restarted < .seconds(90) {
            let leases = try await store.leaseListings(ownerID: nil).map(\.lease)
            let slots = try await store.poolSlots()
            let expected = Set(leases.filter { $0.state == .running }.map { $0.containerName(masterID: id) }).union(
                slots.map { $0.containerName(masterID: id) }
            )
            let listed = try await testbed.docker("m9", ["ps", "-a", "--filter", "label=resalloc.master=\(id)", "--format", "{{.Names}} {{.State}}"])
                .split(separator: "\n").map { $0.split(separator: " ") }
            let present = Set(listed.filter { $0.last == "running" }.map { String($0[0]) })
            let all = Set(listed.map { String($0[0]) })
            // The pool is full, or the machine is: leases come first.
            let room = try await store.machines()[0].capacity - leases.filter { $0.state == .running }.count
            if leases.allSatisfy({ $0.state == .running || $0.state == .failed }) && slots.count == min(3, room)
                && slots.allSatisfy({ $0.state == .ready })
                && present == expected && all == expected
            {
                last = ""
                break
            }
            last =
                "leases \(leases.map { "\($0.name):\($0.state)" }), slots \(slots.map { "\($0.id!):\($0.state)" }), expected \(expected.sorted()), on m9 \(all.sorted())"
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(last.isEmpty, "90 s after the last restart: \(last)")
        for lease in try await store.leaseListings(ownerID: nil).map(\.lease) where lease.state == .running {
            #expect(try await cli.ok("ssh", lease.name, "--", "cat", "/id").count == 37, "resalloc ssh \(lease.name)")
        }
        try await cli.ok("resources", "pool", "pooled", "0")
        for lease in try await store.leaseListings(ownerID: nil) { _ = try await cli.run(["lease", "delete", lease.lease.name]) }
        // Tidying up: the master may be removing drained warm containers meanwhile.
        let left = try await testbed.docker("m9", ["ps", "-aq", "--filter", "label=resalloc.master=\(id)"]).split(separator: "\n").map(String.init)
        if !left.isEmpty { _ = try? await testbed.docker("m9", ["rm", "-f"] + left) }
    }

    /// The leases in the database and the names of this master's lease containers on `machine`.
    private func leasesAndContainers(
        _ databasePath: String,
        _ testbed: Testbed,
        _ machine: String,
        master id: String
    ) async throws -> ([Lease], Set<String>) {
        let leases = try await AppDatabase(path: databasePath).leaseListings(ownerID: nil).map(\.lease)
        return (leases, Set(try await leaseContainers(testbed, machine, master: id)))
    }
}
