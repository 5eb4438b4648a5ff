import SSH
import Synchronization

/// The relay: a one-file image of the master's own static busybox, made on a machine when it
/// first needs it (`docker import`, no registry). Started beside a lease's container and in its
/// namespaces, it reaches what the lease's image may have no tools for: the container's own
/// loopback (port forwards) and its processes (ending what a dropped session left running).
public final class RelayImage: Sendable {
    /// `resalloc/relay:<12 hex of the binary's SHA-256>`: a new busybox makes a new image.
    public let tag: String
    let archive: [UInt8]
    /// Machines known to hold the image; forgotten when a relay fails.
    private let present = ImageCache()
    /// Machines where the busybox did not run inside a lease (another architecture): copies in
    /// are staged there instead of streamed.
    private let unrunnable = ImageCache()

    /// `archive` is a tar holding the static busybox as `/busybox`; `tag` names the image.
    public init(tag: String, archive: [UInt8]) {
        self.tag = tag
        self.archive = archive
    }

    func isPresent(on endpoint: SSHEndpoint) -> Bool { present.has(tag, on: endpoint) }
    func mark(_ endpoint: SSHEndpoint, present isPresent: Bool) {
        if isPresent { present.remember(tag, on: endpoint) } else { present.forget(tag, on: endpoint) }
    }

    func runs(on endpoint: SSHEndpoint) -> Bool { !unrunnable.has(tag, on: endpoint) }
    func markUnrunnable(on endpoint: SSHEndpoint) { unrunnable.remember(tag, on: endpoint) }

    /// Places (machine, container, directory) where the busybox was seen to run: a copy there
    /// needs no `docker exec` to check again (a container's mounts do not change). Forgotten
    /// all at once past 4096.
    private let ranAt = Mutex<Set<String>>([])
    func ran(at place: String) -> Bool { ranAt.withLock { $0.contains(place) } }
    func remember(ranAt place: String) {
        ranAt.withLock { places in
            if places.count >= 4096 { places.removeAll() }
            places.insert(place)
        }
    }
}

extension RemoteDocker {
    /// Makes sure the machine has the relay image: imports it when missing.
    func ensure(_ relay: RelayImage) async throws(DockerError) {
        guard !relay.isPresent(on: endpoint) else { return }
        let found = try await run(["image", "inspect", "--format", "{{.Id}}", relay.tag])
        if !found.succeeded {
            let imported = try await run(["import", "-", relay.tag], stdin: relay.archive, timeout: .seconds(120))
            guard imported.succeeded else { throw .commandFailed(command: "import", status: imported.exitStatus, stderr: imported.stderrText) }
        }
        relay.mark(endpoint, present: true)
    }

    /// A TCP connection to `port` on the container's own loopback, as a process whose input
    /// and output are the connection's bytes (flow-controlled). Busybox's nc says "Connection
    /// refused" on stderr and exits 1 when nothing listens.
    ///
    /// `name`: the relay container's name, so that it can be removed (`remove(_:)`) when its
    /// client has gone although the lease's server keeps the connection open.
    public func forward(_ container: String, port: Int, relay: RelayImage, name: String? = nil) async throws(DockerError) -> RemoteProcess {
        try DockerNames.validateContainer(container)
        guard (1...65535).contains(port) else { throw .invalidArgument("\(port) is not a port: use 1 to 65535") }
        if let name { try DockerNames.validateContainer(name) }
        try await ensure(relay)
        let argv =
            ["run", "--rm", "--interactive", "--log-driver", "none"] + (name.map { ["--name", $0] } ?? []) + [
                "--network", "container:\(container)", "--entrypoint", "/busybox", relay.tag, "nc", "127.0.0.1", String(port),
            ]
        do {
            return try await pool.start(on: endpoint, "docker " + ShellQuote.join(argv), flowControlled: true)
        } catch {
            relay.mark(endpoint, present: false)
            throw .transport(error)
        }
    }

    /// Shell functions for the relay: `find M` prints the pids whose environment holds
    /// `RESALLOC_SESSION=M`; `end M` sends them TERM, then KILL to what is left a second later.
    static let sessionEnder = """
        find() { for d in /proc/[0-9]*; do /busybox tr '\\0' '\\n' < "$d/environ" 2>/dev/null | /busybox grep -qx "RESALLOC_SESSION=$1" && echo "${d#/proc/}"; done; }
        end() {
          pids=$(find "$1"); [ -z "$pids" ] && return 0
          /busybox kill -TERM $pids 2>/dev/null
          for _ in 1 2 3 4 5 6 7 8 9 10; do /busybox usleep 100000; pids=$(find "$1"); [ -z "$pids" ] && return 0; done
          /busybox kill -KILL $pids 2>/dev/null; return 0
        }
        """

    /// Ends every process in `container` whose environment holds `RESALLOC_SESSION=marker`
    /// (TERM, then KILL what is left a second later): `docker exec` leaves a command running when its
    /// client goes away, so the session marks what it starts and this ends it. It starts a relay
    /// container, which takes a second or more; a session guard (below) is quicker.
    public func endSession(_ container: String, marker: String, relay: RelayImage) async throws(DockerError) {
        try DockerNames.validateContainer(container)
        try Self.validateMarker(marker)
        try await ensure(relay)
        let argv = [
            "run", "--rm", "--log-driver", "none", "--network", "none", "--pid", "container:\(container)",
            "--entrypoint", "/busybox", relay.tag, "sh", "-c", Self.sessionEnder + "\nend \"$1\"", "sh", marker,
        ]
        let result = try await run(argv, timeout: .seconds(30))
        guard result.succeeded else { throw .commandFailed(command: "run (relay)", status: result.exitStatus, stderr: result.stderrText) }
    }

    /// A guard over a lease's sessions: a relay in the container's PID namespace that reads lines
    /// on its input. `+M` tracks the session marked M, `-M` forgets it (it ended by itself), `!M`
    /// ends its processes now. When its input ends (the master closed it, or died and its SSH
    /// connection dropped) it ends every session it still tracks, then exits.
    public func startSessionGuard(_ container: String, relay: RelayImage) async throws(DockerError) -> RemoteProcess {
        try DockerNames.validateContainer(container)
        try await ensure(relay)
        let script =
            Self.sessionEnder + """

                tracked=" "
                while read -r line; do
                  marker=${line#?}
                  case "$marker" in ""|*[!A-Za-z0-9-]*) continue ;; esac
                  case "$line" in
                    +*) tracked="$tracked$marker " ;;
                    -*) tracked=$(echo "$tracked" | /busybox sed "s/ $marker / /") ;;
                    !*) tracked=$(echo "$tracked" | /busybox sed "s/ $marker / /"); end "$marker" & ;;
                  esac
                done
                for marker in $tracked; do end "$marker" & done
                wait
                """
        let argv = [
            "run", "--rm", "--interactive", "--log-driver", "none", "--network", "none", "--pid", "container:\(container)",
            "--entrypoint", "/busybox", relay.tag, "sh", "-c", script,
        ]
        do {
            return try await pool.start(on: endpoint, "docker " + ShellQuote.join(argv))
        } catch {
            relay.mark(endpoint, present: false)
            throw .transport(error)
        }
    }

    static func validateMarker(_ marker: String) throws(DockerError) {
        guard marker.wholeMatch(of: /[A-Za-z0-9-]{1,64}/) != nil else { throw .invalidArgument("a session marker is letters, digits and -") }
    }
}
