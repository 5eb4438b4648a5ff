import Synchronization

/// Wakes whoever waits for a change this process made (a job's output, a job's or a queued
/// lease's state), so that a follower on the same master sees it at once; a change another
/// master made is seen when the wait's time is up.
public final class ChangeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var next: UInt64 = 0
        var waiters: [UInt64: AsyncStream<Void>.Continuation] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Read before looking at what may change, and hand it to `wait(after:atMost:)`: a change
    /// made in between is not missed.
    public var generation: UInt64 { state.withLock { $0.generation } }

    public func fire() {
        let waiters = state.withLock { state in
            state.generation &+= 1
            defer { state.waiters = [:] }
            return state.waiters
        }
        for waiter in waiters.values { waiter.finish() }
    }

    /// Returns once `fire` was called after `generation` was read, after `timeout`, or when the
    /// task is cancelled.
    public func wait(after generation: UInt64, atMost timeout: Duration) async {
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        let id: UInt64? = state.withLock { state in
            guard state.generation == generation else { return nil }
            state.next += 1
            state.waiters[state.next] = continuation
            return state.next
        }
        guard let id else { return }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            continuation.finish()
        }
        for await _ in stream {}
        timer.cancel()
        state.withLock { _ = $0.waiters.removeValue(forKey: id) }
    }
}
