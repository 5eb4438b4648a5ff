import Foundation
import Logging
import PostgresNIO
import Testbed
import Testing

@testable import Store

/// The two engines behind `Store`. Every test here runs on both: a new SQLite file, and a new
/// database on the testbed's real PostgreSQL server.
enum Engine: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// A new, migrated store of `engine` for `body`; a PostgreSQL database is dropped afterwards.
func withStore(_ engine: Engine, _ body: (any Store) async throws -> Void) async throws {
    switch engine {
    case .sqlite:
        let directory = try makeTemporaryDirectory("resalloc-store")
        let store = try AppDatabase(path: "\(directory)/resalloc.db")
        #expect(try store.migrateUp(to: nil) == Array(1...Schema.latestVersion))
        try await body(store)
    case .postgres:
        let base = try await Testbed.postgresURL()
        var logger = Logger(label: "store-test")
        logger.logLevel = .critical
        let name = "resalloc_test_\(UUID().uuidString.prefix(8).lowercased())"
        let admin = try PostgresStore(url: base, logger: logger)
        defer { admin.close() }
        try await admin.client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        var url = try #require(URLComponents(string: base))
        url.path = "/\(name)"
        // The store waits 45 s for a connection instead of a master's 8: these tests compare the
        // two engines' answers, in a test process that a loaded run can stall for longer than 8 s
        // (ten such failures at once, with the server idle, waiting on this client).
        // MultiMasterTests measures the 8 s refusal of a down database, in a master of its own.
        let store = try PostgresStore(url: try #require(url.string), logger: logger, deadline: .seconds(45))
        defer { store.close() }
        #expect(try await store.migrateUp(to: nil) == Array(1...Schema.latestVersion))
        try await body(store)
        _ = try? await admin.client.query(PostgresQuery(unsafeSQL: "DROP DATABASE \(name) WITH (FORCE)"), logger: logger)
    }
}

/// Dates as both engines keep them: to the millisecond.
func kept(_ date: Date) -> Date { Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded() / 1000) }

/// The same instant, to the millisecond either engine keeps.
func same(_ a: Date?, _ b: Date?) -> Bool {
    guard let a, let b else { return a == nil && b == nil }
    return abs(a.timeIntervalSince(b)) < 0.001
}

extension Lease {
    /// With its dates as a store keeps them, for comparing a row read back.
    var kept: Lease {
        var lease = self
        lease.createdAt = StoreTests.kept(createdAt)
        lease.expiresAt = StoreTests.kept(expiresAt)
        return lease
    }
}

@Suite("One store, two engines: SQLite and PostgreSQL answer alike", .timeLimit(.minutes(3)))
struct StoreConformanceTests {
    @Test("Schema versions go up and down and up again; the master id is kept", arguments: Engine.allCases)
    func schema(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            #expect(try await store.schemaVersion() == Schema.latestVersion)
            #expect(try await store.migrationStatus().allSatisfy { $0.appliedAt != nil })
            #expect(try await store.migrateUp(to: nil).isEmpty)
            let id = try await store.masterID()
            #expect(id.count == 36)
            #expect(try await store.migrateDown(to: 4) == Array((5...Schema.latestVersion).reversed()))
            #expect(try await store.schemaVersion() == 4)
            #expect(try await store.migrationStatus().filter { $0.appliedAt == nil }.map(\.version) == Array(5...Schema.latestVersion))
            #expect(try await store.migrateUp(to: nil) == Array(5...Schema.latestVersion))
            #expect(try await store.masterID() == id)
        }
    }

    @Test("Users: the first is an active admin, then pending; names are unique; tokens expire and are revoked", arguments: Engine.allCases)
    func users(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let admin = try await store.createUser(name: "ann", passwordHash: "h1")
            #expect(admin.role == .admin && admin.status == .active && admin.id != nil)
            let bob = try await store.createUser(name: "bob", passwordHash: "h2")
            #expect(bob.role == .user && bob.status == .pending)
            await #expect(throws: StoreError.conflict("the name bob is taken")) { try await store.createUser(name: "bob", passwordHash: "x") }
            #expect(try await store.users().map(\.name) == ["ann", "bob"])
            #expect(try await store.updateUser(named: "bob", status: .active, role: nil).status == .active)
            #expect(try await store.updateUser(named: "bob", status: nil, role: .admin).role == .admin)
            await #expect(throws: StoreError.notFound("no user carl")) { try await store.updateUser(named: "carl", status: .active, role: nil) }
            #expect(try await store.user(named: "bob")?.role == .admin)
            #expect(try await store.user(named: "carl") == nil)

            let now = Date()
            try await store.createToken(userID: admin.id!, hash: "t1", expiresAt: now + 60)
            #expect(try await store.user(forTokenHash: "t1", at: now)?.name == "ann")
            #expect(try await store.user(forTokenHash: "t1", at: now + 61) == nil)
            #expect(try await store.deleteToken(hash: "t1"))
            #expect(try await !store.deleteToken(hash: "t1"))
            #expect(try await store.user(forTokenHash: "t1", at: now) == nil)
        }
    }

    @Test("Resources: unique names, sorted, pool size and Dockerfile changed in place, not deleted while leased", arguments: Engine.allCases)
    func resources(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let bytes = Data("FROM busybox\n\u{0}\u{ff}".utf8)
            let made = try await store.createResource(name: "zed", dockerfile: bytes)
            _ = try await store.createResource(name: "alpha", dockerfile: Data("FROM busybox".utf8))
            await #expect(throws: StoreError.self) { try await store.createResource(name: "zed", dockerfile: Data()) }
            #expect(try await store.resources().map(\.name) == ["alpha", "zed"])
            #expect(try await store.resource(named: "zed")?.dockerfile == bytes)
            #expect(try await store.setPoolSize(resourceNamed: "zed", to: 3).poolSize == 3)
            #expect(try await store.updateDockerfile(resourceNamed: "zed", to: Data("FROM x".utf8)).dockerfile == Data("FROM x".utf8))
            #expect(try await store.resource(named: "zed")?.poolSize == 3)
            await #expect(throws: StoreError.notFound("no resource nope")) { try await store.setPoolSize(resourceNamed: "nope", to: 1) }

            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            _ = try await store.createLease(Self.lease("l1", owner: owner.id!, resource: made.id!))
            await #expect(throws: StoreError.conflict("resource zed is used by leases; delete them first")) {
                try await store.deleteResource(named: "zed")
            }
            try await store.deleteResource(named: "alpha")
            await #expect(throws: StoreError.notFound("no resource alpha")) { try await store.deleteResource(named: "alpha") }
        }
    }

    @Test(
        "Machines and leases: unique names and addresses, a failed lease's name reused, listings filtered, counts with slots",
        arguments: Engine.allCases
    )
    func machinesAndLeases(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let other = try await store.createUser(name: "bob", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data("FROM busybox".utf8))
            let m1 = try await store.createMachine(Self.machine("m1", host: "127.0.0.11"))
            let m2 = try await store.createMachine(Self.machine("m2", host: "127.0.0.12"))
            await #expect(throws: StoreError.self) { try await store.createMachine(Self.machine("m1", host: "127.0.0.99")) }
            await #expect(throws: StoreError.self) { try await store.createMachine(Self.machine("m9", host: "127.0.0.11")) }
            #expect(try await store.machines().map(\.name) == ["m1", "m2"])
            #expect(try await store.machine(id: m2.id!)?.name == "m2")
            #expect(try await store.machine(named: "m1")?.capacity == 5)

            let now = kept(Date())
            try await store.setMachineHealth(id: m2.id!, healthy: false, error: "gone", at: now)
            #expect(try await store.machine(id: m2.id!)?.lastError == "gone")
            try await store.setMachineHealth(id: m2.id!, healthy: true, error: nil, at: now)
            let healed = try await store.machine(id: m2.id!)
            #expect(healed?.healthy == true && healed?.lastError == nil && same(healed?.lastContactAt, now))

            var first = try await store.createLease(Self.lease("web", owner: owner.id!, resource: resource.id!))
            await #expect(throws: StoreError.conflict("you already have a lease named web")) {
                try await store.createLease(Self.lease("web", owner: owner.id!, resource: resource.id!))
            }
            _ = try await store.createLease(Self.lease("web", owner: other.id!, resource: resource.id!))
            first.state = .failed
            first.message = "build failed"
            try await store.updateLease(first)
            // A failed lease gives its name up.
            var second = try await store.createLease(Self.lease("web", owner: owner.id!, resource: resource.id!))
            #expect(second.id != first.id)
            #expect(try await store.lease(id: first.id!) == nil)
            second.machineId = m1.id
            second.state = .running
            second.containerId = "abc"
            try await store.updateLease(second)
            #expect(try await store.lease(id: second.id!)?.kept == second.kept)

            let all = try await store.leaseListings(ownerID: nil, name: nil, machineID: nil)
            #expect(all.map { "\($0.owner)/\($0.lease.name)@\($0.machine ?? "-")" } == ["bob/web@-", "ann/web@m1"])
            #expect(try await store.leaseListings(ownerID: owner.id!, name: "web", machineID: nil).map(\.lease.id) == [second.id])
            #expect(try await store.leaseListings(ownerID: nil, name: nil, machineID: m1.id!).count == 1)
            #expect(try await store.leaseListings(ownerID: other.id!, name: "nope", machineID: nil).isEmpty)

            _ = try await store.addPoolSlot(
                PoolSlot(resourceId: resource.id!, machineId: m1.id!, image: "img", incarnationId: "i1"),
                cpuOvercommit: 4
            )
            #expect(try await store.activeLeaseCounts() == [m1.id!: 2])
            await #expect(throws: StoreError.conflict("the machine still has leases")) { try await store.deleteMachine(id: m1.id!) }
            try await store.deleteLease(id: second.id!)
            #expect(try await store.activeLeaseCounts() == [m1.id!: 1])
            try await store.deleteMachine(id: m2.id!)
            #expect(try await store.machines().map(\.name) == ["m1"])
        }
    }

    @Test("SSH keys: one owner per key, one name per owner, found by their wire form", arguments: Engine.allCases)
    func keys(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let ann = try await store.createUser(name: "ann", passwordHash: "h")
            let bob = try await store.createUser(name: "bob", passwordHash: "h")
            let key = try await store.createUserKey(
                UserKey(userId: ann.id!, name: "laptop", algorithm: "ssh-ed25519", blob: "AAAA1", fingerprint: "SHA256:x")
            )
            #expect(key.id != nil)
            await #expect(throws: StoreError.self) {
                try await store.createUserKey(UserKey(userId: bob.id!, name: "other", algorithm: "ssh-ed25519", blob: "AAAA1", fingerprint: "f"))
            }
            await #expect(throws: StoreError.self) {
                try await store.createUserKey(UserKey(userId: ann.id!, name: "laptop", algorithm: "ssh-ed25519", blob: "AAAA2", fingerprint: "f"))
            }
            #expect(try await store.user(withKeyBlob: "AAAA1")?.name == "ann")
            #expect(try await store.user(withKeyBlob: "nope") == nil)
            #expect(try await store.userKeys(userId: ann.id!).map(\.name) == ["laptop"])
            await #expect(throws: StoreError.notFound("you have no key named laptop")) {
                try await store.deleteUserKey(userId: bob.id!, name: "laptop")
            }
            try await store.deleteUserKey(userId: ann.id!, name: "laptop")
            #expect(try await store.userKeys(userId: ann.id!).isEmpty)
        }
    }

    @Test("Incarnations: heartbeats, stops, and purges that keep the ones a lease names", arguments: Engine.allCases)
    func incarnations(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let old = kept(Date() - 3600)
            try await store.registerIncarnation(Incarnation(id: "gone", host: "h", pid: 7, heartbeatSeconds: 5, startedAt: old))
            try await store.registerIncarnation(Incarnation(id: "named", host: "h", pid: 8, heartbeatSeconds: 5, startedAt: old))
            try await store.registerIncarnation(Incarnation(id: "alive", host: "h", pid: 9, heartbeatSeconds: 5, startedAt: kept(Date())))
            #expect(try await store.heartbeat(incarnationID: "alive", at: kept(Date())))
            #expect(try await !store.heartbeat(incarnationID: "nobody", at: Date()))
            try await store.stopIncarnation(id: "gone", at: old)
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data())
            var lease = Self.lease("l", owner: owner.id!, resource: resource.id!)
            lease.incarnationId = "named"
            _ = try await store.createLease(lease)
            let rows = try await store.incarnations()
            #expect(rows.map(\.id).sorted() == ["alive", "gone", "named"])
            #expect(same(rows.first { $0.id == "gone" }?.stoppedAt, old) && rows.first { $0.id == "named" }?.pid == 8)
            #expect(try await store.purgeIncarnations(before: Date() - 60) == 1)
            #expect(try await store.incarnations().map(\.id).sorted() == ["alive", "named"])
        }
    }

    @Test("Warm slots: added within capacity on healthy machines, readied, claimed oldest first, each once", arguments: Engine.allCases)
    func poolSlots(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data())
            let machine = try await store.createMachine(Self.machine("m1", host: "127.0.0.11", capacity: 3))
            var slots: [PoolSlot] = []
            for index in 0..<4 {
                let slot = PoolSlot(
                    resourceId: resource.id!,
                    machineId: machine.id!,
                    image: "img",
                    incarnationId: "i",
                    createdAt: kept(Date() + Double(index))
                )
                if let added = try await store.addPoolSlot(slot, cpuOvercommit: 4) { slots.append(added) }
            }
            #expect(slots.count == 3, "capacity 3")
            #expect(try await store.markPoolSlotReady(id: slots[1].id!, containerID: "c1"))
            #expect(try await store.markPoolSlotReady(id: slots[0].id!, containerID: "c0"))
            #expect(try await !store.markPoolSlotReady(id: slots[0].id!, containerID: "again"))
            #expect(try await store.poolSlots(machineID: machine.id!).filter { $0.state == .ready }.count == 2)

            let lease = try await store.createLease(Self.lease("l", owner: owner.id!, resource: resource.id!))
            let claimed = try await store.claimPoolSlot(image: "img", resourceID: resource.id!, lease: lease, incarnationID: "i2")
            #expect(claimed?.id == slots[0].id && claimed?.state == .claimed && claimed?.leaseId == lease.id)
            #expect(try await store.lease(id: lease.id!)?.machineId == machine.id)
            #expect(try await store.claimPoolSlot(image: "other", resourceID: resource.id!, lease: lease, incarnationID: "i2") == nil)
            try await store.deletePoolSlot(id: slots[2].id!)
            #expect(try await store.poolSlots(machineID: nil).map(\.id) == [slots[0].id, slots[1].id])

            try await store.setMachineHealth(id: machine.id!, healthy: false, error: "down", at: Date())
            #expect(try await store.claimPoolSlot(image: "img", resourceID: resource.id!, lease: lease, incarnationID: "i2") == nil)
            #expect(
                try await store.addPoolSlot(
                    PoolSlot(resourceId: resource.id!, machineId: machine.id!, image: "img", incarnationId: "i"),
                    cpuOvercommit: 4
                ) == nil
            )
        }
    }

    @Test(
        "Racing: 20 slots asked at once on a machine of capacity 5 give 5; 8 claims of 5 ready slots give 5 different ones",
        arguments: Engine.allCases
    )
    func races(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data())
            let machine = try await store.createMachine(Self.machine("m1", host: "127.0.0.11", capacity: 5))
            let added = try await withThrowingTaskGroup(of: PoolSlot?.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await store.addPoolSlot(
                            PoolSlot(resourceId: resource.id!, machineId: machine.id!, image: "img", incarnationId: "i"),
                            cpuOvercommit: 4
                        )
                    }
                }
                return try await group.reduce(into: [PoolSlot]()) { if let slot = $1 { $0.append(slot) } }
            }
            #expect(added.count == 5)
            #expect(try await store.activeLeaseCounts()[machine.id!] == 5)
            for slot in added { #expect(try await store.markPoolSlotReady(id: slot.id!, containerID: "c\(slot.id!)")) }
            var leases: [Lease] = []
            for index in 0..<8 { leases.append(try await store.createLease(Self.lease("l\(index)", owner: owner.id!, resource: resource.id!))) }
            let claims = try await withThrowingTaskGroup(of: Int64?.self) { group in
                for lease in leases {
                    group.addTask { try await store.claimPoolSlot(image: "img", resourceID: resource.id!, lease: lease, incarnationID: "i")?.id }
                }
                return try await group.reduce(into: [Int64]()) { if let id = $1 { $0.append(id) } }
            }
            #expect(claims.count == 5 && Set(claims).count == 5)
        }
    }

    @Test(
        "Racing placements: 14 leases at once over two machines of capacity 5, one holding a warm slot, place 9; none over",
        arguments: Engine.allCases
    )
    func placementRace(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data())
            let m1 = try await store.createMachine(Self.machine("m1", host: "127.0.0.11", capacity: 5))
            let m2 = try await store.createMachine(Self.machine("m2", host: "127.0.0.12", capacity: 5))
            _ = try await store.addPoolSlot(PoolSlot(resourceId: resource.id!, machineId: m1.id!, image: "img", incarnationId: "i"), cpuOvercommit: 4)
            var leases: [Lease] = []
            for index in 0..<14 { leases.append(try await store.createLease(Self.lease("l\(index)", owner: owner.id!, resource: resource.id!))) }
            let placed = try await withThrowingTaskGroup(of: String?.self) { group in
                for (index, lease) in leases.enumerated() {
                    // Half prefer m1, half m2, as two masters with different snapshots would.
                    let order = index % 2 == 0 ? [m1.id!, m2.id!] : [m2.id!, m1.id!]
                    group.addTask { try await store.placeLease(lease, on: order, cpuOvercommit: 4)?.name }
                }
                return try await group.reduce(into: [String]()) { if let name = $1 { $0.append(name) } }
            }
            #expect(placed.count == 9)
            #expect(try await store.activeLeaseCounts() == [m1.id!: 5, m2.id!: 5])
            #expect(try await store.leaseListings(ownerID: nil, name: nil, machineID: nil).filter { $0.lease.machineId != nil }.count == 9)
            try await store.setMachineHealth(id: m2.id!, healthy: false, error: "down", at: Date())
            var extra = try await store.createLease(Self.lease("late", owner: owner.id!, resource: resource.id!))
            #expect(try await store.placeLease(extra, on: [m2.id!], cpuOvercommit: 4) == nil, "down, and full")
            extra.state = .failed
            try await store.updateLease(extra)
            // Down alone: a machine with room that is down takes nothing; up again, it does.
            let m3 = try await store.createMachine(Self.machine("m3", host: "127.0.0.13"))
            try await store.setMachineHealth(id: m3.id!, healthy: false, error: "down", at: Date())
            let onDown = try await store.createLease(Self.lease("on-down", owner: owner.id!, resource: resource.id!))
            #expect(try await store.placeLease(onDown, on: [m3.id!], cpuOvercommit: 4) == nil, "down, with room")
            try await store.setMachineHealth(id: m3.id!, healthy: true, error: nil, at: Date())
            #expect(try await store.placeLease(onDown, on: [m3.id!], cpuOvercommit: 4)?.name == "m3", "up again")
        }
    }

    @Test(
        "Tenants: limits kept on resources; leases and slots placed only within memory and CPUs; users switched off and on; expired tokens purged; settings",
        arguments: Engine.allCases
    )
    func tenants(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            var resource = try await store.createResource(name: "box", dockerfile: Data("FROM busybox".utf8))
            #expect(resource.limits == ResourceLimits())
            resource = try await store.setLimits(resourceNamed: "box", to: ResourceLimits(memoryBytes: 400 << 20, milliCPUs: 1500, pids: 64))
            #expect(try await store.resource(named: "box")?.limits == ResourceLimits(memoryBytes: 400 << 20, milliCPUs: 1500, pids: 64))
            await #expect(throws: StoreError.self) { try await store.setLimits(resourceNamed: "nope", to: ResourceLimits()) }

            // A machine of 1 GiB and 2 CPUs: 400 MiB fits twice, and CPUs × 1 take one 1.5-CPU lease.
            let machine = try await store.createMachine(Self.machine("m1", host: "127.0.0.11", capacity: 10))
            func lease(_ name: String) async throws -> Lease {
                var lease = Self.lease(name, owner: owner.id!, resource: resource.id!)
                lease.memoryBytes = 400 << 20
                lease.milliCPUs = 1500
                return try await store.createLease(lease)
            }
            let a = try await lease("a")
            #expect(try await store.placeLease(a, on: [machine.id!], cpuOvercommit: 1)?.name == "m1")
            #expect(try await store.placeLease(try await lease("b"), on: [machine.id!], cpuOvercommit: 1) == nil, "CPUs ran out")
            #expect(try await store.placeLease(try await lease("c"), on: [machine.id!], cpuOvercommit: 4)?.name == "m1")
            #expect(try await store.placeLease(try await lease("d"), on: [machine.id!], cpuOvercommit: 4) == nil, "memory ran out")
            #expect(try await store.machineLoads()[machine.id!] == MachineLoad(containers: 2, memoryBytes: 800 << 20, milliCPUs: 3000))
            var slot = PoolSlot(resourceId: resource.id!, machineId: machine.id!, image: "img", incarnationId: "i")
            slot.memoryBytes = 400 << 20
            #expect(try await store.addPoolSlot(slot, cpuOvercommit: 4) == nil, "a warm container fits no better")
            slot.memoryBytes = 100 << 20
            let added = try #require(try await store.addPoolSlot(slot, cpuOvercommit: 4))
            #expect(try await store.poolSlots(machineID: machine.id!).first?.memoryBytes == 100 << 20)
            #expect(try await store.machineLoads()[machine.id!]?.memoryBytes == 900 << 20)
            try await store.deletePoolSlot(id: added.id!)

            #expect(try await store.setUserDisabled(named: "ann", true).disabled)
            #expect(try await store.user(named: "ann")?.disabled == true)
            #expect(try await store.users().first?.mayAct == false)
            #expect(try await store.setUserDisabled(named: "ann", false).mayAct)
            await #expect(throws: StoreError.self) { try await store.setUserDisabled(named: "nobody", true) }

            let now = kept(Date())
            try await store.createToken(userID: owner.id!, hash: "old", expiresAt: now - 60)
            try await store.createToken(userID: owner.id!, hash: "new", expiresAt: now + 60)
            #expect(try await store.purgeTokens(expiredBefore: now) == 1)
            #expect(try await store.user(forTokenHash: "new", at: now)?.name == "ann")
            #expect(try await store.deleteToken(hash: "old") == false)

            #expect(try await store.setting("tenantNetworks") == nil)
            try await store.setSetting("tenantNetworks", to: "off")
            try await store.setSetting("tenantNetworks", to: "on")
            #expect(try await store.setting("tenantNetworks") == "on")
        }
    }

    @Test(
        "Extend and expire race: only a running lease is extended, a pass claims only a lease still expired, and of the two racing exactly one wins",
        arguments: Engine.allCases
    )
    func extendAgainstExpiry(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data("FROM busybox".utf8))
            let now = kept(Date())
            func expiredLease(_ name: String) async throws -> Lease {
                var lease = try await store.createLease(Self.lease(name, owner: owner.id!, resource: resource.id!))
                lease.state = .running
                lease.expiresAt = now - 60
                try await store.updateLease(lease)
                return lease
            }
            // One after the other: the first to act decides.
            let extended = try await expiredLease("extended")
            #expect(try await store.extendLease(id: extended.id!, to: now + 3600))
            #expect(try await store.claimExpiredLease(id: extended.id!, at: now, incarnationID: "pass") == false, "extended: not expired any more")
            let claimed = try await expiredLease("claimed")
            #expect(try await store.claimExpiredLease(id: claimed.id!, at: now, incarnationID: "pass"))
            #expect(try await store.lease(id: claimed.id!)?.state == .deleting)
            #expect(try await store.extendLease(id: claimed.id!, to: now + 3600) == false, "deleting: not extended")
            #expect(same(try await store.lease(id: claimed.id!)?.expiresAt, claimed.expiresAt), "the expiry is as it was")
            #expect(try await store.claimExpiredLease(id: claimed.id!, at: now, incarnationID: "pass") == false, "claimed once")
            #expect(try await store.extendLease(id: 999_999, to: now) == false, "a lease that is gone")

            // At once, twenty times: exactly one of the two wins each time.
            for round in 0..<20 {
                let lease = try await expiredLease("race\(round)")
                // Two tasks, not `async let`: in this closure it crashed the task allocator here.
                let extending = Task { try await store.extendLease(id: lease.id!, to: now + 3600) }
                let claiming = Task { try await store.claimExpiredLease(id: lease.id!, at: now, incarnationID: "pass") }
                let (extendWon, claimWon) = (try await extending.value, try await claiming.value)
                #expect(extendWon != claimWon, "round \(round): extend \(extendWon), claim \(claimWon)")
                let state = try await store.lease(id: lease.id!)?.state
                #expect(state == (claimWon ? .deleting : .running))
            }
        }
    }

    @Test(
        "A lease deleted while being created: its creation is not finished over the deletion, racing or not; a missing row answers alike on both engines",
        arguments: Engine.allCases
    )
    func deleteAgainstCreation(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data("FROM busybox".utf8))
            let finished = try await store.createLease(Self.lease("finished", owner: owner.id!, resource: resource.id!))
            #expect(try await store.finishCreation(id: finished.id!, running: true, containerID: "c1", message: nil))
            #expect(try await store.lease(id: finished.id!)?.state == .running)
            #expect(try await store.finishCreation(id: finished.id!, running: false, containerID: nil, message: "late") == false, "finished once")
            let deleted = try await store.createLease(Self.lease("deleted", owner: owner.id!, resource: resource.id!))
            try await store.deleteLease(id: deleted.id!)
            #expect(try await store.finishCreation(id: deleted.id!, running: true, containerID: "c2", message: nil) == false)
            #expect(try await store.lease(id: deleted.id!) == nil, "not brought back")
            // A whole-row write of a row deleted meanwhile: the same answer from both engines.
            await #expect(throws: StoreError.notFound("lease deleted is gone")) { try await store.updateLease(deleted) }

            // A pass's verdict is written only over the state it read, and nothing else of the row.
            var running = try await store.createLease(Self.lease("settled", owner: owner.id!, resource: resource.id!))
            #expect(try await store.finishCreation(id: running.id!, running: true, containerID: "c3", message: nil))
            running = try #require(try await store.lease(id: running.id!))
            let later = kept(Date() + 7200)
            #expect(try await store.extendLease(id: running.id!, to: later))  // its owner, meanwhile
            #expect(try await store.setLeaseState(id: running.id!, expecting: .running, to: .lost, message: "gone"))
            let lost = try #require(try await store.lease(id: running.id!))
            #expect(lost.state == .lost && lost.message == "gone" && same(lost.expiresAt, later), "the owner's extension is kept")
            #expect(try await store.setLeaseState(id: running.id!, expecting: .running, to: .failed, message: nil) == false, "not running any more")
            #expect(try await store.setLeaseState(id: deleted.id!, expecting: .creating, to: .failed, message: nil) == false, "gone")

            // At once, twenty times: either the lease is gone and its creation was not written, or
            // it was written first and the deletion removed it after; never a row left behind.
            for round in 0..<20 {
                let lease = try await store.createLease(Self.lease("race\(round)", owner: owner.id!, resource: resource.id!))
                let finishing = Task { try await store.finishCreation(id: lease.id!, running: true, containerID: "c\(round)", message: nil) }
                let deleting = Task { try await store.deleteLease(id: lease.id!) }
                _ = try await finishing.value
                try await deleting.value
                #expect(try await store.lease(id: lease.id!) == nil, "round \(round)")
            }
        }
    }

    @Test(
        "Jobs: placed once within a machine's room, conditional state changes, logs appended in order, taken over once; users' limits and use",
        arguments: Engine.allCases
    )
    func jobs(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data("FROM busybox".utf8))
            let machine = try await store.createMachine(Self.machine("m1", host: "10.0.0.1", capacity: 2))
            func job(_ command: [String]) async throws -> Job {
                var job = Job(ownerId: owner.id!, resourceId: resource.id!, image: "img", command: command, ttlSeconds: 60, createdAt: kept(Date()))
                job.memoryBytes = 1 << 20
                return try await store.createJob(job)
            }
            let first = try await job(["sh", "-c", "echo 'a b'"])
            #expect(first.state == .queued && first.arguments == ["sh", "-c", "echo 'a b'"])
            #expect(try await store.job(id: first.id!)?.arguments == ["sh", "-c", "echo 'a b'"])

            // Placed once: a second grant of the same job finds it no longer queued.
            let now = kept(Date())
            #expect(try await store.placeJob(id: first.id!, on: [machine.id!], cpuOvercommit: 4, incarnationID: "i1", at: now)?.id == machine.id)
            #expect(try await store.placeJob(id: first.id!, on: [machine.id!], cpuOvercommit: 4, incarnationID: "i2", at: now) == nil)
            var placed = try #require(try await store.job(id: first.id!))
            #expect(placed.state == .starting && placed.machineId == machine.id && placed.incarnationId == "i1")
            #expect(try await store.machineLoads()[machine.id!] == MachineLoad(containers: 1, memoryBytes: 1 << 20, milliCPUs: 0))

            // Two masters granting one job at once: exactly one does, ten times over.
            let roomy = try await store.createMachine(Self.machine("m2", host: "10.0.0.2", capacity: 100))
            for round in 0..<10 {
                let raced = try await job(["race\(round)"])
                let one = Task { try await store.placeJob(id: raced.id!, on: [roomy.id!], cpuOvercommit: 4, incarnationID: "a", at: now) != nil }
                let other = Task { try await store.placeJob(id: raced.id!, on: [roomy.id!], cpuOvercommit: 4, incarnationID: "b", at: now) != nil }
                let (first, second) = (try await one.value, try await other.value)
                #expect(first != second, "round \(round): \(first) \(second)")
                var done = try #require(try await store.job(id: raced.id!))
                done.state = .cancelled
                done.containerRemoved = true
                #expect(try await store.updateJob(done, expecting: [.starting]))
            }

            // Room counts jobs: a capacity of 2 takes one more, not two.
            let second = try await job(["true"])
            let third = try await job(["true"])
            #expect(try await store.placeJob(id: second.id!, on: [machine.id!], cpuOvercommit: 4, incarnationID: "i1", at: now) != nil)
            #expect(try await store.placeJob(id: third.id!, on: [machine.id!], cpuOvercommit: 4, incarnationID: "i1", at: now) == nil)
            #expect(try await store.job(id: third.id!)?.state == .queued)

            // Conditional changes: running from starting once; a cancelled job is not ended again.
            placed.state = .running
            #expect(try await store.updateJob(placed, expecting: [.starting]))
            #expect(try await store.updateJob(placed, expecting: [.starting]) == false)
            var cancelled = placed
            cancelled.state = .cancelled
            #expect(try await store.updateJob(cancelled, expecting: [.queued, .starting, .running]))
            var succeeded = placed
            succeeded.state = .succeeded
            #expect(try await store.updateJob(succeeded, expecting: [.starting, .running]) == false)
            #expect(try await store.job(id: first.id!)?.state == .cancelled)
            var gone = placed
            gone.id = 999_999
            #expect(try await store.updateJob(gone, expecting: [.running]) == false, "a job that is gone")

            // Output in order, sized; cleared for a collector that reads it again.
            try await store.appendJobLog([
                JobLogChunk(jobId: second.id!, stream: 1, data: Data("out".utf8)), JobLogChunk(jobId: second.id!, stream: 2, data: Data("err".utf8)),
            ])
            try await store.appendJobLog([JobLogChunk(jobId: second.id!, stream: 1, data: Data("more".utf8))])
            let log = try await store.jobLog(jobID: second.id!, after: 0, limit: 10)
            #expect(log.map { String(decoding: $0.data, as: UTF8.self) } == ["out", "err", "more"] && log.map(\.stream) == [1, 2, 1])
            #expect(try await store.jobLog(jobID: second.id!, after: log[1].id!, limit: 10).count == 1)
            #expect(try await store.job(id: second.id!)?.logBytes == 10)
            try await store.clearJobLog(jobID: second.id!)
            #expect(try await store.jobLog(jobID: second.id!, after: 0, limit: 10).isEmpty)
            #expect(try await store.job(id: second.id!)?.logBytes == 0)

            // Taken over once, from the incarnation that had it.
            var running = try #require(try await store.job(id: second.id!))
            running.state = .running
            #expect(try await store.updateJob(running, expecting: [.starting]))
            #expect(try await store.takeOverJob(id: second.id!, from: "i1", to: "i2"))
            #expect(try await store.takeOverJob(id: second.id!, from: "i1", to: "i3") == false)
            #expect(try await store.job(id: second.id!)?.incarnationId == "i2")

            // Listings, use and limits.
            #expect(try await store.jobListings(ownerID: owner.id!, id: nil, activeOnly: true).map(\.job.id) == [second.id, third.id])
            #expect(try await store.jobListings(ownerID: owner.id!, id: nil, activeOnly: false).count == 13)
            #expect(try await store.jobListings(ownerID: nil, id: first.id!, activeOnly: false).first?.owner == "ann")
            #expect(try await store.userUses()[owner.id!] == UserUse(leases: 0, jobs: 1, memoryBytes: 1 << 20, milliCPUs: 0))
            let limited = try await store.setUserLimits(named: "ann", to: UserLimits(leases: 1, jobs: 2, memoryBytes: 1 << 30, milliCPUs: 1500))
            #expect(limited.limits == UserLimits(leases: 1, jobs: 2, memoryBytes: 1 << 30, milliCPUs: 1500))
            #expect(try await store.user(named: "ann")?.limits == limited.limits)

            // Ended jobs without a container are forgotten after their time.
            var ended = try #require(try await store.job(id: first.id!))
            ended.endedAt = now - 10
            ended.containerRemoved = true
            #expect(try await store.updateJob(ended, expecting: [.cancelled]))
            #expect(try await store.purgeJobs(endedBefore: now) == 1, "the raced ones have no end time")
            #expect(try await store.job(id: first.id!) == nil)
        }
    }

    @Test("A lease waits in the queue until a place is given to it, or its wait ends first: exactly one of the two", arguments: Engine.allCases)
    func queuedLease(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let owner = try await store.createUser(name: "ann", passwordHash: "h")
            let resource = try await store.createResource(name: "box", dockerfile: Data("FROM busybox".utf8))
            let machine = try await store.createMachine(Self.machine("m1", host: "10.0.0.1", capacity: 100))
            for round in 0..<10 {
                var asked = Self.lease("q\(round)", owner: owner.id!, resource: resource.id!)
                asked.queuedUntil = kept(Date() + 60)
                let lease = try await store.createLease(asked)
                #expect(try await store.queuedLeases().map(\.id) == [lease.id])
                #expect(try await store.userUses()[owner.id!] == nil, "a waiting lease holds nothing")
                let placing = Task { try await store.placeLease(lease, on: [machine.id!], cpuOvercommit: 4) != nil }
                let abandoning = Task { try await store.abandonQueuedLease(id: lease.id!, message: "waited too long") }
                let (placed, abandoned) = (try await placing.value, try await abandoning.value)
                #expect(placed != abandoned, "round \(round): placed \(placed), abandoned \(abandoned)")
                let after = try #require(try await store.lease(id: lease.id!))
                #expect(after.queuedUntil == nil && (placed ? after.machineId == machine.id && after.state == .creating : after.state == .failed))
                #expect(try await store.queuedLeases().isEmpty)
                if placed { try await store.deleteLease(id: lease.id!) }
            }
        }
    }

    @Test("The audit trail: filtered by time and actor, paged by id, purged by age", arguments: Engine.allCases)
    func events(_ engine: Engine) async throws {
        try await withStore(engine) { store in
            let start = kept(Date() - 100)
            for index in 0..<5 {
                try await store.appendEvent(
                    Event(
                        at: start + Double(index * 10),
                        actor: index % 2 == 0 ? "ann" : "cleanup",
                        action: "a\(index)",
                        subject: "s",
                        detail: nil,
                        address: "127.0.0.1"
                    )
                )
            }
            let all = try await store.events(since: nil, actor: nil, after: nil, limit: 1000)
            #expect(all.map(\.action) == ["a0", "a1", "a2", "a3", "a4"])
            #expect(same(all[0].at, start) && all[0].address == "127.0.0.1" && all[0].detail == nil)
            #expect(try await store.events(since: start + 15, actor: nil, after: nil, limit: 1000).map(\.action) == ["a2", "a3", "a4"])
            #expect(try await store.events(since: nil, actor: "ann", after: nil, limit: 1000).map(\.action) == ["a0", "a2", "a4"])
            #expect(try await store.events(since: nil, actor: nil, after: all[1].id, limit: 2).map(\.action) == ["a2", "a3"])
            #expect(try await store.purgeEvents(before: start + 25) == 3)
            #expect(try await store.events(since: nil, actor: nil, after: nil, limit: 1000).map(\.action) == ["a3", "a4"])
        }
    }

    static func machine(_ name: String, host: String, capacity: Int = 5) -> Machine {
        Machine(
            name: name,
            login: "resalloc",
            host: host,
            port: 22,
            hostKeyType: "ssh-ed25519",
            hostKeyFingerprint: "SHA256:x",
            cpus: 2,
            memoryBytes: 1 << 30,
            capacity: capacity,
            createdAt: kept(Date())
        )
    }

    static func lease(_ name: String, owner: Int64, resource: Int64) -> Lease {
        let now = kept(Date())
        return Lease(name: name, ownerId: owner, resourceId: resource, image: "img", createdAt: now, expiresAt: now + 3600)
    }
}
