import Core
import Hummingbird
import ResallocAPI
import Store

/// `GET|POST|DELETE /machine`, for admins.
struct MachineController {
    let master: Master

    var endpoints: [Endpoint] {
        [
            .admin(.get, "/machine") { _, _, _ in
                let loads = try await master.machineLoads()
                return try await Body.reply(Payload("Machines", try master.fleet.machines().map { Self.info($0, loads) }))
            },
            .admin(.post, "/machine") { request, context, caller in
                let body = try await Body.decode(MachineRequest.self, from: request, context: context, expecting: "Name, Username and IP")
                let machine = try await master.fleet.add(
                    name: body.name,
                    login: body.username,
                    address: body.ip,
                    capacity: body.capacity,
                    requireFirewall: master.limits.ownerNetworks
                )
                await master.audit.record(
                    caller.user.name,
                    "machine.created",
                    machine.name,
                    detail: "\(machine.host):\(machine.port)",
                    address: context.address
                )
                if let resources = try? await master.database.resources() { master.buildAhead(resources, on: [machine]) }
                return try Body.reply(Payload("Machine", Self.info(machine, [:]), message: "added machine \(machine.name)"), status: .created)
            },
            .admin(.delete, "/machine") { request, context, caller in
                let body = try await Body.decode(NameRequest.self, from: request, context: context, expecting: "Name")
                let name = try Body.required(body.name, "Name")
                try await master.fleet.delete(name: name, force: body.force ?? false, masterID: master.masterID)
                await master.audit.record(caller.user.name, "machine.deleted", name, address: context.address)
                return try Body.done("deleted machine \(name)")
            },
            .admin(.delete, "/machine/:name") { request, context, caller in
                let name = try context.parameters.require("name")
                try await master.fleet.delete(name: name, force: try Query.flag(request, "force"), masterID: master.masterID)
                await master.audit.record(caller.user.name, "machine.deleted", name, address: context.address)
                return try Body.done("deleted machine \(name)")
            },
        ]
    }

    static func info(_ machine: Machine, _ loads: [Int64: MachineLoad]) -> MachineInfo {
        let load = loads[machine.id ?? -1, default: MachineLoad()]
        var info = MachineInfo(
            name: machine.name,
            username: machine.login,
            ip: machine.port == 22 ? machine.host : "\(machine.host):\(machine.port)",
            hostKey: "\(machine.hostKeyType) \(machine.hostKeyFingerprint)",
            cpus: machine.cpus,
            memoryBytes: machine.memoryBytes,
            capacity: machine.capacity,
            activeLeases: load.containers,
            healthy: machine.healthy,
            lastError: machine.lastError,
            lastContact: machine.lastContactAt
        )
        info.memoryUsedBytes = load.memoryBytes
        info.cpusUsed = Double(load.milliCPUs) / 1000
        return info
    }
}
