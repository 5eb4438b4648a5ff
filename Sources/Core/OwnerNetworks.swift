import Crypto
import Docker
import Foundation
import Store

/// One bridge network per lease owner on each machine: leases of one owner reach each other,
/// leases of different owners are on different bridges, which Docker's isolation chains keep
/// apart. Warm containers wait on the pool's own network (internal: no way out) and move to
/// their lease owner's at handout. Every bridge is named `rsl…`, which the machine's
/// `resalloc-firewall` matches to keep leases away from the machine itself and from link-local
/// addresses. Networks are made on first use and pruned by the passes once nothing uses them.
public enum OwnerNetworks {
    /// The label every network of this master carries (pruning finds them by it).
    static let label = "resalloc.network"

    /// The network of `ownerID`'s leases made by master `masterID`.
    public static func owner(_ ownerID: Int64, masterID: String) -> NetworkSpec {
        NetworkSpec(
            name: "resalloc-\(masterID.prefix(8))-owner-\(ownerID)",
            bridge: bridge("\(masterID)/owner/\(ownerID)"),
            labels: ["resalloc.master": masterID, label: "owner-\(ownerID)"]
        )
    }

    /// Where warm containers wait: no way out, and no user's program runs there.
    public static func pool(masterID: String) -> NetworkSpec {
        NetworkSpec(
            name: "resalloc-\(masterID.prefix(8))-pool",
            bridge: bridge("\(masterID)/pool"),
            labels: ["resalloc.master": masterID, label: "pool"],
            isInternal: true
        )
    }

    /// `rsl` and 12 hex of a digest: unique per master and owner, within Linux's 15 characters.
    static func bridge(_ key: String) -> String {
        "rsl" + SHA256.hash(data: Data(key.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
    }

    /// What a machine without the firewall is told.
    static func missingFirewall(_ machine: String) -> String {
        "machine \(machine) has no resalloc firewall (leases there could reach the machine itself and its cloud's metadata address): "
            + "run resources/setup.sh on it as root, then try again"
    }

    /// The installation-wide setting `serve --tenant-networks` writes and `cleanup` reads.
    public static let settingKey = "tenantNetworks"
}
