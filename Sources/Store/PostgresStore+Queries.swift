import Foundation
import PostgresNIO

// The same named operations as `AppDatabase+Queries.swift`, in PostgreSQL. Where the SQLite store
// counts on SQLite running one writer at a time, these lock the rows they decide on.

// MARK: - Users and tokens

extension PostgresStore {
    public func createUser(name: String, passwordHash: String) async throws -> User {
        try await conflict("the name \(name) is taken") {
            try await transaction { [self] connection in
                // The first user is the admin: serialise the check with other registrations.
                try await connection.query(#"LOCK TABLE "user" IN SHARE ROW EXCLUSIVE MODE"#, logger: logger)
                let isFirst = try await all(#"SELECT 1 FROM "user" LIMIT 1"#, on: connection) { _ in true }.isEmpty
                var user = User(name: name, passwordHash: passwordHash, role: isFirst ? .admin : .user, status: isFirst ? .active : .pending)
                user.id = try await all(
                    """
                    INSERT INTO "user" (name, "passwordHash", role, status, "createdAt")
                    VALUES (\(user.name), \(user.passwordHash), \(user.role.rawValue), \(user.status.rawValue), \(user.createdAt)) RETURNING id
                    """,
                    on: connection
                ) { try $0.get("id", Int64.self) }.first
                return user
            }
        }
    }

    public func user(named name: String) async throws -> User? {
        try await all(#"SELECT * FROM "user" WHERE name = \#(name)"#, Self.user).first
    }

    public func users() async throws -> [User] {
        try await all(#"SELECT * FROM "user" ORDER BY id"#, Self.user)
    }

    public func updateUser(named name: String, status: User.Status?, role: User.Role?) async throws -> User {
        let updated = try await all(
            """
            UPDATE "user" SET status = COALESCE(\(status?.rawValue), status), role = COALESCE(\(role?.rawValue), role)
            WHERE name = \(name) RETURNING *
            """,
            Self.user
        )
        guard let user = updated.first else { throw StoreError.notFound("no user \(name)") }
        return user
    }

    public func createToken(userID: Int64, hash: String, expiresAt: Date) async throws {
        try await self.query(
            #"INSERT INTO token ("userId", hash, "createdAt", "expiresAt") VALUES (\#(userID), \#(hash), \#(Date()), \#(expiresAt))"#,
            logger: logger
        )
    }

    public func user(forTokenHash hash: String, at now: Date) async throws -> User? {
        try await all(
            #"SELECT "user".* FROM token JOIN "user" ON "user".id = token."userId" WHERE token.hash = \#(hash) AND token."expiresAt" > \#(now)"#,
            Self.user
        ).first
    }

    public func setUserDisabled(named name: String, _ disabled: Bool) async throws -> User {
        let updated = try await all(#"UPDATE "user" SET disabled = \#(disabled) WHERE name = \#(name) RETURNING *"#, Self.user)
        guard let user = updated.first else { throw StoreError.notFound("no user \(name)") }
        return user
    }

    public func purgeTokens(expiredBefore date: Date) async throws -> Int {
        try await changes(#"DELETE FROM token WHERE "expiresAt" < \#(date) RETURNING id"#)
    }

    public func deleteToken(hash: String) async throws -> Bool {
        try await changes("DELETE FROM token WHERE hash = \(hash) RETURNING id") > 0
    }

    static func user(_ row: PostgresRandomAccessRow) throws -> User {
        var user = User(
            name: try row.get("name"),
            passwordHash: try row.get("passwordHash"),
            role: User.Role(rawValue: try row.get("role")) ?? .user,
            status: User.Status(rawValue: try row.get("status")) ?? .pending,
            createdAt: try row.get("createdAt")
        )
        user.id = try row.get("id")
        user.disabled = try row.get("disabled")
        user.leaseLimit = try row.get("leaseLimit")
        user.jobLimit = try row.get("jobLimit")
        user.memoryLimit = try row.get("memoryLimit")
        user.milliCPULimit = try row.get("milliCPULimit")
        return user
    }
}

// MARK: - Resources

extension PostgresStore {
    public func createResource(name: String, dockerfile: Data) async throws -> Resource {
        try await conflict("a resource named \(name) exists already") {
            var resource = Resource(name: name, dockerfile: dockerfile)
            resource.id = try await all(
                #"INSERT INTO resource (name, dockerfile, "poolSize", "createdAt") VALUES (\#(name), \#(dockerfile), 0, \#(resource.createdAt)) RETURNING id"#
            ) { try $0.get("id", Int64.self) }.first
            return resource
        }
    }

    public func resources() async throws -> [Resource] {
        try await all("SELECT * FROM resource ORDER BY name", Self.resource)
    }

    public func resource(named name: String) async throws -> Resource? {
        try await all("SELECT * FROM resource WHERE name = \(name)", Self.resource).first
    }

    public func setPoolSize(resourceNamed name: String, to size: Int) async throws -> Resource {
        try await updated(name, all(#"UPDATE resource SET "poolSize" = \#(size) WHERE name = \#(name) RETURNING *"#, Self.resource))
    }

    public func setLimits(resourceNamed name: String, to limits: ResourceLimits) async throws -> Resource {
        try await updated(
            name,
            all(
                """
                UPDATE resource SET "memoryBytes" = \(limits.memoryBytes), "milliCPUs" = \(limits.milliCPUs), pids = \(limits.pids)
                WHERE name = \(name) RETURNING *
                """,
                Self.resource
            )
        )
    }

    public func setIdle(resourceNamed name: String, to seconds: Int?) async throws -> Resource {
        try await updated(name, all(#"UPDATE resource SET "idleSeconds" = \#(seconds) WHERE name = \#(name) RETURNING *"#, Self.resource))
    }

    public func updateDockerfile(resourceNamed name: String, to dockerfile: Data) async throws -> Resource {
        try await updated(name, all("UPDATE resource SET dockerfile = \(dockerfile) WHERE name = \(name) RETURNING *", Self.resource))
    }

    private func updated(_ name: String, _ rows: [Resource]) throws -> Resource {
        guard let resource = rows.first else { throw StoreError.notFound("no resource \(name)") }
        return resource
    }

    public func deleteResource(named name: String) async throws {
        try await conflict("resource \(name) is used by leases; delete them first") {
            guard try await changes("DELETE FROM resource WHERE name = \(name) RETURNING id") > 0 else {
                throw StoreError.notFound("no resource \(name)")
            }
        }
    }

    static func resource(_ row: PostgresRandomAccessRow) throws -> Resource {
        var resource = Resource(
            name: try row.get("name"),
            dockerfile: try row.get("dockerfile"),
            poolSize: try row.get("poolSize"),
            createdAt: try row.get("createdAt")
        )
        resource.id = try row.get("id")
        resource.limits = ResourceLimits(memoryBytes: try row.get("memoryBytes"), milliCPUs: try row.get("milliCPUs"), pids: try row.get("pids"))
        resource.idleSeconds = try row.get("idleSeconds")
        return resource
    }
}

// MARK: - Machines

extension PostgresStore {
    public func createMachine(_ machine: Machine) async throws -> Machine {
        try await conflict("a machine named \(machine.name), or at \(machine.host):\(machine.port), exists already") {
            var machine = machine
            machine.id = try await all(
                """
                INSERT INTO machine (name, login, host, port, "hostKeyType", "hostKeyFingerprint", cpus, "memoryBytes", capacity, healthy,
                    "lastError", "createdAt", "lastContactAt")
                VALUES (\(machine.name), \(machine.login), \(machine.host), \(machine.port), \(machine.hostKeyType), \(machine.hostKeyFingerprint),
                    \(machine.cpus), \(machine.memoryBytes), \(machine.capacity), \(machine.healthy), \(machine.lastError), \(machine.createdAt),
                    \(machine.lastContactAt))
                RETURNING id
                """
            ) { try $0.get("id", Int64.self) }.first
            return machine
        }
    }

    public func machines() async throws -> [Machine] {
        try await all("SELECT * FROM machine ORDER BY name", Self.machine)
    }

    public func machine(named name: String) async throws -> Machine? {
        try await all("SELECT * FROM machine WHERE name = \(name)", Self.machine).first
    }

    public func machine(id: Int64) async throws -> Machine? {
        try await all("SELECT * FROM machine WHERE id = \(id)", Self.machine).first
    }

    public func setMachineHealth(id: Int64, healthy: Bool, error: String?, at now: Date) async throws {
        if healthy {
            try await self.query(
                #"UPDATE machine SET healthy = TRUE, "lastError" = NULL, "lastContactAt" = \#(now) WHERE id = \#(id)"#,
                logger: logger
            )
        } else {
            try await self.query(#"UPDATE machine SET healthy = FALSE, "lastError" = \#(error) WHERE id = \#(id)"#, logger: logger)
        }
    }

    public func deleteMachine(id: Int64) async throws {
        try await conflict("the machine still has leases") {
            _ = try await changes("DELETE FROM machine WHERE id = \(id) RETURNING id")
        }
    }

    public func machineLoads() async throws -> [Int64: MachineLoad] {
        try await loads(on: nil)
    }

    /// Active leases and warm slots per machine id, with the sums of their limits.
    func loads(on connection: PostgresConnection?) async throws -> [Int64: MachineLoad] {
        let query: PostgresQuery = """
            SELECT "machineId", COUNT(*) AS n, SUM("memoryBytes")::BIGINT AS memory, SUM("milliCPUs")::BIGINT AS cpus FROM (
                SELECT "machineId", "memoryBytes", "milliCPUs" FROM lease
                WHERE "machineId" IS NOT NULL AND state IN ('creating', 'running', 'deleting')
                UNION ALL SELECT "machineId", "memoryBytes", "milliCPUs" FROM "poolSlot"
                UNION ALL SELECT "machineId", "memoryBytes", "milliCPUs" FROM job WHERE "machineId" IS NOT NULL AND state IN ('starting', 'running')
            ) AS occupied GROUP BY "machineId"
            """
        let make: @Sendable (PostgresRandomAccessRow) throws -> (Int64, MachineLoad) = {
            (try $0.get("machineId"), MachineLoad(containers: try $0.get("n"), memoryBytes: try $0.get("memory"), milliCPUs: try $0.get("cpus")))
        }
        let rows: [(Int64, MachineLoad)]
        if let connection { rows = try await all(query, on: connection, make) } else { rows = try await all(query, make) }
        return Dictionary(rows, uniquingKeysWith: { a, _ in a })
    }

    static func machine(_ row: PostgresRandomAccessRow) throws -> Machine {
        var machine = Machine(
            name: try row.get("name"),
            login: try row.get("login"),
            host: try row.get("host"),
            port: try row.get("port"),
            hostKeyType: try row.get("hostKeyType"),
            hostKeyFingerprint: try row.get("hostKeyFingerprint"),
            cpus: try row.get("cpus"),
            memoryBytes: try row.get("memoryBytes"),
            capacity: try row.get("capacity"),
            healthy: try row.get("healthy"),
            lastError: try row.get("lastError"),
            createdAt: try row.get("createdAt")
        )
        machine.id = try row.get("id")
        machine.lastContactAt = try row.get("lastContactAt")
        return machine
    }
}

// MARK: - Leases

extension PostgresStore {
    public func createLease(_ lease: Lease) async throws -> Lease {
        try await conflict("you already have a lease named \(lease.name)") {
            try await transaction { [self] connection in
                try await connection.query(
                    #"DELETE FROM lease WHERE "ownerId" = \#(lease.ownerId) AND name = \#(lease.name) AND state = 'failed'"#,
                    logger: logger
                )
                var lease = lease
                lease.id = try await all(
                    """
                    INSERT INTO lease (name, "ownerId", "resourceId", "machineId", image, "containerId", state, message, "createdAt", "expiresAt",
                        "incarnationId", "memoryBytes", "milliCPUs", "idleSeconds", "activeAt", "queuedUntil")
                    VALUES (\(lease.name), \(lease.ownerId), \(lease.resourceId), \(lease.machineId), \(lease.image), \(lease.containerId),
                        \(lease.state.rawValue), \(lease.message), \(lease.createdAt), \(lease.expiresAt), \(lease.incarnationId),
                        \(lease.memoryBytes), \(lease.milliCPUs), \(lease.idleSeconds), \(lease.activeAt), \(lease.queuedUntil))
                    RETURNING id
                    """,
                    on: connection
                ) { try $0.get("id", Int64.self) }.first
                return lease
            }
        }
    }

    /// The candidates' rows are locked (in id order, so that two placements cannot deadlock)
    /// while their room is counted and the lease written: the same lock as `addPoolSlot`.
    public func placeLease(_ lease: Lease, on machineIDs: [Int64], cpuOvercommit: Double) async throws -> Machine? {
        guard !machineIDs.isEmpty else { return nil }
        return try await transaction { [self] connection in
            let locked = try await all("SELECT * FROM machine WHERE id = ANY(\(machineIDs)) ORDER BY id FOR UPDATE", on: connection, Self.machine)
            let machines = Dictionary(uniqueKeysWithValues: locked.map { ($0.id!, $0) })
            let loads = try await loads(on: connection)
            for id in machineIDs {
                guard let machine = machines[id],
                    loads[id, default: MachineLoad()].refusal(
                        of: machine,
                        memoryBytes: lease.memoryBytes,
                        milliCPUs: lease.milliCPUs,
                        cpuOvercommit: cpuOvercommit
                    ) == nil
                else { continue }
                let placed = try await changes(
                    #"""
                    UPDATE lease SET "machineId" = \#(id), "queuedUntil" = NULL WHERE id = \#(lease.id) AND state = 'creating' AND "machineId" IS NULL
                    RETURNING id
                    """#,
                    on: connection
                )
                return placed > 0 ? machine : nil
            }
            return nil
        }
    }

    /// Writes the whole row; `StoreError.notFound` if it was deleted meanwhile.
    public func updateLease(_ lease: Lease) async throws {
        guard try await changes(Self.updateQuery(lease, returning: true)) > 0 else { throw StoreError.notFound("lease \(lease.name) is gone") }
    }

    func update(_ lease: Lease, on connection: PostgresConnection?) async throws {
        let query = Self.updateQuery(lease)
        if let connection { try await connection.query(query, logger: logger) } else { try await self.query(query, logger: logger) }
    }

    static func updateQuery(_ lease: Lease, returning: Bool = false) -> PostgresQuery {
        """
        UPDATE lease SET name = \(lease.name), "ownerId" = \(lease.ownerId), "resourceId" = \(lease.resourceId), "machineId" = \(lease.machineId),
            image = \(lease.image), "containerId" = \(lease.containerId), state = \(lease.state.rawValue), message = \(lease.message),
            "createdAt" = \(lease.createdAt), "expiresAt" = \(lease.expiresAt), "incarnationId" = \(lease.incarnationId),
            "memoryBytes" = \(lease.memoryBytes), "milliCPUs" = \(lease.milliCPUs), "idleSeconds" = \(lease.idleSeconds),
            "activeAt" = \(lease.activeAt), "queuedUntil" = \(lease.queuedUntil)
        WHERE id = \(lease.id)\(unescaped: returning ? " RETURNING id" : "")
        """
    }

    public func finishCreation(id: Int64, running: Bool, containerID: String?, message: String?) async throws -> Bool {
        let state = running ? "running" : "failed"
        return try await changes(
            #"UPDATE lease SET state = \#(state), "containerId" = \#(containerID), message = \#(message) WHERE id = \#(id) AND state = 'creating' RETURNING id"#
        ) > 0
    }

    public func setLeaseState(id: Int64, expecting expected: Lease.State, to state: Lease.State, message: String?) async throws -> Bool {
        try await changes(
            #"UPDATE lease SET state = \#(state.rawValue), message = \#(message) WHERE id = \#(id) AND state = \#(expected.rawValue) RETURNING id"#
        ) > 0
    }

    public func extendLease(id: Int64, to expiresAt: Date) async throws -> Bool {
        try await changes(#"UPDATE lease SET "expiresAt" = \#(expiresAt) WHERE id = \#(id) AND state = 'running' RETURNING id"#) > 0
    }

    public func claimExpiredLease(id: Int64, at now: Date, incarnationID: String?) async throws -> Bool {
        try await changes(
            #"UPDATE lease SET state = 'deleting', "incarnationId" = \#(incarnationID) WHERE id = \#(id) AND "expiresAt" <= \#(now) AND state != 'deleting' RETURNING id"#
        ) > 0
    }

    public func deleteLease(id: Int64) async throws {
        try await self.query("DELETE FROM lease WHERE id = \(id)", logger: logger)
    }

    public func lease(id: Int64) async throws -> Lease? {
        try await all("SELECT * FROM lease WHERE id = \(id)", Self.lease).first
    }

    public func leaseListings(ownerID: Int64?, name: String?, machineID: Int64?) async throws -> [LeaseListing] {
        try await all(
            """
            SELECT lease.*, "user".name AS "ownerName", resource.name AS "resourceName", machine.name AS "machineName"
            FROM lease JOIN "user" ON "user".id = lease."ownerId" JOIN resource ON resource.id = lease."resourceId"
            LEFT JOIN machine ON machine.id = lease."machineId"
            WHERE (\(ownerID)::BIGINT IS NULL OR lease."ownerId" = \(ownerID))
              AND (\(name)::TEXT IS NULL OR lease.name = \(name))
              AND (\(machineID)::BIGINT IS NULL OR lease."machineId" = \(machineID))
            ORDER BY lease.id
            """
        ) { row in
            LeaseListing(
                lease: try Self.lease(row),
                owner: try row.get("ownerName"),
                resource: try row.get("resourceName"),
                machine: try row.get("machineName")
            )
        }
    }

    public func leaseListing(ownerID: Int64, name: String) async throws -> LeaseListing? {
        try await leaseListings(ownerID: ownerID, name: name, machineID: nil).first
    }

    static func lease(_ row: PostgresRandomAccessRow) throws -> Lease {
        var lease = Lease(
            name: try row.get("name"),
            ownerId: try row.get("ownerId"),
            resourceId: try row.get("resourceId"),
            image: try row.get("image"),
            createdAt: try row.get("createdAt"),
            expiresAt: try row.get("expiresAt"),
            incarnationId: try row.get("incarnationId")
        )
        lease.id = try row.get("id")
        lease.machineId = try row.get("machineId")
        lease.containerId = try row.get("containerId")
        lease.state = Lease.State(rawValue: try row.get("state")) ?? .failed
        lease.message = try row.get("message")
        lease.memoryBytes = try row.get("memoryBytes")
        lease.milliCPUs = try row.get("milliCPUs")
        lease.idleSeconds = try row.get("idleSeconds")
        lease.activeAt = try row.get("activeAt")
        lease.queuedUntil = try row.get("queuedUntil")
        return lease
    }
}

// MARK: - Users' SSH keys

extension PostgresStore {
    public func createUserKey(_ key: UserKey) async throws -> UserKey {
        try await conflict("that key is registered already, or you have a key named \(key.name)") {
            var key = key
            key.id = try await all(
                """
                INSERT INTO "userKey" ("userId", name, algorithm, blob, fingerprint, "createdAt")
                VALUES (\(key.userId), \(key.name), \(key.algorithm), \(key.blob), \(key.fingerprint), \(key.createdAt)) RETURNING id
                """
            ) { try $0.get("id", Int64.self) }.first
            return key
        }
    }

    public func userKeys(userId: Int64) async throws -> [UserKey] {
        try await all(#"SELECT * FROM "userKey" WHERE "userId" = \#(userId) ORDER BY name"#, Self.userKey)
    }

    public func deleteUserKey(userId: Int64, name: String) async throws {
        guard try await changes(#"DELETE FROM "userKey" WHERE "userId" = \#(userId) AND name = \#(name) RETURNING id"#) > 0 else {
            throw StoreError.notFound("you have no key named \(name)")
        }
    }

    public func user(withKeyBlob blob: String) async throws -> User? {
        try await all(#"SELECT "user".* FROM "userKey" JOIN "user" ON "user".id = "userKey"."userId" WHERE "userKey".blob = \#(blob)"#, Self.user)
            .first
    }

    static func userKey(_ row: PostgresRandomAccessRow) throws -> UserKey {
        var key = UserKey(
            userId: try row.get("userId"),
            name: try row.get("name"),
            algorithm: try row.get("algorithm"),
            blob: try row.get("blob"),
            fingerprint: try row.get("fingerprint"),
            createdAt: try row.get("createdAt")
        )
        key.id = try row.get("id")
        return key
    }
}

// MARK: - Incarnations

extension PostgresStore {
    public func registerIncarnation(_ incarnation: Incarnation) async throws {
        try await self.query(
            """
            INSERT INTO incarnation (id, host, pid, "heartbeatSeconds", "startedAt", "heartbeatAt", "stoppedAt")
            VALUES (\(incarnation.id), \(incarnation.host), \(Int(incarnation.pid)), \(incarnation.heartbeatSeconds), \(incarnation.startedAt),
                \(incarnation.heartbeatAt), \(incarnation.stoppedAt))
            """,
            logger: logger
        )
    }

    public func claimBuild(key: String, incarnationID: String, at now: Date, replacing gone: [String]) async throws -> Bool {
        let holders = gone + [incarnationID]
        try await self.query(#"DELETE FROM "buildLock" WHERE key = \#(key) AND "incarnationId" = ANY(\#(holders))"#, logger: logger)
        return try await changes(
            #"INSERT INTO "buildLock" (key, "incarnationId", "startedAt") VALUES (\#(key), \#(incarnationID), \#(now)) ON CONFLICT (key) DO NOTHING RETURNING key"#
        ) > 0
    }

    public func releaseBuild(key: String, incarnationID: String) async throws {
        try await self.query(#"DELETE FROM "buildLock" WHERE key = \#(key) AND "incarnationId" = \#(incarnationID)"#, logger: logger)
    }

    public func now() async throws -> Date {
        guard let now = try await all("SELECT statement_timestamp() AS now", { try $0.get("now", Date.self) }).first else {
            throw StoreError.unavailable("PostgreSQL did not say its time")
        }
        return now
    }

    public func heartbeat(incarnationID: String, at now: Date) async throws -> Bool {
        try await changes(#"UPDATE incarnation SET "heartbeatAt" = \#(now) WHERE id = \#(incarnationID) RETURNING id"#) > 0
    }

    public func stopIncarnation(id: String, at now: Date) async throws {
        try await self.query(#"UPDATE incarnation SET "stoppedAt" = \#(now) WHERE id = \#(id)"#, logger: logger)
    }

    public func incarnations() async throws -> [Incarnation] {
        try await all(#"SELECT * FROM incarnation ORDER BY "startedAt""#) { row in
            var incarnation = Incarnation(
                id: try row.get("id"),
                host: try row.get("host"),
                pid: Int32(truncatingIfNeeded: try row.get("pid", Int.self)),
                heartbeatSeconds: try row.get("heartbeatSeconds"),
                startedAt: try row.get("startedAt")
            )
            incarnation.heartbeatAt = try row.get("heartbeatAt")
            incarnation.stoppedAt = try row.get("stoppedAt")
            return incarnation
        }
    }

    public func purgeIncarnations(before date: Date) async throws -> Int {
        try await changes(
            """
            DELETE FROM incarnation WHERE COALESCE("stoppedAt", "heartbeatAt") < \(date)
            AND id NOT IN (SELECT "incarnationId" FROM lease WHERE "incarnationId" IS NOT NULL) RETURNING id
            """
        )
    }
}

// MARK: - Warm pools

extension PostgresStore {
    public func poolSlots(machineID: Int64?) async throws -> [PoolSlot] {
        try await all(#"SELECT * FROM "poolSlot" WHERE (\#(machineID)::BIGINT IS NULL OR "machineId" = \#(machineID)) ORDER BY id"#, Self.slot)
    }

    /// The machine's row is locked while its room is counted, so two masters filling pools at
    /// once never put more on it than its capacity.
    public func addPoolSlot(_ slot: PoolSlot, cpuOvercommit: Double) async throws -> PoolSlot? {
        try await transaction { [self] connection in
            let machines = try await all("SELECT * FROM machine WHERE id = \(slot.machineId) FOR UPDATE", on: connection, Self.machine)
            guard let machine = machines.first,
                try await loads(on: connection)[slot.machineId, default: MachineLoad()].refusal(
                    of: machine,
                    memoryBytes: slot.memoryBytes,
                    milliCPUs: slot.milliCPUs,
                    cpuOvercommit: cpuOvercommit
                ) == nil
            else { return nil }
            var slot = slot
            slot.id = try await all(
                """
                INSERT INTO "poolSlot" ("resourceId", "machineId", image, state, "containerId", "leaseId", "incarnationId", "createdAt",
                    "memoryBytes", "milliCPUs")
                VALUES (\(slot.resourceId), \(slot.machineId), \(slot.image), \(slot.state.rawValue), \(slot.containerId), \(slot.leaseId),
                    \(slot.incarnationId), \(slot.createdAt), \(slot.memoryBytes), \(slot.milliCPUs))
                RETURNING id
                """,
                on: connection
            ) { try $0.get("id", Int64.self) }.first
            return slot
        }
    }

    public func markPoolSlotReady(id: Int64, containerID: String) async throws -> Bool {
        try await changes(
            #"UPDATE "poolSlot" SET state = 'ready', "containerId" = \#(containerID) WHERE id = \#(id) AND state = 'starting' RETURNING id"#
        ) > 0
    }

    /// `FOR UPDATE SKIP LOCKED`: two masters handing out at once take two different slots.
    public func claimPoolSlot(image: String, resourceID: Int64, lease: Lease, incarnationID: String) async throws -> PoolSlot? {
        try await transaction { [self] connection in
            let found = try await all(
                """
                SELECT "poolSlot".* FROM "poolSlot" JOIN machine ON machine.id = "poolSlot"."machineId"
                WHERE "poolSlot"."resourceId" = \(resourceID) AND "poolSlot".image = \(image) AND "poolSlot".state = 'ready' AND machine.healthy
                  AND "poolSlot"."memoryBytes" = \(lease.memoryBytes) AND "poolSlot"."milliCPUs" = \(lease.milliCPUs)
                ORDER BY "poolSlot"."createdAt", "poolSlot".id LIMIT 1 FOR UPDATE OF "poolSlot" SKIP LOCKED
                """,
                on: connection,
                Self.slot
            )
            guard var slot = found.first else { return nil }
            slot.state = .claimed
            slot.leaseId = lease.id
            slot.incarnationId = incarnationID
            try await connection.query(
                #"UPDATE "poolSlot" SET state = 'claimed', "leaseId" = \#(lease.id), "incarnationId" = \#(incarnationID) WHERE id = \#(slot.id)"#,
                logger: logger
            )
            var lease = lease
            lease.machineId = slot.machineId
            try await update(lease, on: connection)
            return slot
        }
    }

    public func deletePoolSlot(id: Int64) async throws {
        try await self.query(#"DELETE FROM "poolSlot" WHERE id = \#(id)"#, logger: logger)
    }

    static func slot(_ row: PostgresRandomAccessRow) throws -> PoolSlot {
        var slot = PoolSlot(
            resourceId: try row.get("resourceId"),
            machineId: try row.get("machineId"),
            image: try row.get("image"),
            incarnationId: try row.get("incarnationId", String?.self) ?? "",
            createdAt: try row.get("createdAt")
        )
        slot.id = try row.get("id")
        slot.state = PoolSlot.State(rawValue: try row.get("state")) ?? .starting
        slot.containerId = try row.get("containerId")
        slot.leaseId = try row.get("leaseId")
        slot.incarnationId = try row.get("incarnationId")
        slot.memoryBytes = try row.get("memoryBytes")
        slot.milliCPUs = try row.get("milliCPUs")
        return slot
    }
}

// MARK: - Audit trail

extension PostgresStore {
    public func appendEvent(_ event: Event) async throws {
        try await self.query(
            """
            INSERT INTO event (at, actor, action, subject, detail, address)
            VALUES (\(event.at), \(event.actor), \(event.action), \(event.subject), \(event.detail), \(event.address))
            """,
            logger: logger
        )
    }

    public func events(since: Date?, actor: String?, after: Int64?, limit: Int) async throws -> [Event] {
        try await all(
            """
            SELECT * FROM event
            WHERE (\(since)::TIMESTAMPTZ IS NULL OR at >= \(since)) AND (\(actor)::TEXT IS NULL OR actor = \(actor))
              AND (\(after)::BIGINT IS NULL OR id > \(after))
            ORDER BY id LIMIT \(limit)
            """
        ) { row in
            var event = Event(
                at: try row.get("at"),
                actor: try row.get("actor"),
                action: try row.get("action"),
                subject: try row.get("subject"),
                detail: try row.get("detail"),
                address: try row.get("address")
            )
            event.id = try row.get("id")
            return event
        }
    }

    public func purgeEvents(before date: Date) async throws -> Int {
        try await changes("DELETE FROM event WHERE at < \(date) RETURNING id")
    }
}
