import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix
import ResallocAPI

/// `resalloc forward`: listens on 127.0.0.1 and carries each connection, over a WebSocket of its
/// own through the master, to a port on the lease's own loopback.
public struct PortForwarder: Sendable {
    public let client: ResallocClient
    public let lease: String

    public init(client: ResallocClient, lease: String) {
        self.client = client
        self.lease = lease
    }

    /// Binds 127.0.0.1:`local` (0 picks a free port); returns the bound port and a function
    /// that serves connections until the task is cancelled. `report` hears of each connection
    /// that failed (refused in the lease), which ends that connection only.
    public func listen(
        local: Int,
        remote: Int,
        report: @escaping @Sendable (String) -> Void
    ) async throws -> (port: Int, serve: @Sendable () async throws -> Void) {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: local) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOCloseOnErrorHandler())
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let port = server.channel.localAddress?.port ?? local
        let serve: @Sendable () async throws -> Void = {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask {
                            do {
                                try await carry(connection, remote: remote)
                            } catch {
                                report("\(error)")
                            }
                        }
                    }
                }
            }
        }
        return (port, serve)
    }

    /// One local connection, both ways, until either end closes.
    func carry(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, remote: Int) async throws {
        let target = try WebSocketTarget(client, path: "/lease/\(lease)/forward?port=\(remote)", label: "resalloc.forward")
        let last = LastEvent()
        try await connection.executeThenClose { local, localWriter in
            do {
                try await target.connect {
                    inbound,
                    outbound,
                    _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await buffer in local { try await outbound.write(.binary(buffer)) }
                            try await outbound.close(.normalClosure, reason: nil)
                        }
                        for try await message in inbound.messages(maxSize: 1 << 22) {
                            switch message {
                            case .binary(let buffer): try await localWriter.write(buffer)
                            case .text(let text): last.event = try? JSONDecoder().decode(ForwardEvent.self, from: Data(text.utf8))
                            }
                        }
                        group.cancelAll()
                    }
                }
            } catch {
                if let refused = error as? UpgradeRefused { throw await client.refusal(of: "forward", lease: lease, status: refused.status) }
                if last.event == nil { throw ClientError.unreachable(url: client.server, detail: "the forward's connection failed: \(error)") }
            }
        }
        if let event = last.event, event.type == .error { throw ClientError.server(status: 502, message: event.message ?? "the connection failed") }
    }
}

private final class LastEvent: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: ForwardEvent?
    var event: ForwardEvent? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
