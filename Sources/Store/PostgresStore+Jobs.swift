import Foundation
import PostgresNIO

// MARK: - Jobs

extension PostgresStore {
    public func createJob(_ job: Job) async throws -> Job {
        var job = job
        job.id = try await all(
            """
            INSERT INTO job (name, "ownerId", "resourceId", image, command, state, "memoryBytes", "milliCPUs", "ttlSeconds", "createdAt",
                "awaitingInput", "keepsContainer")
            VALUES (\(job.name), \(job.ownerId), \(job.resourceId), \(job.image), \(job.command), \(job.state.rawValue), \(job.memoryBytes),
                \(job.milliCPUs), \(job.ttlSeconds), \(job.createdAt), \(job.awaitingInput), \(job.keepsContainer))
            RETURNING id
            """
        ) { try $0.get("id", Int64.self) }.first
        return job
    }

    public func job(id: Int64) async throws -> Job? {
        try await all("SELECT * FROM job WHERE id = \(id)", Self.job).first
    }

    public func jobListings(ownerID: Int64?, id: Int64?, activeOnly: Bool) async throws -> [JobListing] {
        let rows = try await all(
            #"""
            SELECT job.*, "user".name AS "ownerName", resource.name AS "resourceName", machine.name AS "machineName"
            FROM job JOIN "user" ON "user".id = job."ownerId" JOIN resource ON resource.id = job."resourceId"
            LEFT JOIN machine ON machine.id = job."machineId"
            WHERE (\#(ownerID)::BIGINT IS NULL OR job."ownerId" = \#(ownerID)) AND (\#(id)::BIGINT IS NULL OR job.id = \#(id))
              AND (NOT \#(activeOnly) OR job.state IN ('queued', 'starting', 'running'))
            ORDER BY job.id
            """#
        ) { row in
            JobListing(
                job: try Self.job(row),
                owner: try row.get("ownerName"),
                resource: try row.get("resourceName"),
                machine: try row.get("machineName")
            )
        }
        return rows
    }

    /// The candidates' rows are locked, as for `placeLease`, while their room is counted.
    public func placeJob(id: Int64, on machineIDs: [Int64], cpuOvercommit: Double, incarnationID: String, at now: Date) async throws -> Machine? {
        guard !machineIDs.isEmpty else { return nil }
        return try await transaction { [self] connection in
            let locked = try await all("SELECT * FROM machine WHERE id = ANY(\(machineIDs)) ORDER BY id FOR UPDATE", on: connection, Self.machine)
            guard let job = try await all("SELECT * FROM job WHERE id = \(id) FOR UPDATE", on: connection, Self.job).first, job.state == .queued
            else {
                return nil
            }
            let machines = Dictionary(uniqueKeysWithValues: locked.map { ($0.id!, $0) })
            let loads = try await loads(on: connection)
            for machineID in machineIDs {
                guard let machine = machines[machineID],
                    loads[machineID, default: MachineLoad()].refusal(
                        of: machine,
                        memoryBytes: job.memoryBytes,
                        milliCPUs: job.milliCPUs,
                        cpuOvercommit: cpuOvercommit
                    ) == nil
                else { continue }
                try await connection.query(
                    #"""
                    UPDATE job SET state = 'starting', "machineId" = \#(machineID), "incarnationId" = \#(incarnationID), "startedAt" = \#(now)
                    WHERE id = \#(id)
                    """#,
                    logger: logger
                )
                return machine
            }
            return nil
        }
    }

    public func claimPoolSlot(forJob id: Int64, image: String, resourceID: Int64, incarnationID: String, at now: Date) async throws -> PoolSlot? {
        try await transaction { [self] connection in
            guard let job = try await all("SELECT * FROM job WHERE id = \(id) FOR UPDATE", on: connection, Self.job).first, job.state == .queued
            else {
                return nil
            }
            let found = try await all(
                """
                SELECT "poolSlot".* FROM "poolSlot" JOIN machine ON machine.id = "poolSlot"."machineId"
                WHERE "poolSlot"."resourceId" = \(resourceID) AND "poolSlot".image = \(image) AND "poolSlot".state = 'ready' AND machine.healthy
                  AND "poolSlot"."memoryBytes" = \(job.memoryBytes) AND "poolSlot"."milliCPUs" = \(job.milliCPUs)
                ORDER BY "poolSlot"."createdAt", "poolSlot".id LIMIT 1 FOR UPDATE OF "poolSlot" SKIP LOCKED
                """,
                on: connection,
                Self.slot
            )
            guard var slot = found.first else { return nil }
            slot.state = .claimed
            slot.leaseId = nil
            slot.incarnationId = incarnationID
            try await connection.query(
                #"UPDATE "poolSlot" SET state = 'claimed', "leaseId" = NULL, "incarnationId" = \#(incarnationID) WHERE id = \#(slot.id)"#,
                logger: logger
            )
            try await connection.query(
                #"""
                UPDATE job SET state = 'starting', "machineId" = \#(slot.machineId), "incarnationId" = \#(incarnationID), "startedAt" = \#(now)
                WHERE id = \#(id)
                """#,
                logger: logger
            )
            return slot
        }
    }

    public func updateJob(_ job: Job, expecting states: [Job.State]) async throws -> Bool {
        let expected = states.map(\.rawValue)
        return try await changes(
            #"""
            UPDATE job SET name = \#(job.name), state = \#(job.state.rawValue), "machineId" = \#(job.machineId), "containerId" = \#(job.containerId),
                "startedAt" = \#(job.startedAt), "endedAt" = \#(job.endedAt), "exitStatus" = \#(job.exitStatus), message = \#(job.message),
                "incarnationId" = \#(job.incarnationId), "awaitingInput" = \#(job.awaitingInput), "keepsContainer" = \#(job.keepsContainer),
                "containerRemoved" = \#(job.containerRemoved)
            WHERE id = \#(job.id) AND state = ANY(\#(expected)) RETURNING id
            """#
        ) > 0
    }

    public func takeOverJob(id: Int64, from previous: String?, to incarnationID: String) async throws -> Bool {
        try await changes(
            #"""
            UPDATE job SET "incarnationId" = \#(incarnationID)
            WHERE id = \#(id) AND "incarnationId" IS NOT DISTINCT FROM \#(previous) AND state IN ('starting', 'running') RETURNING id
            """#
        ) > 0
    }

    public func appendJobLog(_ chunks: [JobLogChunk]) async throws {
        guard !chunks.isEmpty else { return }
        try await transaction { [self] connection in
            for chunk in chunks {
                try await connection.query(
                    #"INSERT INTO "jobLog" ("jobId", stream, data) VALUES (\#(chunk.jobId), \#(chunk.stream), \#(chunk.data))"#,
                    logger: logger
                )
            }
            for (jobID, bytes) in Dictionary(chunks.map { ($0.jobId, Int64($0.data.count)) }, uniquingKeysWith: +) {
                try await connection.query(#"UPDATE job SET "logBytes" = "logBytes" + \#(bytes) WHERE id = \#(jobID)"#, logger: logger)
            }
        }
    }

    public func jobLog(jobID: Int64, after: Int64, limit: Int) async throws -> [JobLogChunk] {
        try await all(#"SELECT * FROM "jobLog" WHERE "jobId" = \#(jobID) AND id > \#(after) ORDER BY id LIMIT \#(limit)"#) { row in
            var chunk = JobLogChunk(jobId: try row.get("jobId"), stream: try row.get("stream"), data: try row.get("data"))
            chunk.id = try row.get("id")
            return chunk
        }
    }

    public func clearJobLog(jobID: Int64) async throws {
        try await transaction { [self] connection in
            try await connection.query(#"DELETE FROM "jobLog" WHERE "jobId" = \#(jobID)"#, logger: logger)
            try await connection.query(#"UPDATE job SET "logBytes" = 0 WHERE id = \#(jobID)"#, logger: logger)
        }
    }

    public func purgeJobs(endedBefore date: Date) async throws -> Int {
        try await changes(
            #"""
            DELETE FROM job WHERE "endedAt" < \#(date) AND state NOT IN ('queued', 'starting', 'running')
              AND ("containerRemoved" OR "containerId" IS NULL) RETURNING id
            """#
        )
    }

    static func job(_ row: PostgresRandomAccessRow) throws -> Job {
        var job = Job(
            ownerId: try row.get("ownerId"),
            resourceId: try row.get("resourceId"),
            image: try row.get("image"),
            command: [],
            ttlSeconds: try row.get("ttlSeconds"),
            name: try row.get("name"),
            createdAt: try row.get("createdAt")
        )
        job.id = try row.get("id")
        job.command = try row.get("command")
        job.state = Job.State(rawValue: try row.get("state")) ?? .lost
        job.machineId = try row.get("machineId")
        job.containerId = try row.get("containerId")
        job.memoryBytes = try row.get("memoryBytes")
        job.milliCPUs = try row.get("milliCPUs")
        job.startedAt = try row.get("startedAt")
        job.endedAt = try row.get("endedAt")
        job.exitStatus = try row.get("exitStatus")
        job.message = try row.get("message")
        job.incarnationId = try row.get("incarnationId")
        job.awaitingInput = try row.get("awaitingInput")
        job.keepsContainer = try row.get("keepsContainer")
        job.containerRemoved = try row.get("containerRemoved")
        job.logBytes = try row.get("logBytes")
        return job
    }
}

// MARK: - Users' limits and the fair queue

extension PostgresStore {
    public func setUserLimits(named name: String, to limits: UserLimits) async throws -> User {
        let updated = try await all(
            #"""
            UPDATE "user" SET "leaseLimit" = \#(limits.leases), "jobLimit" = \#(limits.jobs), "memoryLimit" = \#(limits.memoryBytes),
                "milliCPULimit" = \#(limits.milliCPUs)
            WHERE name = \#(name) RETURNING *
            """#,
            Self.user
        )
        guard let user = updated.first else { throw StoreError.notFound("no user \(name)") }
        return user
    }

    public func userUses() async throws -> [Int64: UserUse] {
        let rows = try await all(
            #"""
            SELECT "ownerId", SUM("isLease")::BIGINT AS leases, SUM(1 - "isLease")::BIGINT AS jobs, SUM("memoryBytes")::BIGINT AS memory,
                SUM("milliCPUs")::BIGINT AS cpus FROM (
                SELECT "ownerId", 1 AS "isLease", "memoryBytes", "milliCPUs" FROM lease
                WHERE state IN ('creating', 'running', 'deleting') AND "queuedUntil" IS NULL
                UNION ALL SELECT "ownerId", 0, "memoryBytes", "milliCPUs" FROM job WHERE state IN ('starting', 'running')
            ) AS held GROUP BY "ownerId"
            """#
        ) { row in
            (
                try row.get("ownerId", Int64.self),
                UserUse(leases: try row.get("leases"), jobs: try row.get("jobs"), memoryBytes: try row.get("memory"), milliCPUs: try row.get("cpus"))
            )
        }
        return Dictionary(rows, uniquingKeysWith: { a, _ in a })
    }

    public func queuedLeases() async throws -> [Lease] {
        try await all(
            #"SELECT * FROM lease WHERE state = 'creating' AND "machineId" IS NULL AND "queuedUntil" IS NOT NULL ORDER BY "createdAt", id"#,
            Self.lease
        )
    }

    public func abandonQueuedLease(id: Int64, message: String) async throws -> Bool {
        try await changes(
            #"""
            UPDATE lease SET state = 'failed', message = \#(message), "queuedUntil" = NULL
            WHERE id = \#(id) AND state = 'creating' AND "machineId" IS NULL RETURNING id
            """#
        ) > 0
    }

    public func touchLeases(ids: [Int64], at now: Date) async throws {
        guard !ids.isEmpty else { return }
        try await query(#"UPDATE lease SET "activeAt" = \#(now) WHERE id = ANY(\#(ids))"#, logger: logger)
    }
}
