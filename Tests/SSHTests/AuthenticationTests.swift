import Foundation
import SSH
import Testbed
import Testing

@Suite("Logging in to a real sshd", .timeLimit(.minutes(3)))
struct AuthenticationTests {
    @Test("Ed25519 and ECDSA keys log in and run a command", arguments: ["ed25519", "ecdsa"])
    func modernKeysLogIn(keyType: String) async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1", key: keyType))
        defer { Task { await connection.close() } }
        let result = try await connection.execute("echo out; echo err >&2; exit 3")
        #expect(result.stdoutText == "out\n")
        #expect(result.stderrText == "err\n")
        #expect(result.exitStatus == 3)
    }

    @Test("An RSA key is refused with the SHA-1 explanation")
    func rsaKeyIsRefusedClearly() async throws {
        let testbed = try await Testbed.shared()
        // The key is in authorized_keys; it is the SHA-1 signature that sshd refuses.
        let error = await #expect(throws: SSHError.self) {
            try await SSHConnection.connect(to: testbed.endpoint("m1", key: "rsa"))
        }
        #expect(error?.kind == .auth)
        #expect(error?.message.contains("SHA-1") == true)
        #expect(error?.message.contains("Ed25519 or ECDSA") == true)
        #expect(testbed.sshdLogLines("m1", containing: "ssh-rsa not in PubkeyAcceptedAlgorithms") > 0)
    }

    @Test("A key the machine does not know is refused with a sentence naming the key")
    func unknownKeyIsRefused() async throws {
        let testbed = try await Testbed.shared()
        let endpoint = testbed.endpoint("m1", key: "stranger")
        let error = await #expect(throws: SSHError.self) { try await SSHConnection.connect(to: endpoint) }
        #expect(error?.kind == .auth)
        #expect(error?.message.contains("refused the key \(endpoint.privateKeyPath)") == true)
    }

    @Test("A missing key file is an auth error, not a crash")
    func missingKeyFile() async throws {
        let testbed = try await Testbed.shared()
        var endpoint = testbed.endpoint("m1")
        endpoint.privateKeyPath = "/nonexistent/resalloc.pem"
        let error = await #expect(throws: SSHError.self) { try await SSHConnection.connect(to: endpoint) }
        #expect(error?.kind == .auth)
        #expect(error?.message.contains("/nonexistent/resalloc.pem") == true)
    }

    @Test("Nobody listening: a connect error, quickly")
    func nothingListening() async throws {
        let endpoint = SSHEndpoint(host: "127.0.0.99", port: 22, user: "nobody", privateKeyPath: "/dev/null")
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: SSHError.self) { try await SSHConnection.connect(to: endpoint, timeout: .seconds(5)) }
        #expect(error?.kind == .connect)
        #expect(clock.now - start < .seconds(5))
    }

    @Test("The host key fingerprint is the one ssh-keygen prints (Ed25519 first), and a pinned one is accepted")
    func hostKeyFingerprint() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        await connection.close()
        #expect(connection.hostKey.type == "ssh-ed25519")
        #expect(connection.hostKey.fingerprint == (try await testbed.hostKeyFingerprint("m1")))
        let pinned = try await SSHConnection.connect(to: testbed.endpoint("m1", expecting: connection.hostKey))
        await pinned.close()
    }

    @Test("A pinned ECDSA host key (a machine added before Ed25519 came first) makes libssh2 negotiate that type")
    func pinnedTypeIsNegotiated() async throws {
        let testbed = try await Testbed.shared()
        let expected = HostKey(type: "ecdsa-sha2-nistp256", fingerprint: try await testbed.hostKeyFingerprint("m1", type: "ecdsa"))
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1", expecting: expected))
        await connection.close()
        #expect(connection.hostKey == expected)
    }

    @Test("A changed host key is refused")
    func changedHostKeyIsRefused() async throws {
        let testbed = try await Testbed.shared()
        // A private sshd of m1's, re-keyed between two starts: re-keying a shared machine would
        // break another suite's pinned connections to it.
        let directory = try makeTemporaryDirectory("resalloc-rekey")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func withNewHostKey(_ name: String) async throws -> VariantSSHD {
            try await Testbed.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", "\(directory)/\(name)"])
            return try await testbed.variantSSHD(of: "m1") { config in
                config.split(separator: "\n", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix("HostKey ") ? "" : String($0) }
                    .joined(separator: "\n") + "\nHostKey \(directory)/\(name)\n"
            }
        }
        let before = try await withNewHostKey("old")
        let first = try await SSHConnection.connect(to: before.endpoint)
        await first.close()
        before.stop()
        let after = try await withNewHostKey("new")
        defer { after.stop() }
        var pinned = after.endpoint
        pinned.expectedHostKey = first.hostKey
        let error = await #expect(throws: SSHError.self) { try await SSHConnection.connect(to: pinned) }
        #expect(error?.kind == .hostKeyMismatch)
        #expect(error?.message.contains(first.hostKey.fingerprint) == true)
        // Without a pin the new key is simply read.
        let second = try await SSHConnection.connect(to: after.endpoint)
        await second.close()
        #expect(second.hostKey != first.hostKey)
        let fingerprint = try await Testbed.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "\(directory)/new.pub"]).split(separator: " ")[1]
        #expect(second.hostKey.fingerprint == String(fingerprint))
    }
}
