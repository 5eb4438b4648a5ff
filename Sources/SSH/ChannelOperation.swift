import CLibSSH2
import Foundation
import Synchronization

/// What callers on any thread may hand a running channel: input bytes, end of input, a new window
/// size, or a request to stop waiting. The channel's loop thread takes them on its next pass.
final class ChannelMailbox: Sendable {
    struct Letters {
        var input: [UInt8] = []
        var inputClosed = false
        var resize: TerminalSize?
        var abandon: SSHError?
        /// Input the channel has taken but not yet sent, as of its last pass.
        var inputInFlight = 0
        /// Writers waiting for the input in flight to drop below the window.
        var inputWaiters: [CheckedContinuation<Void, Never>] = []
        /// Output delivered to the reader and not yet acknowledged (flow-controlled channels).
        var outputUnconsumed = 0
        var finished = false
    }
    let letters = Mutex(Letters())

    /// How much unsent input a writer may leave before `send` waits, and how much unread
    /// output the channel delivers before it stops reading (so sshd stops sending once the
    /// SSH window is full): what bounds the memory a stream of any size takes.
    static let window = 1 << 20

    /// Queues `bytes`; returns whether the input not yet sent is now over the window.
    func enqueue(_ bytes: [UInt8]) -> Bool {
        letters.withLock { letters in
            letters.input.append(contentsOf: bytes)
            return !letters.finished && letters.input.count + letters.inputInFlight > Self.window
        }
    }

    /// Returns once the input not yet sent is below the window, or the channel has finished.
    func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = letters.withLock { letters in
                guard !letters.finished, letters.input.count + letters.inputInFlight > Self.window else { return true }
                letters.inputWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }
}

/// One remote command on one channel, as a state machine the session loop steps without waiting.
///
/// Everything but `mailbox` and the `let`s is touched only under the owning loop's libssh2 lock
/// after `SessionLoop.submit` (by its thread, or by `sendNow`); that is why the class may be
/// `@unchecked Sendable`.
final class ChannelOperation: @unchecked Sendable {
    enum Phase: Equatable { case queued, opening, openRefused, requestingPTY, starting, running, closing, waitingClosed, freeing, finished }

    struct PTYRequest: Sendable {
        var term: String
        var size: TerminalSize
    }

    let command: String
    let pty: PTYRequest?
    let startDeadline: ContinuousClock.Instant?
    let deadline: ContinuousClock.Instant?
    let mailbox = ChannelMailbox()
    let collectOutput: Bool
    /// Stop reading while the reader holds a window's worth of output it has not acknowledged.
    let flowControlled: Bool
    private let onOutput: (@Sendable (OutputChunk) -> Void)?
    private let onStarted: (@Sendable (Result<Void, SSHError>) -> Void)?
    private let onFinished: @Sendable (Result<ExecResult, SSHError>) -> Void

    private(set) var phase = Phase.queued
    private var channel: OpaquePointer?
    private var stdout: [UInt8] = []
    private var stderr: [UInt8] = []
    private var input: [UInt8] = []
    private var inputOffset = 0
    private var inputClosed = false
    private var eofSent = false
    private var pendingResize: TerminalSize?
    private var commandStarted = false
    private var reported = false
    private var startReported = false
    private var teardownDeadline: ContinuousClock.Instant?
    private var result = ExecResult(stdout: [], stderr: [], exitStatus: -1)
    /// Not to be opened before this: a retry after the machine refused a channel with none open.
    private(set) var notBefore: ContinuousClock.Instant?
    /// How often the machine refused this command a channel while no other was open.
    var lonelyRefusals = 0
    /// The deadline passed while the machine had not yet answered the channel open or the exec
    /// request: sshd itself stopped answering, not the command being slow.
    private(set) var timedOutUnanswered = false

    init(
        command: String,
        pty: PTYRequest? = nil,
        startDeadline: ContinuousClock.Instant? = nil,
        deadline: ContinuousClock.Instant?,
        collectOutput: Bool = true,
        flowControlled: Bool = false,
        onOutput: (@Sendable (OutputChunk) -> Void)? = nil,
        onStarted: (@Sendable (Result<Void, SSHError>) -> Void)? = nil,
        onFinished: @escaping @Sendable (Result<ExecResult, SSHError>) -> Void
    ) {
        self.command = command
        self.pty = pty
        self.startDeadline = startDeadline
        self.deadline = deadline
        self.collectOutput = collectOutput
        self.flowControlled = flowControlled
        self.onOutput = onOutput
        self.onStarted = onStarted
        self.onFinished = onFinished
    }

    /// The earliest moment this operation needs the loop to wake for it.
    var wakeDeadline: ContinuousClock.Instant? {
        if let teardownDeadline { return teardownDeadline }
        if reported { return nil }
        if phase == .queued, let notBefore { return [notBefore, startDeadline, deadline].compactMap { $0 }.min() }
        return startReported ? deadline : [startDeadline, deadline].compactMap { $0 }.min()
    }

    /// Running, but not reading: the reader has a window's worth of output to take first.
    var isPaused: Bool {
        flowControlled && phase == .running && mailbox.letters.withLock { $0.outputUnconsumed } >= ChannelMailbox.window
    }

    /// Whether the loop may open this command's channel now.
    var mayOpen: Bool { notBefore.map { ContinuousClock.now >= $0 } ?? true }

    func beginOpening() { phase = .opening }

    /// Back in the queue after the machine refused it a channel, to be opened after `delay`.
    func requeue(after delay: Duration?) {
        phase = .queued
        notBefore = delay.map { .now + $0 }
    }

    /// Fails a command that never got a channel: refused with none other open, `refusals` times.
    func failRefused(refusals: Int) {
        fail(
            SSHError(
                .channel,
                "the machine refused to open a channel \(refusals) times with no other open (its sshd's MaxSessions?)",
                detail: "libssh2 \(LIBSSH2_ERROR_CHANNEL_FAILURE): channel open failure"
            )
        )
        phase = .finished
    }

    /// Fails a command still waiting for a channel once its deadline has passed; true if it did
    /// (or it was already done).
    func expireIfDue() -> Bool {
        if reported { return true }
        guard let due = [startDeadline, deadline].compactMap({ $0 }).min(), ContinuousClock.now >= due else { return false }
        fail(SSHError(.timeout, "the command did not start in time: no channel to the machine came free"))
        phase = .finished
        return true
    }

    /// Reports `error` (once) and stops: used when the session itself died.
    func failWithSession(_ error: SSHError) {
        var error = error
        error.commandStarted = commandStarted
        report(.failure(error))
        phase = .finished
    }

    /// Advances as far as possible without waiting; returns whether anything moved.
    /// Throws only when the session is broken, which ends every channel on it. `socketDrained`:
    /// whether a read in this pass of the loop has already taken in all the socket held.
    func step(_ session: OpaquePointer, socketDrained: inout Bool) throws(SSHError) -> Bool {
        var progressed = readMailbox()
        let unanswered = [.opening, .requestingPTY, .starting].contains(phase)
        if !reported, let deadline, ContinuousClock.now >= deadline {
            timedOutUnanswered = unanswered
            fail(SSHError(.timeout, "the command did not finish in time", commandStarted: commandStarted))
            progressed = true
        }
        if !startReported, let startDeadline, ContinuousClock.now >= startDeadline {
            timedOutUnanswered = unanswered
            fail(SSHError(.timeout, "the command did not start in time", commandStarted: commandStarted))
            progressed = true
        }
        if let teardownDeadline, ContinuousClock.now >= teardownDeadline {
            // The machine does not answer our close; leave the channel to the session's free.
            phase = .finished
            return true
        }
        defer { publishInputInFlight() }
        while true {
            let before = phase
            let moved = try advance(session, socketDrained: &socketDrained)
            progressed = progressed || moved
            if phase == before || phase == .finished { return progressed }
        }
    }

    /// Writes `bytes` to the running channel now, if nothing of it (input, a resize) is waiting
    /// to go before them; says whether it took them. What libssh2 does not take at once (a full
    /// window, a partial packet) stays as input that the loop's next pass sends, and meets any
    /// error there. Called with the loop's libssh2 lock held, from any thread.
    func sendNow(_ bytes: [UInt8], _ session: OpaquePointer) -> SendNowOutcome {
        // Nothing may be waiting that must reach the channel first: input, its end, a new
        // terminal size (the bytes may be a command that reads it).
        guard phase == .running, let channel, input.isEmpty, !inputClosed, pendingResize == nil, !reported,
            mailbox.letters.withLock({ $0.input.isEmpty && !$0.inputClosed && $0.resize == nil && $0.abandon == nil })
        else { return .declined }
        let written = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { resalloc_channel_write(channel, $0.baseAddress!, $0.count) }
        }
        guard written < bytes.count else { return .sent }
        input = Array(bytes[max(written, 0)...])
        inputOffset = 0
        return .partly
    }

    enum SendNowOutcome { case declined, sent, partly }

    /// Tells writers how much input is still to be sent, and lets them go on below the window.
    private func publishInputInFlight() {
        let waiters = mailbox.letters.withLock { letters -> [CheckedContinuation<Void, Never>] in
            letters.inputInFlight = input.count - inputOffset
            guard letters.finished || letters.input.count + letters.inputInFlight <= ChannelMailbox.window else { return [] }
            defer { letters.inputWaiters = [] }
            return letters.inputWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func readMailbox() -> Bool {
        let letters = mailbox.letters.withLock { letters in
            defer {
                letters.input = []
                letters.resize = nil
                letters.abandon = nil
            }
            return letters
        }
        if !letters.input.isEmpty { input.append(contentsOf: letters.input) }
        if letters.inputClosed { inputClosed = true }
        if let size = letters.resize { pendingResize = size }
        if let abandon = letters.abandon, !reported {
            fail(abandon)
            return true
        }
        return !letters.input.isEmpty || letters.resize != nil
    }

    private func advance(_ session: OpaquePointer, socketDrained: inout Bool) throws(SSHError) -> Bool {
        switch phase {
        case .queued, .openRefused, .finished:
            return false
        case .opening:
            guard let opened = resalloc_channel_open_session(session) else {
                let rc = libssh2_session_last_errno(session)
                if rc == LIBSSH2_ERROR_EAGAIN { return false }
                // sshd said no to one more session; the loop decides whether to wait or fail.
                if rc == LIBSSH2_ERROR_CHANNEL_FAILURE {
                    phase = .openRefused
                    return true
                }
                try check(rc, session, "could not open a channel")
                return true
            }
            channel = opened
            phase = pty == nil ? .starting : .requestingPTY
            return true
        case .requestingPTY:
            guard let channel, let pty else { return false }
            let rc = resalloc_channel_request_pty(channel, pty.term, UInt32(pty.term.utf8.count), Int32(pty.size.columns), Int32(pty.size.rows))
            if rc == LIBSSH2_ERROR_EAGAIN { return false }
            try check(rc, session, "the machine refused a terminal")
            phase = .starting
            return true
        case .starting:
            guard let channel else { return false }
            let rc = resalloc_channel_exec(channel, command, UInt32(command.utf8.count))
            if rc == LIBSSH2_ERROR_EAGAIN { return false }
            try check(rc, session, "the machine refused to run the command")
            commandStarted = true
            phase = .running
            reportStarted(.success(()))
            return true
        case .running:
            return try pump(session, socketDrained: &socketDrained)
        case .closing:
            guard let channel else {
                phase = .finished
                return true
            }
            let rc = libssh2_channel_close(channel)
            if rc == LIBSSH2_ERROR_EAGAIN { return false }
            phase = .waitingClosed
            return true
        case .waitingClosed:
            guard let channel else {
                phase = .finished
                return true
            }
            let rc = libssh2_channel_wait_closed(channel)
            if rc == LIBSSH2_ERROR_EAGAIN { return false }
            // Valid only now, after wait_closed.
            result.exitStatus = libssh2_channel_get_exit_status(channel)
            result.exitSignal = exitSignal(channel, session)
            result.stdout = stdout
            result.stderr = stderr
            stdout = []
            stderr = []
            if rc != 0 && !reported {
                fail(SSHError(.channel, "the channel closed badly", detail: LibSSH2.lastError(session).text, commandStarted: commandStarted))
            }
            report(.success(result))
            phase = .freeing
            return true
        case .freeing:
            guard let channel else {
                phase = .finished
                return true
            }
            let rc = libssh2_channel_free(channel)
            if rc == LIBSSH2_ERROR_EAGAIN { return false }
            self.channel = nil
            phase = .finished
            return true
        }
    }

    /// Moves bytes both ways; reads stdout and stderr alternately so that neither stream can
    /// stall the other, and leaves `running` once the remote side's EOF has been drained.
    private func pump(_ session: OpaquePointer, socketDrained: inout Bool) throws(SSHError) -> Bool {
        guard let channel else { return false }
        var progressed = false
        if let size = pendingResize {
            let rc = resalloc_channel_resize_pty(channel, Int32(size.columns), Int32(size.rows))
            if rc != LIBSSH2_ERROR_EAGAIN {
                pendingResize = nil
                progressed = true
            }
        }
        while inputOffset < input.count {
            let written = input.withUnsafeBufferPointer { buffer in
                buffer.baseAddress!.advanced(by: inputOffset).withMemoryRebound(to: CChar.self, capacity: input.count - inputOffset) {
                    resalloc_channel_write(channel, $0, input.count - inputOffset)
                }
            }
            if written == Int(LIBSSH2_ERROR_EAGAIN) { break }
            if written < 0 {
                if LibSSH2.isSessionFatal(Int32(written)) { throw sessionError(session) }
                input = []  // the remote side stopped reading; what is left cannot arrive
                inputOffset = 0
                break
            }
            inputOffset += written
            progressed = true
        }
        if inputOffset >= input.count && !input.isEmpty {
            input = []
            inputOffset = 0
        }
        if input.isEmpty && inputClosed && !eofSent {
            let rc = libssh2_channel_send_eof(channel)
            if rc != LIBSSH2_ERROR_EAGAIN {
                eofSent = true
                progressed = true
            }
        }
        var drained = false
        for _ in 0..<16 where !isPaused {
            // A read first takes in all the socket holds (recv until EAGAIN), for every channel.
            // Once one has in this pass, the queue alone says whether this channel, or its
            // stderr, has anything: a pass costs one recv however many channels are open, on
            // the thread that also hands a shell's echo on (SessionLoop runs another pass
            // whenever bytes came in during one, so nothing queued is left unread).
            if socketDrained && libssh2_poll_channel_read(channel, 1) == 0 {
                drained = true
                break
            }
            let out = try read(channel, session, stream: 0)
            socketDrained = true
            let err = libssh2_poll_channel_read(channel, 1) != 0 ? try read(channel, session, stream: SSH_EXTENDED_DATA_STDERR) : -1
            if out <= 0 && err <= 0 {
                drained = true
                break
            }
            progressed = true
        }
        if drained && libssh2_channel_eof(channel) != 0 {
            phase = .closing
            progressed = true
        }
        return progressed
    }

    /// Reads one buffer of `stream`; returns the count read, 0 at EOF, or a negative would-block.
    private func read(_ channel: OpaquePointer, _ session: OpaquePointer, stream: Int32) throws(SSHError) -> Int {
        let count = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 32 * 1024) { buffer -> Int in
            let n = resalloc_channel_read(channel, stream, buffer.baseAddress!, buffer.count)
            guard n > 0 else { return n }
            let bytes = Array(UnsafeRawBufferPointer(start: buffer.baseAddress!, count: n).bindMemory(to: UInt8.self))
            deliver(stream == 0 ? .stdout(bytes) : .stderr(bytes))
            return n
        }
        if count < 0 && count != Int(LIBSSH2_ERROR_EAGAIN) {
            if LibSSH2.isSessionFatal(Int32(count)) { throw sessionError(session) }
            return 0  // the channel is closed: same as EOF for reading
        }
        return count
    }

    private func deliver(_ chunk: OutputChunk) {
        guard !reported else { return }
        if flowControlled {
            let count: Int
            switch chunk {
            case .stdout(let bytes), .stderr(let bytes): count = bytes.count
            }
            mailbox.letters.withLock { $0.outputUnconsumed += count }
        }
        onOutput?(chunk)
        guard collectOutput else { return }
        switch chunk {
        case .stdout(let bytes): stdout.append(contentsOf: bytes)
        case .stderr(let bytes): stderr.append(contentsOf: bytes)
        }
    }

    private func check(_ rc: Int32, _ session: OpaquePointer, _ message: String) throws(SSHError) {
        guard rc != 0 else { return }
        if LibSSH2.isSessionFatal(rc) { throw sessionError(session) }
        fail(SSHError(.channel, message, detail: LibSSH2.lastError(session).text, commandStarted: commandStarted))
    }

    private func sessionError(_ session: OpaquePointer) -> SSHError {
        SSHError(.disconnected, "the connection to the machine broke", detail: LibSSH2.lastError(session).text, commandStarted: commandStarted)
    }

    private func fail(_ error: SSHError) {
        report(.failure(error))
        guard phase != .finished, teardownDeadline == nil else { return }
        teardownDeadline = .now + .seconds(10)
        switch phase {
        case .closing, .waitingClosed, .freeing: break
        default: phase = channel == nil ? .finished : .closing
        }
    }

    private func report(_ outcome: Result<ExecResult, SSHError>) {
        if case .failure(let error) = outcome { reportStarted(.failure(error)) }
        guard !reported else { return }
        reported = true
        let waiters = mailbox.letters.withLock { letters -> [CheckedContinuation<Void, Never>] in
            letters.finished = true
            defer { letters.inputWaiters = [] }
            return letters.inputWaiters
        }
        for waiter in waiters { waiter.resume() }
        onFinished(outcome)
    }

    private func reportStarted(_ outcome: Result<Void, SSHError>) {
        guard !startReported else { return }
        startReported = true
        onStarted?(outcome)
    }

    private func exitSignal(_ channel: OpaquePointer, _ session: OpaquePointer) -> String? {
        var name: UnsafeMutablePointer<CChar>?
        var length = 0
        guard libssh2_channel_get_exit_signal(channel, &name, &length, nil, nil, nil, nil) == 0, let name else { return nil }
        defer { libssh2_free(session, name) }
        return length > 0 ? String(cString: name) : nil
    }
}
