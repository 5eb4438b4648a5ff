import Foundation
import GRDB

// MARK: - Jobs

extension AppDatabase {
    public func createJob(_ job: Job) async throws -> Job {
        try await write { db in
            var job = job
            try job.insert(db)
            return job
        }
    }

    public func job(id: Int64) async throws -> Job? {
        try await read { db in try Job.fetchOne(db, key: id) }
    }

    public func jobListings(ownerID: Int64?, id: Int64?, activeOnly: Bool) async throws -> [JobListing] {
        try await read { db in
            var conditions: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            if let ownerID {
                conditions.append("job.ownerId = ?")
                arguments.append(ownerID)
            }
            if let id {
                conditions.append("job.id = ?")
                arguments.append(id)
            }
            if activeOnly { conditions.append("job.state IN ('queued', 'starting', 'running')") }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT job.*, user.name AS ownerName, resource.name AS resourceName, machine.name AS machineName
                    FROM job JOIN user ON user.id = job.ownerId JOIN resource ON resource.id = job.resourceId
                    LEFT JOIN machine ON machine.id = job.machineId \(filter) ORDER BY job.id
                    """,
                arguments: StatementArguments(arguments)
            )
            return try rows.map { row in
                JobListing(job: try Job(row: row), owner: row["ownerName"], resource: row["resourceName"], machine: row["machineName"])
            }
        }
    }

    public func placeJob(id: Int64, on machineIDs: [Int64], cpuOvercommit: Double, incarnationID: String, at now: Date) async throws -> Machine? {
        try await write { db in
            guard let job = try Job.fetchOne(db, key: id), job.state == .queued else { return nil }
            let loads = try Self.loads(db)
            for machineID in machineIDs {
                guard let machine = try Machine.fetchOne(db, key: machineID),
                    loads[machineID, default: MachineLoad()].refusal(
                        of: machine,
                        memoryBytes: job.memoryBytes,
                        milliCPUs: job.milliCPUs,
                        cpuOvercommit: cpuOvercommit
                    ) == nil
                else { continue }
                try db.execute(
                    sql: "UPDATE job SET state = 'starting', machineId = ?, incarnationId = ?, startedAt = ? WHERE id = ? AND state = 'queued'",
                    arguments: [machineID, incarnationID, now, id]
                )
                return machine
            }
            return nil
        }
    }

    public func claimPoolSlot(forJob id: Int64, image: String, resourceID: Int64, incarnationID: String, at now: Date) async throws -> PoolSlot? {
        try await write { db in
            guard let job = try Job.fetchOne(db, key: id), job.state == .queued,
                var slot = try PoolSlot.fetchOne(
                    db,
                    sql: """
                        SELECT poolSlot.* FROM poolSlot JOIN machine ON machine.id = poolSlot.machineId
                        WHERE poolSlot.resourceId = ? AND poolSlot.image = ? AND poolSlot.state = 'ready' AND machine.healthy
                          AND poolSlot.memoryBytes = ? AND poolSlot.milliCPUs = ?
                        ORDER BY poolSlot.createdAt, poolSlot.id LIMIT 1
                        """,
                    arguments: [resourceID, image, job.memoryBytes, job.milliCPUs]
                )
            else { return nil }
            slot.state = .claimed
            slot.leaseId = nil
            slot.incarnationId = incarnationID
            try slot.update(db)
            try db.execute(
                sql: "UPDATE job SET state = 'starting', machineId = ?, incarnationId = ?, startedAt = ? WHERE id = ? AND state = 'queued'",
                arguments: [slot.machineId, incarnationID, now, id]
            )
            return slot
        }
    }

    public func updateJob(_ job: Job, expecting states: [Job.State]) async throws -> Bool {
        try await write { db in
            guard let current = try Job.fetchOne(db, key: job.id), states.contains(current.state) else { return false }
            var job = job
            job.logBytes = current.logBytes
            try job.update(db)
            return true
        }
    }

    public func takeOverJob(id: Int64, from previous: String?, to incarnationID: String) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE job SET incarnationId = ? WHERE id = ? AND incarnationId IS ? AND state IN ('starting', 'running')",
                arguments: [incarnationID, id, previous]
            )
            return db.changesCount > 0
        }
    }

    public func appendJobLog(_ chunks: [JobLogChunk]) async throws {
        guard !chunks.isEmpty else { return }
        try await write { db in
            for var chunk in chunks { try chunk.insert(db) }
            for (jobID, bytes) in Dictionary(chunks.map { ($0.jobId, Int64($0.data.count)) }, uniquingKeysWith: +) {
                try db.execute(sql: "UPDATE job SET logBytes = logBytes + ? WHERE id = ?", arguments: [bytes, jobID])
            }
        }
    }

    public func jobLog(jobID: Int64, after: Int64, limit: Int) async throws -> [JobLogChunk] {
        try await read { db in
            try JobLogChunk.filter(Column("jobId") == jobID && Column("id") > after).order(Column("id")).limit(limit).fetchAll(db)
        }
    }

    public func clearJobLog(jobID: Int64) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM jobLog WHERE jobId = ?", arguments: [jobID])
            try db.execute(sql: "UPDATE job SET logBytes = 0 WHERE id = ?", arguments: [jobID])
        }
    }

    public func purgeJobs(endedBefore date: Date) async throws -> Int {
        try await write { db in
            try db.execute(
                sql:
                    "DELETE FROM job WHERE endedAt < ? AND state NOT IN ('queued', 'starting', 'running') AND (containerRemoved OR containerId IS NULL)",
                arguments: [date]
            )
            return db.changesCount
        }
    }
}

// MARK: - Users' limits and the fair queue

extension AppDatabase {
    public func setUserLimits(named name: String, to limits: UserLimits) async throws -> User {
        try await write { db in
            guard var user = try User.filter(User.Columns.name == name).fetchOne(db) else { throw StoreError.notFound("no user \(name)") }
            user.limits = limits
            try user.update(db)
            return user
        }
    }

    public func userUses() async throws -> [Int64: UserUse] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT ownerId, SUM(isLease) AS leases, SUM(1 - isLease) AS jobs, SUM(memoryBytes) AS memory, SUM(milliCPUs) AS cpus FROM (
                        SELECT ownerId, 1 AS isLease, memoryBytes, milliCPUs FROM lease
                        WHERE state IN ('creating', 'running', 'deleting') AND queuedUntil IS NULL
                        UNION ALL SELECT ownerId, 0, memoryBytes, milliCPUs FROM job WHERE state IN ('starting', 'running')
                    ) GROUP BY ownerId
                    """
            ).reduce(into: [Int64: UserUse]()) {
                $0[$1["ownerId"]] = UserUse(leases: $1["leases"], jobs: $1["jobs"], memoryBytes: $1["memory"], milliCPUs: $1["cpus"])
            }
        }
    }

    public func queuedLeases() async throws -> [Lease] {
        try await read { db in
            try Lease.filter(sql: "state = 'creating' AND machineId IS NULL AND queuedUntil IS NOT NULL").order(Column("createdAt"), Column("id"))
                .fetchAll(db)
        }
    }

    public func abandonQueuedLease(id: Int64, message: String) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE lease SET state = 'failed', message = ?, queuedUntil = NULL WHERE id = ? AND state = 'creating' AND machineId IS NULL",
                arguments: [message, id]
            )
            return db.changesCount > 0
        }
    }

    public func touchLeases(ids: [Int64], at now: Date) async throws {
        guard !ids.isEmpty else { return }
        try await write { db in
            try db.execute(
                sql: "UPDATE lease SET activeAt = ? WHERE id IN (\(databaseQuestionMarks(count: ids.count)))",
                arguments: StatementArguments([now] + ids)
            )
        }
    }
}
