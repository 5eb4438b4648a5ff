/// One reused connection per machine. Commands from many tasks share it as channels; a
/// connection found broken is re-opened once before a command fails, but only when the command
/// had not been sent yet, so nothing ever runs twice.
public actor SSHConnectionPool {
    private var connections: [SSHEndpoint: Task<SSHConnection, any Error>] = [:]
    private let connectTimeout: Duration

    public init(connectTimeout: Duration = .seconds(10)) {
        self.connectTimeout = connectTimeout
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
            try await connection.execute(command, stdin: stdin, timeout: timeout, onOutput: onOutput)
        }
    }

    /// Starts a command that the caller talks to as it runs (see `SSHConnection.start`).
    public func start(
        on endpoint: SSHEndpoint,
        _ command: String,
        pty: (term: String, size: TerminalSize)? = nil,
        flowControlled: Bool = false
    ) async throws(SSHError) -> RemoteProcess {
        try await withReconnect(endpoint) { connection throws(SSHError) in
            try await connection.start(command, pty: pty, flowControlled: flowControlled)
        }
    }

    /// Forgets and closes the machine's connection, if any (after a machine is deleted).
    public func disconnect(_ endpoint: SSHEndpoint) async {
        guard let pending = connections.removeValue(forKey: endpoint) else { return }
        if case .success(let connection) = await pending.result { await connection.close() }
    }

    /// Closes every connection (graceful shutdown).
    public func closeAll() async {
        let all = connections
        connections = [:]
        for pending in all.values {
            if case .success(let connection) = await pending.result { await connection.close() }
        }
    }

    private func withReconnect<T: Sendable>(
        _ endpoint: SSHEndpoint,
        _ body: (SSHConnection) async throws(SSHError) -> T
    ) async throws(SSHError) -> T {
        let connection = try await self.connection(to: endpoint)
        do {
            return try await body(connection)
        } catch  where error.kind == .disconnected && !error.commandStarted {
            await discard(connection)
            return try await body(try await self.connection(to: endpoint))
        }
    }

    private func discard(_ connection: SSHConnection) async {
        let endpoint = connection.endpoint
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
