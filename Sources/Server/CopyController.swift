import Core
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import ResallocAPI
import SSH

/// `resalloc cp`: `GET /lease/{name}/path` says what a path in a lease is, `PUT
/// /lease/{name}/files` takes a tar stream in as its body, and the WebSocket `GET
/// /lease/{name}/copy` carries one out. The master never holds a whole file: it relays bytes as
/// they come, a few MiB at most ahead of the slower side (its own window and the SSH channel's).
struct CopyController {
    let master: Master

    var endpoints: [Endpoint] {
        [
            .user(.get, "/lease/:name/path") { request, context, caller in
                guard let path = request.uri.queryParameters["path"].map(String.init), !path.isEmpty else {
                    throw MasterError(.invalid, "say which path, as ?path=/some/where")
                }
                let target = try await master.reach(try context.parameters.require("name"), for: caller.user)
                return try Body.reply(PathInfo(path: path, kind: try await master.pathKind(target, path).rawValue))
            },
            .user(.put, "/lease/:name/files") { request, context, caller in
                let target = try await master.reach(try context.parameters.require("name"), for: caller.user)
                return try Body.reply(try await receive(request, into: target))
            },
            .user(.put, "/job/:id/files") { request, context, caller in
                let id = try Self.jobID(try context.parameters.require("id"))
                return try Body.reply(try await receive(request, into: try await master.reach(job: id, for: caller.user, copyingIn: true)))
            },
        ]
    }

    /// `PUT …/files?path=DIR`: the request's body, a tar stream, unpacked into the directory
    /// `DIR`. A plain streamed body, not WebSocket frames, which a client must mask and the master
    /// unmask byte by byte: 1.3 CPU-seconds per 512 MB. The stream is whole only when its last chunk
    /// came: a client that goes away first leaves nothing in the lease.
    private func receive(_ request: Request, into target: LeaseTarget) async throws -> Copied {
        guard let directory = request.uri.queryParameters["path"].map(String.init), !directory.isEmpty else {
            throw MasterError(.invalid, "say which directory, as ?path=/some/where")
        }
        let body = request.body
        var bytes = 0
        try await master.copyIn(target, directory: directory) { process in
            do {
                for try await buffer in body {
                    bytes += buffer.readableBytes
                    await process.send(Array(buffer: buffer))
                }
            } catch {
                return nil  // the client went away mid-stream
            }
            return bytes
        }
        return Copied(message: "\(bytes) bytes of tar stream unpacked into \(directory) in \(target.name)", bytes: bytes)
    }

    func add(to router: Router<ShellRequestContext>) {
        for path in ["/lease/:name/copy", "/job/:id/copy"] { add(path, to: router) }
    }

    private func add(_ path: String, to router: Router<ShellRequestContext>) {
        router.ws(RouterPath(path)) { request, context in
            _ = try await target(request, context.parameters)
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
            let event: CopyEvent
            do {
                let target = try await target(context.request, context.requestContext.parameters)
                guard case .text(let text) = try await messages.next(), let start = try? JSONDecoder().decode(CopyStart.self, from: Data(text.utf8))
                else {
                    throw MasterError(.invalid, "the first message must be a CopyStart")
                }
                guard start.direction == .out else {
                    throw MasterError(.invalid, "files go into a lease as the body of PUT /lease/{name}/files?path=DIR; this WebSocket copies out")
                }
                event = try await copyOut(target, start.path, outbound)
                context.logger.info(
                    "copy done",
                    metadata: ["lease": "\(target.name)", "direction": "\(start.direction)", "bytes": "\(event.bytes ?? 0)"]
                )
            } catch {
                let failure = MasterError.from(error)
                failure.log(to: context.logger)
                try? await outbound.write(
                    .text(ShellController.encode(CopyEvent(type: .error, message: failure.message, status: Int(failure.httpStatus.code))))
                )
                try? await outbound.close(.normalClosure, reason: nil)
                return
            }
            try? await outbound.write(.text(ShellController.encode(event)))
            try? await outbound.close(.normalClosure, reason: nil)
        }
    }

    /// A lease's container, or the one a job keeps for its results.
    private func target(_ request: Request, _ parameters: Parameters) async throws -> LeaseTarget {
        let caller = try await Endpoint.authenticate(request, accounts: master.accounts)
        if let text = parameters.get("id") { return try await master.reach(job: try Self.jobID(text), for: caller.user, copyingIn: false) }
        return try await master.reach(try parameters.require("name"), for: caller.user)
    }

    /// A job's id from the path; anything else is no job.
    private static func jobID(_ text: String) throws -> Int64 {
        guard let id = Int64(text), id > 0 else { throw MasterError(.notFound, "no job \(text)") }
        return id
    }

    /// Relays `docker cp C:PATH -` to the client; each chunk is acknowledged once written, so
    /// the machine sends no faster than the client takes.
    private func copyOut(_ target: LeaseTarget, _ path: String, _ outbound: WebSocketOutboundWriter) async throws -> CopyEvent {
        let process = try await master.copyOut(target, path)
        var bytes = 0
        var errors: [UInt8] = []
        do {
            for await chunk in process.output {
                switch chunk {
                case .stdout(let data):
                    try await outbound.write(.binary(ByteBuffer(bytes: data)))
                    bytes += data.count
                    process.consumed(data.count)
                case .stderr(let data):
                    errors += data.prefix(4096 - errors.count)
                    process.consumed(data.count)
                }
            }
        } catch {
            process.close()
            throw error
        }
        let status = try await process.exitStatus()
        guard status == 0 else {
            let line = String(decoding: errors, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "docker cp failed"
            if line.contains("Could not find the file") { throw MasterError(.notFound, "no such path in lease \(target.name): \(path)") }
            throw MasterError(.unreachable, "copying \(path) out of lease \(target.name) failed: \(line)")
        }
        return CopyEvent(type: .done, bytes: bytes)
    }
}
