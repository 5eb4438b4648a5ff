import SSH

/// How a job's container ended, as `docker inspect` tells it.
public struct ContainerEnd: Sendable, Equatable {
    /// `created`, `running`, `exited`, …
    public var status: String
    public var exitCode: Int
    /// The kernel killed its process for passing its memory limit.
    public var oomKilled: Bool
    /// Why the engine could not start it, if it could not.
    public var error: String
}

extension RemoteDocker {
    /// Starts `docker logs --follow` of `container`: its stdout and stderr from the start, apart,
    /// as they come, until the container stops. Flow-controlled: the engine's log waits on the
    /// machine while a window of it is not yet `consumed`.
    public func followLogs(_ container: String) async throws(DockerError) -> RemoteProcess {
        try DockerNames.validateContainer(container)
        do {
            return try await pool.start(on: endpoint, "docker " + ShellQuote.join(["logs", "--follow", container]), flowControlled: true)
        } catch {
            throw .transport(error)
        }
    }

    /// How `container` stands or ended; nil when there is no such container.
    public func end(of container: String) async throws(DockerError) -> ContainerEnd? {
        try DockerNames.validateContainer(container)
        let result = try await run([
            "inspect", "--format", "{{.State.Status}}\t{{.State.ExitCode}}\t{{.State.OOMKilled}}\t{{.State.Error}}", container,
        ])
        guard result.succeeded else {
            if result.stderrText.contains("No such") { return nil }
            throw .commandFailed(command: "inspect", status: result.exitStatus, stderr: result.stderrText)
        }
        let fields = result.stdoutText.trimmingCharacters(in: .newlines).split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard fields.count >= 4, let code = Int(fields[1]) else { throw .unparsable(command: "inspect", output: result.stdoutText) }
        return ContainerEnd(status: fields[0], exitCode: code, oomKilled: fields[2] == "true", error: fields[3...].joined(separator: "\t"))
    }
}
