import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import ResallocAPI

/// One `resalloc cp` transfer: a tar stream into a directory of the lease (a streamed
/// `PUT /lease/{name}/files`), or out of a path in it (the WebSocket `GET /lease/{name}/copy`).
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
        try await download(from: "/lease/\(lease)/copy", lease: lease, path: path, receive: receive)
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
        try await download(from: "/job/\(job)/copy", lease: nil, path: path, receive: receive)
    }

    /// The WebSocket copy out: a `CopyStart`, then the tar stream's binary frames into `receive`
    /// until the master's closing `CopyEvent`.
    private func download(
        from endpoint: String,
        lease: String?,
        path: String,
        receive: @escaping @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> Int {
        let target = try WebSocketTarget(client, path: endpoint, label: "resalloc.cp")
        let outcome = CopyOutcome()
        do {
            try await target.connect { inbound, outbound, _ in
                try await outbound.write(.text(Self.encode(CopyStart(direction: .out, path: path))))
                for try await message in inbound.messages(maxSize: 1 << 22) {
                    switch message {
                    case .binary(let buffer): try await receive(buffer)
                    case .text(let text):
                        if let event = try? JSONDecoder().decode(CopyEvent.self, from: Data(text.utf8)) { outcome.set(event) }
                    }
                }
            }
        } catch let error as ClientError {
            throw error
        } catch {
            if let refused = error as? UpgradeRefused {
                if let lease { throw await client.refusal(of: "copy", lease: lease, status: refused.status) }
                throw ClientError.server(status: refused.status ?? 400, message: "the master refused the copy (HTTP \(refused.status ?? 400))")
            }
            if outcome.event == nil { throw ClientError.unreachable(url: client.server, detail: "the copy's connection failed: \(error)") }
        }
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
    func set(_ event: CopyEvent) { lock.withLock { stored = event } }
    var event: CopyEvent? { lock.withLock { stored } }
}
