import Synchronization

/// Slows password and key guessing: after `perName` failed attempts for one name, or
/// `perAddress` from one address, within `window`, further attempts are refused — whatever the
/// password, before it is checked — until the oldest of those failures is `window` old.
///
/// Kept in this master process's memory: several masters on one database each count on their
/// own, and a restart forgets. What it holds is bounded: failures older than the window are
/// dropped, and at most `maxKeys` names and addresses are tracked (the oldest go first).
public final class LoginThrottle: Sendable {
    public let perName: Int
    public let perAddress: Int
    public let window: Duration
    let maxKeys = 100_000
    private let failures = Mutex([String: [ContinuousClock.Instant]]())

    public init(perName: Int = 10, perAddress: Int = 30, window: Duration = .seconds(15 * 60)) {
        self.perName = perName
        self.perAddress = perAddress
        self.window = window
    }

    /// Seconds until an attempt for `name` from `address` may be made, or nil when it may now.
    public func refusal(name: String?, address: String?, now: ContinuousClock.Instant = .now) -> Int? {
        failures.withLock { failures in
            var wait: Duration?
            for (key, limit) in Self.keys(name: name, address: address, perName: perName, perAddress: perAddress) {
                let recent = (failures[key] ?? []).filter { now - $0 < window }
                failures[key] = recent.isEmpty ? nil : recent
                guard recent.count >= limit else { continue }
                let free = window - (now - recent[recent.count - limit])
                wait = max(wait ?? .zero, free)
            }
            return wait.map { max(1, Int($0.components.seconds) + 1) }
        }
    }

    /// Counts a failed attempt for `name` from `address`.
    public func failed(name: String?, address: String?, now: ContinuousClock.Instant = .now) {
        failures.withLock { failures in
            if failures.count >= maxKeys {
                // Drop whatever has aged out; if that frees nothing, the stalest keys.
                failures = failures.filter { $0.value.last.map { now - $0 < window } ?? false }
                if failures.count >= maxKeys {
                    let stalest = failures.sorted { ($0.value.last ?? now) < ($1.value.last ?? now) }.prefix(maxKeys / 10).map(\.key)
                    for key in stalest { failures[key] = nil }
                }
            }
            for (key, _) in Self.keys(name: name, address: address, perName: perName, perAddress: perAddress) {
                failures[key, default: []].append(now)
                if failures[key]!.count > max(perName, perAddress) { failures[key]!.removeFirst() }
            }
        }
    }

    private static func keys(name: String?, address: String?, perName: Int, perAddress: Int) -> [(String, Int)] {
        var keys: [(String, Int)] = []
        if let name, !name.isEmpty { keys.append(("name\u{0}" + String(name.prefix(64)), perName)) }
        if let address, !address.isEmpty { keys.append(("address\u{0}" + address, perAddress)) }
        return keys
    }
}
