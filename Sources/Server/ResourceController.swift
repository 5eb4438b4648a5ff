import Core
import Docker
import Foundation
import Hummingbird
import ResallocAPI
import Store

/// `GET|POST|DELETE /resource`: Dockerfiles, stored byte for byte, and their warm pools.
struct ResourceController {
    let master: Master
    var catalog: ResourceCatalog { master.catalog }
    var warmPool: WarmPool { master.warmPool }
    var audit: AuditTrail { master.audit }
    var limits: LimitPolicy { master.limits }

    var endpoints: [Endpoint] {
        [
            .user(.get, "/resource") { _, _, _ in
                let machines = try await master.fleet.machines().filter(\.healthy)
                let entries = try await catalog.resourcesWithReadyPools()
                return try Body.reply(
                    Payload(
                        "Resources",
                        entries.map { entry in
                            var shown = info(entry.resource, ready: entry.ready)
                            shown.imageOn = master.machinesWithImage(of: entry.resource, among: machines)
                            shown.machines = machines.count
                            return shown
                        }
                    )
                )
            },
            .admin(.post, "/resource") { request, context, caller in
                let body = try await Body.decode(ResourceRequest.self, from: request, context: context, expecting: "Name and File")
                let asked = try ResourceCatalog.limits(memory: body.limits.memory, cpus: body.limits.cpus, pids: body.limits.pids)
                let idle = try body.limits.idle.map(InputRules.ttl)
                var resource = try await catalog.create(name: body.name, dockerfile: Data(body.file.utf8), pool: body.pool ?? 0, limits: asked)
                if let idle { resource = try await catalog.setIdle(name: resource.name, to: idle) }
                await audit.record(
                    caller.user.name,
                    "resource.created",
                    resource.name,
                    detail: ResourceCatalog.imageTag(for: resource),
                    address: context.address
                )
                if resource.poolSize > 0 { warmPool.wake() }
                master.buildAhead([resource])
                return try Body.reply(Payload("Resource", info(resource), message: "created resource \(resource.name)"), status: .created)
            },
            .admin(.put, "/resource/:name") { request, context, caller in
                let name = try context.parameters.require("name")
                let body = try await Body.decode(
                    DockerfileRequest.self,
                    from: request,
                    context: context,
                    expecting: "File, Memory, CPUs, Pids or Idle"
                )
                guard body.file != nil || !body.limits.isEmpty else {
                    throw MasterError(.invalid, "give a File, Memory, CPUs, Pids or Idle to change")
                }
                let idle = try body.limits.idle.map(InputRules.ttl)
                guard let current = try await catalog.resource(named: name) else { throw MasterError(.notFound, "no resource \(name)") }
                let asked = try ResourceCatalog.limits(
                    memory: body.limits.memory,
                    cpus: body.limits.cpus,
                    pids: body.limits.pids,
                    over: current.limits
                )
                var resource = current
                var said: [String] = []
                if let file = body.file {
                    resource = try await catalog.edit(name: name, dockerfile: Data(file.utf8))
                    said.append("builds \(ResourceCatalog.imageTag(for: resource))")
                    master.buildAhead([resource])
                }
                if let idle {
                    resource = try await catalog.setIdle(name: name, to: idle)
                    said.append("ends its new leases after \(TTL.format(idle)) without a session")
                }
                if asked != current.limits {
                    resource = try await catalog.setLimits(name: name, limits: asked)
                    said.append("runs its containers with \(Self.describe(limits.limits(for: resource)))")
                    // Warm containers started with the old limits (processes included) make way.
                    await warmPool.remove(await warmPool.slots(ofResourceNamed: name))
                }
                await audit.record(
                    caller.user.name,
                    "resource.edited",
                    name,
                    detail: ([ResourceCatalog.imageTag(for: resource)] + (asked != current.limits ? [Self.describe(asked)] : [])).joined(
                        separator: "; "
                    ),
                    address: context.address
                )
                warmPool.wake()
                return try Body.reply(
                    Payload(
                        "Resource",
                        info(resource),
                        message: "resource \(name) " + (said.isEmpty ? "is unchanged" : said.joined(separator: " and "))
                    )
                )
            },
            .admin(.put, "/resource/:name/pool") { request, context, caller in
                let name = try context.parameters.require("name")
                let body = try await Body.decode(PoolRequest.self, from: request, context: context, expecting: "Size")
                let resource = try await catalog.setPool(name: name, size: body.size)
                await audit.record(caller.user.name, "resource.pool-set", name, detail: "\(body.size)", address: context.address)
                warmPool.wake()
                return try Body.reply(Payload("Resource", info(resource), message: "resource \(name) keeps \(body.size) warm container(s)"))
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

    /// The resource as the API shows it, with the limits its containers get (its own, else the
    /// master's defaults).
    func info(_ resource: Resource, ready: Int = 0) -> ResourceInfo {
        let effective = limits.limits(for: resource)
        return ResourceInfo(
            name: resource.name,
            file: String(decoding: resource.dockerfile, as: UTF8.self),
            image: ResourceCatalog.imageTag(for: resource),
            pool: resource.poolSize,
            poolReady: ready,
            memory: effective.memoryBytes.map(ByteSize.format),
            cpus: effective.milliCPUs.map { Double($0) / 1000 },
            pids: effective.pids,
            idle: resource.idleSeconds.map { TTL.format(.seconds($0)) }
        )
    }

    /// `memory 2g, 1.5 CPUs, 1024 processes`.
    static func describe(_ limits: ContainerLimits) -> String {
        [
            limits.memoryBytes.map { "memory \(ByteSize.format($0))" } ?? "no memory limit",
            limits.milliCPUs.map { "\(CPUAmount.format($0)) CPUs" } ?? "no CPU limit",
            limits.pids.map { "\($0) processes" } ?? "no process limit",
        ].joined(separator: ", ")
    }

    static func describe(_ limits: ResourceLimits) -> String {
        describe(ContainerLimits(memoryBytes: limits.memoryBytes, milliCPUs: limits.milliCPUs, pids: limits.pids))
    }
}
