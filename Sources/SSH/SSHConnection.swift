import CLibSSH2
import Foundation

/// One authenticated SSH connection to a machine; many commands run on it at once as channels.
///
/// Safe to share between tasks: the libssh2 session lives on the connection's own thread
/// (`SessionLoop`), and every call here only hands it work and awaits the answer.
public final class SSHConnection: Sendable {
    public let endpoint: SSHEndpoint
    /// The host key the machine presented when this connection was made.
    public let hostKey: HostKey
    private let loop: SessionLoop

    private init(endpoint: SSHEndpoint, hostKey: HostKey, loop: SessionLoop) {
        self.endpoint = endpoint
        self.hostKey = hostKey
        self.loop = loop
    }

    /// Connects, checks the host key against `endpoint.expectedHostKey` when set, and logs in.
    public static func connect(to endpoint: SSHEndpoint, timeout: Duration = .seconds(10)) async throws(SSHError) -> SSHConnection {
        let loop = SessionLoop(endpoint: endpoint)
        let hostKey = try await loop.start(deadline: .now + timeout)
        return SSHConnection(endpoint: endpoint, hostKey: hostKey, loop: loop)
    }

    /// False once the connection broke or was closed.
    public var isAlive: Bool { loop.isAlive }

    /// How many channels the machine lets it open at once, as far as it has learned.
    public var channelLimit: Int { loop.channelsAllowed }

    /// How many commands and processes the connection's thread has taken up so far and tried to
    /// start: one given to `execute` or `start` is counted once the thread has tried to open its
    /// channel (or queued it behind the channel limit).
    public var commandsTaken: Int { loop.operationsTaken }

    /// Runs `command` through the login shell and returns its output and exit status.
    /// - Parameters:
    ///   - stdin: bytes written to the command's standard input, followed by EOF.
    ///   - timeout: the whole command's deadline; on expiry the channel is closed and `.timeout` thrown.
    ///   - onOutput: called on the connection's thread with each chunk as it arrives (for
    ///     streaming build logs); keep it short.
    public func execute(
        _ command: String,
        stdin: [UInt8]? = nil,
        timeout: Duration? = .seconds(60),
        onOutput: (@Sendable (OutputChunk) -> Void)? = nil
    ) async throws(SSHError) -> ExecResult {
        let finished = OneShot<Result<ExecResult, SSHError>>()
        let operation = ChannelOperation(
            command: command,
            deadline: timeout.map { ContinuousClock.now + $0 },
            onOutput: onOutput,
            onFinished: { finished.fulfill($0) }
        )
        operation.mailbox.letters.withLock { letters in
            if let stdin { letters.input = stdin }
            letters.inputClosed = true
        }
        loop.submit(operation)
        let outcome = await withTaskCancellationHandler {
            await finished.value
        } onCancel: {
            operation.mailbox.letters.withLock { $0.abandon = SSHError(.timeout, "the command was cancelled", commandStarted: true) }
            loop.wake()
        }
        return try outcome.get()
    }

    /// Starts `command` on a channel of its own and returns once it runs; with `pty`, on a
    /// pseudo-terminal of that type and size (for interactive shells). With `flowControlled`,
    /// the reader acknowledges output with `RemoteProcess.consumed`, and reading pauses while a
    /// window of it is unacknowledged (for streams of any size).
    public func start(
        _ command: String,
        pty: (term: String, size: TerminalSize)? = nil,
        timeout: Duration = .seconds(15),
        flowControlled: Bool = false
    ) async throws(SSHError) -> RemoteProcess {
        let (output, continuation) = AsyncStream.makeStream(of: OutputChunk.self, bufferingPolicy: .unbounded)
        let started = OneShot<Result<Void, SSHError>>()
        let finished = OneShot<Result<ExecResult, SSHError>>()
        let operation = ChannelOperation(
            command: command,
            pty: pty.map { .init(term: $0.term, size: $0.size) },
            startDeadline: .now + timeout,
            deadline: nil,
            collectOutput: false,
            flowControlled: flowControlled,
            onOutput: { continuation.yield($0) },
            onStarted: { started.fulfill($0) },
            onFinished: { result in
                continuation.finish()
                finished.fulfill(result)
            }
        )
        loop.submit(operation)
        try await started.value.get()
        return RemoteProcess(operation: operation, loop: loop, output: output, finished: finished)
    }

    /// Closes the connection; commands still running on it fail with `.disconnected`.
    public func close() async { await loop.close() }
}

extension SSHConnection {
    /// The libssh2 version this process runs with.
    public static var libraryVersion: String {
        guard let version = libssh2_version(0) else { return "unknown" }
        return String(cString: version)
    }
}
