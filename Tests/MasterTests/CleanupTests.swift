import Foundation
import Testbed
import Testing

/// `resalloc-master cleanup` as cron runs it: the real binary on the master's database file.
func cleanup(_ databasePath: String, _ testbed: Testbed, _ extra: String...) async throws -> CLI.Result {
    let arguments = [CLI.masterBinary, "cleanup", "--db", databasePath, "--key", testbed.keys["ed25519"]!] + extra
    let outcome = try await Subprocess.run(arguments, timeout: .seconds(90))
    if outcome.timedOut { throw TestbedError("\(arguments.joined(separator: " ")) did not finish within 90 s") }
    return CLI.Result(status: outcome.status, stdout: outcome.output, stderr: outcome.errors)
}

/// Starts a container on `machine` with resalloc's labels, as a crashed master would leave it.
func plantContainer(_ testbed: Testbed, _ machine: String, master: String, lease: String) throws -> String {
    let name = "resalloc-planted-\(UUID().uuidString.prefix(8).lowercased())"
    try testbed.docker(machine, ["run", "-d", "--name", name, "--label", "resalloc.master=\(master)", "--label", "resalloc.lease=\(lease)", "busybox", "sleep", "600"])
    return name
}

func exists(_ testbed: Testbed, _ machine: String, _ container: String) throws -> Bool {
    !(try testbed.docker(machine, ["ps", "-aq", "--filter", "name=^\(container)$"]).isEmpty)
}

@Suite("Lease lifetimes and resalloc-master cleanup", .timeLimit(.minutes(3)))
struct CleanupTests {
    @Test("A 3-second lease expires; an orphan of this master goes, another master's stays; dry run changes nothing")
    func expiryOrphansDryRun() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed, machines: ["m1"])
            let master = try masterID(databasePath)
            let short = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "short", "TTL": "3s"}"#)
            #expect(short.status == .created)
            let shortContainer = try #require(short.object("Lease")["Container"] as? String)
            #expect(try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "long"}"#).status == .created)
            let tooLong = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "x", "TTL": "30d"}"#)
            #expect(tooLong.status == .badRequest)
            let orphan = try plantContainer(testbed, "m1", master: master, lease: "424242")
            let foreign = try plantContainer(testbed, "m1", master: "another-master", lease: "1")
            defer { _ = try? testbed.docker("m1", ["rm", "-f", foreign]) }
            try await Task.sleep(for: .milliseconds(3500))

            let dry = try await cleanup(databasePath, testbed, "--dry-run")
            #expect(dry.status == 0)
            #expect(dry.stdout.contains("would remove container \(orphan)"))
            #expect(dry.stdout.contains("would remove container \(shortContainer)"))
            #expect(dry.stdout.contains("dry run: expired 1, orphans removed 1, lost 0"))
            #expect(try exists(testbed, "m1", orphan))
            #expect(try exists(testbed, "m1", shortContainer))
            #expect(try await api.call(.get, "/lease/short", token: admin).status == .ok)

            let real = try await cleanup(databasePath, testbed)
            #expect(real.status == 0, "\(real.stderr)")
            #expect(real.stdout == "expired 1, orphans removed 1, lost 0, stuck 0, failed purged 0, machines 1 ok / 0 down\n")
            #expect(try !exists(testbed, "m1", orphan))
            #expect(try !exists(testbed, "m1", shortContainer))
            #expect(try exists(testbed, "m1", foreign))
            #expect(try await api.call(.get, "/lease/short", token: admin).status == .notFound)
            #expect(try await api.call(.get, "/lease/long", token: admin).object("Lease")["State"] as? String == "running")
            // Idempotent.
            #expect(try await cleanup(databasePath, testbed).stdout.hasPrefix("expired 0, orphans removed 0, lost 0"))
            #expect(try await api.call(.delete, "/lease/long", token: admin).status == .ok)
        }
    }

    @Test("A container removed behind the master's back makes its lease lost; extend works within the maximum")
    func lostAndExtend() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed, machines: ["m2"])
            let created = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "fragile", "TTL": "1h"}"#)
            let container = try #require(created.object("Lease")["Container"] as? String)
            let extended = try await api.call(.post, "/lease/fragile/extend", token: admin, body: #"{"TTL": "2d"}"#)
            #expect(extended.status == .ok)
            #expect(try await api.call(.post, "/lease/fragile/extend", token: admin, body: #"{"TTL": "8d"}"#).status == .badRequest)
            try testbed.docker("m2", ["rm", "-f", container])
            let result = try await cleanup(databasePath, testbed)
            #expect(result.stdout.contains("lost 1"))
            let lease = try await api.call(.get, "/lease/fragile", token: admin).object("Lease")
            #expect(lease["State"] as? String == "lost")
            #expect((lease["Message"] as? String)?.contains("disappeared") == true)
            #expect(try await api.call(.delete, "/lease/fragile", token: admin).status == .ok)
        }
    }

    @Test("Two cleanups at once both exit 0 and the work is done once")
    func concurrentCleanups() async throws {
        try await withMaster { api, testbed, databasePath in
            _ = try await LeaseTests.setUp(api, testbed, machines: ["m1"])
            let master = try masterID(databasePath)
            let orphans = try (0..<3).map { try plantContainer(testbed, "m1", master: master, lease: "9000\($0)") }
            let results = try await withThrowingTaskGroup(of: CLI.Result.self) { group in
                for _ in 0..<2 { group.addTask { try await cleanup(databasePath, testbed) } }
                return try await group.reduce(into: [CLI.Result]()) { $0.append($1) }
            }
            #expect(results.allSatisfy { $0.status == 0 })
            let removed = results.compactMap { result in
                result.stdout.firstMatch(of: /orphans removed (\d+)/).map { Int($0.1)! }
            }.reduce(0, +)
            #expect(removed == 3)
            for orphan in orphans { #expect(try !exists(testbed, "m1", orphan)) }
        }
    }

    @Test("A machine whose sshd is stopped is reported within its deadline while the others are cleaned, then healthy again")
    func machineDown() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed, machines: ["m1", "m6"])
            let orphan = try plantContainer(testbed, "m1", master: try masterID(databasePath), lease: "777")
            try testbed.control("sshd-stop", "m6")
            defer { try? testbed.control("sshd-start", "m6") }
            let clock = ContinuousClock()
            let start = clock.now
            let result = try await cleanup(databasePath, testbed, "--machine-timeout", "5s")
            #expect(clock.now - start < .seconds(15))
            #expect(result.status == 1)
            #expect(result.stdout.contains("machines 1 ok / 1 down (m6)"))
            #expect(result.stderr.contains("machine m6"))
            #expect(try !exists(testbed, "m1", orphan))
            let machines = try await api.call(.get, "/machine", token: admin).list("Machines")
            #expect(machines.first { $0["Name"] as? String == "m6" }?["Healthy"] as? Bool == false)
            // Placement skips it: every new lease goes to m1.
            let placed = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "skip"}"#)
            #expect(placed.object("Lease")["Machine"] as? String == "m1")
            #expect(try await api.call(.delete, "/lease/skip", token: admin).status == .ok)

            try testbed.control("sshd-start", "m6")
            let again = try await cleanup(databasePath, testbed)
            #expect(again.status == 0)
            #expect(again.stdout.contains("machines 2 ok / 0 down"))
            let healed = try await api.call(.get, "/machine", token: admin).list("Machines")
            #expect(healed.allSatisfy { $0["Healthy"] as? Bool == true })
        }
    }
}
