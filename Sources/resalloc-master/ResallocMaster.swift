import ArgumentParser
import Core
import Docker
import Foundation
import Logging
import Server
import Store

struct ResallocMaster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resalloc-master",
        abstract: "The resalloc master: leases Docker containers on machines it reaches over SSH.",
        discussion: """
            Every option also reads from the environment: RESALLOC_DB, RESALLOC_KEY, RESALLOC_HOST, RESALLOC_PORT.
            Example: resalloc-master serve --db /var/lib/resalloc/resalloc.db --key /etc/resalloc/resalloc.pem
            """,
        subcommands: [Serve.self, Cleanup.self, Migrate.self, Users.self, Events.self, Sessions.self]
    )
}

/// `--db`, shared by every command.
struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("db"),
        help: "The SQLite database file, or postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=require] (env RESALLOC_DB)."
    )
    var path: String = ProcessInfo.processInfo.environment["RESALLOC_DB"] ?? "resalloc.db"

    var isPostgres: Bool { PostgresStore.isURL(path) }

    /// Opens the store, creating a SQLite file only when `create` (serve and migrate up);
    /// otherwise a mistyped path is an error and leaves no empty database behind.
    func open(create: Bool = false) throws -> any Store {
        var logger = Logger(label: "resalloc-master")
        logger.logLevel = .critical
        if isPostgres {
            do { return try PostgresStore(url: path, logger: logger) } catch { throw ValidationError("\(error)") }
        }
        guard create || FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("there is no database at \(path): pass --db (or RESALLOC_DB), or create it with resalloc-master migrate up")
        }
        do { return try AppDatabase(path: path) } catch {
            throw ValidationError("cannot open the database \(path): \(error)")
        }
    }

    /// Opens the store and checks that its schema is this program's.
    func openCurrent() async throws -> any Store {
        let store = try open()
        do { try await store.requireCurrentVersion() } catch let error as StoreError { throw ValidationError(error.description) } catch {
            throw ValidationError("cannot reach the database: \(String(reflecting: error))")
        }
        return store
    }
}

extension ResallocMaster {
    struct Serve: AsyncParsableCommand, AppArguments {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "Serve the HTTP API (migrates the database first).",
            discussion: "Example: resalloc-master serve --host 127.0.0.1 --port 8080 --db resalloc.db --key resources/resalloc.pem"
        )

        @Option(help: "Address to listen on (env RESALLOC_HOST).")
        var host: String = ProcessInfo.processInfo.environment["RESALLOC_HOST"] ?? "127.0.0.1"
        @Option(name: .customLong("port"), help: "Port to listen on (env RESALLOC_PORT).")
        var portText: String = ProcessInfo.processInfo.environment["RESALLOC_PORT"] ?? "8080"
        @OptionGroup var database: DatabaseOptions
        @Option(name: .customLong("key"), help: "The master's private SSH key (env RESALLOC_KEY).")
        var keyPath: String = ProcessInfo.processInfo.environment["RESALLOC_KEY"] ?? "resources/resalloc.pem"
        @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (env RESALLOC_LOG_LEVEL).")
        var logLevelName: String = ProcessInfo.processInfo.environment["RESALLOC_LOG_LEVEL"] ?? "info"

        @Option(name: .customLong("default-ttl"), help: "A lease's lifetime when none is asked for: 90s, 15m, 2h, 1d.")
        var defaultTTLText = "24h"
        @Option(name: .customLong("max-ttl"), help: "The longest lease lifetime allowed.")
        var maxTTLText = "7d"
        @Option(name: .customLong("token-ttl"), help: "How long a login token stays valid.")
        var tokenTTLText = "30d"
        @Option(
            name: .customLong("reconcile-every"),
            help: "Run the cleanup pass this often, besides at start, 5 s and 20 s later (0: only those; cron's resalloc-master cleanup still works)."
        )
        var reconcileEveryText = "60s"
        @Option(
            name: .customLong("ssh-port"),
            help: "The SSH gateway's port (ssh -p PORT LEASE@MASTER); 0 turns it off (env RESALLOC_SSH_PORT)."
        )
        var sshPortText: String = ProcessInfo.processInfo.environment["RESALLOC_SSH_PORT"] ?? "2222"
        @Option(
            name: .customLong("ssh-host-key"),
            help: "The gateway's Ed25519 host key, made on first start (mode 0600); default: gateway-host-key beside the database."
        )
        var sshHostKeyPath: String?
        @Option(
            name: .customLong("metrics-token"),
            help: "Make GET /metrics require 'Authorization: Bearer TOKEN' (env RESALLOC_METRICS_TOKEN); without it /metrics is open."
        )
        var metricsTokenText: String?

        @Option(name: .customLong("keep-events"), help: "Events of the audit trail older than this are purged by the server's passes.")
        var keepEventsText = "90d"
        @Option(
            name: .customLong("record-dir"),
            help: "Where interactive sessions are recorded (asciinema v2, mode 0600); '' turns it off; default: recordings beside the database."
        )
        var recordDirectory: String?
        @Flag(name: .customLong("record-input"), help: "Record what users type, too (off: output only).") var recordInput = false
        @Option(
            name: .customLong("record-max"),
            help: "A recording stops at this size (the session goes on; the recording says it was cut): 64m, 1g, …"
        )
        var recordMaxText = "64m"
        @Option(name: .customLong("keep-recordings"), help: "Recordings last written longer ago than this are removed by the server's passes.")
        var keepRecordingsText = "30d"
        var recordMax: Int { Int(ByteSize.parse(recordMaxText) ?? Int64(SessionRecorder.defaultMaxBytes)) }
        var keepRecordings: Duration { TTL.parse(keepRecordingsText) ?? .seconds(30 * 86400) }
        @Option(
            name: .customLong("lease-memory"),
            help: "Memory (swap included) of a container whose resource sets none: 512m, 2g, … Never unlimited."
        )
        var leaseMemoryText = "1g"
        @Option(name: .customLong("lease-cpus"), help: "CPUs of a container whose resource sets none: 0.5, 2, … (default: no CPU limit).")
        var leaseCPUsText: String?
        @Option(name: .customLong("lease-pids"), help: "Processes of a container whose resource sets none. Never unlimited.")
        var leasePidsText = "1024"
        @Option(
            name: .customLong("cpu-overcommit"),
            help: "Placement lets the CPU limits on a machine add up to its CPUs times this (memory limits never pass its memory)."
        )
        var cpuOvercommitText = "4"
        @Option(
            name: .customLong("max-sessions-per-user"),
            help: "Shells, gateway sessions, copies and forwards one user may hold on one machine at once (per master process)."
        )
        var maxSessionsPerUser = 8

        @Option(name: .customLong("user-leases"), help: "Leases one user may hold at once, where an admin set none for them (default: no limit).")
        var userLeases: Int?
        @Option(name: .customLong("user-jobs"), help: "Jobs one user may run at once; more wait in the queue (default: no limit).")
        var userJobs: Int?
        @Option(name: .customLong("user-memory"), help: "Memory limits one user's leases and jobs may add up to: 16g, … (default: no limit).")
        var userMemoryText: String?
        @Option(name: .customLong("user-cpus"), help: "CPU limits one user's leases and jobs may add up to: 8, 1.5, … (default: no limit).")
        var userCPUs: Double?
        @Option(name: .customLong("user-queued-jobs"), help: "Jobs one user may have waiting in the queue at once; more are refused (429).")
        var userQueuedJobs = 1000
        @Option(name: .customLong("job-log-max"), help: "Output kept per job (more is dropped, with a note): 16m, 1g, …")
        var jobLogMaxText = "16m"
        @Option(name: .customLong("keep-jobs"), help: "Jobs that ended longer ago than this are forgotten, with their logs.")
        var keepJobsText = "7d"

        var jobSettings: Jobs.Settings {
            var settings = Jobs.Settings()
            settings.logMax = ByteSize.parse(jobLogMaxText) ?? settings.logMax
            settings.keep = TTL.parse(keepJobsText) ?? settings.keep
            settings.maxTTL = maxTTL
            settings.maxQueuedPerUser = userQueuedJobs
            settings.defaultTTL = min(settings.defaultTTL, maxTTL)
            settings.userDefaults =
                (try? Master.userLimits(leases: userLeases, jobs: userJobs, memory: userMemoryText, cpus: userCPUs)) ?? UserLimits()
            return settings
        }

        var limitSettings: LimitPolicy.Settings {
            LimitPolicy.Settings(
                defaults: ContainerLimits(
                    memoryBytes: ByteSize.parse(leaseMemoryText),
                    milliCPUs: leaseCPUsText.flatMap(CPUAmount.parse),
                    pids: Int(leasePidsText)
                ),
                cpuOvercommit: Double(cpuOvercommitText) ?? 4,
                ownerNetworks: tenantNetworks == "on"
            )
        }
        @Option(
            name: .customLong("tenant-networks"),
            help: ArgumentHelp(
                "on: one network per lease owner on each machine, and machines must have resalloc-firewall (resources/setup.sh). "
                    + "off: leases share the engine's default network, for a fleet of one tenant.",
                valueName: "on|off"
            )
        )
        var tenantNetworks = "on"

        var metricsToken: String? {
            (metricsTokenText ?? ProcessInfo.processInfo.environment["RESALLOC_METRICS_TOKEN"]).flatMap { $0.isEmpty ? nil : $0 }
        }
        var keepEvents: Duration { TTL.parse(keepEventsText) ?? .seconds(90 * 86400) }
        var port: Int { Int(portText) ?? 0 }
        var sshPort: Int { Int(sshPortText) ?? -1 }
        var databasePath: String { database.path }
        var logLevel: Logger.Level { Logger.Level(rawValue: logLevelName) ?? .info }
        var bcryptCost: UInt8 { 10 }
        var defaultTTL: Duration { TTL.parse(defaultTTLText) ?? .seconds(86400) }
        var maxTTL: Duration { TTL.parse(maxTTLText) ?? .seconds(7 * 86400) }
        var tokenLifetime: Duration { TTL.parse(tokenTTLText) ?? .seconds(30 * 86400) }
        var reconcileEvery: Duration { reconcileEveryText == "0" ? .zero : TTL.parse(reconcileEveryText) ?? .seconds(60) }

        func validate() throws {
            guard (1...65535).contains(port) else {
                throw ValidationError("--port (or RESALLOC_PORT) must be a number from 1 to 65535; got \(portText)")
            }
            guard (0...65535).contains(sshPort) else {
                throw ValidationError("--ssh-port (or RESALLOC_SSH_PORT) must be a number from 0 (off) to 65535; got \(sshPortText)")
            }
            guard Logger.Level(rawValue: logLevelName) != nil else { throw ValidationError("unknown log level \(logLevelName)") }
            for (flag, text) in [("--default-ttl", defaultTTLText), ("--max-ttl", maxTTLText), ("--token-ttl", tokenTTLText)]
            where TTL.parse(text) == nil {
                throw ValidationError("\(flag) takes 90s, 15m, 2h or 1d; got \(text)")
            }
            guard reconcileEveryText == "0" || TTL.parse(reconcileEveryText) != nil else {
                throw ValidationError("--reconcile-every takes 0, 30s, 5m, …")
            }
            guard TTL.parse(keepEventsText) != nil else { throw ValidationError("--keep-events takes 30d, 12h, …") }
            guard TTL.parse(keepRecordingsText) != nil else { throw ValidationError("--keep-recordings takes 30d, 12h, …") }
            guard InputRules.matches(recordMaxText, InputRules.memorySize), let recordBytes = ByteSize.parse(recordMaxText), recordBytes >= 1 << 20
            else { throw ValidationError("--record-max takes a size of 1m or more, such as 64m or 1g; got \(recordMaxText)") }
            guard InputRules.matches(leaseMemoryText, InputRules.memorySize), let memory = ByteSize.parse(leaseMemoryText),
                InputRules.memory.contains(memory)
            else {
                throw ValidationError("--lease-memory takes a size from 6m to 999999m or 0.1g to 999.9g, such as 512m or 2g; got \(leaseMemoryText)")
            }
            if let leaseCPUsText {
                guard let milli = CPUAmount.parse(leaseCPUsText), InputRules.milliCPUs.contains(milli) else {
                    throw ValidationError("--lease-cpus takes a number of CPUs from 0.01 to 1024, such as 1.5; got \(leaseCPUsText)")
                }
            }
            guard let pids = Int(leasePidsText), InputRules.pids.contains(pids) else {
                throw ValidationError(
                    "--lease-pids takes a number from \(InputRules.pids.lowerBound) to \(InputRules.pids.upperBound); got \(leasePidsText)"
                )
            }
            do { _ = try Master.userLimits(leases: userLeases, jobs: userJobs, memory: userMemoryText, cpus: userCPUs) } catch {
                throw ValidationError("--user-leases, --user-jobs, --user-memory, --user-cpus: \(error.message)")
            }
            guard let logMax = ByteSize.parse(jobLogMaxText), logMax >= 1024 else {
                throw ValidationError("--job-log-max takes a size of 1k or more, such as 16m; got \(jobLogMaxText)")
            }
            guard TTL.parse(keepJobsText) != nil else { throw ValidationError("--keep-jobs takes 7d, 12h, …") }
            guard (1...1_000_000).contains(userQueuedJobs) else { throw ValidationError("--user-queued-jobs takes 1 to 1000000") }
            guard ["on", "off"].contains(tenantNetworks) else { throw ValidationError("--tenant-networks takes on or off; got \(tenantNetworks)") }
            guard (1...1000).contains(maxSessionsPerUser) else { throw ValidationError("--max-sessions-per-user takes 1 to 1000") }
            guard let overcommit = Double(cpuOvercommitText), overcommit >= 0.1, overcommit <= 100 else {
                throw ValidationError("--cpu-overcommit takes a number from 0.1 to 100; got \(cpuOvercommitText)")
            }
            guard defaultTTL <= maxTTL else { throw ValidationError("--default-ttl must not exceed --max-ttl") }
            guard FileManager.default.isReadableFile(atPath: keyPath) else {
                throw ValidationError("cannot read the SSH key \(keyPath): create it with 'make keys' or pass --key")
            }
        }

        func run() async throws {
            let app = try await buildApplication(self)
            try await app.runService()
        }
    }

    struct Cleanup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cleanup",
            abstract: "One pass that makes the fleet and the database agree, then exit; safe from cron every minute.",
            discussion: """
                Expires leases past their time, removes containers labelled with this master's id that no live lease
                explains, marks leases whose container vanished 'lost', finishes or fails leases a stopped master left mid-creation,
                purges old failed leases, and marks unreachable machines unhealthy (and healthy again). Containers of
                other masters are never touched. A lock keeps two passes from overlapping: the second says so and
                exits 0. Exit status is non-zero only when something could not be done.
                crontab: * * * * * cd /srv/resalloc && resalloc-master cleanup --db resalloc.db --key resources/resalloc.pem
                """
        )

        @OptionGroup var database: DatabaseOptions
        @Option(name: .customLong("key"), help: "The master's private SSH key (env RESALLOC_KEY).")
        var keyPath: String = ProcessInfo.processInfo.environment["RESALLOC_KEY"] ?? "resources/resalloc.pem"
        @Flag(help: "Say what would be done, change nothing.") var dryRun = false
        @Flag(help: "List every action, not only the summary.") var verbose = false
        @Option(
            help: """
                A lease being created or deleted by a master process that is gone is settled at once; one whose process \
                is unknown is settled after this.
                """
        ) var stuckAfter = "10m"
        @Option(help: "How long a machine has to list its containers before it is counted down.") var machineTimeout = "20s"
        @Option(help: "How long removing containers may take on one machine; what is left waits for the next pass.") var workTimeout = "5m"
        @Option(help: "Events of the audit trail older than this are purged.") var keepEvents = "90d"

        func validate() throws {
            guard TTL.parse(stuckAfter) != nil || stuckAfter == "0s" else { throw ValidationError("--stuck-after takes 0s, 30s, 10m, …") }
            guard TTL.parse(machineTimeout) != nil else { throw ValidationError("--machine-timeout takes 5s, 1m, …") }
            guard TTL.parse(workTimeout) != nil else { throw ValidationError("--work-timeout takes 30s, 5m, …") }
            guard TTL.parse(keepEvents) != nil else { throw ValidationError("--keep-events takes 30d, 12h, …") }
        }

        func run() async throws {
            guard database.isPostgres || FileManager.default.fileExists(atPath: database.path) else {
                FileHandle.standardError.write(
                    Data("resalloc-master cleanup: there is no database at \(database.path); pass --db (or RESALLOC_DB)\n".utf8)
                )
                throw ExitCode(2)
            }
            var logger = Logger(label: "resalloc-master")
            logger.logLevel = .error
            let master: Master
            do {
                let db = try await database.openCurrent()
                master = try await Master(database: db, keyPath: keyPath, logger: logger)
            } catch {
                FileHandle.standardError.write(Data("resalloc-master cleanup: \(error)\n".utf8))
                throw ExitCode(2)
            }
            var reconciler = Reconciler(master: master)
            reconciler.stuckAfter = TTL.parse(stuckAfter) ?? .zero
            reconciler.machineDeadline = TTL.parse(machineTimeout)!
            reconciler.workDeadline = TTL.parse(workTimeout)!
            reconciler.keepEvents = TTL.parse(keepEvents)!
            let pass = reconciler
            let dryRun = dryRun
            let outcome = PassOutcome()
            // One pass at a time over the database, whichever host's cron or master runs it.
            guard try await master.database.exclusivePass({ outcome.set(await pass.run(dryRun: dryRun)) }), let summary = outcome.value else {
                await master.shutdown()
                print("another cleanup is running; nothing to do")
                return
            }
            await master.shutdown()
            if dryRun || verbose {
                for action in summary.actions { print("\(dryRun ? "would " : "")\(action)") }
            }
            for problem in summary.problems { FileHandle.standardError.write(Data("resalloc-master cleanup: \(problem)\n".utf8)) }
            print((dryRun ? "dry run: " : "") + summary.line)
            if !summary.problems.isEmpty { throw ExitCode(1) }
        }
    }

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate",
            abstract: "Show or change the database schema version.",
            discussion: "Examples: resalloc-master migrate status; resalloc-master migrate down --to 1; resalloc-master migrate up",
            subcommands: [Status.self, Up.self, Down.self]
        )

        struct Status: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "status", abstract: "List migrations and which are applied.")
            @OptionGroup var database: DatabaseOptions
            func run() async throws {
                for step in try await database.open().migrationStatus() {
                    let applied = step.appliedAt.map { "applied \($0.formatted(.iso8601))" } ?? "pending"
                    print("\(step.version)  \(step.name.padding(toLength: 32, withPad: " ", startingAt: 0))  \(applied)")
                }
            }
        }

        struct Up: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "up", abstract: "Apply migrations up to --to (default: all).")
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Stop at this version.") var to: Int?
            func run() async throws {
                let applied = try await database.open(create: true).migrateUp(to: to)
                print(applied.isEmpty ? "already up to date" : "applied \(applied.map(String.init).joined(separator: ", "))")
            }
        }

        struct Down: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "down",
                abstract: "Revert migrations down to --to (default: one step). Their data is lost."
            )
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Revert down to this version (0 empties the database).") var to: Int?
            func validate() throws {
                if let to, to < 0 { throw ValidationError("--to must be 0 or more") }
            }
            func run() async throws {
                let reverted = try await database.open().migrateDown(to: to)
                print(reverted.isEmpty ? "nothing to revert" : "reverted \(reverted.map(String.init).joined(separator: ", "))")
            }
        }
    }

    struct Users: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "user",
            abstract: "Manage users from the server's shell.",
            discussion: "Example: resalloc-master user approve alice",
            subcommands: [List.self, Approve.self, Admin.self, Disable.self, Enable.self, Limit.self]
        )

        struct Limit: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "limit",
                abstract: "Set what one user may hold at once; without options, show it.",
                discussion: """
                    A lease past a limit is refused (403) with a sentence that names it, or waits in the queue with \
                    lease create --wait; a job past a limit waits. "none" removes a limit of the user's own, so the \
                    server's default (serve --user-leases --user-jobs --user-memory --user-cpus) applies again.

                    Example: resalloc-master user limit alice --leases 2 --jobs 4 --memory 16g --cpus 8
                    """
            )
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            @Option(help: "Leases at once (or none).") var leases: String?
            @Option(help: "Jobs running at once (or none).") var jobs: String?
            @Option(help: "Memory limits of their leases and jobs together: 16g, 512m (or none).") var memory: String?
            @Option(help: "CPU limits of their leases and jobs together: 8, 1.5 (or none).") var cpus: String?

            func run() async throws {
                let db = try await database.openCurrent()
                guard var user = try await db.user(named: name) else { throw ValidationError("no user \(name)") }
                var limits = user.limits
                func count(_ text: String?, _ flag: String) throws -> Int?? {
                    guard let text else { return .none }
                    if text == "none" { return .some(nil) }
                    guard let value = Int(text), (0...100_000).contains(value) else {
                        throw ValidationError("\(flag) takes a count from 0 to 100000, or none")
                    }
                    return .some(value)
                }
                if let leases = try count(leases, "--leases") { limits.leases = leases }
                if let jobs = try count(jobs, "--jobs") { limits.jobs = jobs }
                do {
                    if let memory {
                        limits.memoryBytes =
                            memory == "none" ? nil : try Master.userLimits(leases: nil, jobs: nil, memory: memory, cpus: nil).memoryBytes
                    }
                    if let cpus {
                        guard cpus == "none" || Double(cpus) != nil else {
                            throw MasterError(.invalid, "--cpus takes a number such as 8 or 1.5, or none")
                        }
                        limits.milliCPUs =
                            cpus == "none" ? nil : try Master.userLimits(leases: nil, jobs: nil, memory: nil, cpus: Double(cpus)).milliCPUs
                    }
                } catch { throw ValidationError(MasterError.from(error).message) }
                if limits != user.limits {
                    user = try await db.setUserLimits(named: name, to: limits)
                    try await db.appendEvent(Event(actor: "resalloc-master", action: "user.limits", subject: name))
                }
                let use = try await db.userUses()[user.id!] ?? UserUse()
                let own = user.limits
                print(
                    "\(name) holds \(use.leases) leases, \(use.jobs) jobs, \(ByteSize.format(use.memoryBytes)) of memory, \(CPUAmount.format(use.milliCPUs)) CPUs"
                )
                print(
                    "own limits: \(own.leases.map(String.init) ?? "-") leases, \(own.jobs.map(String.init) ?? "-") jobs, "
                        + "\(own.memoryBytes.map(ByteSize.format) ?? "-") memory, \(own.milliCPUs.map(CPUAmount.format) ?? "-") CPUs (-: the server's default)"
                )
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List users.")
            @OptionGroup var database: DatabaseOptions
            func run() async throws {
                let db = try await database.openCurrent()
                print("NAME".padding(toLength: 24, withPad: " ", startingAt: 0) + "ROLE   STATUS")
                for user in try await db.users() {
                    print(
                        user.name.padding(toLength: 24, withPad: " ", startingAt: 0)
                            + user.role.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0) + user.statusName
                    )
                }
            }
        }

        struct Disable: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "disable",
                abstract: "Switch a user off: their tokens and keys stop working at once, their open sessions end within seconds.",
                discussion: """
                    Their leases keep running until an admin deletes them or they expire. A running master notices
                    within its session check (2 s) and ends the user's shells, gateway sessions, copies and forwards.
                    Example: resalloc-master user disable mallory
                    """
            )
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            func run() async throws { try await Users.set(name, disabled: true, in: database) }
        }

        /// Switches `name` off or on, with its event, and says so.
        static func set(_ name: String, disabled: Bool, in database: DatabaseOptions) async throws {
            let db = try await database.openCurrent()
            do { _ = try await db.setUserDisabled(named: name, disabled) } catch let error as StoreError {
                throw ValidationError(error.description)
            }
            let done = disabled ? "disabled" : "enabled"
            try await db.appendEvent(Event(actor: "resalloc-master", action: "user.\(done)", subject: name))
            print("\(done) \(name)")
        }

        struct Enable: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "enable",
                abstract: "Switch a disabled user on again, as they were before (pending or active).",
                discussion: "Example: resalloc-master user enable mallory"
            )
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            func run() async throws { try await Users.set(name, disabled: false, in: database) }
        }

        struct Approve: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "approve", abstract: "Let a pending user log in.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            func run() async throws {
                let db = try await database.openCurrent()
                do { _ = try await db.updateUser(named: name, status: .active, role: nil) } catch let error as StoreError {
                    throw ValidationError(error.description)
                }
                try await db.appendEvent(Event(actor: "resalloc-master", action: "user.approved", subject: name))
                print("approved \(name)")
            }
        }

        struct Admin: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "admin", abstract: "Make a user an admin (and active).")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The user's name.") var name: String
            func run() async throws {
                let db = try await database.openCurrent()
                do { _ = try await db.updateUser(named: name, status: .active, role: .admin) } catch let error as StoreError {
                    throw ValidationError(error.description)
                }
                try await db.appendEvent(Event(actor: "resalloc-master", action: "user.made-admin", subject: name))
                print("\(name) is an admin")
            }
        }
    }

    struct Events: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "events",
            abstract: "The audit trail: who did what, on what, when, from where; oldest first.",
            discussion: "Example: resalloc-master events --since 1h --user alice"
        )
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Only events of the last 90s, 15m, 2h, 1d, ….") var since: String?
        @Option(help: "Only what this user (or cleanup, reconcile) did.") var user: String?
        @Flag(help: "One JSON object a line.") var json = false

        func validate() throws {
            if let since, TTL.parse(since) == nil { throw ValidationError("--since takes 90s, 15m, 2h, 1d, …") }
        }

        func run() async throws {
            let db = try await database.openCurrent()
            let from = since.flatMap(TTL.parse).map { Date() - TimeInterval($0.components.seconds) }
            var after: Int64?
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys]
            let dates = ISO8601DateFormatter()
            while true {
                let page = try await db.events(since: from, actor: user, after: after, limit: 1000)
                for event in page {
                    if json {
                        print(String(decoding: try encoder.encode(event), as: UTF8.self))
                    } else {
                        print(
                            [dates.string(from: event.at), event.actor, event.action, event.subject, event.detail ?? "", event.address ?? ""]
                                .joined(separator: "  ")
                        )
                    }
                }
                guard page.count == 1000, let last = page.last?.id else { break }
                after = last
            }
        }
    }

    struct Sessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sessions",
            abstract: "Recorded interactive sessions (asciinema v2 files).",
            discussion: "Examples: resalloc-master sessions list --lease mylease; resalloc-master sessions show ID | asciinema play -",
            subcommands: [List.self, Show.self]
        )

        struct Place: ParsableArguments {
            @OptionGroup var database: DatabaseOptions
            @Option(name: .customLong("record-dir"), help: "Where serve records (default: recordings beside the database).")
            var recordDirectory: String?
            var directory: String {
                recordDirectory ?? URL(fileURLWithPath: directoryBeside(database.path)).appendingPathComponent("recordings").path
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List recordings, oldest first.")
            @OptionGroup var place: Place
            @Option(help: "Only this lease's.") var lease: String?
            @Option(help: "Only this user's.") var user: String?
            func run() async throws {
                let dates = ISO8601DateFormatter()
                print(["ID", "LEASE", "USER", "STARTED", "BYTES"].joined(separator: "  "))
                for entry in SessionRecordings.list(place.directory, lease: lease, user: user) {
                    print([entry.id, entry.lease, entry.user, dates.string(from: entry.started), String(entry.bytes)].joined(separator: "  "))
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "show", abstract: "Print a recording, for asciinema play or cat.")
            @OptionGroup var place: Place
            @Argument(help: "The recording's id, as sessions list prints it.") var id: String
            func run() async throws {
                guard let path = SessionRecordings.path(place.directory, id: id), let data = FileManager.default.contents(atPath: path) else {
                    throw ValidationError("no recording \(id) in \(place.directory)")
                }
                FileHandle.standardOutput.write(data)
            }
        }
    }
}
