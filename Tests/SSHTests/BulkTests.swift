import Crypto
import Foundation
import Testbed
import Testing

@testable import SSH

/// Bulk streams (copies' tar streams) on a swift-nio-ssh connection of their own, against the
/// test machine's real sshd.
@Suite("Bulk streams on their own swift-nio-ssh connection", .timeLimit(.minutes(3)))
struct BulkTests {
    /// m1 with its host key of `type` pinned, logged in to with the key `key`.
    func pinned(_ testbed: Testbed, type: String = "ed25519", key: String = "ed25519") async throws -> SSHEndpoint {
        let algorithm = type == "ed25519" ? "ssh-ed25519" : "ecdsa-sha2-nistp256"
        let fingerprint = try await testbed.hostKeyFingerprint("m1", type: type)
        return testbed.endpoint("m1", key: key, expecting: HostKey(type: algorithm, fingerprint: fingerprint))
    }

    /// Reads the process's output to its end, acknowledging it as it comes.
    func drain(_ process: RemoteProcess) async -> (stdout: [UInt8], stderr: [UInt8]) {
        var out: [UInt8] = []
        var err: [UInt8] = []
        for await chunk in process.output {
            switch chunk {
            case .stdout(let bytes):
                out += bytes
                process.consumed(bytes.count)
            case .stderr(let bytes):
                err += bytes
                process.consumed(bytes.count)
            }
        }
        return (out, err)
    }

    @Test("20 MB go in whole and 30 MB come out whole, stderr apart, with the command's status")
    func roundTrip() async throws {
        let testbed = try await Testbed.shared()
        let endpoint = try await pinned(testbed)
        var bytes = [UInt8](repeating: 0, count: 20_000_000)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 7) }
        let expected = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()

        let input = try #require(try await BulkSSH.start(on: endpoint, "sha256sum; echo note >&2; exit 3", timeout: .seconds(10)))
        let reading = Task { await drain(input) }
        for start in stride(from: 0, to: bytes.count, by: 256 * 1024) {
            await input.send(Array(bytes[start..<min(start + 256 * 1024, bytes.count)]))
        }
        input.closeInput()
        let (sum, note) = await reading.value
        #expect(String(decoding: sum, as: UTF8.self) == "\(expected)  -\n")
        #expect(String(decoding: note, as: UTF8.self) == "note\n")
        #expect(try await input.exitStatus() == 3)

        let script = "f=$(mktemp) && head -c 30000000 /dev/urandom > $f && cat $f && sha256sum < $f >&2; rm -f $f"
        let output = try #require(try await BulkSSH.start(on: endpoint, script, timeout: .seconds(10)))
        let (data, said) = await drain(output)
        #expect(data.count == 30_000_000)
        let received = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        #expect(String(decoding: said, as: UTF8.self) == "\(received)  -\n")
        #expect(try await output.exitStatus() == 0)
    }

    @Test("Another key of the pinned type is refused; a pin of another type leaves the stream to libssh2")
    func hostKeys() async throws {
        let testbed = try await Testbed.shared()
        let wrong = testbed.endpoint("m1", expecting: HostKey(type: "ssh-ed25519", fingerprint: "SHA256:" + String(repeating: "A", count: 43)))
        let error = await #expect(throws: SSHError.self) { try await BulkSSH.start(on: wrong, "true", timeout: .seconds(10)) }
        #expect(error?.kind == .hostKeyMismatch)

        let ecdsa = try await pinned(testbed, type: "ecdsa")
        #expect(try await BulkSSH.start(on: ecdsa, "true", timeout: .seconds(10)) == nil)
        let pool = SSHConnectionPool()
        let process = try await pool.startBulk(on: ecdsa, "echo by libssh2; exit 4")
        #expect(String(decoding: await drain(process).stdout, as: UTF8.self) == "by libssh2\n")
        #expect(try await process.exitStatus() == 4)
        await pool.closeAll()
    }

    @Test("Ed25519 and ECDSA key files log in; RSA and passphrase-protected ones are left to libssh2")
    func keyFiles() async throws {
        let testbed = try await Testbed.shared()
        let ecdsa = try #require(try await BulkSSH.start(on: try await pinned(testbed, key: "ecdsa"), "exit 0", timeout: .seconds(10)))
        #expect(try await ecdsa.exitStatus() == 0)
        #expect(OpenSSHKeyFile.privateKey(at: testbed.keys["ed25519"]!) != nil)
        #expect(OpenSSHKeyFile.privateKey(at: testbed.keys["rsa"]!) == nil)
        let directory = try makeTemporaryDirectory("resalloc-bulk-key")
        try await Testbed.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", "\(directory)/locked"])
        #expect(OpenSSHKeyFile.privateKey(at: "\(directory)/locked") == nil)
    }
}
