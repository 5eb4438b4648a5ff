import Core
import Hummingbird
import ResallocAPI
import Store

/// `GET|POST|DELETE /lease`, one lease, and extending one. A user sees and touches only their
/// own leases; another user's lease is "not found", not "forbidden", so names do not leak.
struct LeaseController {
    let master: Master

    var endpoints: [Endpoint] {
        [
            .user(.get, "/lease") { request, _, caller in
                let all = request.uri.queryParameters["all"] == "true"
                return try Body.reply(Payload("Leases", try master.leases(for: caller.user, all: all).map(info)))
            },
            .user(.post, "/lease") { request, context, caller in
                let body = try await Body.decode(LeaseRequest.self, from: request, context: context, expecting: "ResourceName and LeaseName")
                let ttl = try Self.ttl(body.ttl)
                let listing = try await master.saga.create(owner: caller.user, resourceName: body.resourceName, leaseName: body.leaseName, ttl: ttl)
                return try Body.reply(Payload("Lease", info(listing), message: "lease \(listing.lease.name) runs on \(listing.machine ?? "?")"), status: .created)
            },
            .user(.delete, "/lease") { request, context, caller in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "Name (or LeaseName)")
                let name = body.name ?? body.leaseName ?? ""
                try await master.saga.delete(try master.lease(named: name, for: caller.user))
                return try Body.done("deleted lease \(name)")
            },
            .user(.get, "/lease/:name") { request, context, caller in
                let listing = try master.lease(named: try context.parameters.require("name"), for: caller.user, owner: request.uri.queryParameters["owner"].map(String.init))
                return try Body.reply(Payload("Lease", info(listing)))
            },
            .user(.delete, "/lease/:name") { request, context, caller in
                let name = try context.parameters.require("name")
                try await master.saga.delete(try master.lease(named: name, for: caller.user, owner: request.uri.queryParameters["owner"].map(String.init)))
                return try Body.done("deleted lease \(name)")
            },
            .user(.post, "/lease/:name/extend") { request, context, caller in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "TTL")
                guard let ttl = try Self.ttl(body.ttl) else { throw MasterError(.invalid, "say how long, as TTL: 90s, 15m, 2h or 1d") }
                let listing = try master.saga.extend(try master.lease(named: try context.parameters.require("name"), for: caller.user), by: ttl)
                return try Body.reply(Payload("Lease", info(listing), message: "lease \(listing.lease.name) now ends at \(listing.lease.expiresAt)"))
            },
        ]
    }

    static func ttl(_ text: String?) throws(MasterError) -> Duration? {
        guard let text else { return nil }
        guard let ttl = TTL.parse(text) else { throw MasterError(.invalid, "'\(text.prefix(20))' is not a lifetime: use 90s, 15m, 2h or 1d") }
        return ttl
    }

    func info(_ listing: LeaseListing) -> LeaseInfo {
        let lease = listing.lease
        return LeaseInfo(
            name: lease.name, owner: listing.owner, resourceName: listing.resource, machine: listing.machine, state: lease.state.rawValue,
            message: lease.message, container: lease.containerId == nil ? nil : lease.containerName(masterID: master.masterID), createdAt: lease.createdAt, expiresAt: lease.expiresAt)
    }
}
