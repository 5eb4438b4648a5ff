import Crypto
import Foundation
import Store
import Testbed
import Testing

/// A master with its SSH gateway on, a user with an Ed25519 key registered, and stock OpenSSH.
struct GatewayFixture {
    let master: MasterProcess
    let cli: CLI
    let directory: String
    let key: String

    /// On m7, which only this suite uses, so that a refusal's "nothing opened" can be counted.
    static func start(resource: String = "FROM busybox", machine: String = "m7", serve extra: [String] = []) async throws -> GatewayFixture {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-gateway")
        let master = MasterProcess(
            databasePath: "\(directory)/resalloc.db",
            keyPath: testbed.keys["ed25519"]!,
            logPath: "\(directory)/master.log",
            sshPort: freeLoopbackPort(),
            extraArguments: extra
        )
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: resource, machine: testbed.machine(machine))
        let key = "\(directory)/id_ed25519"
        try await Testbed.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        try await cli.ok("key", "add", key + ".pub", "--name", "laptop")
        return GatewayFixture(master: master, cli: cli, directory: directory, key: key)
    }

    func stop() {
        master.kill9()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `ssh` with this fixture's key and known_hosts, non-interactive.
    func ssh(_ arguments: [String], key: String? = nil, stdin: Data = Data()) async throws -> Subprocess.Outcome {
        try await Subprocess.run(
            ["ssh"] + options(key: key) + ["-p", String(master.sshPort)] + arguments,
            environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": directory],
            input: stdin,
            timeout: .seconds(60)
        )
    }

    func options(key: String? = nil) -> [String] {
        [
            "-i", key ?? self.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UserKnownHostsFile=\(directory)/known_hosts", "-o", "ConnectTimeout=10",
        ]
    }

    func container(_ lease: Int = 1) throws -> String { "resalloc-\(try masterID(master.databasePath).prefix(8))-\(lease)" }
}

@Suite("The SSH gateway: ssh, scp, sftp and tunnels with stock OpenSSH", .serialized, .timeLimit(.minutes(5)))
struct GatewayTests {
    @Test(
        "exec: exit status, stdin through (binary), quoting kept, LANG, LC_* and a terminal's TERM passed, nothing else from the client's environment, no agent forwarded"
    )
    func exec() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        let status = try await gateway.ssh(["box@127.0.0.1", "echo out; echo err >&2; exit 7"])
        #expect(status.status == 7, "\(status.errors)")
        #expect(status.output == "out\n")
        #expect(status.errors.contains("err\n"))
        let quoted = try await gateway.ssh(["box@127.0.0.1", #"printf "%s|" "a b" 'c;d'"#])
        #expect(quoted.output == "a b|c;d|")
        let payload = try randomBytes(300_000)
        let piped = try await gateway.ssh(["box@127.0.0.1", "cat"], stdin: payload)
        #expect(piped.stdout == payload)
        let environment = try await gateway.ssh(["-o", "SetEnv=SECRET=x", "box@127.0.0.1", "echo $LANG; echo ${SECRET:-unset}"])
        #expect(environment.output == "C.UTF-8\nunset\n")
        // On a terminal: the client's TERM and its LC_* pass; an agent is not forwarded, although
        // the client has one and asks (-A).
        let agent = "\(gateway.directory)/agent.sock"
        let started = try await Subprocess.run(["ssh-agent", "-a", agent], environment: ["PATH": "/usr/bin:/bin"], timeout: .seconds(10))
        #expect(started.status == 0, "\(started.errors)")
        let agentPID = started.output.firstMatch(of: /SSH_AGENT_PID=(\d+)/).flatMap { Int32($0.1) }
        defer { if let agentPID { kill(agentPID, SIGTERM) } }
        let onTerminal = try await Subprocess.run(
            ["ssh"] + gateway.options() + [
                "-p", String(gateway.master.sshPort), "-tt", "-A", "-o", "SetEnv=LC_ALL=C.UTF-8", "box@127.0.0.1",
                "echo \"term=$TERM lc=$LC_ALL agent=${SSH_AUTH_SOCK:-none}\"",
            ],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory, "TERM": "vt220", "SSH_AUTH_SOCK": agent],
            timeout: .seconds(60)
        )
        #expect(onTerminal.output.contains("term=vt220 lc=C.UTF-8 agent=none"), "\(onTerminal.output) \(onTerminal.errors)")
    }

    @Test("Refused with nothing opened: an unknown key, a password, another user's lease, an unknown or deleted lease, one not running")
    func refusals() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        let testbed = try await Testbed.shared()
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        let stranger = testbed.keys["stranger"]!
        /// Refused as a wrong key is, and no session started on the machine meanwhile.
        func expectRefused(_ arguments: [String], key: String? = nil) async throws {
            let sessions = testbed.sshdLogLines("m7", containing: "Starting session")
            let refused = try await gateway.ssh(arguments, key: key)
            #expect(refused.status == 255, "\(arguments)")
            #expect(refused.errors.contains("Permission denied (publickey)"), "\(arguments): \(refused.errors)")
            #expect(testbed.sshdLogLines("m7", containing: "Starting session") == sessions, "\(arguments)")
        }
        try await expectRefused(["box@127.0.0.1", "true"], key: stranger)  // an unknown key
        try await expectRefused(["nosuchlease@127.0.0.1", "true"])  // an unknown lease
        try await expectRefused(["-o", "PreferredAuthentications=password,keyboard-interactive", "box@127.0.0.1", "true"])
        // Another user's lease: the same refusal as an unknown one.
        try await gateway.cli.ok("register", "eve", "eve-password-1")
        try await gateway.cli.ok("user", "approve", "eve")
        let eve = try CLI(server: gateway.cli.server)
        try await eve.ok("login", "eve", "eve-password-1")
        let eveKey = "\(gateway.directory)/eve"
        try await Testbed.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", eveKey])
        try await eve.ok("key", "add", eveKey + ".pub")
        try await expectRefused(["box@127.0.0.1", "true"], key: eveKey)
        // A lease that is not running (its image failed to build): refused the same way.
        try await gateway.cli.ok("resources", "create", "broken", "FROM busybox\nRUN exit 3")
        _ = try await gateway.cli.run(["lease", "create", "broken", "broken", "-q"])
        #expect(try await gateway.cli.ok("lease", "list").contains("failed"))
        try await expectRefused(["broken@127.0.0.1", "true"])
        // Deleted: refused too.
        try await gateway.cli.ok("lease", "delete", "box")
        try await expectRefused(["box@127.0.0.1", "true"])
        // An RSA key is refused at key add, with the reason and what to use.
        let rsa = try await gateway.cli.run(["key", "add", testbed.keys["rsa"]! + ".pub"])
        #expect(rsa.status == 1)
        #expect(rsa.stderr.contains("RSA keys cannot log in to the gateway") && rsa.stderr.contains("ssh-keygen -t ed25519"))
    }

    @Test("An interactive shell in a real terminal: typed effect in the container, stty size follows a resize, exit status back")
    func interactive() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        let testbed = try await Testbed.shared()
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        let tmux = try TmuxScreen(columns: 100, rows: 30)
        defer { tmux.close() }
        let ssh = (["ssh", "-tt"] + gateway.options() + ["-p", String(gateway.master.sshPort), "box@127.0.0.1"]).joined(separator: " ")
        try await tmux.type("\(ssh); echo EX''IT=$?")
        _ = try await tmux.waitFor("/ #")
        try await tmux.type("stty size; touch /typed-here; echo typed-\("$((6*7))")")
        #expect(try await tmux.waitFor("typed-42").contains("30 100"))
        try await tmux.resizeUntilShown(columns: 120, rows: 40)
        try await tmux.type("exit 5")
        _ = try await tmux.waitFor("EXIT=5")
        #expect(try await testbed.docker("m7", ["exec", try gateway.container(), "ls", "/typed-here"]) == "/typed-here\n")
        // Recorded as resalloc ssh's sessions are, with the resize, and whole by the time ssh exits.
        let recordings = URL(fileURLWithPath: gateway.master.databasePath).deletingLastPathComponent().appendingPathComponent("recordings").path
        let files = try FileManager.default.contentsOfDirectory(atPath: recordings).filter { $0.hasSuffix(".cast") }
        #expect(files.count == 1)
        let recording = try String(contentsOfFile: "\(recordings)/\(files.first ?? "")", encoding: .utf8)
        #expect(recording.contains("typed-42") && recording.contains(#", "r", "120x40"]"#), "\(recording.prefix(2000))")
    }

    @Test("sftp put and get, scp and rsync both ways, on an image with an sftp-server; a clear message on one without")
    func sftp() async throws {
        let gateway = try await GatewayFixture.start(resource: "FROM sftp-base")
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        let payload = try randomBytes(8_000_000)
        try payload.write(to: URL(fileURLWithPath: "\(gateway.directory)/up.bin"))
        let batch = "put \(gateway.directory)/up.bin /tmp/up.bin\nget /tmp/up.bin \(gateway.directory)/down.bin\n"
        let sftp = try await Subprocess.run(
            ["sftp"] + gateway.options() + ["-P", String(gateway.master.sshPort), "-b", "-", "box@127.0.0.1"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            input: Data(batch.utf8),
            timeout: .seconds(60)
        )
        #expect(sftp.status == 0, "\(sftp.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(gateway.directory)/down.bin")) == payload)
        let scp = try await Subprocess.run(
            ["scp"] + gateway.options() + ["-P", String(gateway.master.sshPort), "\(gateway.directory)/up.bin", "box@127.0.0.1:/tmp/scp.bin"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(60)
        )
        #expect(scp.status == 0, "\(scp.errors)")
        let testbed = try await Testbed.shared()
        let digest = SHA256.hash(data: payload).map { String(format: "%02x", $0) }.joined()
        #expect(try await testbed.docker("m7", ["exec", try gateway.container(), "sha256sum", "/tmp/scp.bin"]).hasPrefix(digest))
        let back = try await Subprocess.run(
            ["scp"] + gateway.options() + ["-P", String(gateway.master.sshPort), "box@127.0.0.1:/tmp/scp.bin", "\(gateway.directory)/back.bin"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(60)
        )
        #expect(back.status == 0, "\(back.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(gateway.directory)/back.bin")) == payload)

        // rsync -e ssh: a tree with modes, a symlink and a nested directory, there and back,
        // and a second run that sends only what changed.
        let tree = "\(gateway.directory)/tree"
        try FileManager.default.createDirectory(atPath: "\(tree)/nested", withIntermediateDirectories: true)
        try Data("run me\n".utf8).write(to: URL(fileURLWithPath: "\(tree)/script.sh"))
        try FileManager.default.setAttributes([.posixPermissions: 0o750], ofItemAtPath: "\(tree)/script.sh")
        try payload.prefix(1_000_000).write(to: URL(fileURLWithPath: "\(tree)/nested/data.bin"))
        try FileManager.default.createSymbolicLink(atPath: "\(tree)/link", withDestinationPath: "nested/data.bin")
        let shell = (["ssh"] + gateway.options() + ["-p", String(gateway.master.sshPort)]).joined(separator: " ")
        func rsync(_ arguments: String...) async throws -> Subprocess.Outcome {
            try await Subprocess.run(
                ["rsync", "-a", "--stats", "-e", shell] + arguments,
                environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
                timeout: .seconds(60)
            )
        }
        let there = try await rsync("\(tree)/", "box@127.0.0.1:/tmp/tree/")
        #expect(there.status == 0, "\(there.errors)")
        let listing = try await testbed.docker("m7", ["exec", try gateway.container(), "ls", "-l", "/tmp/tree", "/tmp/tree/nested"])
        #expect(listing.contains("-rwxr-x---"), "\(listing)")
        #expect(listing.contains("link -> nested/data.bin"), "\(listing)")
        try Data("run me again\n".utf8).write(to: URL(fileURLWithPath: "\(tree)/script.sh"))
        let again = try await rsync("\(tree)/", "box@127.0.0.1:/tmp/tree/")
        #expect(again.status == 0, "\(again.errors)")
        #expect(again.output.contains("Number of regular files transferred: 1"), "\(again.output)")
        let home = try await rsync("box@127.0.0.1:/tmp/tree/", "\(gateway.directory)/tree-back/")
        #expect(home.status == 0, "\(home.errors)")
        let compared = try await Subprocess.run(["diff", "-r", "--no-dereference", tree, "\(gateway.directory)/tree-back"], timeout: .seconds(30))
        #expect(compared.status == 0, "\(compared.output)")

        // An image without sftp-server says what to add.
        try await gateway.cli.ok("resources", "create", "bare", "FROM busybox")
        try await gateway.cli.ok("lease", "create", "bare", "bare", "-q")
        let bare = try await Subprocess.run(
            ["sftp"] + gateway.options() + ["-P", String(gateway.master.sshPort), "-b", "-", "bare@127.0.0.1"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            input: Data("ls\n".utf8),
            timeout: .seconds(60)
        )
        #expect(bare.status != 0)
        #expect(bare.errors.contains("this image has no sftp-server: add openssh-sftp-server"), "\(bare.errors)")
    }

    @Test("-L and -D reach the lease's own loopback; other hosts are refused without ending the session")
    func tunnels() async throws {
        let gateway = try await GatewayFixture.start(resource: "FROM busybox\nRUN mkdir /www && echo hello-through-ssh > /www/index.html")
        defer { gateway.stop() }
        let testbed = try await Testbed.shared()
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        try await testbed.docker("m7", ["exec", "-d", try gateway.container(), "httpd", "-f", "-p", "127.0.0.1:8000", "-h", "/www"])
        let local = freeLoopbackPort()
        let socks = freeLoopbackPort()
        let tunnel = try Subprocess.start(
            ["ssh"] + gateway.options() + [
                "-p", String(gateway.master.sshPort), "-N", "-L", "\(local):127.0.0.1:8000", "-D", String(socks), "box@127.0.0.1",
            ],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            stdout: .null,
            stderr: .file("\(gateway.directory)/tunnel.err")
        )
        defer { tunnel.kill9() }
        var body = ""
        for _ in 0..<50 {
            body = try await Subprocess.run(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(local)/"], timeout: .seconds(20)).output
            if !body.isEmpty { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(body == "hello-through-ssh\n")
        let viaSocks = try await Subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--socks5-hostname", "127.0.0.1:\(socks)", "http://127.0.0.1:8000/"],
            timeout: .seconds(20)
        )
        #expect(viaSocks.output == "hello-through-ssh\n", "\(viaSocks.errors)")
        let elsewhere = try await Subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--socks5-hostname", "127.0.0.1:\(socks)", "http://elsewhere.invalid/"],
            timeout: .seconds(20)
        )
        #expect(elsewhere.status != 0)
        #expect(tunnel.isRunning)
        #expect(
            try await Subprocess.run(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(local)/"], timeout: .seconds(20)).output
                == "hello-through-ssh\n"
        )
    }

    @Test("A killed client's process is ended in the container; the host key survives a restart; ssh-config works through ssh -F")
    func lifecycle() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        let testbed = try await Testbed.shared()
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        let container = try gateway.container()
        let processes = try await testbed.processes(in: container, on: "m7")
        let client = try Subprocess.start(
            ["ssh"] + gateway.options() + ["-p", String(gateway.master.sshPort), "box@127.0.0.1", "sleep 999"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            stdout: .null,
            stderr: .null
        )
        try await waitUntil(seconds: 15) { processes().contains("sleep 999") }
        try await SessionEndTests.waitForGuard(testbed, "m7", container)
        client.kill9()
        try await waitUntil(seconds: 5, "sleep 999 gone after its ssh was killed") { !processes().contains("sleep 999") }
        // A session that ends by itself leaves what it detached running, as sshd does.
        let detaching = try await Subprocess.run(
            ["ssh"] + gateway.options() + ["-p", String(gateway.master.sshPort), "box@127.0.0.1", "sleep 994 >/dev/null 2>&1 &"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(30)
        )
        #expect(detaching.status == 0, "\(detaching.errors)")
        try await waitUntil(seconds: 30, "the detaching session's end recorded") {
            try await AppDatabase(path: gateway.master.databasePath).events()
                .contains { $0.action == "gateway.session-closed" && $0.detail == "exit status 0" }
        }
        #expect(processes().contains("sleep 994"))

        // ssh-config: Host blocks that stock ssh uses as they are.
        // The gateway's key comes pinned: the first contact asks nothing under strict checking.
        let config = try await gateway.cli.ok("ssh-config")
        #expect(config.contains("Host box\n    HostName 127.0.0.1\n    Port \(gateway.master.sshPort)\n    User box\n"))
        let pinned = "\(gateway.cli.home)/.config/resalloc/known_hosts"
        #expect(config.contains("    UserKnownHostsFile \(pinned)\n    StrictHostKeyChecking yes\n"), "\(config)")
        let configPath = "\(gateway.directory)/ssh_config"
        try (config + "Host *\n    IdentityFile \(gateway.key)\n    IdentitiesOnly yes\n    BatchMode yes\n")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let viaConfig = try await Subprocess.run(
            ["ssh", "-F", configPath, "box", "echo via-config"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(30)
        )
        #expect(viaConfig.output == "via-config\n", "\(viaConfig.errors)")
        // Another key where the gateway's should be: refused.
        let genuine = try String(contentsOfFile: pinned, encoding: .utf8)
        let other = try String(contentsOfFile: testbed.keys["ed25519"]! + ".pub", encoding: .utf8).split(separator: " ").prefix(2)
        try genuine.replacingOccurrences(of: #"ssh-ed25519 \S+"#, with: other.joined(separator: " "), options: .regularExpression)
            .write(toFile: pinned, atomically: true, encoding: .utf8)
        let impostor = try await Subprocess.run(
            ["ssh", "-F", configPath, "box", "echo via-config"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(30)
        )
        #expect(impostor.status == 255 && impostor.errors.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "\(impostor.errors)")
        try genuine.write(toFile: pinned, atomically: true, encoding: .utf8)

        // The host key is the same after a restart: known_hosts still matches.
        let before = try String(contentsOfFile: "\(gateway.directory)/known_hosts", encoding: .utf8)
        gateway.master.terminate()
        _ = try await gateway.master.wait(timeout: .seconds(20))
        try await gateway.master.start()
        let again = try await Subprocess.run(
            ["ssh", "-F", configPath, "-o", "StrictHostKeyChecking=yes", "box", "echo same-key"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(30)
        )
        #expect(again.output == "same-key\n", "\(again.errors)")
        #expect(try String(contentsOfFile: "\(gateway.directory)/known_hosts", encoding: .utf8) == before)
        let mode = try FileManager.default.attributesOfItem(atPath: "\(gateway.directory)/gateway-host-key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test("After 30 connections from one address that did not log in, even a good key is refused before it is looked at; the events say so")
    func throttled() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        #expect(try await gateway.ssh(["box@127.0.0.1", "echo", "before"]).output == "before\n")
        let testbed = try await Testbed.shared()
        let stranger = (["ssh"] + gateway.options(key: testbed.keys["stranger"]!) + ["-p", String(gateway.master.sshPort)]).joined(separator: " ")
        let guesses = try await Subprocess.run(
            ["sh", "-c", "for i in $(seq 30); do \(stranger) box@127.0.0.1 true 2>/dev/null; done; true"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(120)
        )
        #expect(!guesses.timedOut)
        let refused = try await gateway.ssh(["box@127.0.0.1", "echo", "after"])
        #expect(refused.status == 255 && !refused.output.contains("after"), "\(refused.output) \(refused.errors)")
        let events = try await CLI.master("events", "--db", gateway.master.databasePath)
        #expect(events.stdout.contains("gateway.login-throttled"), "\(events.stdout)")
    }

    @Test("A user disabled while their connection stays open gets no new channel on it; their open session ends")
    func disabledOnOpenConnection() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        // One connection, shared by later commands (OpenSSH's multiplexing), holding a session.
        let socket = "\(gateway.directory)/mux"
        let shared = ["-o", "ControlPath=\(socket)"]
        let holder = try Subprocess.start(
            ["ssh"] + gateway.options() + shared + ["-o", "ControlMaster=yes", "-p", String(gateway.master.sshPort), "box@127.0.0.1", "sleep 300"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory]
        )
        defer { holder.kill9() }
        try await waitUntil(seconds: 30, "the shared connection") { FileManager.default.fileExists(atPath: socket) }
        #expect(try await gateway.ssh(shared + ["box@127.0.0.1", "echo", "before"]).output == "before\n")

        let disabled = try await CLI.master("user", "disable", "admin", "--db", gateway.master.databasePath)
        #expect(disabled.status == 0, "\(disabled.stderr)")
        let after = try await gateway.ssh(shared + ["box@127.0.0.1", "echo", "after"])
        #expect(after.status != 0 && !after.output.contains("after"), "a new channel opened for a disabled user: \(after.output)")
        _ = try await within(.seconds(15), "the disabled user's open session ends") { try await holder.wait(timeout: .seconds(15)) }
    }

    @Test("One user's ninth session on a machine is refused with a sentence on stderr; the eight go on")
    func sessionCap() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        #expect(try await gateway.ssh(["box@127.0.0.1", "true"]).status == 0, "the host key is known before eight connect at once")
        var held: [Subprocess] = []
        defer { for session in held { session.kill9() } }
        for _ in 0..<8 {
            held.append(
                try Subprocess.start(
                    ["ssh"] + gateway.options() + ["-p", String(gateway.master.sshPort), "box@127.0.0.1", "sleep 120"],
                    environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory]
                )
            )
        }
        let testbed = try await Testbed.shared()
        let container = try gateway.container()
        try await waitUntil(seconds: 60, "eight sleeps in the lease") {
            try await testbed.docker("m7", ["top", container]).components(separatedBy: "sleep 120").count - 1 == 8
        }
        let ninth = try await gateway.ssh(["box@127.0.0.1", "echo", "ninth"])
        #expect(ninth.status == 255, "\(ninth.status) \(ninth.output)")
        #expect(ninth.errors.contains("you have 8 sessions open on machine m7"), "\(ninth.errors)")
        #expect(held.filter { $0.isRunning }.count == 8)
    }

    @Test("Hardened as a public port: garbage and dropped handshakes affect no one, 6 attempts at most, 50 concurrent sessions")
    func hardening() async throws {
        // 50 sessions of one user on one machine: past serve's default share of a machine (8).
        let gateway = try await GatewayFixture.start(serve: ["--max-sessions-per-user", "64"])
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        // A lone newline, then a connection that stops mid-handshake, while a session runs.
        // busybox-static's nc (make deps installs it): no other netcat need be on the machine.
        let garbage = try await Subprocess.run(
            ["sh", "-c", "printf '\\n' | timeout 3 /bin/busybox nc 127.0.0.1 \(gateway.master.sshPort); exit 0"],
            timeout: .seconds(10)
        )
        #expect(garbage.output.hasPrefix("SSH-2.0-"), "the garbage reached the gateway: \(garbage.output) \(garbage.errors)")
        let dropped = try Subprocess.start(
            ["sh", "-c", "sleep 20 | /bin/busybox nc 127.0.0.1 \(gateway.master.sshPort)"],
            stdout: .null,
            stderr: .null
        )
        defer { dropped.kill9() }
        #expect(try await gateway.ssh(["box@127.0.0.1", "echo still-fine"]).output == "still-fine\n")
        #expect(dropped.isRunning, "the half-made connection was still open meanwhile")

        // Seven keys offered: the gateway closes the connection after the sixth attempt.
        var keys: [String] = []
        for index in 0..<7 {
            let path = "\(gateway.directory)/wrong\(index)"
            try await Testbed.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path])
            keys += ["-i", path]
        }
        let many = try await Subprocess.run(
            [
                "ssh", "-v", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "UserKnownHostsFile=\(gateway.directory)/known_hosts", "-p", String(gateway.master.sshPort),
            ] + keys + ["box@127.0.0.1", "true"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(30)
        )
        #expect(many.status == 255)
        let offered = many.errors.components(separatedBy: "Offering public key").count - 1
        // swift-nio-ssh answers each key's query with "accepts" and refuses the signed request
        // that follows: two attempts a key, so the sixth attempt is the third key's.
        #expect(offered == 3, "\(offered) keys were tried: six attempts, then the connection closed: \(many.errors.suffix(2000))")

        // 50 at once, started by one shell (not 50 blocked test threads).
        let ssh = (["ssh"] + gateway.options() + ["-p", String(gateway.master.sshPort)]).joined(separator: " ")
        let fifty = try await Subprocess.run(
            ["sh", "-c", "for i in $(seq 50); do \(ssh) box@127.0.0.1 \"echo $i\" > \(gateway.directory)/out.$i 2>&1 & done; wait"],
            environment: ["PATH": "/usr/bin:/bin", "HOME": gateway.directory],
            timeout: .seconds(150)
        )
        #expect(!fifty.timedOut)
        let results = try (1...50).map { try String(contentsOfFile: "\(gateway.directory)/out.\($0)", encoding: .utf8) }
        #expect(results == (1...50).map { "\($0)\n" })
    }

    @Test("Remote forwarding is refused without ending the session; a connection that does not log in within 30 s is closed")
    func refusedRequestsAndLoginDeadline() async throws {
        let gateway = try await GatewayFixture.start()
        defer { gateway.stop() }
        try await gateway.cli.ok("lease", "create", "box", "box", "-q")
        let remote = try await gateway.ssh(["-o", "ExitOnForwardFailure=no", "-R", "0:127.0.0.1:9", "box@127.0.0.1", "echo still-here"])
        #expect(remote.status == 0, "\(remote.errors)")
        #expect(remote.output == "still-here\n")

        // A client that connects and never logs in: closed by the gateway at its deadline.
        let start = ContinuousClock.now
        let port = gateway.master.sshPort
        let closedByServer = try await onOwnThread { try SilentConnection(port: port).closedByPeer(within: 45) }
        let waited = ContinuousClock.now - start
        #expect(closedByServer, "the gateway kept a connection that never logged in")
        #expect(waited >= .seconds(29) && waited < .seconds(45), "\(waited)")
    }
}
