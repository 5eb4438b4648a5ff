import Crypto
import Foundation
import Store

/// Resources: Dockerfiles stored byte for byte, and the image tag each one builds as.
public struct ResourceCatalog: Sendable {
    let database: any Store

    public init(database: any Store) { self.database = database }

    public func create(name: String, dockerfile: Data, pool: Int = 0, limits: ResourceLimits = ResourceLimits()) async throws(MasterError) -> Resource
    {
        try InputRules.validateName(name, "resource")
        try InputRules.validateDockerfile(String(decoding: dockerfile, as: UTF8.self))
        try Self.validatePool(pool)
        do {
            var resource = try await database.createResource(name: name, dockerfile: dockerfile)
            if pool > 0 { resource = try await database.setPoolSize(resourceNamed: name, to: pool) }
            if limits != ResourceLimits() { resource = try await database.setLimits(resourceNamed: name, to: limits) }
            return resource
        } catch { throw .from(error) }
    }

    /// Sets the limits of the resource's containers: new leases and warm containers get them,
    /// leases already running keep theirs.
    /// How long the resource's new leases may go without a session (their default `idle`).
    public func setIdle(name: String, to idle: Duration) async throws(MasterError) -> Resource {
        do { return try await database.setIdle(resourceNamed: name, to: Int(idle.components.seconds)) } catch { throw .from(error) }
    }

    public func setLimits(name: String, limits: ResourceLimits) async throws(MasterError) -> Resource {
        do { return try await database.setLimits(resourceNamed: name, to: limits) } catch { throw .from(error) }
    }

    /// Limits as a person gives them (`2g`, `1.5`, `1024`) over `current`: each one given
    /// replaces the current one; bad values are refused with the range that is allowed.
    public static func limits(
        memory: String?,
        cpus: Double?,
        pids: Int?,
        over current: ResourceLimits = ResourceLimits()
    ) throws(MasterError)
        -> ResourceLimits
    {
        var limits = current
        if let memory {
            guard InputRules.matches(memory, InputRules.memorySize), let bytes = ByteSize.parse(memory), InputRules.memory.contains(bytes) else {
                throw MasterError(.invalid, "Memory \(memory) is not a size from 6m to 999999m or 0.1g to 999.9g, such as 512m or 2g")
            }
            limits.memoryBytes = bytes
        }
        if let cpus {
            guard cpus.isFinite, let milli = CPUAmount.parse(String(cpus)), InputRules.milliCPUs.contains(milli) else {
                throw MasterError(.invalid, "CPUs \(cpus) is not a number of CPUs from 0.01 to 1024, such as 1.5")
            }
            limits.milliCPUs = milli
        }
        if let pids {
            guard InputRules.pids.contains(pids) else {
                throw MasterError(
                    .invalid,
                    "Pids \(pids) is not a number of processes from \(InputRules.pids.lowerBound) to \(InputRules.pids.upperBound)"
                )
            }
            limits.pids = pids
        }
        return limits
    }

    public func resource(named name: String) async throws(MasterError) -> Resource? {
        do { return try await database.resource(named: name) } catch { throw .from(error) }
    }

    public func resources() async throws(MasterError) -> [Resource] {
        do { return try await database.resources() } catch { throw .from(error) }
    }

    /// Every resource with the number of its warm containers ready now.
    public func resourcesWithReadyPools() async throws(MasterError) -> [(resource: Resource, ready: Int)] {
        do {
            let ready = Dictionary(grouping: try await database.poolSlots(machineID: nil).filter { $0.state == .ready }, by: \.resourceId)
            return try await database.resources().map { resource in
                let image = Self.imageTag(for: resource)
                return (resource, ready[resource.id!, default: []].filter { $0.image == image }.count)
            }
        } catch { throw .from(error) }
    }

    /// Sets how many warm containers of the resource the master keeps (0 drains them).
    public func setPool(name: String, size: Int) async throws(MasterError) -> Resource {
        try Self.validatePool(size)
        do { return try await database.setPoolSize(resourceNamed: name, to: size) } catch { throw .from(error) }
    }

    /// Replaces the resource's Dockerfile: new leases and warm containers use the new image,
    /// leases already running keep theirs.
    public func edit(name: String, dockerfile: Data) async throws(MasterError) -> Resource {
        try InputRules.validateDockerfile(String(decoding: dockerfile, as: UTF8.self))
        do { return try await database.updateDockerfile(resourceNamed: name, to: dockerfile) } catch { throw .from(error) }
    }

    static func validatePool(_ size: Int) throws(MasterError) {
        guard InputRules.poolSize.contains(size) else {
            throw MasterError(.invalid, "a pool holds \(InputRules.poolSize.lowerBound) to \(InputRules.poolSize.upperBound) containers")
        }
    }

    public func delete(name: String) async throws(MasterError) {
        do { try await database.deleteResource(named: name) } catch { throw .from(error) }
    }

    /// `resalloc/<name>:<first 12 hex of sha256(Dockerfile)>`: an edited resource builds anew,
    /// an unchanged one is never rebuilt.
    public static func imageTag(for resource: Resource) -> String {
        let digest = SHA256.hash(data: resource.dockerfile).map { String(format: "%02x", $0) }.joined()
        // Docker repositories are lowercase words joined by single separators, never at the ends.
        let words = resource.name.lowercased().split { !($0.isASCII && ($0.isLetter || $0.isNumber)) }
        return "resalloc/\(words.isEmpty ? "resource" : words.joined(separator: "-")):\(digest.prefix(12))"
    }
}
