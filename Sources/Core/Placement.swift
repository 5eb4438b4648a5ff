import Store

/// Where a new lease goes: healthy machines with room, least loaded first (active leases over
/// capacity), ties broken by name so the order is stable.
public enum Placement {
    public static func candidates(_ machines: [Machine], activeLeases: [Int64: Int]) -> [Machine] {
        machines
            .filter { $0.healthy && activeLeases[$0.id ?? -1, default: 0] < $0.capacity }
            .sorted { a, b in
                let loadA = Double(activeLeases[a.id ?? -1, default: 0]) / Double(a.capacity)
                let loadB = Double(activeLeases[b.id ?? -1, default: 0]) / Double(b.capacity)
                return loadA != loadB ? loadA < loadB : a.name < b.name
            }
    }
}
