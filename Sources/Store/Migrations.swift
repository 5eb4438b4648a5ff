import Foundation
import GRDB

/// One schema step with its way back. A shipped migration is never edited: add a new one.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    let up: @Sendable (Database) throws -> Void
    let down: @Sendable (Database) throws -> Void
}

/// resalloc's schema history, oldest first.
public enum Schema {
    public static let migrations: [Migration] = [
        Migration(
            version: 1,
            name: "users and tokens",
            up: { db in
                try db.create(table: "user") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("name", .text).notNull().unique()
                    t.column("passwordHash", .text).notNull()
                    t.column("role", .text).notNull().check { ["admin", "user"].contains($0) }
                    t.column("status", .text).notNull().check { ["pending", "active"].contains($0) }
                    t.column("createdAt", .datetime).notNull()
                }
                try db.create(table: "token") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.belongsTo("user", onDelete: .cascade).notNull()
                    t.column("hash", .text).notNull().unique()
                    t.column("createdAt", .datetime).notNull()
                    t.column("expiresAt", .datetime).notNull().indexed()
                }
            },
            down: { db in
                try db.drop(table: "token")
                try db.drop(table: "user")
            }
        ),
        Migration(
            version: 2,
            name: "resources, machines and leases",
            up: { db in
                try db.create(table: "resource") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("name", .text).notNull().unique()
                    t.column("dockerfile", .blob).notNull()
                    t.column("createdAt", .datetime).notNull()
                }
                try db.create(table: "machine") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("name", .text).notNull().unique()
                    t.column("login", .text).notNull()
                    t.column("host", .text).notNull()
                    t.column("port", .integer).notNull()
                    t.column("hostKeyType", .text).notNull()
                    t.column("hostKeyFingerprint", .text).notNull()
                    t.column("cpus", .integer).notNull()
                    t.column("memoryBytes", .integer).notNull()
                    t.column("capacity", .integer).notNull().check { $0 > 0 }
                    t.column("healthy", .boolean).notNull()
                    t.column("lastError", .text)
                    t.column("createdAt", .datetime).notNull()
                    t.uniqueKey(["host", "port"])
                }
                try db.create(table: "lease") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("name", .text).notNull()
                    t.belongsTo("owner", inTable: "user", onDelete: .restrict).notNull()
                    t.belongsTo("resource", onDelete: .restrict).notNull()
                    t.belongsTo("machine", onDelete: .restrict)
                    t.column("image", .text).notNull()
                    t.column("containerId", .text)
                    t.column("state", .text).notNull().check { ["creating", "running", "deleting", "failed", "lost"].contains($0) }
                    t.column("message", .text)
                    t.column("createdAt", .datetime).notNull()
                    t.column("expiresAt", .datetime).notNull()
                    t.uniqueKey(["ownerId", "name"])
                }
            },
            down: { db in
                try db.drop(table: "lease")
                try db.drop(table: "machine")
                try db.drop(table: "resource")
            }
        ),
        Migration(
            version: 3,
            name: "master identity",
            up: { db in
                try db.create(table: "setting") { t in
                    t.primaryKey("key", .text)
                    t.column("value", .text).notNull()
                }
                // Labels every container this master starts, so that cleanup never touches
                // another master's containers on a shared machine.
                try db.execute(sql: "INSERT INTO setting (key, value) VALUES ('masterId', ?)", arguments: [UUID().uuidString.lowercased()])
            },
            down: { db in try db.drop(table: "setting") }
        ),
        Migration(
            version: 4,
            name: "users' SSH keys",
            up: { db in
                // The SSH gateway's logins: a key belongs to one user, under a name of theirs.
                try db.create(table: "userKey") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.belongsTo("user", onDelete: .cascade).notNull()
                    t.column("name", .text).notNull()
                    t.column("algorithm", .text).notNull()
                    t.column("blob", .text).notNull().unique()
                    t.column("fingerprint", .text).notNull()
                    t.column("createdAt", .datetime).notNull()
                    t.uniqueKey(["userId", "name"])
                }
            },
            down: { db in try db.drop(table: "userKey") }
        ),
        Migration(
            version: 5,
            name: "incarnations",
            up: { db in
                // Each running master process, with its heartbeat: a lease mid-saga names the
                // process working on it, so that another pass knows at once when that one died.
                try db.create(table: "incarnation") { t in
                    t.primaryKey("id", .text)
                    t.column("host", .text).notNull()
                    t.column("pid", .integer).notNull()
                    t.column("heartbeatSeconds", .integer).notNull()
                    t.column("startedAt", .datetime).notNull()
                    t.column("heartbeatAt", .datetime).notNull()
                    t.column("stoppedAt", .datetime)
                }
                try db.alter(table: "lease") { t in t.add(column: "incarnationId", .text) }
            },
            down: { db in
                try db.alter(table: "lease") { t in t.drop(column: "incarnationId") }
                try db.drop(table: "incarnation")
            }
        ),
        Migration(
            version: 6,
            name: "warm pools",
            up: { db in
                try db.alter(table: "resource") { t in t.add(column: "poolSize", .integer).notNull().defaults(to: 0) }
                // A container kept started for a resource. Ownership lives here, not in labels
                // (a running container's labels cannot change): `starting` while its incarnation
                // runs it, `ready` to hand out, `claimed` by a lease while it is renamed to it.
                try db.create(table: "poolSlot") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.belongsTo("resource", onDelete: .cascade).notNull()
                    t.belongsTo("machine", onDelete: .cascade).notNull()
                    t.column("image", .text).notNull()
                    t.column("state", .text).notNull().check { ["starting", "ready", "claimed"].contains($0) }
                    t.column("containerId", .text)
                    t.column("leaseId", .integer)
                    t.column("incarnationId", .text)
                    t.column("createdAt", .datetime).notNull()
                }
            },
            down: { db in
                try db.drop(table: "poolSlot")
                try db.alter(table: "resource") { t in t.drop(column: "poolSize") }
            }
        ),
        Migration(
            version: 7,
            name: "audit trail",
            up: { db in
                // Who did what, on what, when, from where. Rows are only ever added (a trigger
                // refuses updates); cleanup deletes those older than --keep-events.
                try db.create(table: "event") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("at", .datetime).notNull().indexed()
                    t.column("actor", .text).notNull()
                    t.column("action", .text).notNull()
                    t.column("subject", .text).notNull()
                    t.column("detail", .text)
                    t.column("address", .text)
                }
                try db.execute(
                    sql: "CREATE TRIGGER event_append_only BEFORE UPDATE ON event BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
                )
            },
            down: { db in try db.drop(table: "event") }
        ),
        Migration(
            version: 8,
            name: "machine last contact",
            up: { db in
                // When a pass last reached the machine (the console and GET /machine show it).
                try db.alter(table: "machine") { t in t.add(column: "lastContactAt", .datetime) }
            },
            down: { db in try db.alter(table: "machine") { t in t.drop(column: "lastContactAt") } }
        ),
        Migration(
            version: 9,
            name: "tenant limits",
            up: { db in
                // An admin can switch a user off without losing what they were (pending or active).
                try db.alter(table: "user") { t in t.add(column: "disabled", .boolean).notNull().defaults(to: false) }
                // Each container's limits: the resource's own (NULL: the master's default), and
                // what a lease or warm container got, which placement adds up per machine.
                try db.alter(table: "resource") { t in
                    t.add(column: "memoryBytes", .integer).check { $0 > 0 }
                    t.add(column: "milliCPUs", .integer).check { $0 > 0 }
                    t.add(column: "pids", .integer).check { $0 > 0 }
                }
                for table in ["lease", "poolSlot"] {
                    try db.alter(table: table) { t in
                        t.add(column: "memoryBytes", .integer).notNull().defaults(to: 0)
                        t.add(column: "milliCPUs", .integer).notNull().defaults(to: 0)
                    }
                }
            },
            down: { db in
                for table in ["poolSlot", "lease"] {
                    try db.alter(table: table) { t in
                        t.drop(column: "milliCPUs")
                        t.drop(column: "memoryBytes")
                    }
                }
                try db.alter(table: "resource") { t in
                    t.drop(column: "pids")
                    t.drop(column: "milliCPUs")
                    t.drop(column: "memoryBytes")
                }
                try db.alter(table: "user") { t in t.drop(column: "disabled") }
            }
        ),
        Migration(
            version: 10,
            name: "jobs and the fair queue",
            up: { db in
                try db.alter(table: "user") { t in
                    t.add(column: "leaseLimit", .integer).check { $0 >= 0 }
                    t.add(column: "jobLimit", .integer).check { $0 >= 0 }
                    t.add(column: "memoryLimit", .integer).check { $0 > 0 }
                    t.add(column: "milliCPULimit", .integer).check { $0 > 0 }
                }
                try db.alter(table: "resource") { t in t.add(column: "idleSeconds", .integer).check { $0 > 0 } }
                try db.alter(table: "lease") { t in
                    t.add(column: "idleSeconds", .integer).check { $0 > 0 }
                    t.add(column: "activeAt", .datetime)
                    t.add(column: "queuedUntil", .datetime)
                }
                try db.create(table: "job") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("name", .text)
                    t.belongsTo("owner", inTable: "user", onDelete: .restrict).notNull()
                    // A resource's or machine's history does not keep it from being deleted.
                    t.belongsTo("resource", onDelete: .cascade).notNull()
                    t.column("image", .text).notNull()
                    t.column("command", .text).notNull()
                    t.column("state", .text).notNull().indexed()
                        .check { ["queued", "starting", "running", "succeeded", "failed", "cancelled", "timed-out", "lost"].contains($0) }
                    t.belongsTo("machine", onDelete: .setNull)
                    t.column("containerId", .text)
                    t.column("memoryBytes", .integer).notNull().defaults(to: 0)
                    t.column("milliCPUs", .integer).notNull().defaults(to: 0)
                    t.column("ttlSeconds", .integer).notNull().check { $0 > 0 }
                    t.column("createdAt", .datetime).notNull()
                    t.column("startedAt", .datetime)
                    t.column("endedAt", .datetime)
                    t.column("exitStatus", .integer)
                    t.column("message", .text)
                    t.column("incarnationId", .text)
                    t.column("awaitingInput", .boolean).notNull().defaults(to: false)
                    t.column("keepsContainer", .boolean).notNull().defaults(to: false)
                    t.column("containerRemoved", .boolean).notNull().defaults(to: false)
                    t.column("logBytes", .integer).notNull().defaults(to: 0)
                }
                try db.create(table: "jobLog") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.belongsTo("job", onDelete: .cascade).notNull()
                    t.column("stream", .integer).notNull().check { [1, 2].contains($0) }
                    t.column("data", .blob).notNull()
                }
            },
            down: { db in
                try db.drop(table: "jobLog")
                try db.drop(table: "job")
                try db.alter(table: "lease") { t in
                    t.drop(column: "queuedUntil")
                    t.drop(column: "activeAt")
                    t.drop(column: "idleSeconds")
                }
                try db.alter(table: "resource") { t in t.drop(column: "idleSeconds") }
                try db.alter(table: "user") { t in
                    t.drop(column: "milliCPULimit")
                    t.drop(column: "memoryLimit")
                    t.drop(column: "jobLimit")
                    t.drop(column: "leaseLimit")
                }
            }
        ),
        Migration(
            version: 11,
            name: "one build per machine and image across masters",
            up: { db in
                try db.create(table: "buildLock") { t in
                    t.column("key", .text).primaryKey()
                    t.column("incarnationId", .text).notNull()
                    t.column("startedAt", .datetime).notNull()
                }
            },
            down: { db in try db.drop(table: "buildLock") }
        ),
    ]

    public static var latestVersion: Int { migrations.last?.version ?? 0 }
}

/// Where a database stands against `Schema.migrations`.
public struct MigrationStatus: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var appliedAt: Date?
}
