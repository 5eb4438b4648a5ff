import Foundation
import Store
import Testbed
import Testing

/// Warm pools on real machines (m8, m9: no other suite uses them).
@Suite("Warm pools", .timeLimit(.minutes(5)))
struct PoolTests {
    /// A warm container as the machine's own docker lists it.
    struct Warm: Equatable {
        var name: String
        var id: String
        var running: Bool
        var image: String
    }

    /// This master's warm containers on `machine` (their pool label never changes, even once
    /// handed out and renamed).
    static func containers(_ testbed: Testbed, _ machine: String, master: String) async throws -> [Warm] {
        let lines = try await testbed.docker(
            machine,
            [
                "ps", "-a", "--no-trunc", "--filter", "label=resalloc.pool", "--filter", "label=resalloc.master=\(master)",
                "--format", "{{.Names}} {{.ID}} {{.State}} {{.Image}}",
            ]
        ).split(separator: "\n")
        return lines.map { line in
            let fields = line.split(separator: " ").map(String.init)
            return Warm(name: fields[0], id: fields[1], running: fields[2] == "running", image: fields[3])
        }
    }

    /// The warm containers not handed out: still under their pool name.
    static func unclaimed(_ testbed: Testbed, _ machines: [String], master: String) async throws -> [Warm] {
        var all: [Warm] = []
        for machine in machines { all += try await containers(testbed, machine, master: master).filter { $0.name.contains("-pool-") } }
        return all
    }

    /// Waits until the resource reports `ready` warm containers and exactly that many unclaimed
    /// ones run on the machines; returns them.
    @discardableResult
    static func waitForPool(
        _ api: API,
        _ testbed: Testbed,
        token: String,
        resource: String,
        ready: Int,
        machines: [String],
        master: String,
        within limit: Duration = .seconds(60)
    ) async throws -> [Warm] {
        let start = ContinuousClock.now
        var last = ""
        while ContinuousClock.now - start < limit {
            let listed = try await api.call(.get, "/resource", token: token).list("Resources").first { $0["Name"] as? String == resource }
            let warm = try await unclaimed(testbed, machines, master: master)
            if listed?["PoolReady"] as? Int == ready && warm.count == ready && warm.allSatisfy(\.running) { return warm }
            last = "PoolReady \(listed?["PoolReady"] ?? "?"), containers \(warm.map { "\($0.name):\($0.running)" })"
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestbedError("the pool of \(resource) did not reach \(ready) ready within \(limit): \(last)")
    }

    static func createLease(_ api: API, token: String, resource: String, name: String) async throws -> APIReply {
        try await api.call(.post, "/lease", token: token, body: api.json(["ResourceName": resource, "LeaseName": name]))
    }

    /// The id of the container a lease runs in, as its machine sees it.
    static func leaseContainerID(
        _ testbed: Testbed,
        _ machine: String,
        databasePath: String,
        lease: String
    ) async throws -> (name: String, id: String) {
        let store = try AppDatabase(path: databasePath)
        guard let row = try await store.leaseListings(ownerID: nil).first(where: { $0.lease.name == lease }) else {
            throw TestbedError("no lease \(lease)")
        }
        let name = row.lease.containerName(masterID: try store.masterID())
        let id = try await testbed.docker(machine, ["inspect", "--format", "{{.Id}}", name]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(row.lease.containerId == id)
        return (name, id)
    }

    @Test("A lease takes a warm container, resalloc ssh works at once, and the pool refills to its size, never above")
    func handout() async throws {
        try await withMaster { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.ok("register", "admin", "admin-password")
            try await cli.ok("login", "admin", "admin-password")
            try await cli.ok("machine", "create", "m8", testbed.machine("m8").login, testbed.machine("m8").host, "--capacity", "4")
            try await cli.ok("resources", "create", "warm", "-f", "-", "--pool", "2", stdin: "FROM busybox\nRUN echo \(UUID().uuidString) > /id\n")
            let admin = try await api.login("admin", password: "admin-password", register: false)
            let id = try masterID(databasePath)
            let warm = try await Self.waitForPool(api, testbed, token: admin, resource: "warm", ready: 2, machines: ["m8"], master: id)
            #expect(try await cli.ok("resources", "list").contains("2/2"))

            // Asked for a while after the warm containers started, so that a lifetime counted from
            // their start would show.
            try await Task.sleep(for: .seconds(3))
            let asked = Date()
            let created = try await cli.ok("lease", "create", "warm", "hot", "--ttl", "1h")
            #expect(created.contains("hot"), "\(created)")
            let leased = try await Self.leaseContainerID(testbed, "m8", databasePath: databasePath, lease: "hot")
            #expect(warm.map(\.id).contains(leased.id), "the lease did not get a warm container")
            #expect(try await cli.ok("ssh", "hot", "--", "cat", "/id").count == 37)
            // Files go in and out of a warm container as of any other (its handoff directory,
            // the source of a bind mount, must still be there for `docker cp`).
            try Data("into the warm one\n".utf8).write(to: URL(fileURLWithPath: "\(cli.home)/note.txt"))
            try await cli.ok("cp", "-q", "\(cli.home)/note.txt", "hot:/tmp")
            try await cli.ok("cp", "-q", "hot:/tmp/note.txt", "\(cli.home)/back.txt")
            #expect(try String(contentsOfFile: "\(cli.home)/back.txt", encoding: .utf8) == "into the warm one\n")

            // Refilled to 2, and the leased one is the lease's, not the pool's.
            let refilled = try await Self.waitForPool(api, testbed, token: admin, resource: "warm", ready: 2, machines: ["m8"], master: id)
            #expect(!refilled.map(\.id).contains(leased.id))
            #expect(try await Self.containers(testbed, "m8", master: id).count == 3)

            // The pool and the lease count against capacity: 3 of 4 taken, so one more lease fits, from the pool.
            let machines = try await api.call(.get, "/machine", token: admin).list("Machines")
            #expect(machines.first?["ActiveLeases"] as? Int == 3, "\(machines)")

            // The lease's lifetime starts when it is handed out, not when its container was started.
            let lease = try await api.call(.get, "/lease/hot", token: admin).object("Lease")
            #expect(lease["State"] as? String == "running")
            let expires = try #require((lease["ExpiresAt"] as? String).flatMap { try? Date($0, strategy: .iso8601) })
            let started = try #require(
                try await testbed.docker("m8", ["inspect", "--format", "{{.Created}}", leased.id])
                    .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").first
                    .flatMap { try? Date(String($0) + "Z", strategy: .iso8601) }
            )
            #expect(started < asked - 2, "the warm container started at \(started), the lease was asked for at \(asked)")
            // ISO 8601 in whole seconds: up to a second early; late by as long as the request took.
            #expect(expires >= asked + 3600 - 1 && expires < asked + 3600 + 30, "asked at \(asked) for 1h, expires at \(expires)")

            try await cli.ok("resources", "pool", "warm", "0")
            try await Self.waitForPool(api, testbed, token: admin, resource: "warm", ready: 0, machines: ["m8"], master: id)
            // Draining takes warm containers only: the lease's own still answers.
            #expect(try await cli.ok("ssh", "hot", "--", "cat", "/id").count == 37)
            try await cli.ok("lease", "delete", "hot")
            #expect(try await Self.containers(testbed, "m8", master: id).isEmpty)
        }
    }

    @Test("Many leases at once get distinct running containers; an empty pool falls back to a cold start")
    func concurrentHandouts() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await api.login("admin")
            for machine in ["m8", "m9"] { #expect(try await api.addMachine(testbed, machine, token: admin, capacity: 8).status == .created) }
            let file = "FROM busybox\nRUN echo \(UUID().uuidString) > /id\n"
            #expect(
                try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "burst", "File": file, "Pool": 3])).status == .created
            )
            let id = try masterID(databasePath)
            let warm = try await Self.waitForPool(api, testbed, token: admin, resource: "burst", ready: 3, machines: ["m8", "m9"], master: id)

            let replies = try await withThrowingTaskGroup(of: APIReply.self) { group in
                for index in 0..<6 { group.addTask { try await Self.createLease(api, token: admin, resource: "burst", name: "b\(index)") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.allSatisfy { $0.status == .created }, "\(replies.map { "\($0.status) \($0.message)" })")
            var ids: [String] = []
            for reply in replies {
                let lease = reply.object("Lease")
                let machine = lease["Machine"] as? String ?? ""
                ids.append(try await Self.leaseContainerID(testbed, machine, databasePath: databasePath, lease: lease["Name"] as? String ?? "").id)
            }
            #expect(Set(ids).count == 6, "two leases share a container: \(ids)")
            // At least some came from the pool, the rest started cold; none twice.
            #expect(Set(ids).intersection(warm.map(\.id)).count >= 1)
            for reply in replies {
                let lease = reply.object("Lease")
                let running = try await testbed.docker(
                    lease["Machine"] as! String,
                    [
                        "inspect", "--format", "{{.State.Running}}",
                        try await Self.leaseContainerID(
                            testbed,
                            lease["Machine"] as! String,
                            databasePath: databasePath,
                            lease: lease["Name"] as! String
                        ).name,
                    ]
                )
                #expect(running == "true\n")
            }
            try await Self.waitForPool(api, testbed, token: admin, resource: "burst", ready: 3, machines: ["m8", "m9"], master: id)
            for index in 0..<6 { _ = try await api.call(.delete, "/lease/b\(index)", token: admin) }
            _ = try await api.call(.delete, "/resource/burst", token: admin)
            for machine in ["m8", "m9"] { #expect(try await Self.containers(testbed, machine, master: id).isEmpty) }
        }
    }

    @Test("A full machine whose places warm containers hold: a cold lease of another resource takes one's place; the machine stays at its capacity")
    func warmGivesWay() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await api.login("admin")
            #expect(try await api.addMachine(testbed, "m9", token: admin, capacity: 2).status == .created)
            let file = "FROM busybox\nRUN echo \(UUID().uuidString) > /id\n"
            #expect(
                try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "warm", "File": file, "Pool": 2])).status == .created
            )
            #expect(
                try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "other", "File": "FROM busybox\n"])).status == .created
            )
            let id = try masterID(databasePath)
            _ = try await Self.waitForPool(api, testbed, token: admin, resource: "warm", ready: 2, machines: ["m9"], master: id)
            // Both places are warm containers': the lease of another resource takes one's place.
            let cold = try await Self.createLease(api, token: admin, resource: "other", name: "cold")
            #expect(cold.status == .created, "\(cold.message)")
            let machines = try await api.call(.get, "/machine", token: admin).list("Machines")
            // The lease and the warm container left: the machine at its capacity, never over.
            #expect(machines.first?["ActiveLeases"] as? Int == 2, "\(machines)")
            // One warm container is left.
            _ = try await Self.waitForPool(api, testbed, token: admin, resource: "warm", ready: 1, machines: ["m9"], master: id)
            await testbed.removeContainers(ofMaster: id)
        }
    }

    @Test("A warm container stopped behind the master's back is never handed out, and is replaced; cleanup keeps the live ones")
    func deadWarmContainer() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await api.login("admin")
            #expect(try await api.addMachine(testbed, "m9", token: admin, capacity: 4).status == .created)
            let file = "FROM busybox\nRUN echo \(UUID().uuidString) > /id\n"
            #expect(
                try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "fragile", "File": file, "Pool": 1])).status == .created
            )
            let id = try masterID(databasePath)
            let warm = try await Self.waitForPool(api, testbed, token: admin, resource: "fragile", ready: 1, machines: ["m9"], master: id)

            // Cron's cleanup, from another process, never takes a warm container for an orphan.
            let pass = try await cleanup(databasePath, testbed)
            #expect(pass.stdout.hasPrefix("expired 0, orphans removed 0,"), "\(pass.stdout) \(pass.stderr)")
            #expect(try await Self.unclaimed(testbed, ["m9"], master: id) == warm)

            try await testbed.docker("m9", ["kill", warm[0].name])
            let reply = try await Self.createLease(api, token: admin, resource: "fragile", name: "sound")
            #expect(reply.status == .created, "\(reply.message)")
            let leased = try await Self.leaseContainerID(testbed, "m9", databasePath: databasePath, lease: "sound")
            #expect(leased.id != warm[0].id)
            #expect(try await testbed.docker("m9", ["inspect", "--format", "{{.State.Running}}", leased.name]) == "true\n")
            let replaced = try await Self.waitForPool(api, testbed, token: admin, resource: "fragile", ready: 1, machines: ["m9"], master: id)
            #expect(replaced[0].id != warm[0].id)
            _ = try await api.call(.delete, "/lease/sound", token: admin)
            _ = try await api.call(.delete, "/resource/fragile", token: admin)
            #expect(try await Self.containers(testbed, "m9", master: id).isEmpty)
        }
    }

    @Test("A machine that goes down loses its warm containers, and they are started on the others")
    func machineDown() async throws {
        try await withMaster { api, testbed, databasePath in
            // m8 through an sshd of its own, which the test can stop; m9 as it is.
            let variant = try await testbed.variantSSHD(of: "m8") { $0 }
            defer { variant.stop() }
            let admin = try await api.login("admin")
            let m8 = testbed.machine("m8")
            let added = try await api.call(
                .post,
                "/machine",
                token: admin,
                body: api.json(["Name": "fragile", "Username": m8.login, "IP": variant.address, "Capacity": 4])
            )
            #expect(added.status == .created, "\(added.message)")
            #expect(try await api.addMachine(testbed, "m9", token: admin, capacity: 4).status == .created)
            let file = "FROM busybox\nRUN echo \(UUID().uuidString) > /id\n"
            #expect(
                try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "spread", "File": file, "Pool": 4])).status == .created
            )
            let id = try masterID(databasePath)
            try await Self.waitForPool(api, testbed, token: admin, resource: "spread", ready: 4, machines: ["m8", "m9"], master: id)
            let store = try AppDatabase(path: databasePath)
            let machines = await Dictionary(uniqueKeysWithValues: try store.machines().map { ($0.id!, $0.name) })
            #expect(await Set(try store.poolSlots().map { machines[$0.machineId]! }) == ["fragile", "m9"], "spread over both machines")

            variant.dropConnections()
            variant.stop()
            let pass = try await cleanup(databasePath, testbed, "--machine-timeout", "5s")
            #expect(pass.stdout.contains("1 down (fragile)"), "\(pass.stdout) \(pass.stderr)")
            _ = try await api.call(.put, "/resource/spread/pool", token: admin, body: api.json(["Size": 4]))  // wakes the refill
            // Within a refill's retry (`WarmPool.retryAfter`, 30 s) if a loaded machine failed one.
            let start = ContinuousClock.now
            var slots: [String] = []
            while ContinuousClock.now - start < .seconds(90) {
                let rows = try await store.poolSlots()
                slots = rows.map { "\(machines[$0.machineId]!):\($0.state)" }
                if rows.count == 4 && rows.allSatisfy({ $0.state == .ready && machines[$0.machineId] == "m9" }) { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(slots == Array(repeating: "m9:ready", count: 4), "\(slots)")
            #expect(try await Self.containers(testbed, "m9", master: id).filter(\.running).count == 4)

            _ = try await api.call(.delete, "/resource/spread", token: admin)
            #expect(try await Self.containers(testbed, "m9", master: id).isEmpty)
            // What the machine that went down still holds, cleanup would remove when it is back.
            let left = try await Self.containers(testbed, "m8", master: id)
            if !left.isEmpty { try await testbed.docker("m8", ["rm", "-f"] + left.map(\.name)) }
        }
    }

    @Test("An edited resource replaces its pool with the new image; a running lease keeps the old one")
    func editedResource() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await api.login("admin")
            #expect(try await api.addMachine(testbed, "m8", token: admin, capacity: 6).status == .created)
            let tag = UUID().uuidString
            let old = "FROM busybox\nRUN echo old-\(tag) > /id\n"
            #expect(
                try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "edited", "File": old, "Pool": 2])).status == .created
            )
            let id = try masterID(databasePath)
            let before = try await Self.waitForPool(api, testbed, token: admin, resource: "edited", ready: 2, machines: ["m8"], master: id)
            #expect(try await Self.createLease(api, token: admin, resource: "edited", name: "keeper").status == .created)

            let edit = try await api.call(
                .put,
                "/resource/edited",
                token: admin,
                body: api.json(["File": "FROM busybox\nRUN echo new-\(tag) > /id\n"])
            )
            #expect(edit.status == .ok, "\(edit.message)")
            let newImage = edit.object("Resource")["Image"] as? String ?? ""
            #expect(newImage != before[0].image)
            let after = try await Self.waitForPool(api, testbed, token: admin, resource: "edited", ready: 2, machines: ["m8"], master: id)
            #expect(after.allSatisfy { $0.image == newImage }, "\(after)")

            let keeper = try await Self.leaseContainerID(testbed, "m8", databasePath: databasePath, lease: "keeper")
            #expect(try await testbed.docker("m8", ["exec", keeper.name, "cat", "/id"]) == "old-\(tag)\n")
            #expect(try await Self.createLease(api, token: admin, resource: "edited", name: "fresh").status == .created)
            let fresh = try await Self.leaseContainerID(testbed, "m8", databasePath: databasePath, lease: "fresh")
            #expect(try await testbed.docker("m8", ["exec", fresh.name, "cat", "/id"]) == "new-\(tag)\n")

            // Bad sizes change nothing.
            for size in [-1, 101] {
                let refused = try await api.call(.put, "/resource/edited/pool", token: admin, body: api.json(["Size": size]))
                #expect(refused.status == .badRequest, "\(size): \(refused.message)")
            }
            #expect(try await api.call(.put, "/resource/edited/pool", token: admin, body: #"{"Size": null}"#).status == .badRequest)
            #expect(try await api.call(.put, "/resource/nothing/pool", token: admin, body: api.json(["Size": 1])).status == .notFound)
            let user = try await LeaseTests.user(api, "pat", admin: admin)
            #expect(try await api.call(.put, "/resource/edited/pool", token: user, body: api.json(["Size": 5])).status == .forbidden)
            let listed = try await api.call(.get, "/resource", token: admin).list("Resources").first
            #expect(listed?["Pool"] as? Int == 2)

            for lease in ["keeper", "fresh"] { _ = try await api.call(.delete, "/lease/\(lease)", token: admin) }
            _ = try await api.call(.delete, "/resource/edited", token: admin)
            #expect(try await Self.containers(testbed, "m8", master: id).isEmpty)
        }
    }
}
