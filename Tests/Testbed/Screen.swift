import Foundation
import SSH
import Synchronization

/// What a terminal or a process has printed, fed as it arrives, and waits on it with
/// deadlines: a test or a benchmark waits for text instead of on the stream itself, and fails
/// with the screen when the text does not come. Only the last 4 to 8 KiB are kept, so 50 MB can
/// pass through at full speed; a waiter is resumed by the bytes that satisfy it, not by polling.
public final class Screen: @unchecked Sendable {
    private struct State {
        var total = 0
        /// The last bytes printed: `tail[0]` is byte number `total - tail.count`.
        var tail: [UInt8] = []
        /// `waitFor` looks at what came after this byte number.
        var consumed = 0
        var ended = false

        /// What was printed after `consumed`, as far as it is kept.
        var fresh: ArraySlice<UInt8> { tail[max(0, consumed - (total - tail.count))...] }
    }

    private struct Waiter {
        let id: Int
        /// A result once satisfied; may move `consumed`.
        let check: (inout State) -> String?
        let continuation: CheckedContinuation<String, any Error>
    }

    private static let kept = 4096
    private let lock = NSLock()
    private var state = State()
    private var waiter: Waiter?
    private var nextID = 0

    public init() {}

    /// Drains `output` into a new screen, by a task of its own.
    public convenience init(_ output: AsyncStream<OutputChunk>) {
        self.init()
        Task {
            for await chunk in output {
                switch chunk {
                case .stdout(let data), .stderr(let data): self.append(data)
                }
            }
            self.end()
        }
    }

    public convenience init(_ process: RemoteProcess) { self.init(process.output) }

    /// How many bytes have been printed in all.
    public var count: Int { lock.withLock { state.total } }

    /// The last bytes printed, as text.
    public var text: String { lock.withLock { String(decoding: state.tail, as: UTF8.self) } }

    public func append(_ bytes: some Collection<UInt8>) {
        settle { state in
            state.total += bytes.count
            state.tail += bytes
        }
    }

    /// No more output: a waiter still waiting fails with the screen.
    public func end() { settle { $0.ended = true } }

    /// Waits until `needle` appears in what was printed after the previous `waitFor`'s match;
    /// returns that new text.
    @discardableResult
    public func waitFor(_ needle: String, timeout: Duration = .seconds(15)) async throws -> String {
        let bytes = Array(needle.utf8)
        // Each check searches only what is new since the last one (and the needle's length
        // before it), so megabytes stream through without being searched over and over.
        var searched = 0
        return try await wait("'\(needle)' on the screen", timeout: timeout) { state in
            let tailStart = state.total - state.tail.count
            let from = max(state.consumed, tailStart, searched - bytes.count + 1)
            searched = state.total
            guard Self.find(bytes, in: state.tail[(from - tailStart)...]) else { return nil }
            let text = String(decoding: state.fresh, as: UTF8.self)
            state.consumed = state.total
            return text
        }
    }

    /// Waits until more than `count` bytes have been printed in all.
    public func waitForMore(than count: Int, timeout: Duration = .seconds(15)) async throws {
        _ = try await wait("output after byte \(count)", timeout: timeout) { $0.total > count ? "" : nil }
    }

    /// Whether `needle` occurs in `haystack`: memchr for its first byte, memcmp for the rest
    /// (the generic `contains` managed 3 MB/s).
    private static func find(_ needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Bool {
        guard let first = needle.first else { return true }
        return haystack.withUnsafeBufferPointer { hay in
            needle.withUnsafeBufferPointer { pattern in
                guard let base = hay.baseAddress, hay.count >= pattern.count else { return false }
                var offset = 0
                while offset <= hay.count - pattern.count {
                    guard let hit = memchr(base + offset, Int32(first), hay.count - pattern.count - offset + 1) else { return false }
                    let position = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                    if memcmp(base + position, pattern.baseAddress!, pattern.count) == 0 { return true }
                    offset = position + 1
                }
                return false
            }
        }
    }

    private func wait(_ what: String, timeout: Duration, check: @escaping (inout State) -> String?) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            let id: Int? = lock.withLock {
                precondition(waiter == nil, "one wait at a time on a Screen")
                if let result = check(&state) {
                    continuation.resume(returning: result)
                    return nil
                }
                if state.ended {
                    continuation.resume(
                        throwing: TestbedError(
                            "the output had ended before \(what); the screen was:\n\(String(decoding: state.tail.suffix(2000), as: UTF8.self))"
                        )
                    )
                    return nil
                }
                nextID += 1
                waiter = Waiter(id: nextID, check: check, continuation: continuation)
                return nextID
            }
            guard let id else { return }
            Task {
                try? await Task.sleep(for: timeout)
                let expired: (Waiter, String)? = self.lock.withLock {
                    guard let waiter = self.waiter, waiter.id == id else { return nil }
                    self.waiter = nil
                    return (waiter, String(decoding: self.state.tail.suffix(2000), as: UTF8.self))
                }
                expired?.0.continuation.resume(
                    throwing: TestbedError("\(what) did not happen within \(timeout); the screen was:\n\(expired?.1 ?? "")")
                )
            }
        }
    }

    /// Changes the state, then resumes the waiter if that satisfied it, or fails it if the
    /// output has ended.
    private func settle(_ change: (inout State) -> Void) {
        let resume: (() -> Void)? = lock.withLock {
            change(&state)
            // New bytes are searched before old ones are dropped.
            defer { if state.tail.count > 2 * Self.kept { state.tail.removeFirst(state.tail.count - Self.kept) } }
            guard let waiter else { return nil }
            if let result = waiter.check(&state) {
                self.waiter = nil
                return { waiter.continuation.resume(returning: result) }
            }
            guard state.ended else { return nil }
            self.waiter = nil
            let screen = String(decoding: state.tail.suffix(2000), as: UTF8.self)
            return { waiter.continuation.resume(throwing: TestbedError("the output ended first; the screen was:\n\(screen)")) }
        }
        resume?()
    }
}

/// Runs `body` and returns its result, or throws once `timeout` has passed, whether or not
/// `body` heeds cancellation: a test fails instead of hanging.
public func within<T: Sendable>(_ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await within(timeout, after: { true }, what, body)
}

/// Runs `body`, whose last stretch (a server's shutdown after the test's own part) must end within
/// `limit` of the moment `reached()` first holds; past it, throws, whether or not `body` heeds
/// cancellation. A stretch that never ends then fails one test with `what`, instead of holding
/// the whole run until its deadline.
public func within<T: Sendable>(
    _ limit: Duration,
    after reached: @escaping @Sendable () -> Bool,
    _ what: String,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let settled = FirstCaller()
    return try await withCheckedThrowingContinuation { continuation in
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            if settled.claim() { continuation.resume(with: result) }
        }
        Task {
            var since: ContinuousClock.Instant? = reached() ? .now : nil
            while !settled.isClaimed {
                // Once a second until the stretch begins, then to its limit in steps of at most that.
                let step = since.map { min(.seconds(1), limit - (ContinuousClock.now - $0)) } ?? .seconds(1)
                try? await Task.sleep(for: max(step, .milliseconds(1)))
                if since == nil, reached() { since = .now }
                if let since, ContinuousClock.now - since >= limit, settled.claim() {
                    work.cancel()
                    continuation.resume(throwing: TestbedError("\(what) did not finish within \(limit)"))
                }
            }
        }
    }
}

/// Lets exactly one of several racing callers through.
private final class FirstCaller: Sendable {
    private let done = Mutex(false)

    var isClaimed: Bool { done.withLock { $0 } }

    /// True for the first caller only.
    func claim() -> Bool {
        done.withLock { done in
            defer { done = true }
            return !done
        }
    }
}

/// Polls `condition` every 100 ms until it holds, or throws once `seconds` have passed.
public func waitUntil(seconds: Double, _ what: String = "the condition", _ condition: () async throws -> Bool) async throws {
    let deadline = Date() + seconds
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw TestbedError("\(what) did not hold within \(seconds) s")
}

/// Runs `work`, which blocks (a child process, a lock), on a thread of its own, and returns its
/// result. Never on `DispatchQueue.global()`: on Linux, Swift's global executor runs every task
/// on those same threads, and libdispatch adds a thread for blocked ones only when its monitor
/// next looks, about once a second. A few such waits there stalled the whole test process: a
/// PostgreSQL migration took 60 s, one statement a second, while the server waited on this client.
///
/// Each wait is in `OwnThreadLedger` until its caller runs again, so that a run that hangs says
/// which stage a stuck one reached.
public func onOwnThread<T: Sendable>(
    _ work: @escaping @Sendable () throws -> T,
    file: String = #fileID,
    line: Int = #line
) async throws -> T {
    let id = OwnThreadLedger.shared.open("\(file):\(line)")
    defer { OwnThreadLedger.shared.close(id) }
    return try await withCheckedThrowingContinuation { continuation in
        do {
            try DedicatedThread.start(named: "onOwnThread") {
                OwnThreadLedger.shared.mark(id, "working on its thread")
                let result = Result { try work() }
                OwnThreadLedger.shared.mark(id, "done; its caller was resumed and has not run since")
                continuation.resume(with: result)
            }
        } catch {
            continuation.resume(throwing: error)
        }
    }
}

/// The `onOwnThread` waits that have not returned, with the stage each reached. A thread of its
/// own (never Swift's executor, never a timer of libdispatch's) prints those older than two
/// minutes every 30 s: a run that hangs then shows whether a wait's thread never started, is
/// still working, or finished while its caller was never run again.
public final class OwnThreadLedger: Sendable {
    public static let shared = OwnThreadLedger()
    private struct Entry {
        let site: String
        let since: ContinuousClock.Instant
        var stage: String
    }
    private let entries = Mutex<(next: Int, open: [Int: Entry])>((0, [:]))
    private let watching = Atomic<Bool>(false)

    func open(_ site: String) -> Int {
        if watching.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged { watch() }
        return entries.withLock { entries in
            entries.next += 1
            entries.open[entries.next] = Entry(site: site, since: .now, stage: "waiting for its thread to start")
            return entries.next
        }
    }

    func mark(_ id: Int, _ stage: String) { entries.withLock { $0.open[id]?.stage = stage } }
    func close(_ id: Int) { _ = entries.withLock { $0.open.removeValue(forKey: id) } }

    private func watch() {
        let started: Void? = try? DedicatedThread.start(named: "ledger watchdog") { [self] in
            while true {
                sleep(30)
                let now = ContinuousClock.now
                let stuck = entries.withLock { $0.open.values.filter { now - $0.since > .seconds(120) } }
                for entry in stuck {
                    FileHandle.standardError.write(Data("onOwnThread at \(entry.site), \(now - entry.since) ago: \(entry.stage)\n".utf8))
                }
            }
        }
        if started == nil { FileHandle.standardError.write(Data("onOwnThread: its watchdog thread could not start\n".utf8)) }
    }
}
