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

    /// Where a command run in a warm container (`startInWarm`) leaves its exit status.
    public static let statusFile = "/tmp/.resalloc-status"

    /// Starts a container with `spec` attached, in one round trip: its stdout and stderr, apart,
    /// as they come, until it stops, and the command's exit status as the process's. The
    /// container outlives this process (`--sig-proxy=false`: a broken connection ends the docker
    /// client, not the container), and its output stays in the engine's log. The docker
    /// client's own warnings (`WARNING: …`) come first on stderr. Flow-controlled as `followLogs`.
    ///
    /// The process's status 0 means the container exited 0 (docker's own failures are 125 to
    /// 127); the container is left for the caller to remove, and to ask how it ended
    /// (`end(of:)`) when the status is another.
    public func runAttached(_ spec: ContainerSpec) async throws(DockerError) -> RemoteProcess {
        let argv = try Self.runArguments(spec, options: ["--sig-proxy=false"])
        do { return try await pool.start(on: endpoint, "docker " + ShellQuote.join(argv), flowControlled: true) } catch {
            throw .transport(error)
        }
    }

    /// How `container` stands or ended; nil when there is no such container. The exit code is
    /// the command's: the container's own, or for a command run in a warm container the one it
    /// left in `statusFile` (read from the stopped container in the same round trip).
    public func end(of container: String) async throws(DockerError) -> ContainerEnd? {
        try DockerNames.validateContainer(container)
        // Only a warm container (labelled resalloc.pool) has a status file to read.
        let format = "{{.State.Status}}\t{{.State.ExitCode}}\t{{.State.OOMKilled}}\t{{.State.Error}}\t{{index .Config.Labels \"resalloc.pool\"}}"
        let command =
            "state=$(docker " + ShellQuote.join(["inspect", "--format", format, container]) + ") || exit; echo \"$state\"; "
            + "case $state in *\"\t\") ;; *) docker " + ShellQuote.join(["cp", "\(container):\(Self.statusFile)", "-"])
            + " 2>/dev/null | tar -xO 2>/dev/null;; esac; true"
        let result: ExecResult
        do { result = try await pool.execute(on: endpoint, command, timeout: commandTimeout) } catch { throw .transport(error) }
        guard result.succeeded else {
            if result.stderrText.contains("No such") { return nil }
            throw .commandFailed(command: "inspect", status: result.exitStatus, stderr: result.stderrText)
        }
        let lines = result.stdoutText.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let fields = lines[0].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard fields.count >= 4, var code = Int(fields[1]) else { throw .unparsable(command: "inspect", output: result.stdoutText) }
        if lines.count > 1, let status = Int(lines[1].trimmingCharacters(in: .whitespaces)) { code = status }
        return ContainerEnd(status: fields[0], exitCode: code, oomKilled: fields[2] == "true", error: fields[3])
    }

    /// Runs `argv` in the running (warm) container, detached, as if it were the container's own
    /// process: its output goes to the engine's log (the container's PID 1's stdout and stderr),
    /// its exit status to `statusFile`, and then the container stops. With `waitingFor`, it
    /// starts only once that file appears (inputs copied in first).
    public func startInWarm(_ container: String, _ argv: [String], waitingFor goFile: String? = nil) async throws(DockerError) {
        try DockerNames.validateContainer(container)
        for argument in argv { try DockerNames.validateArgument(argument) }
        guard !argv.isEmpty else { throw .invalidArgument("exec needs a command") }
        var script = "\"$@\" >/proc/1/fd/1 2>/proc/1/fd/2; echo $? > \(Self.statusFile); kill 1"
        if let goFile { script = "while [ ! -e \(goFile) ]; do sleep 0.05; done; rm -f \(goFile); " + script }
        let result = try await run(["exec", "--detach", container, "sh", "-c", script, "resalloc-job"] + argv)
        guard result.succeeded else {
            if result.stderrText.contains("No such container") { throw .noSuchContainer(container) }
            throw .commandFailed(command: "exec", status: result.exitStatus, stderr: result.stderrText)
        }
    }
}
