import Foundation
import GRDB
import NIOPosix

/// What the store refuses, in words for a person; never SQLite's own text.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A name is taken, or something still uses what is being removed.
    case conflict(String)
    case notFound(String)
    /// The database's schema is older than this program; run `resalloc-master migrate up`.
    case schemaOutdated(current: Int, needed: Int)
    /// What names the database is wrong (a PostgreSQL URL that is not one).
    case invalid(String)
    /// The database server cannot be reached now.
    case unavailable(String)

    public var description: String {
        switch self {
        case .conflict(let message), .notFound(let message), .invalid(let message), .unavailable(let message): return message
        case .schemaOutdated(let current, let needed):
            return "the database is at schema version \(current), this master needs \(needed): run resalloc-master migrate up"
        }
    }
}

/// resalloc's SQLite database (WAL mode, foreign keys on). Every query is a named method here.
public struct AppDatabase: Sendable {
    public let writer: any DatabaseWriter

    /// Opens (creating if needed) the database file at `path`.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.foreignKeysEnabled = true
        writer = try DatabasePool(path: path, configuration: configuration)
    }

    // MARK: - Migrations

    private static func ensureHistoryTable(_ db: Database) throws {
        try db.execute(
            sql: "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, appliedAt DATETIME NOT NULL)"
        )
    }

    /// The schema version the database is at (0 when empty).
    public func schemaVersion() throws -> Int {
        try writer.write { db in
            try Self.ensureHistoryTable(db)
            return try Int.fetchOne(db, sql: "SELECT MAX(version) FROM schema_version") ?? 0
        }
    }

    /// Every known migration and when it was applied.
    public func migrationStatus() throws -> [MigrationStatus] {
        try writer.write { db in
            try Self.ensureHistoryTable(db)
            let applied = try Row.fetchAll(db, sql: "SELECT version, appliedAt FROM schema_version")
                .reduce(into: [Int: Date]()) { $0[$1["version"]] = $1["appliedAt"] }
            return Schema.migrations.map { MigrationStatus(version: $0.version, name: $0.name, appliedAt: applied[$0.version]) }
        }
    }

    /// Applies migrations up to `target` (default: the latest), each in its own transaction.
    /// Returns the versions applied.
    @discardableResult
    public func migrateUp(to target: Int? = nil) throws -> [Int] {
        let target = target ?? Schema.latestVersion
        var applied: [Int] = []
        for migration in Schema.migrations where migration.version <= target {
            let done = try writer.write { db -> Bool in
                try Self.ensureHistoryTable(db)
                let current = try Int.fetchOne(db, sql: "SELECT MAX(version) FROM schema_version") ?? 0
                guard migration.version > current else { return false }
                try migration.up(db)
                try db.execute(
                    sql: "INSERT INTO schema_version (version, name, appliedAt) VALUES (?, ?, ?)",
                    arguments: [migration.version, migration.name, Date()]
                )
                return true
            }
            if done { applied.append(migration.version) }
        }
        return applied
    }

    /// Reverts migrations down to `target` (default: one step). Returns the versions reverted.
    @discardableResult
    public func migrateDown(to target: Int? = nil) throws -> [Int] {
        let current = try schemaVersion()
        let target = target ?? max(current - 1, 0)
        var reverted: [Int] = []
        for migration in Schema.migrations.reversed() where migration.version > target && migration.version <= current {
            try writer.write { db in
                try migration.down(db)
                try db.execute(sql: "DELETE FROM schema_version WHERE version = ?", arguments: [migration.version])
            }
            reverted.append(migration.version)
        }
        return reverted
    }

    /// Throws unless the schema is the one this program was built for.
    public func requireCurrentSchema() throws {
        let version = try schemaVersion()
        guard version == Schema.latestVersion else { throw StoreError.schemaOutdated(current: version, needed: Schema.latestVersion) }
    }

    /// This master's identity, set by the migration that created it.
    /// An installation-wide setting (`serve` writes its own, `cleanup` reads them), or nil.
    public func setting(_ key: String) async throws -> String? {
        try await read { db in try String.fetchOne(db, sql: "SELECT value FROM setting WHERE key = ?", arguments: [key]) }
    }

    public func setSetting(_ key: String, to value: String) async throws {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO setting (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                arguments: [key, value]
            )
        }
    }

    public func masterID() throws -> String {
        try writer.read { db in
            guard let id = try String.fetchOne(db, sql: "SELECT value FROM setting WHERE key = 'masterId'") else {
                throw StoreError.schemaOutdated(current: 0, needed: Schema.latestVersion)
            }
            return id
        }
    }
}

extension AppDatabase {
    /// Nothing to do: the file is closed with the last reference to the pool.
    public func close() {}

    /// A lock file beside the database (`PATH.cleanup.lock`), held with flock for the pass.
    public func exclusivePass(_ body: @Sendable () async -> Void) async throws -> Bool {
        guard let lock = try CleanupLock(databasePath: writer.path) else { return false }
        await body()
        withExtendedLifetime(lock) {}
        return true
    }

    /// Runs a write and turns constraint failures into `StoreError.conflict` with `sentence`.
    func write<T: Sendable>(conflict sentence: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await write(body)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw StoreError.conflict(sentence)
        }
    }

    // The queries run on threads of their own, and the caller's task waits without holding its
    // thread: in resalloc-master that thread is a NIO event loop, which must not wait on SQLite's
    // locks (up to the 10 s busy timeout while another process writes) or on a commit's fsync.
    // Not GRDB's async read and write: those throw when the caller's task is cancelled, and a
    // write that was asked for should finish or fail on its own. Not GRDB's asyncRead/asyncWrite
    // either: they wait for SQLite on Dispatch's worker threads, which Swift's default executor
    // shares on Linux, so a wait for another process's lock would take a thread from every
    // task in the process.

    /// Threads for SQLite's waits: more than writes ever wait at once here, so that a read
    /// never queues behind writes waiting for another process's lock.
    static let threads: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 16)
        pool.start()
        return pool
    }()

    /// A read transaction on a reader connection.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await Self.threads.runIfActive { [writer] in try writer.read(body) }
    }

    /// A write transaction on the writer connection.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await Self.threads.runIfActive { [writer] in try writer.write(body) }
    }
}
