import Docker
import Foundation
import NIOCore
import ResallocAPI
import ResallocClient
import SSH
import Testbed

// `resalloc ssh` through the master's bridge (WebSocket → master → SSH PTY channel →
// docker exec -it) beside OpenSSH straight to the machine (`ssh -tt … docker exec -it`), on the
// same container: keystroke round trip and the throughput of `cat` of ~50 MB. Every wait has a
// deadline; a stuck session fails the benchmark instead of hanging it.

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
    try await withBenchMaster(testbed) { client, _, _ in
        let lease = try await client.createLease("busybox", name: "bench-shell", ttl: nil)
        let container = try require(lease.value.container, "the lease's container")
        let machine = testbed.machine("m1")
        // ~50 MB of printable lines (37.75 MB of random bytes, base64), made once in the container.
        try await testbed.docker("m1", ["exec", container, "sh", "-c", "head -c 37748736 /dev/urandom | base64 > /tmp/big"])
        let size =
            Int(try await testbed.docker("m1", ["exec", container, "sh", "-c", "wc -c < /tmp/big"]).trimmingCharacters(in: .whitespacesAndNewlines))
            ?? 0

        print("\nresalloc ssh benchmark: machine m1, keystroke round trip (\(keystrokes) keystrokes) and cat of \(size / 1_000_000) MB")
        print("bridge: resalloc's client library → WebSocket → master (this process) → SSH PTY channel → docker exec -it")
        print("libssh2 channel only: the master's SSH PTY channel (RemoteDocker.openShell) in this process, no WebSocket")
        print("direct: ssh -tt (OpenSSH) → sshd → docker exec -it\n")

        let bridge = try await measureShell(try bridgeTerminal(client: client, lease: "bench-shell"), keystrokes: keystrokes)
        let ssh = [
            "ssh", "-tt", "-q", "-i", testbed.keys["ed25519"]!, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-p", String(machine.port), "\(machine.login)@\(machine.host)", "docker exec -it -e TERM=xterm \(container) sh",
        ]
        let direct = try await measureShell(try directTerminal(ssh), keystrokes: keystrokes)
        let channel = try await measureShell(try await channelTerminal(testbed, container: container), keystrokes: keystrokes)

        printTable([bridge.keystrokes, channel.keystrokes, direct.keystrokes])
        for (label, numbers) in [("bridge", bridge), ("libssh2 channel only", channel), ("direct ssh", direct)] {
            print(
                "\(pad("cat /tmp/big, \(label)", 44)) \(String(format: "%8.1f", numbers.megabytesPerSecond)) MB/s (\(numbers.bytes) bytes on the screen)"
            )
        }
        print("")
        let latency = bridge.keystrokes.median.milliseconds / direct.keystrokes.median.milliseconds
        verdict("keystroke round trip, bridge / direct (median)", ratio: latency, target: "<= 1.5 ", met: latency <= 1.5)
        let p99 = bridge.keystrokes.p99.milliseconds / direct.keystrokes.p99.milliseconds
        print("\(pad("keystroke round trip, bridge / direct (p99)", 52)) \(String(format: "%7.2f", p99))")
        let throughput = bridge.megabytesPerSecond / direct.megabytesPerSecond
        verdict("cat throughput, bridge / direct", ratio: throughput, target: ">= 0.5 ", met: throughput >= 0.5)
        _ = try await client.deleteLease("bench-shell")
        bridgeRecorded = bridge
    }
    // The same bridge with recording off: what recording costs a session.
    try await withBenchMaster(testbed, recording: false) { client, _, _ in
        let lease = try await client.createLease("busybox", name: "bench-shell", ttl: nil)
        let container = try require(lease.value.container, "the lease's container")
        try await testbed.docker("m1", ["exec", container, "sh", "-c", "head -c 37748736 /dev/urandom | base64 > /tmp/big"])
        let unrecorded = try await measureShell(try bridgeTerminal(client: client, lease: "bench-shell"), keystrokes: keystrokes)
        guard let recorded = bridgeRecorded else { return }
        print("\nbridge with the session recorded (serve's default) against --record-dir '':")
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

/// Types into a shell: `cat` of the big file three times (best kept), then `exec cat` and one
/// byte at a time, each timed from the write to its echo; Ctrl-D ends it.
func measureShell(_ terminal: Terminal, keystrokes: Int) async throws -> ShellNumbers {
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

    terminal.write(Array("exec cat\n".utf8))
    try await Task.sleep(for: .milliseconds(300))
    var durations: [Duration] = []
    for index in 0..<(keystrokes + 20) {
        if index % 50 == 49 {
            // End the line (cat prints it back), unmeasured, so lines stay short.
            terminal.write(Array("\n".utf8))
            try await Task.sleep(for: .milliseconds(100))
        }
        let before = screen.count
        let start = ContinuousClock.now
        terminal.write([UInt8(ascii: "x")])
        try await screen.waitForMore(than: before, timeout: .seconds(10))
        if index >= 20 { durations.append(ContinuousClock.now - start) }
    }
    terminal.write([0x0A, 0x04])  // end the line, then Ctrl-D: cat ends, and with it the shell
    try await terminal.finish()
    return ShellNumbers(
        keystrokes: Sample(name: "keystroke round trip, \(terminal.label)", durations: durations),
        megabytesPerSecond: best,
        bytes: bytes
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
        label: "bridge",
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

func directTerminal(_ arguments: [String]) throws -> Terminal {
    let screen = Screen()
    let (child, input, output) = try Subprocess.startPiped(arguments)
    let reader = Thread {
        while true {
            let data = output.availableData
            if data.isEmpty { break }
            screen.append(data)
        }
    }
    reader.start()
    return Terminal(
        label: "direct ssh",
        screen: screen,
        write: { input.write(Data($0)) },
        finish: {
            try input.close()
            try await child.wait(timeout: .seconds(20))
        }
    )
}

/// `#require` for a benchmark: the value, or a clear failure.
func require<T>(_ value: T?, _ what: String = "a value") throws -> T {
    guard let value else { throw TestbedError("missing \(what)") }
    return value
}
