import Foundation
import GRDB

// MARK: - Users and tokens

extension AppDatabase {
    /// Switches a user off or on again; throws `notFound` for an unknown name.
    public func setUserDisabled(named name: String, _ disabled: Bool) async throws -> User {
        try await write { db in
            guard var user = try User.filter(User.Columns.name == name).fetchOne(db) else { throw StoreError.notFound("no user \(name)") }
            user.disabled = disabled
            try user.update(db)
            return user
        }
    }

    /// Deletes tokens that expired before `date`; returns how many.
    public func purgeTokens(expiredBefore date: Date) async throws -> Int {
        try await write { db in try Token.filter(Token.Columns.expiresAt < date).deleteAll(db) }
    }

    /// Creates a user; the first one ever is an active admin, the others wait for approval.
    public func createUser(name: String, passwordHash: String) async throws -> User {
        try await write(conflict: "the name \(name) is taken") { db in
            let isFirst = try User.fetchCount(db) == 0
            var user = User(name: name, passwordHash: passwordHash, role: isFirst ? .admin : .user, status: isFirst ? .active : .pending)
            try user.insert(db)
            return user
        }
    }

    public func user(named name: String) async throws -> User? {
        try await read { db in try User.filter(User.Columns.name == name).fetchOne(db) }
    }

    public func users() async throws -> [User] {
        try await read { db in try User.order(Column("id")).fetchAll(db) }
    }

    /// Sets a user's status or role; throws `notFound` for an unknown name.
    public func updateUser(named name: String, status: User.Status? = nil, role: User.Role? = nil) async throws -> User {
        try await write { db in
            guard var user = try User.filter(User.Columns.name == name).fetchOne(db) else { throw StoreError.notFound("no user \(name)") }
            if let status { user.status = status }
            if let role { user.role = role }
            try user.update(db)
            return user
        }
    }

    public func createToken(userID: Int64, hash: String, expiresAt: Date) async throws {
        try await write { db in
            var token = Token(userId: userID, hash: hash, createdAt: Date(), expiresAt: expiresAt)
            try token.insert(db)
        }
    }

    /// The active user holding an unexpired token with this hash.
    public func user(forTokenHash hash: String, at now: Date = Date()) async throws -> User? {
        try await read { db in
            try User.fetchOne(
                db,
                sql: """
                    SELECT user.* FROM token JOIN user ON user.id = token.userId
                    WHERE token.hash = ? AND token.expiresAt > ?
                    """,
                arguments: [hash, now]
            )
        }
    }

    /// Revokes a token; returns whether it existed.
    @discardableResult
    public func deleteToken(hash: String) async throws -> Bool {
        try await write { db in try Token.filter(Token.Columns.hash == hash).deleteAll(db) > 0 }
    }
}

// MARK: - Resources

extension AppDatabase {
    public func createResource(name: String, dockerfile: Data) async throws -> Resource {
        try await write(conflict: "a resource named \(name) exists already") { db in
            var resource = Resource(name: name, dockerfile: dockerfile)
            try resource.insert(db)
            return resource
        }
    }

    public func resources() async throws -> [Resource] {
        try await read { db in try Resource.order(Resource.Columns.name).fetchAll(db) }
    }

    public func resource(named name: String) async throws -> Resource? {
        try await read { db in try Resource.filter(Resource.Columns.name == name).fetchOne(db) }
    }

    /// Sets how many warm containers of the resource the master keeps.
    public func setPoolSize(resourceNamed name: String, to size: Int) async throws -> Resource {
        try await updateResource(named: name) { $0.poolSize = size }
    }

    /// Sets the limits of the resource's containers; leases already running keep theirs.
    public func setLimits(resourceNamed name: String, to limits: ResourceLimits) async throws -> Resource {
        try await updateResource(named: name) { $0.limits = limits }
    }

    /// Replaces the resource's Dockerfile; leases made from the old one keep their image.
    public func setIdle(resourceNamed name: String, to seconds: Int?) async throws -> Resource {
        try await updateResource(named: name) { $0.idleSeconds = seconds }
    }

    public func updateDockerfile(resourceNamed name: String, to dockerfile: Data) async throws -> Resource {
        try await updateResource(named: name) { $0.dockerfile = dockerfile }
    }

    private func updateResource(named name: String, _ change: @Sendable @escaping (inout Resource) -> Void) async throws -> Resource {
        try await write { db in
            guard var resource = try Resource.filter(Resource.Columns.name == name).fetchOne(db) else {
                throw StoreError.notFound("no resource \(name)")
            }
            change(&resource)
            try resource.update(db)
            return resource
        }
    }

    public func deleteResource(named name: String) async throws {
        try await write(conflict: "resource \(name) is used by leases; delete them first") { db in
            guard try Resource.filter(Resource.Columns.name == name).deleteAll(db) > 0 else { throw StoreError.notFound("no resource \(name)") }
        }
    }
}

// MARK: - Machines

extension AppDatabase {
    public func createMachine(_ machine: Machine) async throws -> Machine {
        try await write(conflict: "a machine named \(machine.name), or at \(machine.host):\(machine.port), exists already") { db in
            var machine = machine
            try machine.insert(db)
            return machine
        }
    }

    public func machines() async throws -> [Machine] {
        try await read { db in try Machine.order(Machine.Columns.name).fetchAll(db) }
    }

    public func machine(named name: String) async throws -> Machine? {
        try await read { db in try Machine.filter(Machine.Columns.name == name).fetchOne(db) }
    }

    public func machine(id: Int64) async throws -> Machine? {
        try await read { db in try Machine.fetchOne(db, key: id) }
    }

    /// Records what a pass found: a healthy machine was reached just now.
    public func setMachineHealth(id: Int64, healthy: Bool, error: String?, at now: Date = Date()) async throws {
        try await write { db in
            if healthy {
                try db.execute(sql: "UPDATE machine SET healthy = 1, lastError = NULL, lastContactAt = ? WHERE id = ?", arguments: [now, id])
            } else {
                try db.execute(sql: "UPDATE machine SET healthy = 0, lastError = ? WHERE id = ?", arguments: [error, id])
            }
        }
    }

    /// Deletes a machine that no lease uses any more.
    public func deleteMachine(id: Int64) async throws {
        try await write(conflict: "the machine still has leases") { db in _ = try Machine.deleteOne(db, key: id) }
    }

    /// What counts against each machine's room: active (creating, running, deleting) leases and
    /// warm pool containers per machine id, with the sums of their limits.
    public func machineLoads() async throws -> [Int64: MachineLoad] {
        try await read { db in try Self.loads(db) }
    }

    static func loads(_ db: Database) throws -> [Int64: MachineLoad] {
        try Row.fetchAll(
            db,
            sql: """
                SELECT machineId, COUNT(*) AS n, SUM(memoryBytes) AS memory, SUM(milliCPUs) AS cpus FROM (
                    SELECT machineId, memoryBytes, milliCPUs FROM lease
                    WHERE machineId IS NOT NULL AND state IN ('creating', 'running', 'deleting')
                    UNION ALL SELECT machineId, memoryBytes, milliCPUs FROM poolSlot
                    UNION ALL SELECT machineId, memoryBytes, milliCPUs FROM job WHERE machineId IS NOT NULL AND state IN ('starting', 'running')
                ) GROUP BY machineId
                """
        ).reduce(into: [Int64: MachineLoad]()) {
            $0[$1["machineId"]] = MachineLoad(containers: $1["n"], memoryBytes: $1["memory"], milliCPUs: $1["cpus"])
        }
    }
}

// MARK: - Leases

extension AppDatabase {
    /// Writes a new lease in state `creating`; a name the owner already uses is a conflict,
    /// unless that lease failed, when the new one takes its place.
    public func createLease(_ lease: Lease) async throws -> Lease {
        try await write(conflict: "you already have a lease named \(lease.name)") { db in
            try db.execute(sql: "DELETE FROM lease WHERE ownerId = ? AND name = ? AND state = 'failed'", arguments: [lease.ownerId, lease.name])
            var lease = lease
            try lease.insert(db)
            return lease
        }
    }

    /// SQLite runs one write transaction at a time: the count and the update cannot interleave.
    public func placeLease(_ lease: Lease, on machineIDs: [Int64], cpuOvercommit: Double) async throws -> Machine? {
        try await write { db in
            let loads = try Self.loads(db)
            for id in machineIDs {
                guard let machine = try Machine.fetchOne(db, key: id),
                    loads[id, default: MachineLoad()].refusal(
                        of: machine,
                        memoryBytes: lease.memoryBytes,
                        milliCPUs: lease.milliCPUs,
                        cpuOvercommit: cpuOvercommit
                    ) == nil
                else { continue }
                // Only a lease still waiting for a place: one the queue gave a place meanwhile,
                // or whose wait ended, is left as it is.
                try db.execute(
                    sql: "UPDATE lease SET machineId = ?, queuedUntil = NULL WHERE id = ? AND state = 'creating' AND machineId IS NULL",
                    arguments: [id, lease.id]
                )
                return db.changesCount > 0 ? machine : nil
            }
            return nil
        }
    }

    /// Writes the whole row; `StoreError.notFound` if it was deleted meanwhile.
    public func updateLease(_ lease: Lease) async throws {
        do { try await write { db in try lease.update(db) } } catch RecordError.recordNotFound {
            throw StoreError.notFound("lease \(lease.name) is gone")
        }
    }

    public func finishCreation(id: Int64, running: Bool, containerID: String?, message: String?) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE lease SET state = ?, containerId = ?, message = ? WHERE id = ? AND state = 'creating'",
                arguments: [running ? "running" : "failed", containerID, message, id]
            )
            return db.changesCount > 0
        }
    }

    public func setLeaseState(id: Int64, expecting expected: Lease.State, to state: Lease.State, message: String?) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE lease SET state = ?, message = ? WHERE id = ? AND state = ?",
                arguments: [state.rawValue, message, id, expected.rawValue]
            )
            return db.changesCount > 0
        }
    }

    public func extendLease(id: Int64, to expiresAt: Date) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "UPDATE lease SET expiresAt = ? WHERE id = ? AND state = 'running'", arguments: [expiresAt, id])
            return db.changesCount > 0
        }
    }

    public func claimExpiredLease(id: Int64, at now: Date, incarnationID: String?) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE lease SET state = 'deleting', incarnationId = ? WHERE id = ? AND expiresAt <= ? AND state != 'deleting'",
                arguments: [incarnationID, id, now]
            )
            return db.changesCount > 0
        }
    }

    public func deleteLease(id: Int64) async throws {
        try await write { db in _ = try Lease.deleteOne(db, key: id) }
    }

    public func lease(id: Int64) async throws -> Lease? {
        try await read { db in try Lease.fetchOne(db, key: id) }
    }

    /// Leases with their owner, resource and machine names; one owner's, or everyone's when nil.
    public func leaseListings(ownerID: Int64?, name: String? = nil, machineID: Int64? = nil) async throws -> [LeaseListing] {
        try await read { db in
            var conditions: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            if let ownerID {
                conditions.append("lease.ownerId = ?")
                arguments.append(ownerID)
            }
            if let name {
                conditions.append("lease.name = ?")
                arguments.append(name)
            }
            if let machineID {
                conditions.append("lease.machineId = ?")
                arguments.append(machineID)
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT lease.*, user.name AS ownerName, resource.name AS resourceName, machine.name AS machineName
                    FROM lease JOIN user ON user.id = lease.ownerId JOIN resource ON resource.id = lease.resourceId
                    LEFT JOIN machine ON machine.id = lease.machineId \(filter) ORDER BY lease.id
                    """,
                arguments: StatementArguments(arguments)
            )
            return try rows.map { row in
                LeaseListing(lease: try Lease(row: row), owner: row["ownerName"], resource: row["resourceName"], machine: row["machineName"])
            }
        }
    }

    /// The lease `name` of `ownerID`.
    public func leaseListing(ownerID: Int64, name: String) async throws -> LeaseListing? {
        try await leaseListings(ownerID: ownerID, name: name).first
    }
}

// MARK: - Users' SSH keys

extension AppDatabase {
    public func createUserKey(_ key: UserKey) async throws -> UserKey {
        try await write(conflict: "that key is registered already, or you have a key named \(key.name)") { db in
            var key = key
            try key.insert(db)
            return key
        }
    }

    public func userKeys(userId: Int64) async throws -> [UserKey] {
        try await read { db in try UserKey.filter(UserKey.Columns.userId == userId).order(UserKey.Columns.name).fetchAll(db) }
    }

    public func deleteUserKey(userId: Int64, name: String) async throws {
        try await write { db in
            guard try UserKey.filter(UserKey.Columns.userId == userId && UserKey.Columns.name == name).deleteAll(db) > 0 else {
                throw StoreError.notFound("you have no key named \(name)")
            }
        }
    }

    /// The active user whose key has this wire form (base64), if any.
    public func user(withKeyBlob blob: String) async throws -> User? {
        try await read { db in
            guard let key = try UserKey.filter(UserKey.Columns.blob == blob).fetchOne(db) else { return nil }
            return try User.fetchOne(db, key: key.userId)
        }
    }
}

// MARK: - Incarnations

extension AppDatabase {
    public func registerIncarnation(_ incarnation: Incarnation) async throws {
        try await write { db in try incarnation.insert(db) }
    }

    /// Records that the incarnation is alive now; false when its row is gone.
    @discardableResult
    public func now() async throws -> Date { ProcessClock.now }

    public func claimBuild(key: String, incarnationID: String, at now: Date, replacing gone: [String]) async throws -> Bool {
        try await write { db in
            let holders = gone + [incarnationID]
            let marks = Array(repeating: "?", count: holders.count).joined(separator: ", ")
            try db.execute(sql: "DELETE FROM buildLock WHERE key = ? AND incarnationId IN (\(marks))", arguments: StatementArguments([key] + holders))
            try db.execute(
                sql: "INSERT OR IGNORE INTO buildLock (key, incarnationId, startedAt) VALUES (?, ?, ?)",
                arguments: [key, incarnationID, now]
            )
            return db.changesCount > 0
        }
    }

    public func releaseBuild(key: String, incarnationID: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM buildLock WHERE key = ? AND incarnationId = ?", arguments: [key, incarnationID]) }
    }

    public func heartbeat(incarnationID: String, at now: Date = Date()) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "UPDATE incarnation SET heartbeatAt = ? WHERE id = ?", arguments: [now, incarnationID])
            return db.changesCount > 0
        }
    }

    public func stopIncarnation(id: String, at now: Date = Date()) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE incarnation SET stoppedAt = ? WHERE id = ?", arguments: [now, id])
        }
    }

    public func incarnations() async throws -> [Incarnation] {
        try await read { db in try Incarnation.order(Column("startedAt")).fetchAll(db) }
    }

    /// Forgets incarnations that stopped, or were last heard of, before `date` and that no
    /// lease names any more.
    @discardableResult
    public func purgeIncarnations(before date: Date) async throws -> Int {
        try await write { db in
            try db.execute(
                sql: """
                    DELETE FROM incarnation WHERE COALESCE(stoppedAt, heartbeatAt) < ?
                    AND id NOT IN (SELECT incarnationId FROM lease WHERE incarnationId IS NOT NULL)
                    """,
                arguments: [date]
            )
            return db.changesCount
        }
    }
}

// MARK: - Warm pools

extension AppDatabase {
    public func poolSlots(machineID: Int64? = nil) async throws -> [PoolSlot] {
        try await read { db in
            var request = PoolSlot.order(Column("id"))
            if let machineID { request = request.filter(Column("machineId") == machineID) }
            return try request.fetchAll(db)
        }
    }

    /// Writes a `starting` slot on the machine if it has room (leases and slots below its
    /// capacity), in one transaction; nil when it has none.
    public func addPoolSlot(_ slot: PoolSlot, cpuOvercommit: Double) async throws -> PoolSlot? {
        try await write { db in
            guard let machine = try Machine.fetchOne(db, key: slot.machineId),
                try Self.loads(db)[slot.machineId, default: MachineLoad()].refusal(
                    of: machine,
                    memoryBytes: slot.memoryBytes,
                    milliCPUs: slot.milliCPUs,
                    cpuOvercommit: cpuOvercommit
                ) == nil
            else { return nil }
            var slot = slot
            try slot.insert(db)
            return slot
        }
    }

    /// Marks a started slot ready; false when its row is gone (drained meanwhile).
    public func markPoolSlotReady(id: Int64, containerID: String) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE poolSlot SET state = 'ready', containerId = ? WHERE id = ? AND state = 'starting'",
                arguments: [containerID, id]
            )
            return db.changesCount > 0
        }
    }

    /// Claims the oldest ready slot of `image` on a healthy machine for the lease, and places
    /// the lease on that machine, in one transaction: no two leases get one slot.
    public func claimPoolSlot(image: String, resourceID: Int64, lease: Lease, incarnationID: String) async throws -> PoolSlot? {
        try await write { db in
            guard
                var slot = try PoolSlot.fetchOne(
                    db,
                    sql: """
                        SELECT poolSlot.* FROM poolSlot JOIN machine ON machine.id = poolSlot.machineId
                        WHERE poolSlot.resourceId = ? AND poolSlot.image = ? AND poolSlot.state = 'ready' AND machine.healthy
                          AND poolSlot.memoryBytes = ? AND poolSlot.milliCPUs = ?
                        ORDER BY poolSlot.createdAt, poolSlot.id LIMIT 1
                        """,
                    arguments: [resourceID, image, lease.memoryBytes, lease.milliCPUs]
                )
            else { return nil }
            slot.state = .claimed
            slot.leaseId = lease.id
            slot.incarnationId = incarnationID
            try slot.update(db)
            var lease = lease
            lease.machineId = slot.machineId
            try lease.update(db)
            return slot
        }
    }

    public func deletePoolSlot(id: Int64) async throws {
        try await write { db in _ = try PoolSlot.deleteOne(db, key: id) }
    }
}

// MARK: - Audit trail

extension AppDatabase {
    public func appendEvent(_ event: Event) async throws {
        try await write { db in
            var event = event
            try event.insert(db)
        }
    }

    /// Events oldest first: since `since`, of `actor` when given, after the id `after` (for
    /// paging), at most `limit`.
    public func events(since: Date? = nil, actor: String? = nil, after: Int64? = nil, limit: Int = 1000) async throws -> [Event] {
        try await read { db in
            var request = Event.order(Column("id"))
            if let since { request = request.filter(Column("at") >= since) }
            if let actor { request = request.filter(Column("actor") == actor) }
            if let after { request = request.filter(Column("id") > after) }
            return try request.limit(limit).fetchAll(db)
        }
    }

    /// Deletes events from before `date`; returns how many.
    @discardableResult
    public func purgeEvents(before date: Date) async throws -> Int {
        try await write { db in try Event.filter(Column("at") < date).deleteAll(db) }
    }
}
