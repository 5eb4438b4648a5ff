import Foundation
import Metrics
import SSH

/// The Docker engine of one machine, driven through its `docker` command line over SSH.
///
/// Every argument is validated, then shell-quoted; output is parsed from `--format '{{json .}}'`
/// and `inspect` JSON into typed values; failures become `DockerError`s.
public struct RemoteDocker: Sendable {
    public let endpoint: SSHEndpoint
    let pool: SSHConnectionPool
    /// Deadline for short commands (`ps`, `inspect`, `rm`, `run`).
    public var commandTimeout: Duration
    /// Deadline for `build`.
    public var buildTimeout: Duration
    /// How metrics name the machine (`resalloc_remote_command_seconds{machine=…}`).
    public var machineName: String
    /// How long a watched command (`run`, `image inspect`) goes on before the engine is asked
    /// whether it still answers, and how long that question may take: a frozen engine costs
    /// `enginePatience + engineProbeDeadline`, a slow but answering one nothing.
    public var enginePatience: Duration = .seconds(3)
    public var engineProbeDeadline: Duration = .seconds(8)

    public init(endpoint: SSHEndpoint, pool: SSHConnectionPool, commandTimeout: Duration = .seconds(60), buildTimeout: Duration = .seconds(1800)) {
        self.endpoint = endpoint
        self.pool = pool
        self.commandTimeout = commandTimeout
        self.buildTimeout = buildTimeout
        self.machineName = "\(endpoint.host):\(endpoint.port)"
    }

    /// Client and server versions; fails with `engineUnavailable` saying what to fix when the
    /// login has no working engine.
    public func version() async throws(DockerError) -> DockerVersion {
        let argv = ["version", "--format", "{{json .}}"]
        let result = try await run(argv)
        guard result.succeeded else {
            throw .engineUnavailable(reason: Self.diagnose(status: result.exitStatus, stderr: result.stderrText), stderr: result.stderrText)
        }
        let version: DockerVersion = try decode(DockerVersion.self, result.stdout, command: argv[0])
        guard version.server != nil else {
            throw .engineUnavailable(reason: "the Docker engine does not answer", stderr: result.stderrText)
        }
        return version
    }

    /// What a failed `docker version` means for the person setting up the machine.
    static func diagnose(status: Int32, stderr: String) -> String {
        if status == 127 {
            return "docker is not installed for the login (resources/setup.sh installs it)"
        }
        if stderr.contains("permission denied") {
            return "the login may not use the Docker engine (permission denied on its socket): "
                + "add it to the docker group (resources/setup.sh does)"
        }
        if stderr.contains("Cannot connect to the Docker daemon") {
            return "the Docker engine is not running, or DOCKER_HOST points where none is"
        }
        return "docker does not work for the login (docker version exited \(status))"
    }

    /// The engine's CPUs, memory and counts.
    public func info() async throws(DockerError) -> DockerInfo {
        try await json(["info", "--format", "{{json .}}"])
    }

    /// Whether the image `reference` exists on the machine.
    public func imageExists(_ reference: String) async throws(DockerError) -> Bool {
        try DockerNames.validateImage(reference)
        let result = try await runWatched(["image", "inspect", "--format", "{{.Id}}", reference])
        return result.succeeded
    }

    /// Builds `dockerfile` (sent on stdin, so no build context) as `tag`, calling `onLine` with
    /// each line of build output as it arrives. Returns the build's whole log.
    @discardableResult
    public func build(
        tag: String,
        dockerfile: [UInt8],
        labels: [String: String] = [:],
        onLine: (@Sendable (String) -> Void)? = nil
    ) async throws(DockerError) -> String {
        try DockerNames.validateImage(tag)
        for (key, value) in labels { try DockerNames.validateLabel(key: key, value: value) }
        var argv = ["build", "--force-rm", "--tag", tag]
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) { argv += ["--label", "\(key)=\(value)"] }
        argv.append("-")
        let splitter = LineSplitter()
        let result = try await run(argv, stdin: dockerfile, timeout: buildTimeout) { chunk in
            let lines: [String]
            switch chunk {
            case .stdout(let bytes): lines = splitter.feed(bytes, from: .stdout)
            case .stderr(let bytes): lines = splitter.feed(bytes, from: .stderr)
            }
            for line in lines { onLine?(line) }
        }
        for line in splitter.finish() { onLine?(line) }
        guard result.succeeded else { throw .buildFailed(tag: tag, logTail: splitter.tail) }
        return result.stdoutText + result.stderrText
    }

    /// Starts a detached container with `--init` and returns its id.
    public func run(_ spec: ContainerSpec) async throws(DockerError) -> String {
        let result = try await runWatched(try Self.runArguments(spec, options: ["--detach"]))
        guard result.succeeded else { throw failure("run", result) }
        guard let id = result.stdoutText.split(separator: "\n").last.map(String.init), id.wholeMatch(of: /[0-9a-f]{64}/) != nil else {
            throw .unparsable(command: "run", output: result.stdoutText)
        }
        return id
    }

    /// `docker run`'s arguments for `spec`, validated, with `options` first.
    static func runArguments(_ spec: ContainerSpec, options: [String]) throws(DockerError) -> [String] {
        try DockerNames.validateContainer(spec.name)
        try DockerNames.validateImage(spec.image)
        for (key, value) in spec.labels { try DockerNames.validateLabel(key: key, value: value) }
        for argument in spec.command { try DockerNames.validateArgument(argument) }
        var argv = ["run"] + options + ["--init", "--name", spec.name] + spec.limits.runOptions
        if let network = spec.network {
            try DockerNames.validateContainer(network)
            argv += ["--network", network]
        }
        for (key, value) in spec.labels.sorted(by: { $0.key < $1.key }) { argv += ["--label", "\(key)=\(value)"] }
        argv.append(spec.image)
        argv += spec.command
        return argv
    }

    /// Removes a container, running or not. Returns false when it did not exist.
    ///
    /// An engine under load fails an `rm` now and then ("removal … is already in progress", a
    /// busy mount) for a container that is gone a moment later: a failed `rm` is tried twice more,
    /// 0.5 s and 1 s apart, and a container gone meanwhile is success.
    @discardableResult
    public func remove(_ container: String) async throws(DockerError) -> Bool {
        try DockerNames.validateContainer(container)
        var pause: Duration = .milliseconds(500)
        for attempt in 1...3 {
            let result = try await run(["rm", "--force", container])
            // `rm --force` of a missing container exits 0 on some engines and 1 on others; both say so.
            if result.stderrText.contains("No such container") { return attempt > 1 }
            if result.succeeded { return true }
            guard attempt < 3, (try? await Task.sleep(for: pause)) != nil else { throw failure("rm", result) }
            pause *= 2
        }
        return true
    }

    /// Removes many containers, running or not, with one `docker rm --force` (the docker CLI
    /// removes them in parallel). Returns the names that are gone: removed now, or not there.
    /// Throws only when none could be removed and docker said why.
    public func remove(_ containers: [String]) async throws(DockerError) -> Set<String> {
        guard !containers.isEmpty else { return [] }
        for container in containers { try DockerNames.validateContainer(container) }
        let result = try await run(["rm", "--force"] + containers)
        let asked = Set(containers)
        var gone = Set(result.stdoutText.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }).intersection(asked)
        // "Error: No such container: NAME" (20.10) or "Error response from daemon: No such container: NAME".
        for line in result.stderrText.split(whereSeparator: \.isNewline) where line.contains("No such container") {
            if let name = line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces), asked.contains(name) { gone.insert(name) }
        }
        if gone.isEmpty && !result.succeeded { throw failure("rm", result) }
        return gone
    }

    /// Containers (running or not) carrying every label in `labels` (`key=value`, or `key` alone
    /// when the value is nil).
    public func list(labels: [String: String?]) async throws(DockerError) -> [ContainerSummary] {
        var argv = ["ps", "--all", "--no-trunc", "--format", "{{json .}}"]
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            try DockerNames.validateLabel(key: key, value: value ?? "")
            argv += ["--filter", value.map { "label=\(key)=\($0)" } ?? "label=\(key)"]
        }
        let result = try await run(argv)
        guard result.succeeded else { throw failure("ps", result) }
        return try result.stdout.split(separator: UInt8(ascii: "\n")).map { line throws(DockerError) in
            try decode(ContainerSummary.self, Array(line), command: "ps")
        }
    }

    /// Containers (running or not) labelled `key=value`, with their name, state and the value of
    /// the label `show`: one `docker ps` for a whole machine, whatever its size.
    public func containers(labelled key: String, _ value: String, showing show: String) async throws(DockerError) -> [LabelledContainer] {
        try DockerNames.validateLabel(key: key, value: value)
        try DockerNames.validateLabel(key: show, value: "")
        let format = "{{.Names}}\t{{.State}}\t{{.Label \"\(show)\"}}"
        let result = try await run(["ps", "--all", "--no-trunc", "--filter", "label=\(key)=\(value)", "--format", format])
        guard result.succeeded else { throw failure("ps", result) }
        return result.stdoutText.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 3 else { return nil }
            return LabelledContainer(name: fields[0], state: fields[1], label: fields[2])
        }
    }

    /// Tags (`repository:tag`) of the images on the machine labelled `key=value`.
    public func images(labelled key: String, _ value: String) async throws(DockerError) -> [String] {
        try DockerNames.validateLabel(key: key, value: value)
        let result = try await run(["images", "--filter", "label=\(key)=\(value)", "--format", "{{.Repository}}:{{.Tag}}"])
        guard result.succeeded else { throw failure("images", result) }
        return result.stdoutText.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.hasSuffix(":<none>") }
    }

    /// Removes images by tag, without force: one that a container still uses stays. Returns the
    /// tags that are gone.
    public func removeImages(_ tags: [String]) async throws(DockerError) -> Set<String> {
        guard !tags.isEmpty else { return [] }
        for tag in tags { try DockerNames.validateImage(tag) }
        let result = try await run(["image", "rm"] + tags)
        let asked = Set(tags)
        return Set(
            result.stdoutText.split(whereSeparator: \.isNewline).compactMap { line in
                line.hasPrefix("Untagged: ") ? String(line.dropFirst("Untagged: ".count)) : nil
            }
        ).intersection(asked)
    }

    /// Details of containers by name or id; unknown ones are left out.
    public func inspect(_ containers: [String]) async throws(DockerError) -> [ContainerDetails] {
        guard !containers.isEmpty else { return [] }
        for container in containers { try DockerNames.validateContainer(container) }
        let result = try await run(["container", "inspect"] + containers)
        // Exit status 1 with partial output when some are missing: keep what was found.
        let text = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        if !result.succeeded && (text.isEmpty || text == "[]") {
            if result.stderrText.contains("No such") { return [] }
            throw failure("inspect", result)
        }
        return try decode([ContainerDetails].self, result.stdout, command: "inspect")
    }

    /// Runs `argv` inside a running container without a terminal; `stdin` is piped in.
    public func exec(_ container: String, _ argv: [String], stdin: [UInt8]? = nil, timeout: Duration? = nil) async throws(DockerError) -> ExecResult {
        try DockerNames.validateContainer(container)
        for argument in argv { try DockerNames.validateArgument(argument) }
        guard !argv.isEmpty else { throw .invalidArgument("exec needs a command") }
        let result = try await run(["exec", "--interactive", container] + argv, stdin: stdin ?? [], timeout: timeout ?? commandTimeout)
        if result.exitStatus == 1 || result.exitStatus >= 125, result.stderrText.contains("No such container") {
            throw .noSuchContainer(container)
        }
        return result
    }

    /// Opens an interactive shell in a running container on a PTY: bash when the image has it,
    /// else sh.
    ///
    /// `docker exec -it` (20.10, Debian's) sets the terminal's size only a moment after the
    /// shell has started, so a first command could see 0 rows and columns; the wrapper sets
    /// the size first unless docker already has.
    public func openShell(
        _ container: String,
        term: String,
        size: TerminalSize,
        environment: [String: String] = [:],
        flowControlled: Bool = false
    ) async throws(DockerError)
        -> RemoteProcess
    {
        try await start(
            container,
            ["sh", "-c", Self.shellLauncher, "sh", String(size.rows), String(size.columns)],
            pty: (term, size),
            environment: environment,
            flowControlled: flowControlled
        )
    }

    static let shellLauncher = """
        case "$(stty size 2>/dev/null)" in ""|"0 0") stty rows "$1" cols "$2" 2>/dev/null;; esac
        if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi
        """

    /// Starts `argv` in a running container and returns it while it runs: with `pty`, on a
    /// terminal (`docker exec -it`); without, stdin piped (`docker exec -i`) and stderr apart.
    /// `flowControlled`: its output waits on the machine while a window of it is not yet
    /// `consumed` (`RemoteProcess.consumed`), for a reader slower than the process.
    public func start(
        _ container: String,
        _ argv: [String],
        pty: (term: String, size: TerminalSize)? = nil,
        environment: [String: String] = [:],
        flowControlled: Bool = false
    ) async throws(DockerError) -> RemoteProcess {
        try DockerNames.validateContainer(container)
        for argument in argv { try DockerNames.validateArgument(argument) }
        guard !argv.isEmpty else { throw .invalidArgument("exec needs a command") }
        var options = ["exec", "--interactive"]
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
            try DockerNames.validateEnvironment(name: name, value: value)
            options += ["--env", "\(name)=\(value)"]
        }
        if let pty {
            try DockerNames.validateEnvironment(name: "TERM", value: pty.term)
            options += ["--tty", "--env", "TERM=\(pty.term)"]
        }
        do {
            return try await pool.start(
                on: endpoint,
                "docker " + ShellQuote.join(options + [container] + argv),
                pty: pty,
                flowControlled: flowControlled
            )
        } catch {
            throw .transport(error)
        }
    }

    // MARK: - Plumbing

    /// Runs `docker argv…` on the machine; a non-zero exit is returned, not thrown.
    public func run(
        _ argv: [String],
        stdin: [UInt8]? = nil,
        timeout: Duration? = nil,
        onOutput: (@Sendable (OutputChunk) -> Void)? = nil
    ) async throws(DockerError) -> ExecResult {
        let command = "docker " + ShellQuote.join(argv)
        let started = ContinuousClock.now
        defer {
            Timer(label: "resalloc_remote_command_seconds", dimensions: [("machine", machineName), ("command", argv.first ?? "")])
                .record(duration: ContinuousClock.now - started)
        }
        do {
            return try await pool.execute(on: endpoint, command, stdin: stdin, timeout: timeout ?? commandTimeout, onOutput: onOutput)
        } catch {
            throw .transport(error)
        }
    }

    /// `run(argv)`, watched: once it has gone on for `enginePatience`, and again each
    /// `enginePatience` after, `docker version` asks the engine whether it answers. One that gets
    /// no answer within `engineProbeDeadline` abandons the command (its channel is closed) and
    /// throws `.engineNotAnswering`. A loaded engine answers that cheap question, so only a stuck
    /// one is given up on, in seconds instead of the command's whole deadline.
    func runWatched(_ argv: [String], stdin: [UInt8]? = nil) async throws(DockerError) -> ExecResult {
        let started = ContinuousClock.now
        let outcome = await withTaskGroup(of: Result<ExecResult, DockerError>?.self) { group in
            group.addTask {
                do throws(DockerError) { return .success(try await self.run(argv, stdin: stdin)) } catch { return .failure(error) }
            }
            group.addTask {
                while (try? await Task.sleep(for: enginePatience)) != nil {
                    if let silent = await silence(command: argv.first ?? "", since: started) { return .failure(silent) }
                }
                return nil  // cancelled: the command ended first
            }
            var first: Result<ExecResult, DockerError>?
            while first == nil, let next = await group.next() { first = next }
            group.cancelAll()
            return first!
        }
        return try outcome.get()
    }

    /// `.engineNotAnswering` when the machine ran `docker version` and the engine gave no answer
    /// within `engineProbeDeadline`; nil otherwise. The machine times the question itself
    /// (coreutils `timeout`), so what SSH adds on a loaded master or machine, to start it or to
    /// bring its answer back, is never taken for the engine's silence; and the question ends on
    /// the machine at its deadline, so it never keeps one of sshd's sessions (MaxSessions) while
    /// the engine is frozen. A question that did not come back proves nothing: the watched command
    /// keeps its own deadline.
    private func silence(command: String, since started: ContinuousClock.Instant) async -> DockerError? {
        let seconds = max(1, engineProbeDeadline.components.seconds)
        let probe = "timeout -k 2 \(seconds) docker version --format '{{.Server.Version}}'"
        guard let result = try? await pool.execute(on: endpoint, probe, timeout: engineProbeDeadline + Self.probeTransport) else { return nil }
        // `timeout` says 124 when its TERM ended the question, 137 when it took a KILL.
        return Self.timedOutStatuses.contains(result.exitStatus) ? .engineNotAnswering(command: command, waited: .now - started) : nil
    }

    /// What the probe's round trip may add to its deadline before it is given up as unanswered.
    static let probeTransport: Duration = .seconds(20)
    static let timedOutStatuses: Set<Int32> = [124, 137]

    private func json<T: Decodable>(_ argv: [String]) async throws(DockerError) -> T {
        let result = try await run(argv)
        guard result.succeeded else { throw failure(argv[0], result) }
        return try decode(T.self, result.stdout, command: argv[0])
    }

    private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], command: String) throws(DockerError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw .unparsable(command: command, output: String(decoding: bytes.prefix(2000), as: UTF8.self))
        }
    }

    private func failure(_ command: String, _ result: ExecResult) -> DockerError {
        .commandFailed(command: command, status: result.exitStatus, stderr: result.stderrText)
    }
}
