import SSH
import Synchronization

extension RemoteDocker {
    /// Renames the warm container `from` (engine id `id`) to `to`, and says whether it was
    /// there and runs. The rename is atomic on the host (of two claims of one container, one
    /// fails); the check runs beside it, by id, so the claim costs one docker command's time
    /// in one round trip.
    ///
    /// `joining`: the network the container moves to (its lease owner's), leaving `leaving` (the
    /// pool's); both in the same round trip, after the rename succeeded.
    public func claim(_ from: String, id: String, as to: String, joining: String? = nil, leaving: String? = nil) async throws(DockerError) -> Bool {
        try DockerNames.validateContainer(from)
        try DockerNames.validateContainer(to)
        guard id.wholeMatch(of: /[0-9a-f]{64}/) != nil else { throw .invalidArgument("'\(id)' is not a container id") }
        // The warm container's FIFO goes (its main process waits on it for good, as a lease's).
        var command =
            "rm -rf \(handoffDirectory(from)) 2>/dev/null; docker " + ShellQuote.join(["rename", from, to]) + " & renamed=$!; docker "
            + ShellQuote.join(["inspect", "--format", "{{.State.Running}}", id]) + " 2>/dev/null; wait $renamed"
        if let joining {
            try DockerNames.validateContainer(joining)
            command += " && docker " + ShellQuote.join(["network", "connect", joining, id])
        }
        if let leaving {
            try DockerNames.validateContainer(leaving)
            command += " && docker " + ShellQuote.join(["network", "disconnect", "--force", leaving, id])
        }
        let result: ExecResult
        do { result = try await pool.execute(on: endpoint, command, stdin: nil, timeout: commandTimeout, onOutput: nil) } catch {
            throw .transport(error)
        }
        guard result.succeeded else {
            if result.stderrText.contains("No such container") { return false }
            throw .commandFailed(command: "rename", status: result.exitStatus, stderr: result.stderrText)
        }
        return result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "true"
    }
}

/// The images each machine is known to hold, so that a lease skips `docker image inspect` for
/// an image it saw there before. Forgotten for a machine when a run there fails.
public final class ImageCache: Sendable {
    private let known = Mutex([SSHEndpoint: Set<String>]())

    public init() {}

    public func has(_ image: String, on endpoint: SSHEndpoint) -> Bool { known.withLock { $0[endpoint]?.contains(image) ?? false } }
    public func remember(_ image: String, on endpoint: SSHEndpoint) { known.withLock { _ = $0[endpoint, default: []].insert(image) } }
    public func forget(_ image: String, on endpoint: SSHEndpoint) { known.withLock { _ = $0[endpoint]?.remove(image) } }
}

extension RemoteDocker {
    /// Builds `tag` from `dockerfile` unless the machine has it (asked once, then remembered).
    public func ensureImage(
        _ tag: String,
        dockerfile: [UInt8],
        labels: [String: String],
        cache: ImageCache,
        onLine: (@Sendable (String) -> Void)? = nil
    ) async throws(DockerError) -> Bool {
        if cache.has(tag, on: endpoint) { return false }
        var built = false
        if try await !imageExists(tag) {
            try await build(tag: tag, dockerfile: dockerfile, labels: labels, onLine: onLine)
            built = true
        }
        cache.remember(tag, on: endpoint)
        return built
    }
}
