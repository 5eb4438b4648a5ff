import Core
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import ResallocAPI
import SSH

/// `resalloc forward`: the WebSocket `GET /lease/{name}/forward?port=N` carries one TCP
/// connection to port N on the lease's own loopback, through a relay in the container's
/// network namespace, so a server that listens only on the lease's 127.0.0.1 is reachable.
struct ForwardController {
    let master: Master
    /// How long a relay may outlive its client's end of the connection.
    static let forwardGrace: Duration = .seconds(10)

    func add(to router: Router<ShellRequestContext>) {
        router.ws("/lease/:name/forward") { request, context in
            _ = try await target(request, context.parameters)
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            do {
                let (target, port) = try await target(context.request, context.requestContext.parameters)
                try await relay(target, port, inbound, outbound)
            } catch {
                let failure = MasterError.from(error)
                failure.log(to: context.logger)
                try? await outbound.write(.text(ShellController.encode(ForwardEvent(type: .error, message: failure.message))))
                try? await outbound.close(.normalClosure, reason: nil)
            }
        }
    }

    private func target(_ request: Request, _ parameters: Parameters) async throws -> (LeaseTarget, Int) {
        let caller = try await Endpoint.authenticate(request, accounts: master.accounts)
        guard let text = request.uri.queryParameters["port"], let port = Int(text), (1...65535).contains(port) else {
            throw MasterError(.invalid, "say which port in the lease, as ?port=8000 (1 to 65535)")
        }
        return await (try master.reach(try parameters.require("name"), for: caller.user), port)
    }

    /// Relays until either end closes: the client's bytes into the relay, the relay's out; when
    /// the relay ends (the lease's server closed, or refused), the last frame says how.
    private func relay(_ target: LeaseTarget, _ port: Int, _ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter) async throws {
        let forward = try await master.forward(target, port: port)
        let process = forward.process
        let errors = ErrorText()
        let delivered = ExitRecord()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await chunk in process.output {
                    switch chunk {
                    case .stdout(let bytes):
                        do { try await outbound.write(.binary(ByteBuffer(bytes: bytes))) } catch {
                            // Nobody reads any more: the client has gone.
                            await master.end(forward)
                        }
                    case .stderr(let bytes): errors.append(bytes)
                    }
                    process.consumed(chunk.count)
                }
                delivered.set(0)
                let status = try? await process.exitStatus()
                var event = ForwardEvent(type: .closed)
                if status != 0 && errors.text.contains("refused") {
                    event = ForwardEvent(type: .error, message: "nothing listens on port \(port) in lease \(target.name): the connection was refused")
                } else if status != 0 && !errors.text.isEmpty {
                    event = ForwardEvent(
                        type: .error,
                        message: "the connection to port \(port) in lease \(target.name) failed: \(errors.text.prefix(200))"
                    )
                }
                try? await outbound.write(.text(ShellController.encode(event)))
                try? await outbound.close(.normalClosure, reason: nil)
            }
            // The local side's bytes, until it closes its end. A connection that broke is a
            // client gone: its relay ends now. One closed in order may still want the answer,
            // for `forwardGrace`; past that, a lease's server that keeps the connection open
            // no longer holds a channel and a relay for nobody.
            var broken = false
            do {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    if case .binary(let buffer) = message { await process.send(Array(buffer: buffer)) }
                }
            } catch { broken = true }
            process.closeInput()
            if broken {
                await master.end(forward)
            } else {
                let ended = Task {
                    try? await Task.sleep(for: Self.forwardGrace)
                    if delivered.value == nil && !Task.isCancelled { await master.end(forward) }
                }
                defer { ended.cancel() }
                try await group.waitForAll()
            }
            try await group.waitForAll()
        }
    }
}

/// The relay's stderr, kept for the message (the first 4 KiB).
private final class ErrorText: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    func append(_ more: [UInt8]) { lock.withLock { bytes += more.prefix(max(0, 4096 - bytes.count)) } }
    var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }
}

extension OutputChunk {
    var count: Int {
        switch self {
        case .stdout(let bytes), .stderr(let bytes): return bytes.count
        }
    }
}
