import Foundation
import Store
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
func plantContainer(_ testbed: Testbed, _ machine: String, master: String, lease: String) async throws -> String {
    let name = "resalloc-planted-\(UUID().uuidString.prefix(8).lowercased())"
    try await testbed.docker(
        machine,
        ["run", "-d", "--name", name, "--label", "resalloc.master=\(master)", "--label", "resalloc.lease=\(lease)", "busybox", "sleep", "600"]
    )
    return name
}

func exists(_ testbed: Testbed, _ machine: String, _ container: String) async throws -> Bool {
    !(try await testbed.docker(machine, ["ps", "-aq", "--filter", "name=^\(container)$"]).isEmpty)
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
            let zero = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "x", "TTL": "0s"}"#)
            #expect(zero.status == .badRequest)
            let orphan = try await plantContainer(testbed, "m1", master: master, lease: "424242")
            let foreign = try await plantContainer(testbed, "m1", master: "another-master", lease: "1")
            defer { testbed.removeContainers("m1", [foreign]) }
            try await Task.sleep(for: .milliseconds(3500))

            let dry = try await cleanup(databasePath, testbed, "--dry-run")
            #expect(dry.status == 0)
            #expect(dry.stdout.contains("would remove container \(orphan)"))
            #expect(dry.stdout.contains("would remove container \(shortContainer)"))
            #expect(dry.stdout.contains("dry run: expired 1, orphans removed 1, lost 0"))
            #expect(try await exists(testbed, "m1", orphan))
            #expect(try await exists(testbed, "m1", shortContainer))
            #expect(try await api.call(.get, "/lease/short", token: admin).status == .ok)

            let real = try await cleanup(databasePath, testbed)
            #expect(real.status == 0, "\(real.stderr)")
            #expect(real.stdout == "expired 1, orphans removed 1, lost 0, stuck 0, failed purged 0, machines 1 ok / 0 down\n")
            #expect(try await !exists(testbed, "m1", orphan))
            #expect(try await !exists(testbed, "m1", shortContainer))
            #expect(try await exists(testbed, "m1", foreign))
            #expect(try await api.call(.get, "/lease/short", token: admin).status == .notFound)
            #expect(try await api.call(.get, "/lease/long", token: admin).object("Lease")["State"] as? String == "running")
            // Idempotent.
            #expect(try await cleanup(databasePath, testbed).stdout.hasPrefix("expired 0, orphans removed 0, lost 0"))
            #expect(try await api.call(.delete, "/lease/long", token: admin).status == .ok)
        }
    }

    @Test("A backlog of 60 orphans goes in batches without counting the machine down; a spent work budget leaves the rest for the next pass")
    func backlog() async throws {
        try await withMaster { api, testbed, databasePath in
            _ = try await LeaseTests.setUp(api, testbed, machines: ["m1"])
            let master = try masterID(databasePath)
            let socket = "unix://\(testbed.machine("m1").directory)/docker.sock"
            try await Testbed.run(
                [
                    "sh", "-c",
                    "seq 60 | xargs -P 6 -I{} docker -H \(socket) run -d --init --label resalloc.master=\(master) --label resalloc.lease=backlog-{} busybox sleep 600 >/dev/null",
                ],
                timeout: .seconds(120)
            )
            #expect(try await leaseContainers(testbed, "m1", master: master).count == 60)

            // One batch of 50 spends a 1-second budget: 10 wait, said as a problem, exit 1.
            let first = try await cleanup(databasePath, testbed, "--machine-timeout", "5s", "--work-timeout", "1s")
            #expect(first.status == 1)
            #expect(first.stdout == "expired 0, orphans removed 50, lost 0, stuck 0, failed purged 0, machines 1 ok / 0 down\n")
            #expect(first.stderr.contains("10 of 60 containers on m1 could not be removed"))
            #expect(first.stderr.contains("the next pass tries again"))
            #expect(try await leaseContainers(testbed, "m1", master: master).count == 10)

            let second = try await cleanup(databasePath, testbed, "--machine-timeout", "5s")
            #expect(second.status == 0, "\(second.stderr)")
            #expect(second.stdout.hasPrefix("expired 0, orphans removed 10, lost 0"))
            #expect(try await leaseContainers(testbed, "m1", master: master).isEmpty)
        }
    }

    @Test("A container removed behind the master's back makes its lease lost; extend works within the maximum")
    func lostAndExtend() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed, machines: ["m2"])
            let created = try await api.call(
                .post,
                "/lease",
                token: admin,
                body: #"{"ResourceName": "busybox", "LeaseName": "fragile", "TTL": "1h"}"#
            )
            let container = try #require(created.object("Lease")["Container"] as? String)
            let extended = try await api.call(.post, "/lease/fragile/extend", token: admin, body: #"{"TTL": "2d"}"#)
            #expect(extended.status == .ok)
            // Longer than the maximum (7d) is capped at it, and the reply says so.
            let capped = try await api.call(.post, "/lease/fragile/extend", token: admin, body: #"{"TTL": "8d"}"#)
            #expect(capped.status == .ok)
            #expect(capped.message.contains("(8d asked; 7d is the longest this master allows)"), "\(capped.message)")
            let cappedEnd = try #require((capped.object("Lease")["ExpiresAt"] as? String).flatMap { try? Date($0, strategy: .iso8601) })
            #expect(abs(cappedEnd.timeIntervalSinceNow - 7 * 86400) < 120)
            try await testbed.docker("m2", ["rm", "-f", container])
            let result = try await cleanup(databasePath, testbed)
            #expect(result.stdout.contains("lost 1"))
            let lease = try await api.call(.get, "/lease/fragile", token: admin).object("Lease")
            #expect(lease["State"] as? String == "lost")
            #expect((lease["Message"] as? String)?.contains("disappeared") == true)
            #expect(try await api.call(.delete, "/lease/fragile", token: admin).status == .ok)
        }
    }

    @Test("A lease its stopped master left creating before it reached a machine is failed with the reason, not removed")
    func unplacedLeaseOfAStoppedMaster() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed, machines: ["m1"])
            #expect(
                try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "placed"}"#).status == .created
            )
            // What a master killed between the lease's row and its placement leaves behind.
            let store = try AppDatabase(path: databasePath)
            let placed = try #require(try await store.leaseListings(ownerID: nil).first { $0.lease.name == "placed" }?.lease)
            try await store.registerIncarnation(Incarnation(id: "stopped-master", host: "elsewhere", pid: 1, heartbeatSeconds: 5))
            try await store.stopIncarnation(id: "stopped-master")
            _ = try await store.createLease(
                Lease(
                    name: "unplaced",
                    ownerId: placed.ownerId,
                    resourceId: placed.resourceId,
                    image: placed.image,
                    createdAt: Date(),
                    expiresAt: Date() + 3600,
                    incarnationId: "stopped-master"
                )
            )
            let result = try await cleanup(databasePath, testbed)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("stuck 1"), "\(result.stdout)")
            let lease = try await api.call(.get, "/lease/unplaced", token: admin).object("Lease")
            #expect(lease["State"] as? String == "failed")
            #expect(lease["Message"] as? String == "the master stopped while creating it")
            #expect(try await api.call(.get, "/lease/placed", token: admin).object("Lease")["State"] as? String == "running")
            #expect(try await api.call(.delete, "/lease/placed", token: admin).status == .ok)
        }
    }

    @Test("Two cleanups at once both exit 0 and the work is done once")
    func concurrentCleanups() async throws {
        try await withMaster { api, testbed, databasePath in
            _ = try await LeaseTests.setUp(api, testbed, machines: ["m1"])
            let master = try masterID(databasePath)
            var orphans: [String] = []
            for index in 0..<3 { orphans.append(try await plantContainer(testbed, "m1", master: master, lease: "9000\(index)")) }
            let results = try await withThrowingTaskGroup(of: CLI.Result.self) { group in
                for _ in 0..<2 { group.addTask { try await cleanup(databasePath, testbed) } }
                return try await group.reduce(into: [CLI.Result]()) { $0.append($1) }
            }
            #expect(results.allSatisfy { $0.status == 0 })
            let removed = results.compactMap { result in
                result.stdout.firstMatch(of: /orphans removed (\d+)/).map { Int($0.1)! }
            }.reduce(0, +)
            #expect(removed == 3)
            for orphan in orphans { #expect(try await !exists(testbed, "m1", orphan)) }
        }
    }

    @Test("A machine whose sshd is stopped is reported within its deadline while the others are cleaned, then healthy again")
    func machineDown() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed, machines: ["m1", "m6"])
            let orphan = try await plantContainer(testbed, "m1", master: try masterID(databasePath), lease: "777")
            try await testbed.control("sshd-stop", "m6")
            defer { testbed.restartSSHD("m6") }
            let clock = ContinuousClock()
            let start = clock.now
            let result = try await cleanup(databasePath, testbed, "--machine-timeout", "5s")
            // The pass is the whole process (a debug build's start, m1's own work); a loaded CI
            // took 16 s of it. What it must not do is wait on m6 past its 5 s more than once over.
            #expect(clock.now - start < .seconds(30))
            #expect(result.status == 1)
            #expect(result.stdout.contains("machines 1 ok / 1 down (m6)"))
            #expect(result.stderr.contains("machine m6"))
            #expect(try await !exists(testbed, "m1", orphan))
            let machines = try await api.call(.get, "/machine", token: admin).list("Machines")
            #expect(machines.first { $0["Name"] as? String == "m6" }?["Healthy"] as? Bool == false)
            // Placement skips it: every new lease goes to m1.
            let placed = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "skip"}"#)
            #expect(placed.object("Lease")["Machine"] as? String == "m1")
            #expect(try await api.call(.delete, "/lease/skip", token: admin).status == .ok)

            try await testbed.control("sshd-start", "m6")
            let again = try await cleanup(databasePath, testbed)
            #expect(again.status == 0)
            #expect(again.stdout.contains("machines 2 ok / 0 down"))
            let healed = try await api.call(.get, "/machine", token: admin).list("Machines")
            #expect(healed.allSatisfy { $0["Healthy"] as? Bool == true })
        }
    }
}
