/// A command running on its own channel that the caller talks to as it runs: write its input,
/// read its output as it arrives, resize its terminal, await its exit status. On a PTY, stderr
/// is merged into stdout and lines end in CRLF.
public final class RemoteProcess: Sendable {
    /// Output as it arrives; finishes when the command has ended and the channel closed.
    public let output: AsyncStream<OutputChunk>
    private let backend: Backend
    private let finished: OneShot<Result<ExecResult, SSHError>>

    /// A channel of a libssh2 connection, or a bulk stream's own swift-nio-ssh connection
    /// (`BulkSSH`).
    private enum Backend: Sendable {
        case libssh2(ChannelOperation, SessionLoop)
        case bulk(BulkControl)
    }

    init(operation: ChannelOperation, loop: SessionLoop, output: AsyncStream<OutputChunk>, finished: OneShot<Result<ExecResult, SSHError>>) {
        self.backend = .libssh2(operation, loop)
        self.output = output
        self.finished = finished
    }

    init(bulk: BulkControl, output: AsyncStream<OutputChunk>, finished: OneShot<Result<ExecResult, SSHError>>) {
        self.backend = .bulk(bulk)
        self.output = output
        self.finished = finished
    }

    /// Sends bytes (keystrokes) to the command.
    public func write(_ bytes: [UInt8]) {
        switch backend {
        case .bulk(let bulk): bulk.write(bytes)
        case .libssh2(let operation, let loop):
            if sendNow(bytes) { return }
            operation.mailbox.letters.withLock { $0.input.append(contentsOf: bytes) }
            loop.wake()
        }
    }

    /// Sends bytes and waits while more than a window (1 MiB) of input is still unsent: for
    /// streams of any size, whose writer must not run ahead of the network.
    public func send(_ bytes: [UInt8]) async {
        switch backend {
        case .bulk(let bulk): await bulk.send(bytes)
        case .libssh2(let operation, let loop):
            if sendNow(bytes) { return }
            let full = operation.mailbox.enqueue(bytes)
            loop.wake()
            if full { await operation.mailbox.waitForRoom() }
        }
    }

    /// Sends a few bytes (a keystroke, a line; at most 4 KiB) on the caller's thread, if the
    /// connection is free and none of this process's input is waiting; returns false, having
    /// sent nothing, otherwise. `write` and `send` try this first; a relay whose own queue
    /// could hold earlier bytes calls it only when that queue is empty.
    public func sendNow(_ bytes: [UInt8]) -> Bool {
        guard case .libssh2(let operation, let loop) = backend else { return false }
        return bytes.count <= 4096 && loop.sendNow(bytes, on: operation)
    }

    /// Says that the caller has handled `count` bytes of `output`. A process started with
    /// `flowControlled` stops reading from the machine while a window (1 MiB) of its output is
    /// unacknowledged, so a slow reader slows the sender instead of filling memory.
    public func consumed(_ count: Int) {
        guard case .libssh2(let operation, let loop) = backend else {
            if case .bulk(let bulk) = backend { bulk.consumed(count) }
            return
        }
        let resume = operation.mailbox.letters.withLock { letters in
            let wasPaused = letters.outputUnconsumed >= ChannelMailbox.window
            letters.outputUnconsumed -= count
            return wasPaused && letters.outputUnconsumed < ChannelMailbox.window
        }
        if resume { loop.wake() }
    }

    /// Tells the remote terminal its new size (it sends SIGWINCH to the command); ignored
    /// without a PTY.
    public func resize(_ size: TerminalSize) {
        guard case .libssh2(let operation, let loop) = backend else { return }
        operation.mailbox.letters.withLock { $0.resize = size }
        loop.wake()
    }

    /// Sends end-of-file on the command's input (after what was sent before it).
    public func closeInput() {
        switch backend {
        case .bulk(let bulk): bulk.closeInput()
        case .libssh2(let operation, let loop):
            operation.mailbox.letters.withLock { $0.inputClosed = true }
            loop.wake()
        }
    }

    /// Stops the command's channel now; `exitStatus()` then throws if it had not ended.
    public func close() {
        switch backend {
        case .bulk(let bulk): bulk.close()
        case .libssh2(let operation, let loop):
            operation.mailbox.letters.withLock { $0.abandon = SSHError(.channel, "the terminal was closed", commandStarted: true) }
            loop.wake()
        }
    }

    /// Waits for the command to end and returns its exit status.
    public func exitStatus() async throws(SSHError) -> Int32 {
        try await finished.value.get().exitStatus
    }
}
