/// What a resource asks of each container of its own: memory in bytes, CPUs in thousandths,
/// processes. Nil: the master's default.
public struct ResourceLimits: Sendable, Equatable, Codable {
    public var memoryBytes: Int64?
    public var milliCPUs: Int?
    public var pids: Int?

    public init(memoryBytes: Int64? = nil, milliCPUs: Int? = nil, pids: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
        self.pids = pids
    }
}

/// What a machine holds now: its active leases and warm containers, and the sums of their
/// memory and CPU limits.
public struct MachineLoad: Sendable, Equatable {
    public var containers = 0
    public var memoryBytes: Int64 = 0
    public var milliCPUs = 0

    public init(containers: Int = 0, memoryBytes: Int64 = 0, milliCPUs: Int = 0) {
        self.containers = containers
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
    }

    /// What stops one more container of `memoryBytes` and `milliCPUs` from going on `machine`,
    /// or nil when it fits: the machine is down, its `Capacity` is reached, the memory limits
    /// would pass the memory the engine reports, or the CPU limits its CPUs × `cpuOvercommit`.
    /// Both stores decide placement with this one rule.
    public func refusal(of machine: Machine, memoryBytes: Int64, milliCPUs: Int, cpuOvercommit: Double) -> PlacementRefusal? {
        guard machine.healthy else { return .down }
        guard containers < machine.capacity else { return .capacity }
        if memoryBytes > 0, machine.memoryBytes > 0, self.memoryBytes + memoryBytes > machine.memoryBytes { return .memory }
        if milliCPUs > 0, machine.cpus > 0, Double(self.milliCPUs + milliCPUs) > Double(machine.cpus * 1000) * cpuOvercommit { return .cpus }
        return nil
    }

    func adding(memoryBytes: Int64, milliCPUs: Int) -> MachineLoad {
        MachineLoad(containers: containers + 1, memoryBytes: self.memoryBytes + memoryBytes, milliCPUs: self.milliCPUs + milliCPUs)
    }
}

/// Why a container does not go on a machine.
public enum PlacementRefusal: String, Sendable, Equatable, CaseIterable {
    case down, capacity, memory, cpus
}
