import Foundation
import SSH
import Testbed
import Testing

@Suite("A machine that goes away and comes back", .serialized, .timeLimit(.minutes(3)))
struct FailureTests {
    @Test("A dropped connection is re-opened once; a stopped sshd fails in bounded time; it works again after")
    func machineGoesAwayAndComesBack() async throws {
        let testbed = try await Testbed.shared()
        let pool = SSHConnectionPool(connectTimeout: .seconds(5))
        let endpoint = testbed.endpoint("m3")
        defer { testbed.restartSSHD("m3") }
        #expect(try await pool.execute(on: endpoint, "echo one").stdoutText == "one\n")

        // The connection breaks behind our back: the next command reconnects, once, and succeeds.
        let logins = try await testbed.acceptedLogins("m3", key: "ed25519")
        try await testbed.control("drop-connections", "m3")
        #expect(try await pool.execute(on: endpoint, "echo two").stdoutText == "two\n")
        let loginsAfter = try await testbed.acceptedLogins("m3", key: "ed25519", reaching: logins + 1)
        #expect(loginsAfter == logins + 1)

        // The machine goes away: a clear error, in bounded time.
        try await testbed.control("sshd-stop", "m3")
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: SSHError.self) { try await pool.execute(on: endpoint, "echo three") }
        #expect(error.map { [.connect, .disconnected].contains($0.kind) } == true)
        #expect(clock.now - start < .seconds(10))

        // It comes back: the next command just works.
        try await testbed.control("sshd-start", "m3")
        #expect(try await pool.execute(on: endpoint, "echo four").stdoutText == "four\n")
        await pool.closeAll()
    }

    @Test("A machine that stops answering costs one command its deadline; the next command gets a new connection")
    func frozenConnection() async throws {
        let testbed = try await Testbed.shared()
        let pool = SSHConnectionPool(connectTimeout: .seconds(5))
        let endpoint = testbed.endpoint("m3")
        #expect(try await pool.execute(on: endpoint, "echo one").stdoutText == "one\n")
        let logins = try await testbed.acceptedLogins("m3", key: "ed25519")

        // The sshd processes serving our connection stop dead: no FIN, no RST, no answer.
        try await testbed.control("freeze-connections", "m3")
        defer {
            _ = try? Testbed.run(["\(testbed.repositoryRoot)/scripts/testbed", "thaw-connections", "m3"]) as String
            _ = try? Testbed.run(["\(testbed.repositoryRoot)/scripts/testbed", "drop-connections", "m3"]) as String
        }
        let error = await #expect(throws: SSHError.self) { try await pool.execute(on: endpoint, "echo two", timeout: .seconds(2)) }
        #expect(error?.kind == .timeout)
        // Not queued behind the frozen connection: a new one, from the listener that still works.
        #expect(try await pool.execute(on: endpoint, "echo three", timeout: .seconds(10)).stdoutText == "three\n")
        #expect(try await testbed.acceptedLogins("m3", key: "ed25519", reaching: logins + 1) == logins + 1)
        await pool.closeAll()
    }

    @Test("An idle connection sends keepalives, asks for no reply, and stays usable")
    func keepalive() async throws {
        let testbed = try await Testbed.shared()
        var endpoint = testbed.endpoint("m3")
        endpoint.keepaliveSeconds = 1
        let connection = try await SSHConnection.connect(to: endpoint)
        defer { Task { await connection.close() } }
        #expect(try await connection.execute("echo before").stdoutText == "before\n")
        let before = try await Self.segments(to: testbed.machine("m3"))
        // Idle, nothing would be sent at all; libssh2 turns an interval of 1 s into 2 s, so two
        // keepalives go out within a few seconds.
        var after = before
        try await waitUntil(seconds: 30, "two keepalives sent on the idle connection") {
            after = try await Self.segments(to: testbed.machine("m3"))
            return after.sent - before.sent >= 2
        }
        // And sshd sends nothing back but TCP's acknowledgements (a reply to the first would
        // have come back before the second went): a reply to each would stay queued in libssh2
        // 1.10 for as long as the connection lives.
        #expect(after.dataReceived == before.dataReceived, "\(after.dataReceived - before.dataReceived) segments of data from sshd")
        #expect(try await connection.execute("echo after").stdoutText == "after\n")
    }

    /// TCP segments sent, and segments with data received, so far on the one established
    /// connection from this host to `machine`'s sshd, as the kernel counts them (`ss -ti`).
    static func segments(to machine: Testbed.Machine) async throws -> (sent: Int, dataReceived: Int) {
        let report = try await Testbed.run(["ss", "-H", "-t", "-i", "-n", "state", "established", "dst", "\(machine.host):\(machine.port)"])
        func counts(_ name: String) -> [Int] {
            report.split(whereSeparator: \.isWhitespace).compactMap { field in
                field.hasPrefix("\(name):") ? Int(field.dropFirst(name.count + 1)) : nil
            }
        }
        let (sent, received) = (counts("segs_out"), counts("data_segs_in"))
        guard sent.count == 1, received.count == 1 else {
            throw TestbedError("expected one connection to \(machine.host), ss reported:\n\(report)")
        }
        return (sent[0], received[0])
    }
}
