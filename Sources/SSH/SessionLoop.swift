import CLibSSH2
import Foundation
import Synchronization

/// The one thread that owns a libssh2 session, its socket and every channel on it.
///
/// libssh2 sessions are not thread-safe, and their calls must never run on a NIO event loop or
/// the cooperative pool, so each connection gets a thread of its own. Callers hand it
/// `ChannelOperation`s through a lock-protected inbox and an eventfd wake-up; the thread steps
/// every operation in non-blocking mode and sleeps in `poll` on the socket and the eventfd only
/// when a whole pass moved nothing. At most `maxChannels` channels are open at once (sshd's
/// default MaxSessions is 10, and a slot is freed slightly after close; see LIBSSH2.md), fewer
/// once a machine with a lower MaxSessions has refused one, and at most one channel open is in
/// progress, as libssh2 requires in non-blocking mode.
final class SessionLoop: @unchecked Sendable {
    static let maxChannels = 9
    /// Refusals with no other channel open before a command fails (retried after 20, 40, … ms).
    static let maxLonelyRefusals = 5

    private struct Inbox {
        var submitted: [ChannelOperation] = []
        var closeRequested = false
        var stopped = false
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let inbox = Mutex(Inbox())
    /// Held by whichever thread calls libssh2: the loop thread for each whole pass (it lets go
    /// only while it sleeps in `poll`), or a writer sending a few bytes at once (`sendNow`).
    private let libssh2Lock = NSLock()
    /// The session's socket I/O (shim.h): the bytes libssh2 has read, and what it sent that the
    /// kernel has not taken yet; under `libssh2Lock`.
    private let io = UnsafeMutablePointer<resalloc_io>.allocate(capacity: 1)
    private let wakeFD: Int32
    private let isAliveFlag = Atomic<Bool>(true)
    let endpoint: SSHEndpoint

    // Confined to the loop thread.
    private var session: OpaquePointer?
    private var socket: Int32 = -1
    private var queued: [ChannelOperation] = []
    private var active: [ChannelOperation] = []
    /// How many channels this machine accepts at once, as far as we know.
    private var channelLimit = SessionLoop.maxChannels {
        didSet { learnedLimit.store(channelLimit, ordering: .relaxed) }
    }
    /// `channelLimit`, readable from any thread (the pool spreads work by it).
    private let learnedLimit = Atomic<Int>(SessionLoop.maxChannels)
    var channelsAllowed: Int { learnedLimit.load(ordering: .relaxed) }
    /// Operations the loop has taken from its inbox and tried to start (opened a channel for, or
    /// queued behind the channel limit), so far.
    private let taken = Atomic<Int>(0)
    var operationsTaken: Int { taken.load(ordering: .acquiring) }
    /// The most channels the machine has had open for us at once.
    private var mostOpenAtOnce = 0

    init(endpoint: SSHEndpoint) {
        self.endpoint = endpoint
        self.wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        io.initialize(to: resalloc_io())
    }

    deinit {
        Glibc.close(wakeFD)
        resalloc_io_free(io)
        io.deallocate()
    }

    /// False once the connection broke or was closed; a pool then opens a new one.
    var isAlive: Bool { isAliveFlag.load(ordering: .acquiring) }

    /// Starts the thread, connects and authenticates; returns the host key the machine presented.
    func start(deadline: ContinuousClock.Instant) async throws(SSHError) -> HostKey {
        let outcome: Result<HostKey, SSHError> = await withCheckedContinuation { continuation in
            do {
                try DedicatedThread.start(named: "ssh \(endpoint.host)") { [self] in
                    do throws(SSHError) {
                        let established = try SessionSetup.establish(endpoint, deadline: deadline)
                        session = established.session
                        socket = established.socket
                        continuation.resume(returning: .success(established.hostKey))
                    } catch {
                        finishStopped()
                        continuation.resume(returning: .failure(error))
                        return
                    }
                    run()
                }
            } catch {
                finishStopped()
                continuation.resume(returning: .failure(SSHError(.connect, "\(error)")))
            }
        }
        return try outcome.get()
    }

    /// Hands an operation to the loop; if the loop has stopped, the operation fails at once.
    func submit(_ operation: ChannelOperation) {
        let accepted = inbox.withLock { inbox in
            guard !inbox.stopped && !inbox.closeRequested else { return false }
            inbox.submitted.append(operation)
            return true
        }
        if accepted {
            wake()
        } else {
            operation.failWithSession(SSHError(.disconnected, "the connection to \(endpoint.host) is closed"))
        }
    }

    /// Sends `bytes` on `operation`'s channel from the caller's thread, when no other thread is
    /// in libssh2 and none of the channel's input is waiting: a keystroke then leaves at once
    /// instead of after the loop thread has woken up (0.09 ms of a 0.7 ms echo here). Returns
    /// false when the bytes must go through the mailbox instead.
    func sendNow(_ bytes: [UInt8], on operation: ChannelOperation) -> Bool {
        guard libssh2Lock.try() else { return false }
        let before = io.pointee.bytes_read
        let outcome = session.map { operation.sendNow(bytes, $0) } ?? .declined
        let readMeanwhile = io.pointee.bytes_read != before
        let kept = resalloc_io_pending(io) > 0
        libssh2Lock.unlock()
        // libssh2 reads whatever packets have arrived before it writes, and poll no longer shows
        // those to the loop; and what libssh2 or the socket could not take yet is the loop's to
        // send. Otherwise the loop sleeps on: one thread fewer woken for each keystroke.
        if outcome == .partly || (outcome == .sent && (readMeanwhile || kept)) { wake() }
        return outcome != .declined
    }

    /// Wakes the loop so it reads mailboxes and the inbox.
    func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// Closes the connection: running commands fail with `.disconnected`. Returns once the
    /// session is freed and the socket closed.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = inbox.withLock { inbox in
                if inbox.stopped { return true }
                inbox.closeRequested = true
                inbox.stopWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() } else { wake() }
        }
    }

    // MARK: - The loop thread

    private func run() {
        libssh2Lock.lock()
        defer { libssh2Lock.unlock() }
        guard let session else { return }
        resalloc_io_install(session, io)
        var failure = SSHError(.disconnected, "the connection to \(endpoint.host) was closed")
        loop: while true {
            let (submitted, closing) = inbox.withLock { inbox in
                defer { inbox.submitted = [] }
                return (inbox.submitted, inbox.closeRequested)
            }
            if closing { break }
            queued.append(contentsOf: submitted)
            var progressed = !submitted.isEmpty
            queued.removeAll { $0.expireIfDue() }
            if resalloc_io_flush(io, socket) < 0 {
                failure = sendFailure()
                break loop
            }
            let readBefore = io.pointee.bytes_read
            do throws(SSHError) {
                admit()
                var socketDrained = false
                for operation in active {
                    if try operation.step(session, socketDrained: &socketDrained) { progressed = true }
                }
                if !submitted.isEmpty { taken.add(submitted.count, ordering: .releasing) }
            } catch {
                failure = error
                break loop
            }
            // A channel open or exec that got no answer before its deadline: sshd is frozen or the
            // network dropped the connection without a word. Give it up, so that the next command
            // opens a new connection (or fails with `connect`) instead of waiting on this one for
            // as long as TCP takes to notice (minutes).
            if active.contains(where: \.timedOutUnanswered) {
                failure = SSHError(.disconnected, "\(endpoint.host) stopped answering on this connection")
                break loop
            }
            active.removeAll { $0.phase == .finished }
            mostOpenAtOnce = max(mostOpenAtOnce, active.count { $0.phase != .opening && $0.phase != .openRefused })
            settleRefusedOpens()
            // Packets that came in during this pass may be queued for a channel stepped before
            // they did, and poll will not show them again: one more pass reads them.
            if progressed || io.pointee.bytes_read != readBefore { continue }
            var secondsToKeepalive = Int32(clamping: endpoint.keepaliveSeconds)
            let rc = libssh2_keepalive_send(session, &secondsToKeepalive)
            if rc != 0 && rc != LIBSSH2_ERROR_EAGAIN {
                failure = SSHError(.disconnected, "the connection to \(endpoint.host) broke", detail: LibSSH2.lastError(session).text)
                break
            }
            if !waitForWork(keepaliveSeconds: secondsToKeepalive) {
                failure = SSHError(.disconnected, "\(endpoint.host) closed the connection")
                break
            }
        }
        isAliveFlag.store(false, ordering: .releasing)
        let leftovers = inbox.withLock { inbox in
            defer { inbox.submitted = [] }
            inbox.closeRequested = true
            return inbox.submitted
        }
        for operation in active + queued + leftovers { operation.failWithSession(failure) }
        active = []
        queued = []
        libssh2_session_set_blocking(session, 1)
        libssh2_session_set_timeout(session, 2000)
        _ = resalloc_session_disconnect(session, "resalloc: closing")
        libssh2_session_free(session)
        sendKept(within: .seconds(2))
        self.session = nil
        Glibc.close(socket)
        finishStopped()
    }

    /// Moves queued operations into the open set while a slot is free and no open is in flight.
    private func admit() {
        while let next = queued.first, next.mayOpen, active.count < channelLimit, !active.contains(where: { $0.phase == .opening }) {
            queued.removeFirst()
            next.beginOpening()
            active.append(next)
        }
    }

    /// The machine refused a channel: its sshd allows fewer sessions than `maxChannels`, or it
    /// frees a closed channel's slot a moment after the close (LIBSSH2.md). This connection then
    /// keeps to as many channels as the machine has had open for us at once, so a late slot does
    /// not lower the limit for good, and the command goes back to the head of the queue: to wait
    /// for a close when the limit is reached, or for a short pause when the slot was merely late.
    /// Refused with none open, it is retried a few times, then fails.
    private func settleRefusedOpens() {
        let refused = active.filter { $0.phase == .openRefused }
        guard !refused.isEmpty else { return }
        active.removeAll { $0.phase == .openRefused }
        if !active.isEmpty { channelLimit = min(channelLimit, max(active.count, mostOpenAtOnce)) }
        for operation in refused.reversed() {
            if active.isEmpty {
                operation.lonelyRefusals += 1
                guard operation.lonelyRefusals <= Self.maxLonelyRefusals else {
                    operation.failRefused(refusals: operation.lonelyRefusals)
                    continue
                }
                operation.requeue(after: .milliseconds(20 * operation.lonelyRefusals))
            } else {
                operation.requeue(after: active.count < channelLimit ? .milliseconds(10) : nil)
            }
            queued.insert(operation, at: 0)
        }
    }

    /// Sleeps until the socket or the wake-up fd needs attention, a deadline passes, or the
    /// keepalive is due. Returns false when the peer hung up while we had nothing to read.
    private func waitForWork(keepaliveSeconds: Int32) -> Bool {
        var events = Int16(RESALLOC_POLLRDHUP)
        // The only sending that waits for the socket: libssh2's own sends never come back short
        // (shim.h), so it never waits to send and its block directions never say outbound.
        if resalloc_io_pending(io) > 0 { events |= Int16(POLLOUT) }
        // Channels paused for a slow reader do not read; if only they are open, data that sshd
        // sends them (at most their SSH window) would wake this loop for nothing.
        if active.contains(where: { !$0.isPaused }) { events |= Int16(POLLIN) }
        var timeout = max(keepaliveSeconds, 1) * 1000
        for operation in active + queued {
            if let deadline = operation.wakeDeadline {
                timeout = min(timeout, millisecondsLeft(until: deadline))
            }
        }
        var fds = [pollfd(fd: socket, events: events, revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        resalloc_quickack(socket)
        libssh2Lock.unlock()
        _ = poll(&fds, 2, timeout)
        libssh2Lock.lock()
        if fds[1].revents & Int16(POLLIN) != 0 {
            var value: UInt64 = 0
            _ = Glibc.read(wakeFD, &value, 8)
        }
        let hangup = Int16(POLLHUP | POLLERR) | (active.isEmpty ? Int16(RESALLOC_POLLRDHUP) : 0)
        return fds[0].revents & hangup == 0
    }

    private func sendFailure() -> SSHError {
        SSHError(.disconnected, "the connection to \(endpoint.host) broke", detail: String(cString: strerror(io.pointee.send_error)))
    }

    /// Sends what the socket has not taken yet (the disconnect message, say), for at most
    /// `limit`: a courtesy to sshd before the socket closes, never a reason to hang.
    private func sendKept(within limit: Duration) {
        let deadline = ContinuousClock.now + limit
        while resalloc_io_pending(io) > 0, io.pointee.send_error == 0, ContinuousClock.now < deadline {
            var fd = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
            _ = poll(&fd, 1, millisecondsLeft(until: deadline))
            _ = resalloc_io_flush(io, socket)
        }
    }

    private func finishStopped() {
        isAliveFlag.store(false, ordering: .releasing)
        let waiters = inbox.withLock { inbox in
            inbox.stopped = true
            defer { inbox.stopWaiters = [] }
            return inbox.stopWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
