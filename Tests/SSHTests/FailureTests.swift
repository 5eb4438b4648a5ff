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
        try await Task.sleep(for: .milliseconds(200))
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
}
