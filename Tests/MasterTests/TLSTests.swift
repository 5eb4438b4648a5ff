import Foundation
import Testbed
import Testing

/// A master behind a TLS-terminating proxy (`scripts/tls-proxy`, as an operator puts nginx in
/// front of it), reached at https:// with a certificate from the fleet's own CA.
@Suite("An https:// master: calls, resalloc ssh and cp over TLS, the fleet's CA from RESALLOC_CA_FILE", .timeLimit(.minutes(3)))
struct TLSTests {
    /// A CA, and a certificate for localhost and 127.0.0.1 that it signed, made with openssl in
    /// `directory`.
    static func makeCertificates(_ directory: String) async throws {
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try await Testbed.run(
            ["openssl", "req", "-x509"] + curve + [
                "-keyout", "\(directory)/ca.key", "-out", "\(directory)/ca.pem", "-days", "2", "-subj", "/CN=resalloc test CA",
            ]
        )
        try await Testbed.run(
            ["openssl", "req"] + curve + ["-keyout", "\(directory)/server.key", "-out", "\(directory)/server.csr", "-subj", "/CN=localhost"]
        )
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n".write(
            toFile: "\(directory)/server.ext",
            atomically: true,
            encoding: .utf8
        )
        try await Testbed.run([
            "openssl", "x509", "-req", "-in", "\(directory)/server.csr", "-CA", "\(directory)/ca.pem", "-CAkey", "\(directory)/ca.key",
            "-CAcreateserial", "-out", "\(directory)/server.pem", "-days", "2", "-extfile", "\(directory)/server.ext",
        ])
    }

    @Test(
        "Through the proxy, by name and by address: a listing, a shell command with its status, a file in and out; without the CA a sentence about trust; a CA file that is not one is named"
    )
    func throughTLS() async throws {
        try await withLeasedBox { _, cli, testbed, container in
            let directory = try makeTemporaryDirectory("resalloc-tls")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try await Self.makeCertificates(directory)
            let port = freeLoopbackPort()
            let proxyLog = "\(directory)/proxy.log"
            let proxy = try Subprocess.start(
                [
                    "\(CLI.repositoryRoot)/scripts/tls-proxy", "\(directory)/server.pem", "\(directory)/server.key", String(port),
                    String(URL(string: cli.server)!.port!),
                ],
                stdout: .file(proxyLog),
                stderr: .file(proxyLog)
            )
            defer { proxy.kill9() }
            try await waitUntil(seconds: 10, "the TLS proxy listening") {
                (try? String(contentsOfFile: proxyLog, encoding: .utf8))?.contains("ready") == true
            }
            // By name, as a master usually is (and the name is on loopback here).
            let secure = cli.environment.merging(["RESALLOC_URL": "https://localhost:\(port)", "RESALLOC_CA_FILE": "\(directory)/ca.pem"]) { $1 }
            let resalloc = { (arguments: [String], environment: [String: String]) in
                try await Subprocess.run([CLI.binary] + arguments, environment: environment, timeout: .seconds(60))
            }

            let list = try await resalloc(["lease", "list"], secure)
            #expect(list.status == 0, "\(list.errors)")
            #expect(list.output.contains("box"))
            // The shell's own WebSocket client.
            let shell = try await resalloc(["ssh", "box", "--", "sh", "-c", "echo over-tls; exit 3"], secure)
            #expect(shell.output == "over-tls\n", "\(shell.errors)")
            #expect(shell.status == 3)
            // cp's, both ways.
            try Data("sealed\n".utf8).write(to: URL(fileURLWithPath: "\(directory)/note.txt"))
            let copyIn = try await resalloc(["cp", "\(directory)/note.txt", "box:/tmp"], secure)
            #expect(copyIn.status == 0, "\(copyIn.errors)")
            #expect(try await testbed.docker("m2", ["exec", container, "cat", "/tmp/note.txt"]) == "sealed\n")
            let copyOut = try await resalloc(["cp", "box:/tmp/note.txt", "\(directory)/back.txt"], secure)
            #expect(copyOut.status == 0, "\(copyOut.errors)")
            #expect(try String(contentsOfFile: "\(directory)/back.txt", encoding: .utf8) == "sealed\n")

            // By address: TLS sends no name, and the certificate is checked against the address.
            var byAddress = secure
            byAddress["RESALLOC_URL"] = "https://127.0.0.1:\(port)"
            let shellByAddress = try await resalloc(["ssh", "box", "--", "echo", "by-address"], byAddress)
            #expect(shellByAddress.output == "by-address\n", "\(shellByAddress.errors)")
            let copyByAddress = try await resalloc(["cp", "box:/tmp/note.txt", "\(directory)/again.txt"], byAddress)
            #expect(copyByAddress.status == 0, "\(copyByAddress.errors)")
            #expect(try String(contentsOfFile: "\(directory)/again.txt", encoding: .utf8) == "sealed\n")

            // The system's trust store alone does not know the fleet's CA.
            var untrusted = secure
            untrusted["RESALLOC_CA_FILE"] = nil
            let refused = try await resalloc(["lease", "list"], untrusted)
            #expect(refused.status == 3)
            #expect(refused.errors.contains("certificate") && refused.errors.contains("RESALLOC_CA_FILE"), "\(refused.errors)")
            #expect(!refused.errors.contains("is it running"), "\(refused.errors)")
            // A CA file that is not one is named, and nothing is sent.
            var broken = secure
            broken["RESALLOC_CA_FILE"] = "\(directory)/server.ext"
            let named = try await resalloc(["lease", "list"], broken)
            #expect(named.status == 1)
            #expect(named.errors == "resalloc: RESALLOC_CA_FILE=\(directory)/server.ext: not PEM certificates\n")
            // Plain http:// ignores it.
            var plain = broken
            plain["RESALLOC_URL"] = cli.server
            #expect(try await resalloc(["lease", "list"], plain).status == 0)
        }
    }
}
