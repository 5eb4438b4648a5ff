import SSH
import Synchronization

/// Everything a remote process has printed so far, drained from its output stream by a task
/// of its own, so that a test waits for text with a deadline instead of on the stream itself.
public final class Screen: Sendable {
    private struct State {
        var bytes: [UInt8] = []
        var consumed = 0
        var ended = false
    }

    private let state = Mutex(State())

    public init(_ output: AsyncStream<OutputChunk>) {
        Task { [self] in
            for await chunk in output {
                switch chunk {
                case .stdout(let data), .stderr(let data): self.state.withLock { $0.bytes += data }
                }
            }
            self.state.withLock { $0.ended = true }
        }
    }

    public convenience init(_ process: RemoteProcess) { self.init(process.output) }

    /// Everything printed so far.
    public var text: String { state.withLock { String(decoding: $0.bytes, as: UTF8.self) } }

    /// Waits until `needle` appears in what was printed after the previous wait's match; returns
    /// that new text. Throws with the whole screen when `timeout` passes or the output ends first.
    @discardableResult
    public func waitFor(_ needle: String, timeout: Duration = .seconds(15)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (found, ended): (String?, Bool) = state.withLock { state in
                let fresh = String(decoding: state.bytes[state.consumed...], as: UTF8.self)
                guard fresh.contains(needle) else { return (nil, state.ended) }
                state.consumed = state.bytes.count
                return (fresh, state.ended)
            }
            if let found { return found }
            if ended { throw TestbedError("the output ended before '\(needle)' appeared; it was:\n\(text)") }
            if ContinuousClock.now >= deadline { throw TestbedError("'\(needle)' did not appear within \(timeout); the screen was:\n\(text)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Runs `body` and returns its result, or throws once `timeout` has passed, whether or not
/// `body` heeds cancellation: a test fails instead of hanging.
public func within<T: Sendable>(_ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let settled = FirstCaller()
    return try await withCheckedThrowingContinuation { continuation in
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            if settled.claim() { continuation.resume(with: result) }
        }
        Task {
            try? await Task.sleep(for: timeout)
            if settled.claim() {
                work.cancel()
                continuation.resume(throwing: TestbedError("\(what) did not finish within \(timeout)"))
            }
        }
    }
}

/// Lets exactly one of several racing callers through.
private final class FirstCaller: Sendable {
    private let done = Mutex(false)

    /// True for the first caller only.
    func claim() -> Bool {
        done.withLock { done in
            defer { done = true }
            return !done
        }
    }
}
