import Docker
import Foundation
import Store
import Synchronization

/// What every container may take of its machine: a resource's own limits, else the master's
/// defaults (`serve --lease-memory --lease-cpus --lease-pids`); and how far placement lets the
/// CPU limits on one machine pass its CPUs (`--cpu-overcommit`). Memory and processes are never
/// unlimited by default: one lease's fork storm or leak must not take its machine down for
/// everyone else on it. Shared by the lease saga and the warm pool; set once at start.
public final class LimitPolicy: Sendable {
    public struct Settings: Sendable, Equatable {
        public var defaults: ContainerLimits
        public var cpuOvercommit: Double
        /// One network per owner on each machine, and machines required to have
        /// resalloc-firewall (`serve --tenant-networks`); off: leases share the engine's default
        /// network, as on a fleet of one tenant.
        public var ownerNetworks: Bool

        public init(defaults: ContainerLimits = LimitPolicy.standardDefaults, cpuOvercommit: Double = 4, ownerNetworks: Bool = true) {
            self.defaults = defaults
            self.cpuOvercommit = cpuOvercommit
            self.ownerNetworks = ownerNetworks
        }
    }

    /// 1 GiB of memory, 1024 processes, no CPU limit.
    public static let standardDefaults = ContainerLimits(memoryBytes: 1 << 30, milliCPUs: nil, pids: 1024)

    private let state: Mutex<Settings>

    public init(_ settings: Settings = Settings()) { state = Mutex(settings) }

    public var settings: Settings {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }

    /// The limits a container of `resource` runs with.
    public func limits(for resource: Resource) -> ContainerLimits {
        let defaults = settings.defaults
        return ContainerLimits(
            memoryBytes: resource.memoryBytes ?? defaults.memoryBytes,
            milliCPUs: resource.milliCPUs ?? defaults.milliCPUs,
            pids: resource.pids ?? defaults.pids
        )
    }

    public var cpuOvercommit: Double { settings.cpuOvercommit }
    public var ownerNetworks: Bool { settings.ownerNetworks }
}

extension ContainerLimits {
    /// What placement adds up on a machine: memory bytes and thousandths of CPUs (0: no limit).
    var placementMemory: Int64 { memoryBytes ?? 0 }
    var placementCPUs: Int { milliCPUs ?? 0 }
}

/// Sizes as people write them for `--memory`: `512m`, `2g`, `1.5g`, `1048576` (bytes).
public enum ByteSize {
    public static func parse(_ text: String) -> Int64? {
        let lowered = text.lowercased().trimmingCharacters(in: .whitespaces)
        guard let last = lowered.last else { return nil }
        let units: [Character: Double] = ["b": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024, "t": 1024 * 1024 * 1024 * 1024]
        let (number, unit) = last.isNumber ? (lowered, 1.0) : (String(lowered.dropLast()), units[last] ?? 0)
        guard unit > 0, let value = Double(number), value.isFinite, value > 0 else { return nil }
        let bytes = value * unit
        guard bytes >= 1, bytes < 1e18 else { return nil }
        return Int64(bytes.rounded())
    }

    /// `2g`, `1.5g`, `512m`, `900k`, `17b`: the largest unit it reaches, one decimal at most.
    public static func format(_ bytes: Int64) -> String {
        for (unit, size) in [("t", Int64(1) << 40), ("g", Int64(1) << 30), ("m", Int64(1) << 20), ("k", Int64(1) << 10)] where bytes >= size {
            let tenths = (Double(bytes) / Double(size) * 10).rounded() / 10
            return tenths == tenths.rounded() ? "\(Int64(tenths))\(unit)" : String(format: "%.1f", tenths) + unit
        }
        return "\(bytes)b"
    }
}

/// CPUs as people write them for `--cpus`: `1.5`, `2`, `0.25`; kept in thousandths.
public enum CPUAmount {
    public static func parse(_ text: String) -> Int? {
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)), value.isFinite, value > 0, value <= 1024 else { return nil }
        let milli = Int((value * 1000).rounded())
        return milli > 0 ? milli : nil
    }

    public static func format(_ milli: Int) -> String { ContainerLimits.cpus(milli) }
}
