import Core
import Foundation
import Hummingbird
import ResallocAPI
import Store

/// `GET|POST|DELETE /resource`: Dockerfiles, stored byte for byte.
struct ResourceController {
    let catalog: ResourceCatalog

    var endpoints: [Endpoint] {
        [
            .user(.get, "/resource") { _, _, _ in
                try Body.reply(Payload("Resources", try catalog.resources().map(Self.info)))
            },
            .admin(.post, "/resource") { request, context, _ in
                let body = try await Body.decode(ResourceRequest.self, from: request, context: context, expecting: "Name and File")
                let resource = try catalog.create(name: body.name, dockerfile: Data(body.file.utf8))
                return try Body.reply(Payload("Resource", Self.info(resource), message: "created resource \(resource.name)"), status: .created)
            },
            .admin(.delete, "/resource") { request, context, _ in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "Name")
                let name = try Body.required(body.name, "Name")
                try catalog.delete(name: name)
                return try Body.done("deleted resource \(name)")
            },
            .admin(.delete, "/resource/:name") { _, context, _ in
                let name = try context.parameters.require("name")
                try catalog.delete(name: name)
                return try Body.done("deleted resource \(name)")
            },
        ]
    }

    static func info(_ resource: Resource) -> ResourceInfo {
        ResourceInfo(name: resource.name, file: String(decoding: resource.dockerfile, as: UTF8.self), image: ResourceCatalog.imageTag(for: resource))
    }
}
