import Foundation
import SSH
import Testbed
import Testing

@Suite("Running commands over a shared connection", .timeLimit(.minutes(3)))
struct CommandTests {
    @Test("Bytes go in and come out unchanged, invalid UTF-8 included")
    func binaryRoundTrip() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        var bytes = [UInt8](repeating: 0, count: 1_000_000)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 7) }
        bytes[10] = 0xC3  // half of a two-byte character, then a byte that is not its second half
        bytes[11] = 0x28
        let result = try await connection.execute("cat", stdin: bytes)
        #expect(result.exitStatus == 0)
        #expect(result.stdout.count == bytes.count)
        #expect(result.stdout == bytes)
    }

    @Test("While the socket to sshd is full, other channels' input, end of input and new channels wait; nothing is lost")
    func besideAFullSocket() async throws {
        // libssh2 keeps one packet that the socket did not take whole, and refuses every other
        // send on the session (BAD_USE) until that one is finished. On a real network a stream
        // into one lease fills the socket routinely; a keystroke into another lease on the same
        // machine must then wait, not vanish, and a new command must not fail.
        let testbed = try await Testbed.shared()
        let variant = try await testbed.variantSSHD(of: "m1") { $0 }
        defer {
            variant.thawConnections()
            variant.stop()
        }
        let connection = try await SSHConnection.connect(to: variant.endpoint)
        defer { Task { await connection.close() } }
        var streams: [RemoteProcess] = []
        for _ in 0..<4 { streams.append(try await connection.start("cat | wc -c")) }
        let typing = try await connection.start("cat")

        // sshd stops reading; four SSH windows (2 MiB each) of input are more than the kernel
        // buffers for a connection whose reader has stopped.
        variant.freezeConnections()
        let chunk = [UInt8](repeating: 0x61, count: 32 << 10)
        for stream in streams {
            for _ in 0..<64 { stream.write(chunk) }
        }
        var queued = 0
        try await waitUntil(seconds: 30, "the socket to sshd to fill") {
            let now = try await variant.bytesQueuedToIt()
            defer { queued = now }
            return now > 1 << 20 && now == queued
        }
        typing.write(Array("typed".utf8))
        typing.closeInput()
        let taken = connection.commandsTaken
        async let opened = connection.execute("echo opened", timeout: .seconds(60))
        // Thawed only once the connection's thread has tried to open the command's channel
        // behind the packet the socket did not take.
        try await waitUntil(seconds: 30, "the new command taken up by the connection") { connection.commandsTaken > taken }
        variant.thawConnections()

        #expect(try await opened.stdoutText == "opened\n")
        var typed: [UInt8] = []
        for await chunk in typing.output { if case .stdout(let bytes) = chunk { typed += bytes } }
        #expect(String(decoding: typed, as: UTF8.self) == "typed")
        #expect(try await typing.exitStatus() == 0)
        for stream in streams {
            stream.closeInput()
            var counted: [UInt8] = []
            for await chunk in stream.output { if case .stdout(let bytes) = chunk { counted += bytes } }
            #expect(String(decoding: counted, as: UTF8.self).trimmingCharacters(in: .whitespaces) == "\(64 * chunk.count)\n")
        }
    }

    @Test("Large stdout and stderr at once are both read whole")
    func bothStreamsAtOnce() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let result = try await connection.execute("head -c 4000000 /dev/zero >&2; head -c 3000000 /dev/zero; echo done >&2")
        #expect(result.stdout.count == 3_000_000)
        #expect(result.stderr.count == 4_000_005)
        #expect(result.exitStatus == 0)
    }

    @Test("Output streams while the command still runs")
    func outputStreams() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let flag = "/tmp/resalloc-stream-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: flag) }
        // The command waits for a file that only appears once we have seen its first line: if
        // output were delivered only at the end, this would time out.
        let result = try await connection.execute(
            "echo first; while [ ! -e \(flag) ]; do sleep 0.05; done; echo second",
            timeout: .seconds(20)
        ) { chunk in
            if case .stdout(let bytes) = chunk, String(decoding: bytes, as: UTF8.self).contains("first") {
                _ = FileManager.default.createFile(atPath: flag, contents: nil)
            }
        }
        #expect(result.stdoutText == "first\nsecond\n")
    }

    @Test("A command past its deadline fails with timeout, and the connection still works")
    func timeout() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: SSHError.self) { try await connection.execute("sleep 30", timeout: .milliseconds(500)) }
        #expect(error?.kind == .timeout)
        // At its deadline, not when `sleep 30` ends; the margin is for a loaded CI run's scheduling,
        // which once delivered another 500 ms timeout 5 s late.
        #expect(clock.now - start < .seconds(20))
        #expect(try await connection.execute("echo alive").stdoutText == "alive\n")
    }

    @Test("A killed process reports its signal")
    func exitSignal() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let result = try await connection.execute("kill -TERM $$")
        #expect(result.exitSignal == "TERM")
        #expect(!result.succeeded)
    }

    @Test("20 commands on one machine, 9 at a time, share one connection")
    func concurrentOnOneMachine() async throws {
        let testbed = try await Testbed.shared()
        let pool = SSHConnectionPool()
        let endpoint = testbed.endpoint("m2", key: "reuse-a")
        let loginsBefore = try await testbed.acceptedLogins("m2", key: "reuse-a")
        let outputs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var outputs: [Int: String] = [:]
            for index in 0..<20 {
                // Never more than a connection's channels at once.
                if index >= 9, let (done, output) = try await group.next() { outputs[done] = output }
                group.addTask { (index, try await pool.execute(on: endpoint, "sleep 0.2; echo \(index)").stdoutText) }
            }
            return try await group.reduce(into: outputs) { $0[$1.0] = $1.1 }
        }
        await pool.closeAll()
        #expect(outputs.count == 20)
        for index in 0..<20 { #expect(outputs[index] == "\(index)\n") }
        // One login served all 20: a connection with a free channel is reused, not another opened.
        #expect(try await testbed.acceptedLogins("m2", key: "reuse-a", reaching: loginsBefore + 1) - loginsBefore == 1)
    }

    @Test("16 concurrent docker commands across two machines, one connection each")
    func concurrentAcrossMachines() async throws {
        let testbed = try await Testbed.shared()
        let pool = SSHConnectionPool()
        let before = [try await testbed.acceptedLogins("m1", key: "reuse-b"), try await testbed.acceptedLogins("m2", key: "reuse-b")]
        let results = try await withThrowingTaskGroup(of: ExecResult.self) { group in
            for index in 0..<16 {
                let endpoint = testbed.endpoint(index % 2 == 0 ? "m1" : "m2", key: "reuse-b")
                group.addTask { try await pool.execute(on: endpoint, "docker ps -q && docker info --format '{{.DockerRootDir}}'") }
            }
            return try await group.reduce(into: [ExecResult]()) { $0.append($1) }
        }
        await pool.closeAll()
        #expect(results.count == 16)
        #expect(results.allSatisfy { $0.exitStatus == 0 && !$0.stdoutText.isEmpty })
        let after = [
            try await testbed.acceptedLogins("m1", key: "reuse-b", reaching: before[0] + 1),
            try await testbed.acceptedLogins("m2", key: "reuse-b", reaching: before[1] + 1),
        ]
        #expect(after[0] - before[0] == 1)
        #expect(after[1] - before[1] == 1)
        // Two different engines answered.
        #expect(Set(results.map { $0.stdoutText.split(separator: "\n").last! }).count == 2)
    }

    @Test("More commands at once than a connection has channels open further connections, up to the limit; idle ones close")
    func furtherConnections() async throws {
        let testbed = try await Testbed.shared()
        // m1's own sshd config on another port, so that the logins counted are this test's alone.
        let variant = try await testbed.variantSSHD(of: "m1") { $0 }
        defer { variant.stop() }
        let endpoint = variant.endpoint
        let pool = SSHConnectionPool(maxConnections: 2, idleAfter: .seconds(1))
        let outputs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for index in 0..<24 {
                group.addTask { (index, try await pool.execute(on: endpoint, "sleep 2; echo \(index)").stdoutText) }
            }
            return try await group.reduce(into: [Int: String]()) { $0[$1.0] = $1.1 }
        }
        for index in 0..<24 { #expect(outputs[index] == "\(index)\n") }
        // A second connection for the commands beyond the first one's 9 channels, and no third.
        #expect(await pool.connectionCount(to: endpoint) == 2)
        #expect(variant.log.components(separatedBy: "Accepted publickey").count - 1 == 2, "\(variant.log)")
        #expect(!variant.log.contains("no more sessions"), "a connection was asked for more channels than sshd allows")

        // Idle for longer than idleAfter, the extra connections close at the next command.
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try await pool.execute(on: endpoint, "echo again").stdoutText == "again\n")
        #expect(await pool.connectionCount(to: endpoint) == 1)
        await pool.closeAll()
    }

    @Test("A machine whose sshd allows only 2 sessions runs 6 concurrent commands, 2 at a time; one that waits too long times out")
    func fewerSessionsThanNine() async throws {
        let testbed = try await Testbed.shared()
        // m1's own sshd config, on another port, with MaxSessions 2: a hardened machine.
        let variant = try await testbed.variantSSHD(of: "m1") { $0 + "MaxSessions 2\n" }
        defer { variant.stop() }
        let endpoint = variant.endpoint
        // One connection, so that its own queue is what is tested (a pool would open more).
        let pool = SSHConnectionPool(maxConnections: 1)
        let outputs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for index in 0..<6 {
                group.addTask { (index, try await pool.execute(on: endpoint, "sleep 0.3; echo \(index)").stdoutText) }
            }
            return try await group.reduce(into: [Int: String]()) { $0[$1.0] = $1.1 }
        }
        for index in 0..<6 { #expect(outputs[index] == "\(index)\n") }
        // sshd did refuse a third session: the connection learned the limit instead of failing commands.
        #expect(variant.log.contains("no more sessions"))

        // Both slots held by commands that wait for the test to release them: one that waits for a
        // slot past its deadline times out. The held commands run on this host (the testbed's sshd is
        // local), so their marker files show when both hold a slot; no sleep guesses at it.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("resalloc-held-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let wait = "while [ ! -e \(scratch)/release ]; do sleep 0.05; done"
        async let first = pool.execute(on: endpoint, "touch \(scratch)/first; \(wait); echo first")
        async let second = pool.execute(on: endpoint, "touch \(scratch)/second; \(wait); echo second")
        // Side by side, not one after the other (neither ends before the release): a slot freed
        // late did not lower the limit to 1.
        try await waitUntil(seconds: 30, "both held commands to start") {
            FileManager.default.fileExists(atPath: "\(scratch)/first") && FileManager.default.fileExists(atPath: "\(scratch)/second")
        }
        let error = await #expect(throws: SSHError.self) { try await pool.execute(on: endpoint, "echo late", timeout: .milliseconds(500)) }
        #expect(error?.kind == .timeout)
        // The slots came free only now, after the timeout: it came at its deadline.
        #expect(FileManager.default.createFile(atPath: "\(scratch)/release", contents: nil))
        #expect(try await [first.stdoutText, second.stdoutText] == ["first\n", "second\n"])
        #expect(try await pool.execute(on: endpoint, "echo free").stdoutText == "free\n")
        await pool.closeAll()
    }
}
