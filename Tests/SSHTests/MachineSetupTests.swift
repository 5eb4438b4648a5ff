import Foundation
import SSH
import Testbed
import Testing

/// `make keys` and `resources/setup.sh`, the two things an operator runs before the first
/// `resalloc machine create`. setup.sh runs against this host: it needs root, as `make test` has.
@Suite("Preparing the master's key and a machine", .serialized, .timeLimit(.minutes(3)))
struct MachineSetupTests {
    static let setupScript = "\(repositoryRoot)/resources/setup.sh"
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    @Test("make keys makes an Ed25519 key pair, mode 0600, once; a machine with it authorized lets the master in")
    func makeKeys() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-keys")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = "\(directory)/resalloc.pem"
        try await Testbed.run(["make", "-s", "-C", Self.repositoryRoot, "keys", "KEY=\(key)"])
        let publicKey = try String(contentsOfFile: key + ".pub", encoding: .utf8)
        #expect(publicKey.hasPrefix("ssh-ed25519 "))
        // The private half is the one the public half came from, as ssh-keygen reads it.
        let derived = try await Testbed.run(["ssh-keygen", "-y", "-f", key])
        #expect(publicKey.hasPrefix(derived.trimmingCharacters(in: .newlines)))
        for path in [key, key + ".pub"] {
            #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600, "\(path)")
        }
        // A second run keeps the key: replacing it would lock the master out of every machine.
        let privateKey = try Data(contentsOf: URL(fileURLWithPath: key))
        try await Testbed.run(["make", "-s", "-C", Self.repositoryRoot, "keys", "KEY=\(key)"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: key)) == privateKey)

        // Authorized through setup.sh (what `scripts/testbed authorize` runs), the key logs in.
        try await testbed.control("authorize", key + ".pub")
        defer { Self.unauthorize(publicKey, login: testbed.machine("m1").login) }
        let machine = testbed.machine("m1")
        let connection = try await SSHConnection.connect(
            to: SSHEndpoint(host: machine.host, port: machine.port, user: machine.login, privateKeyPath: key)
        )
        defer { Task { await connection.close() } }
        let result = try await connection.execute("id -un && docker version --format '{{.Server.Version}}'")
        #expect(result.exitStatus == 0, "\(result.stderrText)")
        #expect(result.stdoutText.hasPrefix("\(machine.login)\n"))
    }

    @Test("setup.sh creates the login once and authorizes each key once; RSA keys, bad names and missing files change nothing")
    func setupScript() async throws {
        let testbed = try await Testbed.shared()
        let login = "resalloc-setup-t"
        Self.removeUser(login)
        defer { Self.removeUser(login) }

        let help = try await Subprocess.run([Self.setupScript, "--help"])
        #expect(help.status == 0)
        #expect(help.output.hasPrefix("Usage: setup.sh [--no-firewall] LOGIN PUBKEY"))
        #expect(try await Subprocess.run([Self.setupScript]).status == 2)

        let refusals: [([String], String)] = [
            ([login, testbed.keys["rsa"]! + ".pub"], "an RSA key cannot be used: libssh2 1.10 signs RSA with SHA-1"),
            (["Bad;name", testbed.keys["ed25519"]! + ".pub"], "'Bad;name' is not a valid login name"),
            (["-rf", testbed.keys["ed25519"]! + ".pub"], "'-rf' is not a valid login name"),
            ([login, "/nonexistent/key.pub"], "cannot read the public key file '/nonexistent/key.pub'"),
            ([login, testbed.keys["ed25519"]!], "does not look like an OpenSSH public key"),
        ]
        for (arguments, message) in refusals {
            let refused = try await Subprocess.run([Self.setupScript] + arguments)
            #expect(refused.status == 1, "\(arguments)")
            #expect(refused.errors.contains(message), "\(arguments): \(refused.errors)")
            #expect(try await Subprocess.run(["id", login]).status != 0, "\(arguments) created the user")
        }

        let ed25519 = try String(contentsOfFile: testbed.keys["ed25519"]! + ".pub", encoding: .utf8).trimmingCharacters(in: .newlines)
        let first = try await Subprocess.run([Self.setupScript, "--no-firewall", login, testbed.keys["ed25519"]! + ".pub"])
        #expect(first.status == 0, "\(first.errors)")
        #expect(first.output.contains("creating user \(login)"))
        #expect(first.output.contains("authorized the key for \(login)"))
        let home = try await Testbed.run(["sh", "-c", "getent passwd \"$1\" | cut -d: -f6", "sh", login]).trimmingCharacters(in: .newlines)
        let authorizedKeys = "\(home)/.ssh/authorized_keys"
        #expect(try String(contentsOfFile: authorizedKeys, encoding: .utf8) == ed25519 + "\n")
        #expect(try await Testbed.run(["stat", "-c", "%a %U", authorizedKeys, "\(home)/.ssh"]) == "600 \(login)\n700 \(login)\n")
        #expect(try await Testbed.run(["id", "-nG", login]).split(separator: " ").map { $0.trimmingCharacters(in: .newlines) }.contains("docker"))
        // No password and not locked ("*", where useradd leaves "!"): sshd refuses a locked account even with a good key.
        #expect(try await Testbed.run(["sh", "-c", "getent shadow \"$1\" | cut -d: -f2", "sh", login]) == "*\n")

        // Again, the same key from stdin: nothing to do, nothing changed.
        let again = try await Subprocess.run([Self.setupScript, "--no-firewall", login, "-"], input: Data((ed25519 + "\n").utf8))
        #expect(again.status == 0, "\(again.errors)")
        #expect(!again.output.contains("creating"))
        #expect(!again.output.contains("authorized"))
        #expect(try String(contentsOfFile: authorizedKeys, encoding: .utf8) == ed25519 + "\n")

        // A second key is added beside the first.
        let ecdsa = try String(contentsOfFile: testbed.keys["ecdsa"]! + ".pub", encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(try await Subprocess.run([Self.setupScript, "--no-firewall", login, testbed.keys["ecdsa"]! + ".pub"]).status == 0)
        #expect(try String(contentsOfFile: authorizedKeys, encoding: .utf8) == ed25519 + "\n" + ecdsa + "\n")

        // A password an operator locked on purpose is left as it is, with a warning.
        try await Testbed.run(["usermod", "-p", "!$6$salt$hash", login])
        let locked = try await Subprocess.run([Self.setupScript, "--no-firewall", login, testbed.keys["ecdsa"]! + ".pub"])
        #expect(locked.status == 0)
        #expect(locked.errors.contains("password is locked"))
        #expect(try await Testbed.run(["sh", "-c", "getent shadow \"$1\" | cut -d: -f2", "sh", login]) == "!$6$salt$hash\n")
    }

    /// Removes `publicKey` from the login's authorized_keys again, on this thread (for `defer`).
    /// The file is replaced whole by a rename: every test machine's sshd reads this one file for
    /// the shared login, and a rewrite in place would show them an empty file for a moment (a
    /// master logging in to another machine then was refused its key).
    static func unauthorize(_ publicKey: String, login: String) {
        let script =
            #"f=$(getent passwd "$1" | cut -d: -f6)/.ssh/authorized_keys; cp -p "$f" "$f.new" && grep -vxF "$2" "$f" > "$f.new"; mv -f "$f.new" "$f""#
        _ = try? Testbed.run(["sh", "-c", script, "sh", login, publicKey.trimmingCharacters(in: .newlines)]) as String
    }

    static func removeUser(_ login: String) {
        _ = try? Subprocess.runBlocking(["userdel", "--remove", login])
    }
}
