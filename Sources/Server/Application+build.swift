import Core
import Foundation
import Gateway
import Hummingbird
import HummingbirdWebSocket
import Logging
import ResallocAPI
import ServiceLifecycle
import Store

/// What `buildApplication` needs; `resalloc-master serve` and the tests both provide it.
public protocol AppArguments {
    var host: String { get }
    var port: Int { get }
    var databasePath: String { get }
    var keyPath: String { get }
    var logLevel: Logger.Level { get }
    var bcryptCost: UInt8 { get }
    /// A lease's lifetime when the request names none, and the longest one allowed.
    var defaultTTL: Duration { get }
    var maxTTL: Duration { get }
    /// How often the server runs the cleanup pass itself, besides once at start; zero: never.
    var reconcileEvery: Duration { get }
    /// When the pass after the start one runs; zero: none.
    var reconcileFollowUp: Duration { get }
    /// How long a login token stays valid.
    var tokenLifetime: Duration { get }
    /// The SSH gateway's port on `host`; 0 turns it off.
    var sshPort: Int { get }
    /// The gateway's Ed25519 host key, made there on first start; nil: beside the database.
    var sshHostKeyPath: String? { get }
    /// How often this process writes its heartbeat (see `Incarnations`).
    var heartbeatEvery: Duration { get }
    /// How often the warm pools are checked when no handout wakes them.
    var poolEvery: Duration { get }
    /// The bearer token `GET /metrics` requires; nil: open.
    var metricsToken: String? { get }
    /// How long the audit trail keeps an event.
    var keepEvents: Duration { get }
    /// Where interactive sessions are recorded: nil, `recordings` beside the database; "": off.
    var recordDirectory: String? { get }
    /// Whether recordings also hold what the user typed.
    var recordInput: Bool { get }
    /// Where a recording stops growing, in bytes; and how long recordings are kept.
    var recordMax: Int { get }
    var keepRecordings: Duration { get }
    /// How often the master pings each WebSocket client; one that has not answered the last
    /// ping by the next is cut off (a laptop gone to sleep), and its session ends.
    var webSocketPingEvery: Duration { get }
    /// What a container runs with when its resource sets no limit, and how far CPU limits on
    /// one machine may pass its CPUs (`serve --lease-memory --lease-cpus --lease-pids
    /// --cpu-overcommit`).
    var limitSettings: LimitPolicy.Settings { get }
    /// How many shells, copies and forwards one user may hold on one machine at once.
    var maxSessionsPerUser: Int { get }
    /// How often open sessions are checked against users switched off elsewhere.
    var sessionWatchEvery: Duration { get }
    var jobSettings: Jobs.Settings { get }
    var jobEvery: Duration { get }
}

extension AppArguments {
    public var defaultTTL: Duration { .seconds(86400) }
    public var maxTTL: Duration { .seconds(7 * 86400) }
    public var reconcileEvery: Duration { .seconds(60) }
    public var reconcileFollowUp: Duration { .seconds(20) }
    public var tokenLifetime: Duration { .seconds(30 * 86400) }
    public var sshPort: Int { 0 }
    public var sshHostKeyPath: String? { nil }
    public var heartbeatEvery: Duration { .seconds(5) }
    public var poolEvery: Duration { .seconds(10) }
    public var metricsToken: String? { nil }
    public var keepEvents: Duration { .seconds(90 * 86400) }
    public var recordDirectory: String? { nil }
    public var recordInput: Bool { false }
    public var recordMax: Int { SessionRecorder.defaultMaxBytes }
    public var keepRecordings: Duration { .seconds(30 * 86400) }
    public var webSocketPingEvery: Duration { .seconds(30) }
    public var limitSettings: LimitPolicy.Settings { LimitPolicy.Settings() }
    public var maxSessionsPerUser: Int { 8 }
    public var sessionWatchEvery: Duration { .seconds(2) }
    public var jobSettings: Jobs.Settings { Jobs.Settings() }
    public var jobEvery: Duration { .seconds(1) }

    /// Where recordings go, or nil when they are off.
    public var resolvedRecordDirectory: String? {
        if let recordDirectory { return recordDirectory.isEmpty ? nil : recordDirectory }
        return URL(fileURLWithPath: directoryBeside(databasePath)).appendingPathComponent("recordings").path
    }

    /// Where the gateway's host key lives: as given, else `gateway-host-key` beside the database.
    public var resolvedSSHHostKeyPath: String {
        sshHostKeyPath ?? URL(fileURLWithPath: directoryBeside(databasePath)).appendingPathComponent("gateway-host-key").path
    }
}

/// The one composition root: opens the database, assembles the domain and the routes.
public func buildApplication(_ arguments: some AppArguments) async throws -> some ApplicationProtocol {
    let logger = {
        var logger = Logger(label: "resalloc-master")
        logger.logLevel = arguments.logLevel
        return logger
    }()
    var assembled = try await Master(
        databasePath: arguments.databasePath,
        keyPath: arguments.keyPath,
        logger: logger,
        bcryptCost: arguments.bcryptCost
    )
    guard arguments.defaultTTL > .zero, arguments.defaultTTL <= arguments.maxTTL else {
        throw MasterError(.invalid, "the default lease lifetime must be positive and at most the maximum")
    }
    assembled.saga.defaultTTL = arguments.defaultTTL
    assembled.saga.maxTTL = arguments.maxTTL
    guard arguments.tokenLifetime > .zero else { throw MasterError(.invalid, "the token lifetime must be positive") }
    assembled.accounts.tokenLifetime = arguments.tokenLifetime
    assembled.recordDirectory = arguments.resolvedRecordDirectory
    assembled.recordInput = arguments.recordInput
    assembled.recordMax = arguments.recordMax
    assembled.limits.settings = arguments.limitSettings
    try await assembled.database.setSetting(OwnerNetworks.settingKey, to: arguments.limitSettings.ownerNetworks ? "on" : "off")
    assembled.sessions.maxPerUser = arguments.maxSessionsPerUser
    assembled.jobs.settings = arguments.jobSettings
    let master = assembled
    try await master.beginIncarnation(heartbeat: arguments.heartbeatEvery)
    var services: [any Service] = [MasterShutdown(master: master), Periodic.heartbeat(master: master, every: arguments.heartbeatEvery)]
    var gateway: GatewayInfo?
    if arguments.sshPort > 0 {
        let hostKey = try GatewayHostKey.loadOrCreate(at: arguments.resolvedSSHHostKeyPath)
        services.append(SSHGateway(master: master, host: arguments.host, port: arguments.sshPort, hostKey: hostKey, logger: logger))
        gateway = GatewayInfo(success: true, message: "", port: arguments.sshPort, hostKey: hostKey.publicKeyLine, fingerprint: hostKey.fingerprint)
    }
    let router = try buildRouter(master, gateway: gateway, metricsToken: arguments.metricsToken)
    services.append(PoolKeeper(pool: master.warmPool, every: arguments.poolEvery))
    services.append(Periodic.sessionWatch(master: master, every: arguments.sessionWatchEvery))
    services.append(Periodic.jobKeeper(master: master, every: arguments.jobEvery))
    services.append(
        ReconcileService(
            reconciler: {
                var reconciler = Reconciler(master: master)
                reconciler.actor = "reconcile"
                reconciler.buildsAhead = true
                reconciler.keepEvents = arguments.keepEvents
                reconciler.keepRecordings = arguments.keepRecordings
                return reconciler
            }(),
            databasePath: arguments.databasePath,
            every: arguments.reconcileEvery,
            followUp: arguments.reconcileFollowUp,
            watchEvery: arguments.heartbeatEvery
        )
    )
    return Application(
        router: router,
        // Frames up to 1 MiB: resalloc cp sends its tar stream in 256 KiB pieces.
        server: .http1WebSocketUpgradeClosingUnused(
            webSocketRouter: buildWebSocketRouter(master),
            configuration: .init(ws: .init(maxFrameSize: 1 << 20, autoPing: .enabled(timePeriod: arguments.webSocketPingEvery)))
        ),
        configuration: .init(address: .hostname(arguments.host, port: arguments.port), serverName: "resalloc-master"),
        services: services,
        onServerRunning: { channel in
            logger.notice(
                "resalloc-master listening",
                metadata: ["address": "\(channel.localAddress?.description ?? "?")", "master": "\(master.masterID)"]
            )
        },
        logger: logger
    )
}

/// The routes of every controller and the web console, behind the error middleware.
public func buildRouter(_ master: Master, gateway: GatewayInfo? = nil, metricsToken: String? = nil) throws -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self)
    let endpoints = endpoints(master, gateway: gateway, metricsToken: metricsToken)
    _ = MetricsRegistry.shared  // bootstrapped before the middleware makes its first counter
    router.add(middleware: MetricsMiddleware<AppRequestContext>())
    router.add(middleware: APIErrorMiddleware<AppRequestContext>(routes: RouteTable(endpoints)))
    for endpoint in endpoints {
        router.on(RouterPath(endpoint.path), method: endpoint.method) { request, context in
            try await endpoint.respond(request, context, accounts: master.accounts)
        }
    }
    ConsoleController(master: master, templates: try ConsoleController.loadTemplates()).add(to: router)
    return router
}

/// The WebSocket routes: `resalloc ssh`, `resalloc cp` and `resalloc forward`.
func buildWebSocketRouter(_ master: Master) -> Router<ShellRequestContext> {
    let router = Router(context: ShellRequestContext.self)
    router.add(middleware: APIErrorMiddleware<ShellRequestContext>())
    ShellController(master: master).add(to: router)
    CopyController(master: master).add(to: router)
    ForwardController(master: master).add(to: router)
    return router
}

/// Every route the master serves.
public func endpoints(_ master: Master, gateway: GatewayInfo? = nil, metricsToken: String? = nil) -> [Endpoint] {
    [
        .user(.get, "/gateway") { _, _, _ in
            guard let gateway else { throw MasterError(.notFound, "this master runs no SSH gateway (serve --ssh-port)") }
            return try Body.reply(gateway)
        },
        .open(.get, "/health") { _, _ in try Body.done("ok") },
        .open(.get, "/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: .init(string: OpenAPIDocument.text)))
        },
    ] + AccountController(master: master).endpoints
        + KeyController(accounts: master.accounts, audit: master.audit).endpoints
        + ResourceController(master: master).endpoints
        + MachineController(master: master).endpoints + LeaseController(master: master).endpoints + CopyController(master: master).endpoints
        + JobController(master: master).endpoints
        + MetricsController(master: master, token: metricsToken).endpoints + EventController(audit: master.audit).endpoints
        + SessionController(master: master).endpoints
}

/// The API description shipped with the server.
public enum OpenAPIDocument {
    public static let text: String = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"), let text = try? String(contentsOf: url, encoding: .utf8)
        else {
            return "openapi: 3.0.3\n"
        }
        return text
    }()
}

/// Closes every SSH connection once the server has drained on SIGTERM/SIGINT.
struct MasterShutdown: Service {
    let master: Master

    func run() async throws {
        try? await gracefulShutdown()
        await master.shutdown()
        await master.endIncarnation()
        master.logger.notice("resalloc-master stopped: requests drained, SSH connections closed")
    }
}

/// Runs `work` every `every` until graceful shutdown.
struct Periodic: Service {
    let every: Duration
    let work: @Sendable () async -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: every)
                guard !Task.isCancelled else { return }
                await work()
            }
        }
    }
}

extension Periodic {
    /// Writes this process's heartbeat every `every`, so that other passes can tell it is alive.
    static func heartbeat(master: Master, every: Duration) -> Periodic {
        Periodic(every: every) {
            do { try await master.heartbeat() } catch {
                master.logger.warning("could not write the heartbeat", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Ends the open sessions of users switched off since they opened them, every `every`: an
    /// admin's `PUT /user` ends them at once in this process, but `resalloc-master user disable`
    /// and other masters on the same database write only the database.
    static func sessionWatch(master: Master, every: Duration) -> Periodic {
        Periodic(every: every) {
            await master.endSessionsOfDisabledUsers()
            await master.touchLeasesInUse()
        }
    }

    /// Serves the fair queue (places freed by another master, or by a lease that expired) and
    /// looks after running jobs: takes over those of a master that died, ends those past their
    /// lifetime.
    static func jobKeeper(master: Master, every: Duration) -> Periodic {
        Periodic(every: every) {
            await master.jobs.dispatch()
            await master.jobs.tend(now: await master.database.clock())
        }
    }
}

/// Keeps the warm pools filled: after every handout, and every `every` regardless.
struct PoolKeeper: Service {
    let pool: WarmPool
    let every: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown { await pool.run(every: every) }
    }
}

/// The cleanup pass: once when the server starts, so that leases a killed process left
/// mid-saga are settled within seconds (and, if it settled any, again 5 s and `followUp` later),
/// then every `every` (zero: never again) so that cron is a safety net. It takes the same lock
/// as `resalloc-master cleanup`, so the two never overlap.
struct ReconcileService: Service {
    let reconciler: Reconciler
    let databasePath: String
    let every: Duration

    /// When the pass after the start one runs (zero: none): a `docker run` that a killed
    /// process had sent may still finish on its machine after the first pass failed its lease.
    let followUp: Duration

    /// How often it looks for other masters that died (the heartbeat's interval).
    let watchEvery: Duration

    func run() async throws {
        let settled = await pass(starting: true)?.stuckFinished ?? 0
        await cancelWhenGracefulShutdown {
            // Only when the start pass settled what a stopped process left: early for the usual
            // case (a docker run finishes within a few seconds), and at `followUp` for a loaded
            // machine.
            var slept: Duration = .zero
            for at in [min(.seconds(5), followUp), followUp] where settled > 0 && at > slept {
                try? await Task.sleep(for: at - slept)
                slept = at
                guard !Task.isCancelled else { return }
                await pass(starting: false)
            }
            // Every `every`, and at once when another master sharing the database dies: its
            // leases in flight are settled within a few heartbeats, not at the next period.
            var sincePass: Duration = .zero
            var handled = await peersGone()  // the start pass has settled these
            while !Task.isCancelled {
                try? await Task.sleep(for: watchEvery)
                guard !Task.isCancelled else { return }
                sincePass += watchEvery
                let gone = await peersGone().subtracting(handled)
                guard (every > .zero && sincePass >= every) || !gone.isEmpty else { continue }
                if !gone.isEmpty {
                    reconciler.master.logger.notice(
                        "another master stopped answering; settling what it left",
                        metadata: ["incarnations": "\(gone.sorted())"]
                    )
                }
                handled.formUnion(gone)
                sincePass = .zero
                await pass(starting: false)
            }
        }
    }

    /// Other masters' incarnations that died without stopping.
    private func peersGone() async -> Set<String> {
        let master = reconciler.master
        guard let rows = try? await master.database.incarnations() else { return [] }
        let known = Incarnations(rows: rows, current: master.incarnationID, now: await master.database.clock())
        return Set(rows.filter { $0.stoppedAt == nil && known.isGone($0.id) == true }.map(\.id))
    }

    @discardableResult
    private func pass(starting: Bool) async -> CleanupSummary? {
        let reconciler = reconciler
        let outcome = PassOutcome()
        // Another pass (cron, another master) holds the lock, or the database is away: skip this one.
        guard (try? await reconciler.master.database.exclusivePass({ outcome.set(await reconciler.run(dryRun: false)) })) == true,
            let summary = outcome.value
        else { return nil }
        reconciler.master.warmPool.wake()  // slots the pass dropped are refilled now
        let level: Logger.Level = summary.problems.isEmpty ? (summary.actions.isEmpty && !starting ? .debug : .info) : .warning
        reconciler.master.logger.log(
            level: level,
            "\(starting ? "start pass" : "reconcile"): \(summary.line)",
            metadata: summary.problems.isEmpty ? nil : ["problems": "\(summary.problems)"]
        )
        return summary
    }
}
