import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import ResallocAPI

/// One `resalloc cp` transfer over the master's WebSocket `GET /lease/{name}/copy`: a tar
/// stream into a directory of the lease, or out of a path in it.
public struct CopySession: Sendable {
    public let client: ResallocClient

    public init(client: ResallocClient) { self.client = client }

    /// Sends the tar stream that `produce` writes (through the function it is given) into
    /// `directory`; returns the bytes sent once the master has extracted them. A streamed
    /// `PUT …/files` (`ResallocClient.upload`), not WebSocket frames, which a client must mask.
    public func upload(
        lease: String,
        directory: String,
        produce: @escaping @Sendable (_ send: @Sendable ([UInt8]) async throws -> Void) async throws -> Void
    ) async throws -> Int {
        try await client.upload(lease: lease, directory: directory, produce: produce)
    }

    /// Receives the tar stream of `path` a piece at a time into `receive`; returns its size.
    public func download(lease: String, path: String, receive: @escaping @Sendable (ByteBuffer) async throws -> Void) async throws -> Int {
        try await session(lease: lease, start: CopyStart(direction: .out, path: path)) { _, _ in
        } onData: {
            try await receive($0)
        }
    }

    /// `upload` into the container of job `job` that waits for its inputs.
    public func upload(
        job: Int64,
        directory: String,
        produce: @escaping @Sendable (_ send: @Sendable ([UInt8]) async throws -> Void) async throws -> Void
    ) async throws -> Int {
        try await client.upload(job: job, directory: directory, produce: produce)
    }

    /// `download` from the container job `job` kept after its end.
    public func download(job: Int64, path: String, receive: @escaping @Sendable (ByteBuffer) async throws -> Void) async throws -> Int {
        try await session(path: "/job/\(job)/copy", lease: nil, start: CopyStart(direction: .out, path: path)) { _, _ in
        } onData: {
            try await receive($0)
        }
    }

    private func session(
        lease: String,
        start: CopyStart,
        send: @escaping @Sendable (WebSocketInboundStream, WebSocketOutboundWriter) async throws -> Void,
        onData: @escaping @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> Int {
        try await session(path: "/lease/\(lease)/copy", lease: lease, start: start, send: send, onData: onData)
    }

    private func session(
        path: String,
        lease: String?,
        start: CopyStart,
        send: @escaping @Sendable (WebSocketInboundStream, WebSocketOutboundWriter) async throws -> Void,
        onData: @escaping @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> Int {
        let target = try WebSocketTarget(client, path: path, label: "resalloc.cp")
        let outcome = CopyOutcome()
        do {
            try await target.connect { inbound, outbound, _ in
                try await outbound.write(.text(Self.encode(start)))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            try await send(inbound, outbound)
                        } catch {
                            // Our side failed (a file that vanished, a cancelled copy): end the
                            // connection, so the master drops what it staged.
                            outcome.fail(error)
                            try? await outbound.close(.goingAway, reason: "the copy was stopped")
                        }
                    }
                    for try await message in inbound.messages(maxSize: 1 << 22) {
                        switch message {
                        case .binary(let buffer): try await onData(buffer)
                        case .text(let text):
                            if let event = try? JSONDecoder().decode(CopyEvent.self, from: Data(text.utf8)) { outcome.set(event) }
                        }
                    }
                    group.cancelAll()
                }
            }
        } catch let error as ClientError {
            throw error
        } catch {
            if let local = outcome.localFailure { throw local }
            if let refused = error as? UpgradeRefused {
                if let lease { throw await client.refusal(of: "copy", lease: lease, status: refused.status) }
                throw ClientError.server(status: refused.status ?? 400, message: "the master refused the copy (HTTP \(refused.status ?? 400))")
            }
            if outcome.event == nil { throw ClientError.unreachable(url: client.server, detail: "the copy's connection failed: \(error)") }
        }
        if let local = outcome.localFailure { throw local }
        guard let event = outcome.event else {
            throw ClientError.unreachable(url: client.server, detail: "the connection to the master closed before the copy finished")
        }
        switch event.type {
        case .done, .eof: return event.bytes ?? 0
        case .error: throw ClientError.server(status: event.status ?? 502, message: event.message ?? "the copy failed")
        }
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
    }
}

private final class CopyOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: CopyEvent?
    private var failure: (any Error)?
    func set(_ event: CopyEvent) { lock.withLock { stored = event } }
    func fail(_ error: any Error) { lock.withLock { failure = error } }
    var event: CopyEvent? { lock.withLock { stored } }
    var localFailure: (any Error)? { lock.withLock { failure } }
}
