import Metrics
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

    /// How `container` stands or ended; nil when there is no such container.
    public func end(of container: String) async throws(DockerError) -> ContainerEnd? {
        try DockerNames.validateContainer(container)
        let format = "{{.State.Status}}\t{{.State.ExitCode}}\t{{.State.OOMKilled}}\t{{.State.Error}}"
        let result = try await run(["inspect", "--format", format, container])
        guard result.succeeded else {
            if result.stderrText.contains("No such") { return nil }
            throw .commandFailed(command: "inspect", status: result.exitStatus, stderr: result.stderrText)
        }
        let fields = result.stdoutText.trimmingCharacters(in: .newlines).split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard fields.count >= 4, let code = Int(fields[1]) else { throw .unparsable(command: "inspect", output: result.stdoutText) }
        return ContainerEnd(status: fields[0], exitCode: code, oomKilled: fields[2] == "true", error: fields[3...].joined(separator: "\t"))
    }
}

// MARK: - Warm containers that take a command

/// A warm container's main process is `sh` reading its script from a FIFO on the machine
/// (`~/.resalloc-pool/NAME/go`, mounted read-only): it waits there, costing nothing, until the
/// master writes a script into it, which then runs the command as that shell's child (its output
/// in the engine's log, its status the container's), with no `docker exec`. A lease handed a
/// warm container leaves it waiting, as `sleep infinity` would.
extension RemoteDocker {
    /// Where this machine's warm containers' FIFOs live, in shell syntax (`$HOME`): under the
    /// address the master reaches it at, since machines may share a home (test machines do).
    var handoffRoot: String {
        let place = "\(endpoint.host)-\(endpoint.port)".map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }
        return "$HOME/.resalloc-pool/" + String(place)
    }

    /// Where a warm container sees its FIFO's directory.
    static let handoffMount = "/.resalloc"

    /// Where a warm container's FIFO lives on the machine, in shell syntax.
    func handoffDirectory(_ container: String) -> String { "\"\(handoffRoot)/\(container)\"" }

    /// Starts a warm container (detached, `--init`) whose main process waits for its command
    /// (`handOff`); returns its id. `spec.command` is not used.
    public func runWarm(_ spec: ContainerSpec) async throws(DockerError) -> String {
        var argv = try Self.runArguments(spec, options: ["--detach"])
        argv.removeLast(spec.command.count)
        let image = argv.removeLast()
        let directory = handoffDirectory(spec.name)
        let command =
            "d=\(directory) && rm -rf \"$d\" && mkdir -p \"$d\" && mkfifo \"$d/go\" && docker " + ShellQuote.join(argv)
            + " --mount \"type=bind,source=$d,target=\(Self.handoffMount),readonly\" " + ShellQuote.join([image, "sh", Self.handoffMount + "/go"])
        let result: ExecResult
        let started = ContinuousClock.now
        do { result = try await pool.execute(on: endpoint, command, timeout: commandTimeout) } catch { throw .transport(error) }
        Timer(label: "resalloc_remote_command_seconds", dimensions: [("machine", machineName), ("command", "run")])
            .record(duration: ContinuousClock.now - started)
        guard result.succeeded else { throw .commandFailed(command: "run", status: result.exitStatus, stderr: result.stderrText) }
        guard let id = result.stdoutText.split(separator: "\n").last.map(String.init), id.wholeMatch(of: /[0-9a-f]{64}/) != nil else {
            throw .unparsable(command: "run", output: result.stdoutText)
        }
        return id
    }

    /// Hands the warm container `from` (engine id `id`) `argv` as its command, renamed `to`
    /// (after moving it from network `leaving` to `joining`, if given), and returns at once with
    /// the command's output arriving as it runs (`docker logs --follow`, stdout and stderr
    /// apart, flow-controlled), each stream ending with `marker` and the command's status once
    /// it has exited: all in one round trip, with one docker call in the way of the command's
    /// start (none, without networks). After the marker the container waits, to be removed (or
    /// stopped, when kept) by the master: so the engine is not busy with its exit (about 35 ms,
    /// in which it answers nothing about the container, `docker logs` included) while the
    /// output is on its way. The process ends only when the container does; without the
    /// marker (the command's shell was killed), the engine's exit code is the status.
    ///
    /// Status 254: the container did not take its command (it was not waiting any more).
    public func handOff(
        _ from: String,
        id: String,
        as to: String,
        command argv: [String],
        marker: JobEndMarker,
        joining: String? = nil,
        leaving: String? = nil
    ) async throws(DockerError) -> RemoteProcess {
        try DockerNames.validateContainer(from)
        try DockerNames.validateContainer(to)
        guard id.wholeMatch(of: /[0-9a-f]{64}/) != nil else { throw .invalidArgument("'\(id)' is not a container id") }
        for argument in argv { try DockerNames.validateArgument(argument) }
        guard !argv.isEmpty else { throw .invalidArgument("a job needs a command") }
        var moves = ""
        if let joining, let leaving {
            try DockerNames.validateContainer(joining)
            try DockerNames.validateContainer(leaving)
            moves =
                "docker " + ShellQuote.join(["network", "connect", joining, id]) + " >/dev/null && docker "
                + ShellQuote.join(["network", "disconnect", "--force", leaving, id]) + " >/dev/null || exit 254; "
        }
        // The container's shell runs the command as its child, says its status on both streams
        // after it (so no `docker wait` beside the command is needed either), then waits on the
        // FIFO, which nothing opens again, without needing any program in the image.
        let script = ShellQuote.join(argv) + "; s=$?; " + marker.shell + "; read -r s < \(Self.handoffMount)/go; exit $s"
        let command =
            "d=\(handoffDirectory(from)); docker " + ShellQuote.join(["rename", from, to]) + " >/dev/null 2>&1 & " + moves
            + "printf '%s\\n' " + ShellQuote.quote(script)
            + " | timeout 10 sh -c 'cat > \"$1/go\"' sh \"$d\" 2>/dev/null || exit 254; "
            + "docker " + ShellQuote.join(["logs", "--follow", id]) + "; wait; exit 0"
        do { return try await pool.start(on: endpoint, command, flowControlled: true) } catch { throw .transport(error) }
    }

    /// Removes the FIFO directories of warm containers that are gone: those older than two
    /// minutes (a container being started has its directory before it exists) that no container
    /// on the machine mounts. A handed-out container keeps its directory under its new name, as
    /// `docker cp` needs every bind mount's source. Several masters share a machine's directory.
    public func pruneHandoffDirectories() async throws(DockerError) {
        let command = """
            root="\(handoffRoot)"
            [ -d "$root" ] || exit 0
            ids=$(docker ps --all --quiet) || exit 1
            sources=" $( [ -z "$ids" ] || docker inspect --format '{{range .Mounts}}{{.Source}} {{end}}' $ids | tr '\\n' ' ') " || exit 1
            find "$root" -mindepth 1 -maxdepth 1 -type d -mmin +2 | while read -r d; do
                case "$sources" in *" $d "*) ;; *) rm -rf "$d" ;; esac
            done
            """
        let result: ExecResult
        do { result = try await pool.execute(on: endpoint, command, timeout: commandTimeout) } catch { throw .transport(error) }
        guard result.succeeded else { throw .commandFailed(command: "ps", status: result.exitStatus, stderr: result.stderrText) }
    }
}
