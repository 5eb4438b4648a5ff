import Foundation
import Testbed
import Testing

/// One `docker build` per image and machine, however many leases ask for it at once (issue 22),
/// counted by the master's own metrics (a master process of its own: its counts are its own).
@Suite("One build per image and machine", .timeLimit(.minutes(5)))
struct BuildOnceTests {
    @Test("Five leases at once of a resource new to the machine run one docker build; a failed build fails every waiter and is not kept")
    func once() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-build-once")
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let id = try masterID("\(directory)/resalloc.db")
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        // A build that takes a moment, so that the five asks overlap it; new to the machine.
        let marker = UUID().uuidString
        try await cli.setUpAdmin(
            resource: "fresh",
            dockerfile: "FROM busybox\nRUN sleep 2 && echo \(marker) > /marker",
            machine: testbed.machine("m11")
        )
        func builds() async throws -> Double {
            try await scrape(master.port).samples.value("resalloc_remote_command_seconds_count", ["command": "build"]) ?? 0
        }
        let leases = try (0..<5).map { try cli.start("lease", "create", "fresh", "once\($0)", "-q") }
        for lease in leases {
            let status = try await lease.process.wait(timeout: .seconds(120))
            #expect(status == 0, "\((try? String(contentsOfFile: lease.stderr, encoding: .utf8)) ?? "")")
        }
        #expect(try await builds() == 1)
        #expect(try await cli.ok("ssh", "once4", "--", "cat", "/marker") == "\(marker)\n")

        // A build that fails: every waiter is told, and the next ask builds again.
        try await cli.ok("resources", "create", "broken", "-f", "-", stdin: "FROM busybox\nRUN sleep 2 && echo \(marker) && false")
        let failing = try (0..<3).map { try cli.start("lease", "create", "broken", "broken\($0)", "-q") }
        for lease in failing {
            let status = try await lease.process.wait(timeout: .seconds(120))
            let said = (try? String(contentsOfFile: lease.stderr, encoding: .utf8)) ?? ""
            #expect(status != 0 && said.contains("build"), "\(status) \(said)")
        }
        // The resource's build ahead of demand may have failed before the leases asked (then
        // they built once more, together) or while they waited on it.
        let failed = try await builds()
        #expect(failed == 2 || failed == 3, "\(failed) builds")
        let again = try await cli.run(["lease", "create", "broken", "again", "-q"])
        #expect(again.status != 0)
        #expect(try await builds() == failed + 1)
        await testbed.removeContainers(ofMaster: id)
    }

    @Test("A resource's image is built on the machines when it is created and when a machine is added: the first lease builds nothing")
    func ahead() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-build-ahead")
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let id = try masterID("\(directory)/resalloc.db")
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        let marker = UUID().uuidString
        // The machine first, then the resource: built when the resource is made.
        try await cli.setUpAdmin(resource: "first", dockerfile: "FROM busybox\nRUN echo \(marker) > /first", machine: testbed.machine("m11"))
        try await waitUntil(seconds: 60, "the resource's image is built on m11 with no lease") {
            try await cli.ok("resources", "list").split(separator: "\n").contains { $0.hasPrefix("first") && $0.contains(" 1/1 ") }
        }
        // A resource made before the machine is built when the machine is added.
        try await cli.ok("machine", "delete", "m11")
        try await cli.ok("resources", "create", "second", "-f", "-", stdin: "FROM busybox\nRUN echo \(marker) > /second")
        let machine = testbed.machine("m11")
        try await cli.ok("machine", "create", machine.name, machine.login, machine.host)
        try await waitUntil(seconds: 60, "both images are on m11") {
            let list = try await cli.ok("resources", "list").split(separator: "\n")
            return list.contains { $0.hasPrefix("second") && $0.contains(" 1/1 ") } && list.contains { $0.hasPrefix("first") && $0.contains(" 1/1 ") }
        }
        try await cli.ok("lease", "create", "second", "quick", "-q")
        let samples = try await scrape(master.port).samples
        #expect(samples.value("resalloc_lease_create_seconds_count", ["served": "build"]) ?? 0 == 0)
        #expect(samples.value("resalloc_lease_create_seconds_count", ["served": "cold"]) == 1)
        #expect(try await cli.ok("ssh", "quick", "--", "cat", "/second") == "\(marker)\n")
        await testbed.removeContainers(ofMaster: id)
    }

    @Test("An edited resource's old image leaves the machine at the pass after its last lease is gone; the new one stays")
    func oldTagsRemoved() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-old-tags")
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let id = try masterID("\(directory)/resalloc.db")
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        let marker = UUID().uuidString
        try await cli.setUpAdmin(resource: "edited", dockerfile: "FROM busybox\nRUN echo \(marker) > /v1", machine: testbed.machine("m11"))
        try await cli.ok("lease", "create", "edited", "old", "-q")
        let images = {
            try await testbed.docker("m11", ["images", "--filter", "label=resalloc.master=\(id)", "--format", "{{.Repository}}:{{.Tag}}"])
                .split(separator: "\n").map(String.init).sorted()
        }
        let first = try await images()
        #expect(first.count == 1, "\(first)")
        try await cli.ok("resources", "edit", "edited", "-f", "-", stdin: "FROM busybox\nRUN echo \(marker) > /v2")
        try await waitUntil(seconds: 60, "the edited resource's image built ahead") { try await images().count == 2 }
        let cleanup = { try await CLI.master("cleanup", "--db", "\(directory)/resalloc.db", "--key", testbed.keys["ed25519"]!, "--verbose") }

        // The lease still runs on the old image: the pass keeps it.
        let kept = try await cleanup()
        #expect(kept.status == 0)
        #expect(try await images().count == 2, "the pass while the lease runs: \(kept.stdout)")
        // Its last lease gone, the next pass removes it, and only it.
        try await cli.ok("lease", "delete", "old")
        let pass = try await cleanup()
        #expect(pass.status == 0)
        #expect(pass.stdout.contains("remove image \(first[0]) on m11"), "\(pass.stdout); the pass before: \(kept.stdout)")
        let left = try await images()
        #expect(left.count == 1 && left != first, "\(left)")
        try await cli.ok("lease", "create", "edited", "new", "-q")
        #expect(try await cli.ok("ssh", "new", "--", "cat", "/v2") == "\(marker)\n")
        await testbed.removeContainers(ofMaster: id)
    }
}
