import Core
import Foundation
import Hummingbird
import ResallocAPI
import Store

/// `GET|POST|DELETE /resource`: Dockerfiles, stored byte for byte, and their warm pools.
struct ResourceController {
    let catalog: ResourceCatalog
    let warmPool: WarmPool
    let audit: AuditTrail

    var endpoints: [Endpoint] {
        [
            .user(.get, "/resource") { _, _, _ in
                try await Body.reply(Payload("Resources", try catalog.resourcesWithReadyPools().map { Self.info($0.resource, ready: $0.ready) }))
            },
            .admin(.post, "/resource") { request, context, caller in
                let body = try await Body.decode(ResourceRequest.self, from: request, context: context, expecting: "Name and File")
                let resource = try await catalog.create(name: body.name, dockerfile: Data(body.file.utf8), pool: body.pool ?? 0)
                await audit.record(
                    caller.user.name,
                    "resource.created",
                    resource.name,
                    detail: ResourceCatalog.imageTag(for: resource),
                    address: context.address
                )
                if resource.poolSize > 0 { warmPool.wake() }
                return try Body.reply(Payload("Resource", Self.info(resource), message: "created resource \(resource.name)"), status: .created)
            },
            .admin(.put, "/resource/:name") { request, context, caller in
                let name = try context.parameters.require("name")
                let body = try await Body.decode(DockerfileRequest.self, from: request, context: context, expecting: "File")
                let resource = try await catalog.edit(name: name, dockerfile: Data(body.file.utf8))
                await audit.record(
                    caller.user.name,
                    "resource.edited",
                    name,
                    detail: ResourceCatalog.imageTag(for: resource),
                    address: context.address
                )
                warmPool.wake()
                return try Body.reply(
                    Payload("Resource", Self.info(resource), message: "resource \(name) now builds \(ResourceCatalog.imageTag(for: resource))")
                )
            },
            .admin(.put, "/resource/:name/pool") { request, context, caller in
                let name = try context.parameters.require("name")
                let body = try await Body.decode(PoolRequest.self, from: request, context: context, expecting: "Size")
                let resource = try await catalog.setPool(name: name, size: body.size)
                await audit.record(caller.user.name, "resource.pool-set", name, detail: "\(body.size)", address: context.address)
                warmPool.wake()
                return try Body.reply(Payload("Resource", Self.info(resource), message: "resource \(name) keeps \(body.size) warm container(s)"))
            },
            .admin(.delete, "/resource") { request, context, caller in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "Name")
                let name = try Body.required(body.name, "Name")
                let warm = await warmPool.slots(ofResourceNamed: name)
                try await catalog.delete(name: name)
                await audit.record(caller.user.name, "resource.deleted", name, address: context.address)
                await warmPool.remove(warm)
                return try Body.done("deleted resource \(name)")
            },
            .admin(.delete, "/resource/:name") { _, context, caller in
                let name = try context.parameters.require("name")
                let warm = await warmPool.slots(ofResourceNamed: name)
                try await catalog.delete(name: name)
                await audit.record(caller.user.name, "resource.deleted", name, address: context.address)
                await warmPool.remove(warm)
                return try Body.done("deleted resource \(name)")
            },
        ]
    }

    static func info(_ resource: Resource, ready: Int = 0) -> ResourceInfo {
        ResourceInfo(
            name: resource.name,
            file: String(decoding: resource.dockerfile, as: UTF8.self),
            image: ResourceCatalog.imageTag(for: resource),
            pool: resource.poolSize,
            poolReady: ready
        )
    }
}
