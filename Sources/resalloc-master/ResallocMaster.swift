import ArgumentParser
import Core
import Foundation
import Logging
import Server
import Store

@main
struct ResallocMaster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resalloc-master",
        abstract: "The resalloc master: leases Docker containers on machines it reaches over SSH.",
        discussion: """
            Every option also reads from the environment: RESALLOC_DB, RESALLOC_KEY, RESALLOC_HOST, RESALLOC_PORT.
            Example: resalloc-master serve --db /var/lib/resalloc/resalloc.db --key /etc/resalloc/resalloc.pem
            """,
        subcommands: [Serve.self, Migrate.self, Users.self])
}

/// `--db`, shared by every command.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("db"), help: "The SQLite database file (env RESALLOC_DB).")
    var path: String = ProcessInfo.processInfo.environment["RESALLOC_DB"] ?? "resalloc.db"

    func open() throws -> AppDatabase {
        do { return try AppDatabase(path: path) } catch {
            throw ValidationError("cannot open the database \(path): \(error)")
        }
    }
}

extension ResallocMaster {
    struct Serve: AsyncParsableCommand, AppArguments {
        static let configuration = CommandConfiguration(
            abstract: "Serve the HTTP API (migrates the database first).",
            discussion: "Example: resalloc-master serve --host 127.0.0.1 --port 8080 --db resalloc.db --key resources/resalloc.pem")

        @Option(help: "Address to listen on (env RESALLOC_HOST).")
        var host: String = ProcessInfo.processInfo.environment["RESALLOC_HOST"] ?? "127.0.0.1"
        @Option(help: "Port to listen on (env RESALLOC_PORT).")
        var port: Int = Int(ProcessInfo.processInfo.environment["RESALLOC_PORT"] ?? "") ?? 8080
        @OptionGroup var database: DatabaseOptions
        @Option(name: .customLong("key"), help: "The master's private SSH key (env RESALLOC_KEY).")
        var keyPath: String = ProcessInfo.processInfo.environment["RESALLOC_KEY"] ?? "resources/resalloc.pem"
        @Option(help: "trace, debug, info, notice, warning, error or critical.")
        var logLevelName: String = ProcessInfo.processInfo.environment["RESALLOC_LOG_LEVEL"] ?? "info"

        var databasePath: String { database.path }
        var logLevel: Logger.Level { Logger.Level(rawValue: logLevelName) ?? .info }
        var bcryptCost: UInt8 { 10 }

        func validate() throws {
            guard (1...65535).contains(port) else { throw ValidationError("--port must be 1 to 65535") }
            guard Logger.Level(rawValue: logLevelName) != nil else { throw ValidationError("unknown log level \(logLevelName)") }
            guard FileManager.default.isReadableFile(atPath: keyPath) else {
                throw ValidationError("cannot read the SSH key \(keyPath): create it with 'make keys' or pass --key")
            }
        }

        func run() async throws {
            let app = try await buildApplication(self)
            try await app.runService()
        }
    }

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show or change the database schema version.",
            discussion: "Examples: resalloc-master migrate status; resalloc-master migrate down --to 1; resalloc-master migrate up",
            subcommands: [Status.self, Up.self, Down.self])

        struct Status: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List migrations and which are applied.")
            @OptionGroup var database: DatabaseOptions
            func run() throws {
                for step in try database.open().migrationStatus() {
                    let applied = step.appliedAt.map { "applied \($0.formatted(.iso8601))" } ?? "pending"
                    print("\(step.version)  \(step.name.padding(toLength: 32, withPad: " ", startingAt: 0))  \(applied)")
                }
            }
        }

        struct Up: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Apply migrations up to --to (default: all).")
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Stop at this version.") var to: Int?
            func run() throws {
                let applied = try database.open().migrateUp(to: to)
                print(applied.isEmpty ? "already up to date" : "applied \(applied.map(String.init).joined(separator: ", "))")
            }
        }

        struct Down: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revert migrations down to --to (default: one step). Their data is lost.")
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Revert down to this version (0 empties the database).") var to: Int?
            func validate() throws {
                if let to, to < 0 { throw ValidationError("--to must be 0 or more") }
            }
            func run() throws {
                let reverted = try database.open().migrateDown(to: to)
                print(reverted.isEmpty ? "nothing to revert" : "reverted \(reverted.map(String.init).joined(separator: ", "))")
            }
        }
    }

    struct Users: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "user", abstract: "Manage users from the server's shell.",
            discussion: "Example: resalloc-master user approve alice",
            subcommands: [List.self, Approve.self, Admin.self])

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List users.")
            @OptionGroup var database: DatabaseOptions
            func run() throws {
                let db = try database.open()
                try db.requireCurrentSchema()
                print("NAME".padding(toLength: 24, withPad: " ", startingAt: 0) + "ROLE   STATUS")
                for user in try db.users() {
                    print(user.name.padding(toLength: 24, withPad: " ", startingAt: 0) + user.role.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0) + user.status.rawValue)
                }
            }
        }

        struct Approve: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Let a pending user log in.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            func run() throws {
                let db = try database.open()
                try db.requireCurrentSchema()
                do { _ = try db.updateUser(named: name, status: .active) } catch let error as StoreError { throw ValidationError(error.description) }
                print("approved \(name)")
            }
        }

        struct Admin: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Make a user an admin (and active).")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            func run() throws {
                let db = try database.open()
                try db.requireCurrentSchema()
                do { _ = try db.updateUser(named: name, status: .active, role: .admin) } catch let error as StoreError { throw ValidationError(error.description) }
                print("\(name) is an admin")
            }
        }
    }
}
