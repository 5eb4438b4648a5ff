import Core
import Foundation
import Hummingbird
import Logging
import ResallocAPI
import Store

/// `GET|POST|DELETE /lease`, one lease, and extending one. A user sees and touches only their
/// own leases; another user's lease is "not found", not "forbidden", so names do not leak.
struct LeaseController {
    let master: Master

    var endpoints: [Endpoint] {
        [
            .user(.get, "/lease") { request, _, caller in
                let all = try Query.flag(request, "all")
                return try await Body.reply(Payload("Leases", try master.leases(for: caller.user, all: all).map(info)))
            },
            .user(.post, "/lease") { request, context, caller in
                let body = try await Body.decode(LeaseRequest.self, from: request, context: context, expecting: "ResourceName and LeaseName")
                let ttl = try body.ttl.map(InputRules.ttl)
                let wait = try body.wait.map(InputRules.ttl)
                let idle = try body.idle.map(InputRules.ttl)
                if request.headers[.accept]?.contains(LeaseProgress.mediaType) == true {
                    try await master.saga.check(resourceName: body.resourceName, leaseName: body.leaseName)
                    return streamedCreate(
                        owner: caller.user,
                        body,
                        ttl: ttl,
                        wait: wait,
                        idle: idle,
                        logger: context.logger,
                        address: context.address
                    )
                }
                let listing = try await master.saga.create(
                    owner: caller.user,
                    resourceName: body.resourceName,
                    leaseName: body.leaseName,
                    ttl: ttl,
                    wait: wait,
                    idle: idle
                )
                await recordCreated(listing, address: context.address)
                return try Body.reply(LeaseCreated(message: created(listing, ttl: ttl), lease: info(listing)), status: .created)
            },
            .user(.delete, "/lease") { request, context, caller in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "Name (or LeaseName)")
                let name = try Body.required(body.name ?? body.leaseName, "Name (or LeaseName)")
                let listing = try await master.lease(named: name, for: caller.user)
                try await master.saga.delete(listing)
                await master.audit.record(caller.user.name, "lease.deleted", "\(listing.owner)/\(name)", address: context.address)
                return try Body.done("deleted lease \(name)")
            },
            .user(.get, "/lease/:name") { request, context, caller in
                let listing = try await master.lease(
                    named: try context.parameters.require("name"),
                    for: caller.user,
                    owner: request.uri.queryParameters["owner"].map(String.init)
                )
                return try Body.reply(Payload("Lease", info(listing)))
            },
            .user(.delete, "/lease/:name") { request, context, caller in
                let name = try context.parameters.require("name")
                let listing = try await master.lease(named: name, for: caller.user, owner: request.uri.queryParameters["owner"].map(String.init))
                try await master.saga.delete(listing)
                await master.audit.record(caller.user.name, "lease.deleted", "\(listing.owner)/\(name)", address: context.address)
                return try Body.done("deleted lease \(name)")
            },
            .user(.post, "/lease/:name/extend") { request, context, caller in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "TTL")
                let ttl = try InputRules.ttl(try Body.required(body.ttl, "how long, as TTL: 90s, 15m, 2h or 1d"))
                let listing = try await master.saga.extend(try master.lease(named: try context.parameters.require("name"), for: caller.user), by: ttl)
                await master.audit.record(
                    caller.user.name,
                    "lease.extended",
                    "\(listing.owner)/\(listing.lease.name)",
                    detail: "until \(listing.lease.expiresAt)",
                    address: context.address
                )
                let message = "lease \(listing.lease.name) now ends at \(listing.lease.expiresAt)\(master.saga.capNote(ttl))"
                return try Body.reply(Payload("Lease", info(listing), message: message))
            },
        ]
    }

    private func recordCreated(_ listing: LeaseListing, address: String?) async {
        await master.audit.record(
            listing.owner,
            "lease.created",
            "\(listing.owner)/\(listing.lease.name)",
            detail: "\(listing.resource) on \(listing.machine ?? "?")",
            address: address
        )
    }

    /// `POST /lease` for a client that asked for `application/x-ndjson`: a line for each line
    /// of the image build as it happens, then the outcome. The creation runs in a task of its
    /// own, so a client that goes away mid-build does not leave a lease half made: it is
    /// finished, or failed and cleaned up, and shows in the owner's list either way.
    func streamedCreate(
        owner: User,
        _ body: LeaseRequest,
        ttl: Duration?,
        wait: Duration?,
        idle: Duration?,
        logger: Logger,
        address: String?
    ) -> Response {
        let (progress, sink) = AsyncStream.makeStream(of: LeaseProgress.self, bufferingPolicy: .bufferingNewest(10_000))
        Task {
            do {
                let listing = try await master.saga.create(
                    owner: owner,
                    resourceName: body.resourceName,
                    leaseName: body.leaseName,
                    ttl: ttl,
                    wait: wait,
                    idle: idle,
                    onQueued: { place in sink.yield(.queued(place)) },
                    onBuildLine: { line in sink.yield(.buildLine(line)) }
                )
                await recordCreated(listing, address: address)
                sink.yield(.created(info(listing), message: created(listing, ttl: ttl)))
            } catch {
                let failure = MasterError.from(error)
                failure.log(to: logger)
                sink.yield(.failed(failure.message, status: Int(failure.httpStatus.code)))
            }
            sink.finish()
        }
        return Response(
            status: .ok,
            headers: [.contentType: LeaseProgress.mediaType],
            body: ResponseBody { writer in
                let encoder = WireCoding.encoder()
                for await line in progress {
                    var buffer = ByteBuffer(bytes: try encoder.encode(line))
                    buffer.writeString("\n")
                    try await writer.write(buffer)
                }
                try await writer.finish(nil)
            }
        )
    }

    func created(_ listing: LeaseListing, ttl: Duration?) -> String {
        "lease \(listing.lease.name) runs on \(listing.machine ?? "?")\(master.saga.capNote(ttl))"
    }

    func info(_ listing: LeaseListing) -> LeaseInfo {
        let lease = listing.lease
        return LeaseInfo(
            name: lease.name,
            owner: listing.owner,
            resourceName: listing.resource,
            machine: listing.machine,
            state: lease.state.rawValue,
            message: lease.message,
            container: lease.containerId == nil ? nil : lease.containerName(masterID: master.masterID),
            createdAt: lease.createdAt,
            expiresAt: lease.expiresAt,
            idle: lease.idleSeconds.map { TTL.format(.seconds($0)) },
            activeAt: lease.idleSeconds == nil ? nil : lease.activeAt ?? lease.createdAt
        )
    }
}
