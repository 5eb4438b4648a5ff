import NIOCore
import Synchronization

/// Byte buffers handed from a producer (`send`) to the HTTP client that streams them as a
/// request's body (the pipe is that body's sequence). The producer waits while `depth` buffers
/// wait for the client, so a file is read no faster than the network takes it.
///
/// The body ends cleanly only with `finish()`; `fail(_:)` ends it with an error, which makes the
/// HTTP client break the request off, so the master never takes a stream cut short for a whole
/// one. `abandon()` says the client is done with it (the master answered): a waiting `send`
/// returns, and every `send` from then on throws.
final class BodyPipe: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    struct Abandoned: Error {}

    private struct State {
        var queued: [ByteBuffer] = []
        var finished = false
        var failure: (any Error)?
        var abandoned = false
        var reader: CheckedContinuation<ByteBuffer?, any Error>?
        var writer: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    private let depth = 4

    func send(_ buffer: ByteBuffer) async throws {
        let reader = try state.withLock { state -> CheckedContinuation<ByteBuffer?, any Error>? in
            if state.abandoned { throw Abandoned() }
            if let reader = state.reader {
                state.reader = nil
                return reader
            }
            state.queued.append(buffer)
            return nil
        }
        if let reader {
            reader.resume(returning: buffer)
            return
        }
        await withCheckedContinuation { (writer: CheckedContinuation<Void, Never>) in
            let waits = state.withLock { state in
                guard state.queued.count >= depth, !state.abandoned else { return false }
                state.writer = writer
                return true
            }
            if !waits { writer.resume() }
        }
        if state.withLock({ $0.abandoned }) { throw Abandoned() }
    }

    func finish() { end(nil) }

    func fail(_ error: any Error) { end(error) }

    func abandon() {
        let writer = state.withLock { state in
            state.abandoned = true
            defer { state.writer = nil }
            return state.writer
        }
        writer?.resume()
        fail(Abandoned())
    }

    private func end(_ failure: (any Error)?) {
        let reader = state.withLock { state -> CheckedContinuation<ByteBuffer?, any Error>? in
            guard !state.finished, state.failure == nil else { return nil }
            if let failure { state.failure = failure } else { state.finished = true }
            defer { state.reader = nil }
            return state.reader
        }
        if let failure { reader?.resume(throwing: failure) } else { reader?.resume(returning: nil) }
    }

    private func next() async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { (reader: CheckedContinuation<ByteBuffer?, any Error>) in
            let (outcome, writer) = state.withLock { state -> (Result<ByteBuffer?, any Error>?, CheckedContinuation<Void, Never>?) in
                if !state.queued.isEmpty {
                    let buffer = state.queued.removeFirst()
                    let writer = state.queued.count < depth ? state.writer : nil
                    if writer != nil { state.writer = nil }
                    return (.success(buffer), writer)
                }
                if let failure = state.failure { return (.failure(failure), nil) }
                if state.finished { return (.success(nil), nil) }
                state.reader = reader
                return (nil, nil)
            }
            writer?.resume()
            if let outcome { reader.resume(with: outcome) }
        }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let pipe: BodyPipe
        mutating func next() async throws -> ByteBuffer? { try await pipe.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(pipe: self) }
}
