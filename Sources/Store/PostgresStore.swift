import Foundation
import Logging
import NIOSSL
import PostgresNIO
import Synchronization

/// resalloc's store on PostgreSQL, for several masters on one database, through postgres-nio's
/// `PostgresClient` pool. The pool does its work in `run()`, which must run for as long as the
/// store is used (`serve` runs it as a service; one-shot commands in a task around their work).
/// Same tables, columns and schema versions as the SQLite store; identifiers are quoted, so
/// their camel case is kept.
public final class PostgresStore: Store {
    public let client: PostgresClient
    let logger: Logger
    /// The pool's `run()`: started with the store, so that it serves from the first query
    /// (migrations run before any service group), and ended by `close()`.
    private let running: Task<Void, Never>

    /// How long an operation waits for a connection (see ``defaultDeadline``).
    let deadline: Duration

    public init(configuration: PostgresClient.Configuration, logger: Logger, deadline: Duration = PostgresStore.defaultDeadline) {
        self.deadline = deadline
        var configuration = configuration
        configuration.options.connectTimeout = .seconds(5)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        running = Task { await client.run() }
    }

    deinit { running.cancel() }

    /// Closes the pool's connections.
    public func close() { running.cancel() }

    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]`.
    public convenience init(url: String, logger: Logger, deadline: Duration = PostgresStore.defaultDeadline) throws {
        self.init(configuration: try Self.configuration(url: url), logger: logger, deadline: deadline)
    }

    /// Whether `text` names a PostgreSQL database rather than a SQLite file.
    public static func isURL(_ text: String) -> Bool { text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") }

    static func configuration(url text: String) throws -> PostgresClient.Configuration {
        guard isURL(text), let url = URLComponents(string: text), let host = url.host, !host.isEmpty, let user = url.user, !user.isEmpty else {
            throw StoreError.invalid("'\(text.prefix(120))' is not a PostgreSQL URL: use postgres://USER[:PASSWORD]@HOST[:PORT]/DB")
        }
        let database = String(url.path.drop { $0 == "/" })
        let tls: PostgresClient.Configuration.TLS
        switch url.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable" {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        case let other: throw StoreError.invalid("sslmode=\(other) is not one of disable, prefer, require")
        }
        return PostgresClient.Configuration(
            host: host,
            port: url.port ?? 5432,
            username: user,
            password: url.password,
            database: database.isEmpty ? user : database,
            tls: tls
        )
    }

    // MARK: - Schema

    /// Fixed key of the advisory lock that serialises migrations across masters.
    static let migrationLock: Int64 = 0x7265_7361_6c6c_6f63  // "resalloc"

    public func schemaVersion() async throws -> Int {
        try await self.connection { [self] connection in
            try await Self.ensureHistoryTable(connection, logger)
            return try await Self.currentVersion(connection, logger)
        }
    }

    public func migrationStatus() async throws -> [MigrationStatus] {
        try await self.connection { [self] connection in
            try await Self.ensureHistoryTable(connection, logger)
            var applied: [Int: Date] = [:]
            for try await (version, at) in try await connection.query("SELECT version, \"appliedAt\" FROM schema_version", logger: logger)
                .decode((Int, Date).self)
            {
                applied[version] = at
            }
            return Schema.migrations.map { MigrationStatus(version: $0.version, name: $0.name, appliedAt: applied[$0.version]) }
        }
    }

    /// Applies each version in its own transaction under an advisory lock, so that masters
    /// starting together on an empty database apply each one once.
    public func migrateUp(to target: Int?) async throws -> [Int] {
        let target = target ?? Schema.latestVersion
        var applied: [Int] = []
        for migration in PostgresSchema.migrations where migration.version <= target {
            let done = try await transaction { [self] connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
                try await Self.ensureHistoryTable(connection, logger)
                guard migration.version > (try await Self.currentVersion(connection, logger)) else { return false }
                for statement in migration.up { try await connection.query(statement, logger: logger) }
                let name = Schema.migrations.first { $0.version == migration.version }?.name ?? ""
                try await connection.query(
                    "INSERT INTO schema_version (version, name, \"appliedAt\") VALUES (\(migration.version), \(name), \(Date()))",
                    logger: logger
                )
                return true
            }
            if done { applied.append(migration.version) }
        }
        return applied
    }

    public func migrateDown(to target: Int?) async throws -> [Int] {
        let current = try await schemaVersion()
        let target = target ?? max(current - 1, 0)
        var reverted: [Int] = []
        for migration in PostgresSchema.migrations.reversed() where migration.version > target && migration.version <= current {
            try await transaction { [self] connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
                for statement in migration.down { try await connection.query(statement, logger: logger) }
                try await connection.query("DELETE FROM schema_version WHERE version = \(migration.version)", logger: logger)
            }
            reverted.append(migration.version)
        }
        return reverted
    }

    public func setting(_ key: String) async throws -> String? {
        try await all("SELECT value FROM setting WHERE key = \(key)", { try $0.get("value", String.self) }).first
    }

    public func setSetting(_ key: String, to value: String) async throws {
        try await self.query(
            "INSERT INTO setting (key, value) VALUES (\(key), \(value)) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            logger: logger
        )
    }

    public func masterID() async throws -> String {
        guard let id = try await all("SELECT value FROM setting WHERE key = 'masterId'", { try $0.get("value", String.self) }).first else {
            throw StoreError.schemaOutdated(current: 0, needed: Schema.latestVersion)
        }
        return id
    }

    private static func ensureHistoryTable(_ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \"appliedAt\" TIMESTAMPTZ NOT NULL)",
            logger: logger
        )
    }

    private static func currentVersion(_ connection: PostgresConnection, _ logger: Logger) async throws -> Int {
        for try await version in try await connection.query("SELECT COALESCE(MAX(version), 0) FROM schema_version", logger: logger)
            .decode(Int.self)
        {
            return version
        }
        return 0
    }

    /// Fixed key of the advisory lock that lets one cleanup pass run at a time.
    static let cleanupLock: Int64 = 0x7265_7361_6c6c_6f64

    /// A session-level advisory lock on a connection held for the whole pass: it is freed when
    /// the pass ends, or within moments if the process holding it dies.
    public func exclusivePass(_ body: @Sendable () async -> Void) async throws -> Bool {
        // Fail fast when the database is away; the pass itself may take minutes on its connection.
        try await self.query("SELECT 1", logger: logger)
        let logger = logger
        return try await client.withConnection { connection in
            var got = false
            for try await locked in try await connection.query("SELECT pg_try_advisory_lock(\(Self.cleanupLock))", logger: logger).decode(Bool.self) {
                got = locked
            }
            guard got else { return false }
            await body()
            _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.cleanupLock))", logger: logger)
            return true
        }
    }

    // MARK: - Helpers

    /// How long an operation waits for a connection. postgres-nio keeps a request waiting until
    /// its circuit breaker opens (60 s, not configurable through `PostgresClient`): past this,
    /// the request fails with a sentence instead. What runs once connected is not bounded.
    public static let defaultDeadline: Duration = .seconds(8)

    /// Runs `body` on a pooled connection, or fails with `StoreError.unavailable` when none could
    /// be had within `deadline`.
    func connection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let (client, connected, logger, deadline) = (client, Connected(), logger, deadline)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await client.withConnection { connection in
                    connected.mark()
                    return try await body(connection)
                }
            }
            group.addTask {
                let asked = ContinuousClock.now
                let late = try await Self.waitOutDeadline(deadline, connected)
                guard connected.value else {
                    logger.warning(
                        "no database connection within the deadline",
                        metadata: ["waited": "\(ContinuousClock.now - asked)", "deadline": "\(deadline)", "woke late by": "\(late)"]
                    )
                    throw StoreError.unavailable("the master's database cannot be reached now; try again shortly")
                }
                return nil
            }
            defer { group.cancelAll() }
            while let finished = try await group.next() {
                if let result = finished { return result }
            }
            throw StoreError.unavailable("the master's database cannot be reached now; try again shortly")
        }
    }

    /// `connection`, in a transaction.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let logger = logger
        return try await connection { connection in try await connection.withTransaction(logger: logger) { try await body($0) } }
    }

    /// Runs a statement whose rows are not read.
    func query(_ query: PostgresQuery, logger: Logger) async throws {
        _ = try await connection { connection in
            for try await _ in try await connection.query(query, logger: logger) {}
        }
    }

    /// Sleeps out `deadline`, or longer when this process itself was too busy to notice: the
    /// deadline is the database's. A wake-up more than a second late means that every thread was
    /// taken meanwhile, so the pool may not have had a turn to connect either; it gets 2 s of
    /// this process's attention, up to three times, before the request fails.
    /// Returns how late its wake-ups were, in all.
    static func waitOutDeadline(_ deadline: Duration, _ connected: Connected) async throws -> Duration {
        var wait = deadline
        var late = Duration.zero
        for _ in 0...3 {
            let asleep = ContinuousClock.now
            try await Task.sleep(for: wait)
            late += ContinuousClock.now - asleep - wait
            if connected.value || ContinuousClock.now - asleep < wait + .seconds(1) { return late }
            wait = .seconds(2)
        }
        return late
    }

    /// Whether a connection has been had (set once, read from the deadline's task).
    final class Connected: Sendable {
        private let flag = Atomic<Bool>(false)
        func mark() { flag.store(true, ordering: .releasing) }
        var value: Bool { flag.load(ordering: .acquiring) }
    }

    /// Runs `body` and turns a unique or foreign-key violation into `StoreError.conflict`.
    func conflict<T>(_ sentence: String, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch {
            if let state = Self.sqlState(error), state == "23505" || state == "23503" { throw StoreError.conflict(sentence) }
            throw error
        }
    }

    /// The SQLSTATE of a server error, unwrapped from a transaction's error.
    static func sqlState(_ error: any Error) -> String? {
        if let error = error as? PSQLError { return error.serverInfo?[.sqlState] }
        if let error = error as? PostgresTransactionError {
            for inner in [error.closureError, error.commitError, error.beginError].compactMap({ $0 }) {
                if let state = sqlState(inner) { return state }
            }
        }
        return nil
    }

    /// The rows of `query`, each made into a `T` by `make`.
    func all<T: Sendable>(_ query: PostgresQuery, _ make: @escaping @Sendable (PostgresRandomAccessRow) throws -> T) async throws -> [T] {
        try await connection { [self] connection in try await all(query, on: connection, make) }
    }

    func all<T>(_ query: PostgresQuery, on connection: PostgresConnection, _ make: (PostgresRandomAccessRow) throws -> T) async throws -> [T] {
        var result: [T] = []
        for try await row in try await connection.query(query, logger: logger) { result.append(try make(row.makeRandomAccess())) }
        return result
    }

    /// The number of rows an UPDATE or DELETE touched.
    func changes(_ query: PostgresQuery, on connection: PostgresConnection? = nil) async throws -> Int {
        let logger = logger
        let count: @Sendable (PostgresConnection) async throws -> Int = { connection in
            var count = 0
            for try await _ in try await connection.query(query, logger: logger) { count += 1 }
            return count
        }
        if let connection { return try await count(connection) }
        return try await self.connection(count)
    }
}

extension PostgresRandomAccessRow {
    func get<T: PostgresDecodable>(_ column: String, _ type: T.Type = T.self) throws -> T {
        try self[column].decode(T.self, context: .default)
    }
}

extension StoreError {
    /// A failure of the database itself that a person can act on, or nil: PostgreSQL gone away
    /// (refused, closed, shutting down, or the pool's circuit breaker open after failed
    /// connections) is `unavailable`.
    public static func classify(_ error: any Error) -> StoreError? {
        let away = StoreError.unavailable("the master's database cannot be reached now; try again shortly")
        if let error = error as? StoreError { return error }
        if let error = error as? PostgresTransactionError {
            return [error.beginError, error.closureError, error.commitError].compactMap { $0 }.lazy.compactMap(classify).first
        }
        if let error = error as? PSQLError {
            switch error.code {
            case .connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection, .poolClosed: return away
            case .server:
                let state = error.serverInfo?[.sqlState] ?? ""
                return state.hasPrefix("08") || state.hasPrefix("57P") ? away : nil
            default: return nil
            }
        }
        // ConnectionPoolError lives in a module postgres-nio does not export.
        if String(describing: type(of: error)) == "ConnectionPoolError" { return away }
        return nil
    }
}
