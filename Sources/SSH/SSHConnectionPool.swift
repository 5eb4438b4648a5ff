import Foundation

/// Reused connections per machine. Commands from many tasks share one as channels; when every
/// connection to a machine has as many commands as the machine lets it open channels, another
/// is opened (one at a time, up to `maxConnections`, so well within sshd's `MaxStartups`), and
/// an extra one idle for `idleAfter` is closed. A connection found broken is re-opened once
/// before a command fails, but only when the command had not been sent yet, so nothing ever
/// runs twice.
public actor SSHConnectionPool {
    private var connections: [SSHEndpoint: Task<SSHConnection, any Error>] = [:]
    /// Further connections to busy machines, and the one being opened, if any.
    private var extras: [SSHEndpoint: [SSHConnection]] = [:]
    private var openingExtra: [SSHEndpoint: Task<SSHConnection, any Error>] = [:]
    private let connectTimeout: Duration
    public let maxConnections: Int
    public let idleAfter: Duration

    /// Channels per machine that long-lived processes (shells, copies, forwards) never take,
    /// so that short commands — the master's own `docker run`, `rm`, the pass's `ps` — always
    /// find one, however many sessions users hold.
    public let reservedForCommands: Int
    /// Long-lived processes running per machine.
    private var holding: [SSHEndpoint: Int] = [:]
    /// How long a long-lived process waits for a place before it is refused.
    public let busyWait: Duration = .seconds(15)

    public init(connectTimeout: Duration = .seconds(10), maxConnections: Int = 4, idleAfter: Duration = .seconds(30), reservedForCommands: Int = 4) {
        self.connectTimeout = connectTimeout
        self.maxConnections = max(1, maxConnections)
        self.idleAfter = idleAfter
        self.reservedForCommands = max(0, reservedForCommands)
    }

    /// How many long-lived processes may run on one machine at once: what its connections can
    /// carry (sshd's default MaxSessions 10, of which the connection uses 9), less the reserve.
    public var maxLongLived: Int { max(1, maxConnections * SessionLoop.maxChannels - reservedForCommands) }

    /// Commands and processes the pool has given each connection that have not ended, and
    /// since when a connection has had none.
    private var assigned: [ObjectIdentifier: Int] = [:]
    private var idleSince: [ObjectIdentifier: ContinuousClock.Instant] = [:]

    /// How many connections to `endpoint` are open now.
    public func connectionCount(to endpoint: SSHEndpoint) async -> Int {
        var count = extras[endpoint, default: []].filter(\.isAlive).count
        if let pending = connections[endpoint], case .success(let connection) = await pending.result, connection.isAlive { count += 1 }
        return count
    }

    private func load(_ connection: SSHConnection) -> Int { assigned[ObjectIdentifier(connection), default: 0] }

    private func release(_ connection: SSHConnection) {
        let key = ObjectIdentifier(connection)
        assigned[key, default: 1] -= 1
        if assigned[key] == 0 {
            assigned[key] = nil
            idleSince[key] = .now
        }
    }

    /// The connection a new command goes to, counted as its until `release`: the least loaded
    /// one with a free channel; else a new one, while there are fewer than `maxConnections`;
    /// else the least loaded.
    private func assign(to endpoint: SSHEndpoint) async throws(SSHError) -> SSHConnection {
        var refused = false
        while true {
            let first = try await self.connection(to: endpoint)
            closeIdleExtras(endpoint)
            let all = [first] + extras[endpoint, default: []]
            let quietest = all.min { load($0) * $1.channelLimit < load($1) * $0.channelLimit }!
            // After a new connection failed, queue rather than open another: a machine that
            // refused one is busy, not broken.
            if load(quietest) < quietest.channelLimit || all.count >= maxConnections || refused {
                assigned[ObjectIdentifier(quietest), default: 0] += 1
                return quietest
            }
            if case .failure = await (openingExtra[endpoint] ?? openExtra(to: endpoint)).result { refused = true }
        }
    }

    /// Opens one more connection to `endpoint`; the pool knows of it (or of the failure) by the
    /// time the task's result is read.
    private func openExtra(to endpoint: SSHEndpoint) -> Task<SSHConnection, any Error> {
        let timeout = connectTimeout
        let attempt = Task {
            defer { self.openingExtra[endpoint] = nil }
            let connection = try await SSHConnection.connect(to: endpoint, timeout: timeout)
            self.extras[endpoint, default: []].append(connection)
            return connection
        }
        openingExtra[endpoint] = attempt
        return attempt
    }

    /// Forgets extra connections that broke, and closes those idle for `idleAfter`.
    private func closeIdleExtras(_ endpoint: SSHEndpoint) {
        guard let list = extras[endpoint] else { return }
        let now = ContinuousClock.now
        let idle = list.filter { connection in
            let key = ObjectIdentifier(connection)
            return !connection.isAlive || (assigned[key] == nil && idleSince[key].map { now - $0 >= idleAfter } ?? false)
        }
        guard !idle.isEmpty else { return }
        extras[endpoint] = list.filter { connection in !idle.contains { $0 === connection } }
        for connection in idle {
            idleSince[ObjectIdentifier(connection)] = nil
            Task { await connection.close() }
        }
    }

    /// The live connection to `endpoint`, made now if there is none (concurrent callers share one
    /// attempt).
    public func connection(to endpoint: SSHEndpoint) async throws(SSHError) -> SSHConnection {
        if let pending = connections[endpoint] {
            switch await pending.result {
            case .success(let connection) where connection.isAlive:
                return connection
            case .success(let connection):
                await discard(connection)
            case .failure:
                if connections[endpoint] == pending { connections[endpoint] = nil }
            }
        }
        if let pending = connections[endpoint] {
            // Another caller started a new attempt while we looked at the old one.
            return try await Self.unwrap(pending.result)
        }
        let timeout = connectTimeout
        let attempt = Task { try await SSHConnection.connect(to: endpoint, timeout: timeout) }
        connections[endpoint] = attempt
        let result = await attempt.result
        if case .failure = result, connections[endpoint] == attempt { connections[endpoint] = nil }
        return try Self.unwrap(result)
    }

    /// Runs a command on the machine's shared connection (see `SSHConnection.execute`).
    public func execute(
        on endpoint: SSHEndpoint,
        _ command: String,
        stdin: [UInt8]? = nil,
        timeout: Duration? = .seconds(60),
        onOutput: (@Sendable (OutputChunk) -> Void)? = nil
    ) async throws(SSHError) -> ExecResult {
        try await withReconnect(endpoint) { connection throws(SSHError) in
            defer { release(connection) }
            return try await connection.execute(command, stdin: stdin, timeout: timeout, onOutput: onOutput)
        }
    }

    /// Starts a command that the caller talks to as it runs (see `SSHConnection.start`).
    public func start(
        on endpoint: SSHEndpoint,
        _ command: String,
        pty: (term: String, size: TerminalSize)? = nil,
        flowControlled: Bool = false
    ) async throws(SSHError) -> RemoteProcess {
        // A burst of short sessions (scp, rsync, a loop of ssh commands) waits a moment for a
        // place; a machine full of long ones refuses.
        let waitingSince = ContinuousClock.now
        while holding[endpoint, default: 0] >= maxLongLived {
            guard ContinuousClock.now - waitingSince < busyWait else {
                throw SSHError(.busy, "\(maxLongLived) sessions hold every channel they may have on \(endpoint.host); the rest are kept for commands")
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        holding[endpoint, default: 0] += 1
        let started: RemoteProcess
        do {
            started = try await withReconnect(endpoint) { connection throws(SSHError) in
                let process: RemoteProcess
                do throws(SSHError) { process = try await connection.start(command, pty: pty, flowControlled: flowControlled) } catch {
                    release(connection)
                    throw error
                }
                // It holds its channel until it ends.
                Task {
                    _ = try? await process.exitStatus()
                    self.release(connection)
                    self.stopHolding(endpoint)
                }
                return process
            }
        } catch {
            stopHolding(endpoint)
            throw error
        }
        return started
    }

    /// Starts a command that moves a bulk stream (a copy's tar stream): on a swift-nio-ssh
    /// connection of its own where `BulkSSH` can reach the machine (several times faster
    /// crypto than libssh2's), else as `start` does, flow-controlled. Its connection counts as a
    /// long-lived session of the machine's, as a channel of a shared connection would.
    public func startBulk(on endpoint: SSHEndpoint, _ command: String) async throws(SSHError) -> RemoteProcess {
        guard Self.bulkEnabled else { return try await start(on: endpoint, command, flowControlled: true) }
        holding[endpoint, default: 0] += 1
        let bulk: RemoteProcess?
        do { bulk = try await BulkSSH.start(on: endpoint, command, timeout: connectTimeout) } catch  where error.kind != .hostKeyMismatch {
            bulk = nil  // not made (sshd's MaxStartups dropping it in a burst, say): the shared connection takes it
        } catch {
            stopHolding(endpoint)
            throw error  // another host key: never past it
        }
        guard let process = bulk else {
            stopHolding(endpoint)
            return try await start(on: endpoint, command, flowControlled: true)
        }
        Task {
            _ = try? await process.exitStatus()
            self.stopHolding(endpoint)
        }
        return process
    }

    /// `RESALLOC_BULK_SSH=libssh2` keeps bulk streams on libssh2 (for comparing the two).
    static let bulkEnabled = ProcessInfo.processInfo.environment["RESALLOC_BULK_SSH"] != "libssh2"

    private func stopHolding(_ endpoint: SSHEndpoint) {
        holding[endpoint, default: 1] -= 1
        if holding[endpoint] == 0 { holding[endpoint] = nil }
    }

    /// Forgets and closes the machine's connections, if any (after a machine is deleted).
    public func disconnect(_ endpoint: SSHEndpoint) async {
        for connection in extras.removeValue(forKey: endpoint) ?? [] { await connection.close() }
        guard let pending = connections.removeValue(forKey: endpoint) else { return }
        if case .success(let connection) = await pending.result { await connection.close() }
    }

    /// Closes every connection (graceful shutdown).
    public func closeAll() async {
        let all = connections
        let others = extras.values.flatMap { $0 }
        connections = [:]
        extras = [:]
        for connection in others { await connection.close() }
        for pending in all.values {
            if case .success(let connection) = await pending.result { await connection.close() }
        }
    }

    private func withReconnect<T: Sendable>(
        _ endpoint: SSHEndpoint,
        _ body: (SSHConnection) async throws(SSHError) -> T
    ) async throws(SSHError) -> T {
        let connection = try await assign(to: endpoint)
        do {
            return try await body(connection)
        } catch  where error.kind == .disconnected && !error.commandStarted {
            await discard(connection)
            return try await body(try await assign(to: endpoint))
        }
    }

    private func discard(_ connection: SSHConnection) async {
        let endpoint = connection.endpoint
        extras[endpoint]?.removeAll { $0 === connection }
        if let pending = connections[endpoint], case .success(let current) = await pending.result, current === connection,
            connections[endpoint] == pending
        {
            connections[endpoint] = nil
        }
        await connection.close()
    }

    private static func unwrap(_ result: Result<SSHConnection, any Error>) throws(SSHError) -> SSHConnection {
        switch result {
        case .success(let connection): return connection
        case .failure(let error as SSHError): throw error
        case .failure(let error): throw SSHError(.connect, "connecting failed: \(error)")
        }
    }
}
