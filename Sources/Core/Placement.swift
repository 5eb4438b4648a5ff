import Store

/// Where a new container goes: healthy machines with room for it (`MachineLoad.refusal`: the
/// count within `Capacity`, memory limits within the machine's memory, CPU limits within its
/// CPUs × the overcommit), least loaded first (containers over capacity), ties broken by name
/// so the order is stable.
public enum Placement {
    public static func candidates(
        _ machines: [Machine],
        loads: [Int64: MachineLoad],
        memoryBytes: Int64 = 0,
        milliCPUs: Int = 0,
        cpuOvercommit: Double = 4
    ) -> [Machine] {
        func load(_ machine: Machine) -> MachineLoad { loads[machine.id ?? -1, default: MachineLoad()] }
        return
            machines
            .filter { load($0).refusal(of: $0, memoryBytes: memoryBytes, milliCPUs: milliCPUs, cpuOvercommit: cpuOvercommit) == nil }
            .sorted { a, b in
                let loadA = Double(load(a).containers) / Double(a.capacity)
                let loadB = Double(load(b).containers) / Double(b.capacity)
                return loadA != loadB ? loadA < loadB : a.name < b.name
            }
    }

    /// Why no machine takes a container of `memoryBytes` and `milliCPUs`, for the 503's
    /// sentence: what ran out on the machines that are up, or that none is up.
    public static func shortage(
        _ machines: [Machine],
        loads: [Int64: MachineLoad],
        memoryBytes: Int64,
        milliCPUs: Int,
        cpuOvercommit: Double
    ) -> String {
        let refusals = machines.compactMap { machine in
            loads[machine.id ?? -1, default: MachineLoad()].refusal(
                of: machine,
                memoryBytes: memoryBytes,
                milliCPUs: milliCPUs,
                cpuOvercommit: cpuOvercommit
            )
        }
        let up = refusals.filter { $0 != .down }
        if up.isEmpty { return machines.isEmpty ? "the fleet has no machine" : "no machine is up" }
        var reasons: [String] = []
        if up.contains(.memory) {
            let free = machines.filter(\.healthy).map { $0.memoryBytes - loads[$0.id ?? -1, default: MachineLoad()].memoryBytes }.max() ?? 0
            reasons.append(
                "memory ran out (a lease needs \(ByteSize.format(memoryBytes)); the most any machine has free is \(ByteSize.format(max(0, free))))"
            )
        }
        if up.contains(.cpus) { reasons.append("CPUs ran out (a lease needs \(CPUAmount.format(milliCPUs)))") }
        if up.contains(.capacity) { reasons.append("machines are at their capacity of leases") }
        return reasons.joined(separator: "; ")
    }
}
