import Foundation
import SSH
import Synchronization

/// The real local test machines of `scripts/testbed`, for tests and benchmarks: sshd on
/// 127.0.0.1x with its own dockerd each. Keys are generated per process run, never committed.
///
/// Machines m1 and m2 are shared by tests that leave them as they found them; m3 to m6 are
/// for the tests that stop or re-key sshd, one test each, so no two tests disturb each other.
public final class Testbed: Sendable {
    public struct Machine: Sendable {
        public let name: String
        public let login: String
        public let host: String
        public let port: Int
        /// Where its state lives (sshd.log, docker.sock).
        public let directory: String
    }

    public static let machineCount = 12
    public let machines: [Machine]
    /// Authorized keys by type: "ed25519", "ecdsa", "rsa"; "stranger" is an Ed25519 key never
    /// authorized; "reuse-a" and "reuse-b" are authorized keys that only the connection-reuse tests
    /// use, so their logins can be counted while other tests run.
    public let keys: [String: String]
    public let repositoryRoot: String
    private let stateRoot: String

    /// Started once per process; later calls share it.
    public static func shared() async throws -> Testbed { try await SharedTestbed.instance.value }

    /// The URL of the throwaway PostgreSQL server of `scripts/testbed postgres-start` (started
    /// once per test run if it is not running; `testbed stop` stops it).
    public static func postgresURL() async throws -> String { try await SharedTestbed.postgres.value }

    fileprivate init() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        repositoryRoot = root
        let stateRoot = ProcessInfo.processInfo.environment["TESTBED_DIR"] ?? "/var/tmp/resalloc-testbed"
        self.stateRoot = stateRoot
        let keyDirectory = "\(stateRoot)/test-keys"
        try FileManager.default.createDirectory(atPath: keyDirectory, withIntermediateDirectories: true)
        var keys: [String: String] = [:]
        for (name, arguments) in [
            ("ed25519", ["-t", "ed25519"]), ("ecdsa", ["-t", "ecdsa", "-b", "256"]), ("rsa", ["-t", "rsa", "-b", "3072"]),
            ("stranger", ["-t", "ed25519"]),
            ("reuse-a", ["-t", "ed25519"]), ("reuse-b", ["-t", "ecdsa"]),
        ] {
            let path = "\(keyDirectory)/\(name)"
            if !FileManager.default.fileExists(atPath: path) {
                try Self.run(["ssh-keygen", "-q", "-N", "", "-C", "resalloc-test-\(name)", "-f", path] + arguments)
            }
            keys[name] = path
        }
        self.keys = keys
        // m10 is a host of its own (network namespace, iptables, resalloc-firewall): the tenancy suite's.
        var arguments = ["\(root)/scripts/testbed", "start", String(Self.machineCount), "--real", "m10"]
        for name in ["ed25519", "ecdsa", "reuse-a", "reuse-b"] { arguments += ["--key", keys[name]! + ".pub"] }
        let listing = try Self.run(arguments)
        // setup.sh rightly refuses RSA keys; the RSA test needs one in authorized_keys to show
        // that it is sshd's SHA-1 refusal, not a missing key, that stops it.
        try Self.run([
            "sh", "-c", "f=$(getent passwd $1 | cut -d: -f6)/.ssh/authorized_keys; grep -qxF \"$(cat $2)\" $f || cat $2 >>$f", "sh",
            ProcessInfo.processInfo.environment["TESTBED_LOGIN"] ?? "resalloc", keys["rsa"]! + ".pub",
        ])
        machines = try listing.split(separator: "\n").map { line in
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count == 3, let address = SSHEndpoint.parseAddress(fields[2]) else {
                throw TestbedError("unexpected testbed line: \(line)")
            }
            return Machine(name: fields[0], login: fields[1], host: address.host, port: address.port, directory: "\(stateRoot)/\(fields[0])")
        }
    }

    public func machine(_ name: String) -> Machine { machines.first { $0.name == name }! }

    /// An endpoint for `machine` with the key of `keyType`.
    public func endpoint(_ machine: String = "m1", key keyType: String = "ed25519", expecting hostKey: HostKey? = nil) -> SSHEndpoint {
        let machine = self.machine(machine)
        return SSHEndpoint(host: machine.host, port: machine.port, user: machine.login, privateKeyPath: keys[keyType]!, expectedHostKey: hostKey)
    }

    /// The host's own docker CLI against the machine's engine, over its unix socket: the
    /// independent check of what the master did.
    @discardableResult
    public func docker(_ machine: String, _ arguments: [String]) async throws -> String {
        try await Self.run(["docker", "-H", "unix://\(self.machine(machine).directory)/docker.sock"] + arguments)
    }

    /// The command lines of the processes running in `container` on `machine`, a line each, as a
    /// closure that reads them from this host's `/proc` (every process in the container's PID namespace): a
    /// look costs no docker call, so a wait for a process to end times resalloc, not a loaded
    /// engine's `docker exec`. The namespace is read once, here.
    public func processes(in container: String, on machine: String) async throws -> @Sendable () -> String {
        let pid = try await docker(machine, ["inspect", "--format", "{{.State.Pid}}", container]).trimmingCharacters(in: .whitespacesAndNewlines)
        let namespace = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/pid")
        return {
            let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { $0.allSatisfy(\.isNumber) } ?? []
            return pids.compactMap { pid in
                guard (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/pid")) == namespace,
                    let line = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !line.isEmpty
                else { return nil }
                return String(decoding: line.dropLast(), as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
            }.joined(separator: "\n")
        }
    }

    /// Removes containers from a machine, on a thread of its own, without waiting: for `defer`
    /// blocks, which cannot await. Waiting there would hold a thread of Swift's executor for as
    /// long as the engine takes to kill them, seconds under load, and stall every other test's
    /// tasks meanwhile (see ``onOwnThread(_:)``). Failures are ignored; it is tidying up.
    public func removeContainers(_ machine: String, _ names: [String]) {
        guard !names.isEmpty else { return }
        let arguments = ["docker", "-H", "unix://\(self.machine(machine).directory)/docker.sock", "rm", "-f"] + names
        Thread { _ = try? Self.run(arguments) as String }.start()
    }

    /// Removes every container that the master `masterID` labelled (leases and warm ones) from
    /// every machine: a test's master goes with the test, so its containers do too, and a run
    /// leaves none running. Failures are ignored (a machine a test stopped); it is tidying up.
    /// And its networks (owner and pool networks of a real machine).
    public func removeContainers(ofMaster masterID: String) async {
        let script = """
            for socket in "$@"; do
                ids=$(docker -H "unix://$socket" ps -aq --filter "label=resalloc.master=\(masterID)" 2>/dev/null)
                [ -z "$ids" ] || docker -H "unix://$socket" rm -f $ids >/dev/null 2>&1
                networks=$(docker -H "unix://$socket" network ls -q --filter "label=resalloc.master=\(masterID)" 2>/dev/null)
                [ -z "$networks" ] || docker -H "unix://$socket" network rm $networks >/dev/null 2>&1
            done
            true
            """
        _ = try? await Self.run(["sh", "-c", script, "sh"] + machines.map { "\($0.directory)/docker.sock" })
    }

    /// Starts the machine's sshd again if it is stopped, waiting on this thread: for `defer`
    /// blocks, so a test that stops it always leaves it running.
    public func restartSSHD(_ machine: String) {
        _ = try? Self.run(["\(repositoryRoot)/scripts/testbed", "sshd-start", machine]) as String
    }

    /// A second sshd for `machine` on a port of its own, its config changed by `edit`: a machine set
    /// up differently (fewer sessions, no docker on PATH, another DOCKER_HOST) without touching the
    /// shared one. The caller stops it (`defer { variant.stop() }`).
    public func variantSSHD(of machine: String, edit: (String) -> String) async throws -> VariantSSHD {
        let machine = self.machine(machine)
        let directory = try makeTemporaryDirectory("resalloc-sshd")
        let port = freeLoopbackPort()
        let config = try String(contentsOfFile: "\(machine.directory)/sshd_config", encoding: .utf8)
            .replacingOccurrences(of: "ListenAddress \(machine.host):\(machine.port)", with: "ListenAddress \(machine.host):\(port)")
            .replacingOccurrences(of: "PidFile \(machine.directory)/sshd.pid", with: "PidFile \(directory)/sshd.pid")
        try edit(config).write(toFile: "\(directory)/sshd_config", atomically: true, encoding: .utf8)
        let variant = VariantSSHD(
            endpoint: SSHEndpoint(host: machine.host, port: port, user: machine.login, privateKeyPath: keys["ed25519"]!),
            directory: directory
        )
        do {
            try await Self.run(["/usr/sbin/sshd", "-f", "\(directory)/sshd_config", "-E", "\(directory)/sshd.log"])
            // sshd detaches before it listens, and writes its pid file once its socket is bound.
            try await waitUntil(seconds: 30, "the variant sshd's pid file (its log: \(directory)/sshd.log)") {
                FileManager.default.fileExists(atPath: "\(directory)/sshd.pid")
            }
        } catch {
            variant.stop()
            throw error
        }
        return variant
    }

    /// Runs a testbed command (`sshd-stop m3`, `rekey m4`, …).
    public func control(_ arguments: String...) async throws {
        try await Self.run(["\(repositoryRoot)/scripts/testbed"] + arguments)
    }

    /// How many lines of the machine's sshd log contain `needle`, and `other` too if given. Counted
    /// on bytes with memchr and memcmp: a busy machine's log reaches megabytes in a run, and
    /// splitting it into Strings took a debug build seconds of an executor thread per look, which
    /// stalled the tests around it.
    public func sshdLogLines(_ machine: String, containing needle: String, and other: String? = nil) -> Int {
        guard let log = FileManager.default.contents(atPath: "\(self.machine(machine).directory)/sshd.log") else { return 0 }
        let needle = Array(needle.utf8)
        let other = other.map { Array($0.utf8) }
        return log.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Int in
            guard let base = bytes.baseAddress, !needle.isEmpty else { return 0 }
            var count = 0
            var from = 0
            while let at = Self.find(needle, in: base, from: from, to: bytes.count) {
                var start = at
                while start > 0 && bytes[start - 1] != 0x0A { start -= 1 }
                let end = Self.find([0x0A], in: base, from: at, to: bytes.count) ?? bytes.count
                if other.map({ Self.find($0, in: base, from: start, to: end) != nil }) ?? true { count += 1 }
                from = end + 1
            }
            return count
        }
    }

    /// Where `needle` first starts in `base[from..<to]`, if it does.
    private static func find(_ needle: [UInt8], in base: UnsafeRawPointer, from: Int, to: Int) -> Int? {
        var from = from
        while from + needle.count <= to {
            guard let first = memchr(base + from, Int32(needle[0]), to - from - needle.count + 1) else { return nil }
            let at = base.distance(to: UnsafeRawPointer(first))
            if memcmp(base + at, needle, needle.count) == 0 { return at }
            from = at + 1
        }
        return nil
    }

    /// How many logins with the key `keyType` the machine's sshd has accepted so far.
    public func acceptedLogins(_ machine: String, key keyType: String) async throws -> Int {
        sshdLogLines(machine, containing: try await keyFingerprint(keyType), and: "Accepted publickey")
    }

    /// The login count once it has reached `expected` (sshd writes its log a moment after the
    /// login), or whatever it is after two seconds; compare the result with `expected`.
    public func acceptedLogins(_ machine: String, key keyType: String, reaching expected: Int) async throws -> Int {
        let fingerprint = try await keyFingerprint(keyType)
        var count = 0
        for _ in 0...40 {
            count = sshdLogLines(machine, containing: fingerprint, and: "Accepted publickey")
            if count >= expected { return count }
            try await Task.sleep(for: .milliseconds(50))
        }
        return count
    }

    /// SHA-256 fingerprint of the test key `keyType` as sshd logs it.
    private func keyFingerprint(_ keyType: String) async throws -> String {
        let line = try await Self.run(["ssh-keygen", "-l", "-E", "sha256", "-f", keys[keyType]! + ".pub"])
        return String(line.split(separator: " ")[1])
    }

    /// SHA-256 fingerprint of the machine's host key of `type` (`ed25519`, the one the master
    /// pins, or `ecdsa`) as `ssh-keygen -l` prints it.
    public func hostKeyFingerprint(_ machine: String, type: String = "ed25519") async throws -> String {
        let line = try await Self.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "\(self.machine(machine).directory)/ssh_host_\(type)_key.pub"])
        return String(line.split(separator: " ")[1])
    }

    /// Runs a program; throws with its stderr unless it exits 0 within `timeout`; returns its
    /// stdout.
    @discardableResult
    public static func run(_ arguments: [String], input: Data? = nil, timeout: Duration = .seconds(120)) throws -> String {
        let outcome = try Subprocess.runBlocking(arguments, input: input ?? Data(), timeout: timeout)
        let command = arguments.joined(separator: " ")
        if outcome.timedOut { throw TestbedError("\(command) did not finish within \(timeout) and was killed: \(outcome.errors)") }
        guard outcome.status == 0 else { throw TestbedError("\(command) exited \(outcome.status): \(outcome.errors)") }
        return outcome.output
    }

    /// ``run(_:input:timeout:)`` on a thread of its own (``onOwnThread(_:)``). Tests call this
    /// one: a blocked thread of Swift's executor stalls the in-process master too.
    @discardableResult
    public static func run(_ arguments: [String], input: Data? = nil, timeout: Duration = .seconds(120)) async throws -> String {
        try await onOwnThread { try run(arguments, input: input, timeout: timeout) as String }
    }
}

/// An sshd started by ``Testbed/variantSSHD(of:edit:)``.
public struct VariantSSHD: Sendable {
    /// Where it listens, with the machine's login and the tests' Ed25519 key.
    public let endpoint: SSHEndpoint
    let directory: String

    /// `IP:PORT`, as `resalloc machine create` takes it.
    public var address: String { "\(endpoint.host):\(endpoint.port)" }

    /// What it logged so far.
    public var log: String { (try? String(contentsOfFile: "\(directory)/sshd.log", encoding: .utf8)) ?? "" }

    /// Ends the connections it serves (its children, by pid) but keeps listening: a machine
    /// whose open connections broke.
    public func dropConnections() {
        for child in Self.children(of: listenerPID) { kill(child, SIGTERM) }
    }

    /// Stops (SIGSTOP) the sshd processes serving its connections, not the commands they run:
    /// a machine that stops reading from the network, so what is sent to it piles up in the
    /// sender's socket. `thawConnections` resumes them.
    public func freezeConnections() { signalConnections(SIGSTOP) }
    public func thawConnections() { signalConnections(SIGCONT) }

    private func signalConnections(_ signal: Int32) {
        for child in Self.children(of: listenerPID) {
            // Each connection: a privileged child of the listener and its unprivileged one.
            for grandchild in Self.children(of: child) { kill(grandchild, signal) }
            kill(child, signal)
        }
    }

    private var listenerPID: pid_t {
        let pidText = try? String(contentsOfFile: "\(directory)/sshd.pid", encoding: .utf8)
        return pidText.flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
    }

    private static func children(of pid: pid_t) -> [pid_t] {
        guard pid > 0 else { return [] }
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The bytes the kernel holds unsent on this host's connections to it (the Send-Q that `ss`
    /// shows, summed).
    public func bytesQueuedToIt() async throws -> Int {
        let listing = try await Testbed.run(["ss", "-tnH", "state", "established", "dst", address])
        // Without a State column: Recv-Q, Send-Q, local address, peer address.
        let sendQueues = listing.split(separator: "\n").compactMap { line in Int(line.split(separator: " ").dropFirst().first ?? "") }
        return sendQueues.reduce(0, +)
    }

    /// Stops it by its pid, waiting up to 2 s on this thread (for `defer`), and removes its files.
    public func stop() {
        let pidText = try? String(contentsOfFile: "\(directory)/sshd.pid", encoding: .utf8)
        if let pid = pidText.flatMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), pid > 0 {
            kill(pid, SIGTERM)
            for _ in 0..<100 where kill(pid, 0) == 0 { usleep(20_000) }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// `count` random bytes from the kernel: a byte at a time through a generator took 14 s for 20 MB
/// in a debug build.
public func randomBytes(_ count: Int) throws -> Data {
    guard let random = FileHandle(forReadingAtPath: "/dev/urandom") else { throw TestbedError("cannot open /dev/urandom") }
    defer { try? random.close() }
    let bytes = try random.read(upToCount: count) ?? Data()
    guard bytes.count == count else { throw TestbedError("/dev/urandom gave \(bytes.count) bytes, not \(count)") }
    return bytes
}

/// A new, empty directory under the system's temporary directory, named `prefix-UUID`; the
/// caller removes it.
public func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    return directory
}

public struct TestbedError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

private enum SharedTestbed {
    static let instance = Task { try Testbed() }
    static let postgres = Task {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let url: String = try Testbed.run(["\(root)/scripts/testbed", "postgres-start"])
        return url.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A TCP port on 127.0.0.1 that nothing uses now, for a server the test starts next: drawn at
/// random below the kernel's ephemeral range (32768 and up), never the same twice in one run.
/// The kernel's own pick (a bind to port 0) came from that range, and between its release and the
/// server's bind, another test's server binding port 0 could be given the same port (CI saw a
/// master's gateway fail with "Address already in use").
public func freeLoopbackPort() -> Int {
    portsHandedOut.withLock { used in
        while true {
            let port = Int.random(in: 20000..<32000)
            if used.insert(port).inserted, canBindLoopback(port) { return port }
        }
    }
}

private let portsHandedOut = Mutex(Set<Int>())

private func canBindLoopback(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    let length = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } } == 0
}

/// A TCP connection to 127.0.0.1:`port` that sends nothing: what a browser's preconnect, an HTTP
/// client's spare pooled connection, or a scanner leaves open on a server.
public final class SilentConnection: Sendable {
    private let fd: Int32

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw TestbedError("cannot connect to 127.0.0.1:\(port)")
        }
    }

    deinit { close(fd) }

    /// Reads whatever the server sends, answering nothing; true when the server closed the
    /// connection within `seconds`. Blocks its thread: call it through `onOwnThread`.
    public func closedByPeer(within seconds: Int) throws -> Bool {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n == 0 { return true }
            if n < 0 { return false }
        }
    }
}
