import Docker
import Foundation
import NIOCore
import ResallocAPI
import ResallocClient
import SSH
import Testbed

// `resalloc ssh` beside OpenSSH straight to the machine (`ssh -t … docker exec -it`), on the same
// container, each a real process on a pseudo-terminal of this process's: keystroke round trip
// and the throughput of `cat` of ~50 MB. The keystrokes of all the terminals alternate one by
// one, so that the host's drifting load falls on each alike. Two in-process variants show where
// the time goes: the client library's WebSocket (no CLI process) and the master's libssh2
// channel alone. Every wait has a deadline; a stuck session fails the benchmark.

/// A terminal session to measure: bytes in, a `Screen` out.
struct Terminal {
    let label: String
    let screen: Screen
    let write: @Sendable ([UInt8]) -> Void
    let finish: () async throws -> Void
}

struct ShellNumbers {
    let keystrokes: Sample
    let megabytesPerSecond: Double
    let bytes: Int
}

func shellBenchmark(testbed: Testbed, keystrokes: Int = 200) async throws {
    var bridgeRecorded: ShellNumbers?
    try await withBenchMaster(testbed) { client, server, _ in
        let lease = try await client.createLease("busybox", name: "bench-shell", ttl: nil)
        let container = try require(lease.value.container, "the lease's container")
        let machine = testbed.machine("m1")
        try await makeBigFile(testbed, container)
        let directory = try makeTemporaryDirectory("resalloc-bench-shell")
        defer { try? FileManager.default.removeItem(atPath: directory) }

        print("\nresalloc ssh benchmark: machine m1, keystroke round trip (\(keystrokes) keystrokes each, alternating) and cat of ~50 MB")
        print("resalloc ssh: the resalloc CLI on a pseudo-terminal → WebSocket → master (this process) → SSH PTY channel → docker exec -it")
        print("client library: the same, with resalloc's client library in this process instead of the CLI")
        print("libssh2 channel only: the master's SSH PTY channel (RemoteDocker.openShell) in this process, no WebSocket")
        print("ssh -t: OpenSSH on a pseudo-terminal → sshd → docker exec -it\n")

        let ssh = [
            "ssh", "-t", "-q", "-i", testbed.keys["ed25519"]!, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-p", String(machine.port), "\(machine.login)@\(machine.host)", "docker exec -it -e TERM=xterm \(container) sh",
        ]
        let terminals = [
            try cliTerminal(server: server, token: client.token, lease: "bench-shell", home: directory),
            try bridgeTerminal(client: client, lease: "bench-shell"),
            try await channelTerminal(testbed, container: container),
            try programTerminal("ssh -t", ssh),
        ]
        let numbers = try await measureShells(terminals, keystrokes: keystrokes)
        let (cli, bridge, direct) = (numbers[0], numbers[1], numbers[3])

        printTable(numbers.map(\.keystrokes))
        for (terminal, result) in zip(terminals, numbers) {
            print(
                "\(pad("cat /tmp/big, \(terminal.label)", 44)) \(String(format: "%8.1f", result.megabytesPerSecond)) MB/s (\(result.bytes) bytes on the screen)"
            )
        }
        print("")
        let latency = cli.keystrokes.median.milliseconds / direct.keystrokes.median.milliseconds
        verdict("keystroke round trip, resalloc ssh / ssh -t (median)", ratio: latency, target: "<= 1.5 ", met: latency <= 1.5)
        let p99 = cli.keystrokes.p99.milliseconds / direct.keystrokes.p99.milliseconds
        print("\(pad("keystroke round trip, resalloc ssh / ssh -t (p99)", 52)) \(String(format: "%7.2f", p99))")
        let library = bridge.keystrokes.median.milliseconds / direct.keystrokes.median.milliseconds
        print("\(pad("keystroke round trip, client library / ssh -t", 52)) \(String(format: "%7.2f", library))")
        let throughput = cli.megabytesPerSecond / direct.megabytesPerSecond
        verdict("cat throughput, resalloc ssh / ssh -t", ratio: throughput, target: ">= 0.5 ", met: throughput >= 0.5)
        _ = try await client.deleteLease("bench-shell")
        bridgeRecorded = bridge
    }
    // The same bridge with recording off: what recording costs a session.
    try await withBenchMaster(testbed, recording: false) { client, _, _ in
        let lease = try await client.createLease("busybox", name: "bench-shell", ttl: nil)
        let container = try require(lease.value.container, "the lease's container")
        try await makeBigFile(testbed, container)
        let unrecorded = try await measureShells([try bridgeTerminal(client: client, lease: "bench-shell")], keystrokes: keystrokes)[0]
        guard let recorded = bridgeRecorded else { return }
        print("\nclient library's session recorded (serve's default) against --record-dir '':")
        printTable([
            Sample(name: "keystroke round trip, recorded", durations: recorded.keystrokes.durations),
            Sample(name: "keystroke round trip, not recorded", durations: unrecorded.keystrokes.durations),
        ])
        print(
            "\(pad("cat /tmp/big, recorded / not recorded", 44)) \(String(format: "%8.1f", recorded.megabytesPerSecond)) / "
                + "\(String(format: "%.1f", unrecorded.megabytesPerSecond)) MB/s"
        )
        _ = try await client.deleteLease("bench-shell")
    }
}

/// ~50 MB of printable lines (37.75 MB of random bytes, base64) at /tmp/big in the container.
func makeBigFile(_ testbed: Testbed, _ container: String) async throws {
    try await testbed.docker("m1", ["exec", container, "sh", "-c", "head -c 37748736 /dev/urandom | base64 > /tmp/big"])
}

/// Measures shells side by side: in each, `cat` of the big file three times (best kept), then
/// `exec cat`; then keystrokes, one terminal after another in an order that rotates every
/// round, each timed from the write to its echo; Ctrl-D ends them.
func measureShells(_ terminals: [Terminal], keystrokes: Int) async throws -> [ShellNumbers] {
    var throughput: [(megabytesPerSecond: Double, bytes: Int)] = []
    for terminal in terminals {
        let screen = terminal.screen
        try await screen.waitFor("# ")
        var best = 0.0
        var bytes = 0
        for round in 0..<3 {
            let before = screen.count
            let start = ContinuousClock.now
            terminal.write(Array("cat /tmp/big; echo BENCH-''END-\(round)\n".utf8))
            try await screen.waitFor("BENCH-END-\(round)", timeout: .seconds(120))
            let elapsed = ContinuousClock.now - start
            bytes = screen.count - before
            best = max(best, Double(bytes) / 1e6 / (elapsed.milliseconds / 1000))
        }
        throughput.append((best, bytes))
        terminal.write(Array("exec cat\n".utf8))
    }
    try await Task.sleep(for: .milliseconds(300))
    FileHandle.standardError.write(Data("keystrokes: \(keystrokes) on each of \(terminals.count) terminals\n".utf8))

    var durations = Array(repeating: [Duration](), count: terminals.count)
    for round in 0..<(keystrokes + 20) {
        for offset in terminals.indices {
            let index = (round + offset) % terminals.count
            let terminal = terminals[index]
            if round % 50 == 49 {
                // End the line (cat prints it back), unmeasured, so lines stay short.
                terminal.write(Array("\n".utf8))
                try await Task.sleep(for: .milliseconds(20))
            }
            let before = terminal.screen.count
            let start = ContinuousClock.now
            terminal.write([UInt8(ascii: "x")])
            try await terminal.screen.waitForMore(than: before, timeout: .seconds(10))
            if round >= 20 { durations[index].append(ContinuousClock.now - start) }
        }
    }
    for terminal in terminals {
        terminal.write([0x0A, 0x04])  // end the line, then Ctrl-D: cat ends, and with it the shell
        try await terminal.finish()
    }
    return terminals.indices.map { index in
        ShellNumbers(
            keystrokes: Sample(name: "keystroke round trip, \(terminals[index].label)", durations: durations[index]),
            megabytesPerSecond: throughput[index].megabytesPerSecond,
            bytes: throughput[index].bytes
        )
    }
}

/// The `resalloc` CLI beside this benchmark's binary (`make bench` builds it), logged in to
/// `server` through a config file under `home`.
func cliPath() -> String {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("resalloc").path
}

func cliEnvironment(server: String, token: String?, home: String) throws -> [String: String] {
    try FileManager.default.createDirectory(atPath: "\(home)/.config/resalloc", withIntermediateDirectories: true)
    try JSONEncoder().encode(ClientConfig(server: server, token: token, user: "bench"))
        .write(to: URL(fileURLWithPath: "\(home)/.config/resalloc/config.json"))
    return ["HOME": home, "RESALLOC_URL": server, "PATH": "/usr/bin:/bin", "TERM": "xterm"]
}

/// `resalloc ssh LEASE`, the real CLI, on a pseudo-terminal.
func cliTerminal(server: String, token: String?, lease: String, home: String) throws -> Terminal {
    try programTerminal("resalloc ssh", [cliPath(), "ssh", lease], environment: try cliEnvironment(server: server, token: token, home: home))
}

/// A program on a pseudo-terminal of its own, as someone would run it at a terminal.
func programTerminal(_ label: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Terminal {
    let screen = Screen()
    let (child, terminal) = try Subprocess.startOnTerminal(arguments, environment: environment)
    let descriptor = terminal.fileDescriptor
    let reader = Thread {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }  // EIO: the program and all it started closed the terminal
            screen.append(buffer[0..<count])
        }
        screen.end()
    }
    reader.start()
    return Terminal(
        label: label,
        screen: screen,
        write: { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { break }
                offset += written
            }
        },
        finish: {
            try await child.wait(timeout: .seconds(20))
            withExtendedLifetime(terminal) {}
        }
    )
}

func bridgeTerminal(client: ResallocClient, lease: String) throws -> Terminal {
    let screen = Screen()
    let (input, sink) = AsyncStream.makeStream(of: ShellInput.self)
    let session = Task {
        try await ShellSession(client: client).run(
            lease: lease,
            start: ShellStart(tty: true, term: "xterm", columns: 200, rows: 50, command: nil),
            input: input
        ) { _, buffer in
            screen.append(buffer.readableBytesView)
        }
    }
    return Terminal(
        label: "client library",
        screen: screen,
        write: { sink.yield(.bytes($0)) },
        finish: {
            _ = try await within(.seconds(20), "the bridged shell's end") { try await session.value }
            sink.finish()
        }
    )
}

/// The master's own half of the bridge: its libssh2 PTY channel, read and written in-process.
func channelTerminal(_ testbed: Testbed, container: String) async throws -> Terminal {
    let pool = SSHConnectionPool()
    let docker = RemoteDocker(endpoint: testbed.endpoint("m1"), pool: pool)
    let process = try await docker.openShell(container, term: "xterm", size: TerminalSize(columns: 200, rows: 50))
    return Terminal(
        label: "libssh2 channel only",
        screen: Screen(process),
        write: { process.write($0) },
        finish: {
            _ = try await within(.seconds(20), "the channel's shell to end") { try await process.exitStatus() }
            await pool.closeAll()
        }
    )
}

/// `#require` for a benchmark: the value, or a clear failure.
func require<T>(_ value: T?, _ what: String = "a value") throws -> T {
    guard let value else { throw TestbedError("missing \(what)") }
    return value
}
