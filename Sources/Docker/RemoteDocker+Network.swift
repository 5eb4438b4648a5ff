import SSH
import Synchronization

/// A bridge network on a machine: its docker name, the name of its bridge interface (what the
/// machine's firewall matches: `rsl…`), its labels, and whether it has no way out (`--internal`).
public struct NetworkSpec: Sendable, Equatable, Hashable {
    public var name: String
    public var bridge: String
    public var labels: [String: String]
    public var isInternal: Bool

    public init(name: String, bridge: String, labels: [String: String] = [:], isInternal: Bool = false) {
        self.name = name
        self.bridge = bridge
        self.labels = labels
        self.isInternal = isInternal
    }
}

/// The networks each machine is known to hold, so that a lease skips asking for one it saw
/// there before. Forgotten for a machine when a run there fails.
public final class NetworkCache: Sendable {
    private let known = Mutex([SSHEndpoint: Set<String>]())

    public init() {}

    public func has(_ network: String, on endpoint: SSHEndpoint) -> Bool { known.withLock { $0[endpoint]?.contains(network) ?? false } }
    public func remember(_ network: String, on endpoint: SSHEndpoint) { known.withLock { _ = $0[endpoint, default: []].insert(network) } }
    public func forget(on endpoint: SSHEndpoint) { known.withLock { _ = $0.removeValue(forKey: endpoint) } }
}

extension RemoteDocker {
    /// Makes `network` on the machine unless it is there, in one round trip; a create that
    /// races another master's (or another lease's) is success when the network is then there.
    public func ensureNetwork(_ network: NetworkSpec, cache: NetworkCache) async throws(DockerError) {
        if cache.has(network.name, on: endpoint) { return }
        try DockerNames.validateContainer(network.name)
        guard network.bridge.wholeMatch(of: /[a-z0-9]{1,15}/) != nil else { throw .invalidArgument("'\(network.bridge)' is not a bridge name") }
        for (key, value) in network.labels { try DockerNames.validateLabel(key: key, value: value) }
        var create = ["network", "create", "--driver", "bridge", "--opt", "com.docker.network.bridge.name=\(network.bridge)"]
        if network.isInternal { create.append("--internal") }
        for (key, value) in network.labels.sorted(by: { $0.key < $1.key }) { create += ["--label", "\(key)=\(value)"] }
        create.append(network.name)
        let inspect = "docker " + ShellQuote.join(["network", "inspect", "--format", "{{.Id}}", network.name]) + " >/dev/null 2>&1"
        let command = "\(inspect) || docker \(ShellQuote.join(create)) >/dev/null || \(inspect)"
        let result: ExecResult
        do { result = try await pool.execute(on: endpoint, command, stdin: nil, timeout: commandTimeout, onOutput: nil) } catch {
            throw .transport(error)
        }
        guard result.succeeded else { throw .commandFailed(command: "network create", status: result.exitStatus, stderr: result.stderrText) }
        cache.remember(network.name, on: endpoint)
    }

    /// Removes the networks labelled `labels` that no container uses and that are older than a
    /// minute (one a lease is about to join is never that old); returns their names.
    @discardableResult
    public func pruneNetworks(labelled labels: [String: String]) async throws(DockerError) -> [String] {
        var argv = ["network", "prune", "--force", "--filter", "until=1m"]
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            try DockerNames.validateLabel(key: key, value: value)
            argv += ["--filter", "label=\(key)=\(value)"]
        }
        let result = try await run(argv)
        guard result.succeeded else { throw .commandFailed(command: "network prune", status: result.exitStatus, stderr: result.stderrText) }
        // "Deleted Networks:\nNAME\n…"
        return result.stdoutText.split(separator: "\n").dropFirst().map { String($0) }.filter { !$0.isEmpty }
    }

    /// What the machine's firewall state file says (`resalloc-firewall 1`), or nil when there is
    /// none: resources/setup.sh has not been run there, or the rules were taken out since.
    public func firewallState() async throws(DockerError) -> String? {
        let command = #"cat "${RESALLOC_FIREWALL_STATE:-/run/resalloc/firewall}" 2>/dev/null"#
        let result: ExecResult
        do { result = try await pool.execute(on: endpoint, command, stdin: nil, timeout: commandTimeout, onOutput: nil) } catch {
            throw .transport(error)
        }
        let text = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        return result.succeeded && text.hasPrefix("resalloc-firewall ") ? text : nil
    }
}
