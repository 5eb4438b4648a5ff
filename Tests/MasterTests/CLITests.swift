import Foundation
import Testbed
import Testing

/// The real `resalloc` binary, run as a user would, with its own HOME.
struct CLI {
    let server: String
    let home: String

    static var binary: String { "\(repositoryRoot)/.build/debug/resalloc" }
    static var masterBinary: String { "\(repositoryRoot)/.build/debug/resalloc-master" }
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    init(server: String) throws {
        self.server = server
        home = try makeTemporaryDirectory("resalloc-cli")
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs `resalloc arguments…` with `stdin` piped in (not a terminal), on a thread of its own:
    /// the in-process master answering the CLI needs Swift's executor free.
    /// Two minutes by default: a deadline for a command that hangs, not a measure of its speed (a
    /// first lease waits for its image's build, which a loaded CI machine makes slow). A test
    /// about a command's time bounds it itself.
    @discardableResult
    func run(_ arguments: [String], stdin: String = "", timeout: Duration = .seconds(120)) async throws -> Result {
        let outcome = try await Subprocess.run([Self.binary] + arguments, environment: environment, input: Data(stdin.utf8), timeout: timeout)
        if outcome.timedOut { throw TestbedError("resalloc \(arguments.joined(separator: " ")) did not finish within \(timeout): \(outcome.errors)") }
        return Result(status: outcome.status, stdout: outcome.output, stderr: outcome.errors)
    }

    var environment: [String: String] { ["HOME": home, "RESALLOC_URL": server, "PATH": "/usr/bin:/bin"] }

    /// Starts `resalloc arguments…` and returns at once, its stdout and stderr going to files in
    /// its HOME, to be read while it runs.
    func start(_ arguments: String...) throws -> (process: Subprocess, stdout: String, stderr: String) {
        let name = "\(home)/\(arguments.prefix(2).joined(separator: "-"))-\(UUID().uuidString.prefix(8))"
        let process = try Subprocess.start(
            [Self.binary] + arguments,
            environment: environment,
            stdout: .file(name + ".out"),
            stderr: .file(name + ".err")
        )
        return (process, name + ".out", name + ".err")
    }

    /// Runs `resalloc-master arguments…` as an operator would from the server's shell.
    static func master(_ arguments: String..., environment: [String: String] = ["PATH": "/usr/bin:/bin"]) async throws -> Result {
        try await master(arguments, environment: environment)
    }

    static func master(_ arguments: [String], environment: [String: String] = ["PATH": "/usr/bin:/bin"]) async throws -> Result {
        let outcome = try await Subprocess.run([masterBinary] + arguments, environment: environment, timeout: .seconds(60))
        if outcome.timedOut { throw TestbedError("resalloc-master \(arguments.joined(separator: " ")) did not finish within a minute") }
        return Result(status: outcome.status, stdout: outcome.output, stderr: outcome.errors)
    }

    /// Runs and requires exit status 0; returns stdout.
    @discardableResult
    func ok(_ arguments: String..., stdin: String = "") async throws -> String { try await ok(arguments, stdin: stdin) }

    @discardableResult
    func ok(_ arguments: [String], stdin: String = "") async throws -> String {
        let result = try await run(arguments, stdin: stdin)
        guard result.status == 0 else { throw TestbedError("resalloc \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)") }
        return result.stdout
    }

    /// Registers and logs in the first user (the admin), adds `resource` and `machine`.
    func setUpAdmin(resource: String, dockerfile: String, machine: Testbed.Machine) async throws {
        try await ok("register", "admin", "admin-password")
        try await ok("login", "admin", "admin-password")
        try await ok("resources", "create", resource, "-f", "-", stdin: dockerfile)
        try await ok("machine", "create", machine.name, machine.login, machine.host)
    }

    /// The environment line for a shell that runs the CLI.
    var exports: String {
        "export HOME=\(home) RESALLOC_URL=\(server) PATH=\(URL(fileURLWithPath: Self.binary).deletingLastPathComponent().path):/usr/bin:/bin"
    }
}

/// A tmux session: a real pseudo-terminal to type into and read from.
struct TmuxScreen {
    let name = "resalloc-test-\(UUID().uuidString.prefix(8))"

    init(columns: Int = 100, rows: Int = 30) throws {
        try Testbed.run(["tmux", "new-session", "-d", "-s", name, "-x", String(columns), "-y", String(rows), "sh"])
    }

    func type(_ text: String) async throws {
        try await Testbed.run(["tmux", "send-keys", "-t", name, "-l", text])
        try await Testbed.run(["tmux", "send-keys", "-t", name, "Enter"])
    }
    /// Presses a key by tmux's name for it (`C-c`, `Escape`).
    func key(_ key: String) async throws { try await Testbed.run(["tmux", "send-keys", "-t", name, key]) }
    func screen() async throws -> String { try await Testbed.run(["tmux", "capture-pane", "-p", "-t", name]) }
    func resize(columns: Int, rows: Int) async throws {
        try await Testbed.run(["tmux", "resize-window", "-t", name, "-x", String(columns), "-y", String(rows)])
    }

    /// Resizes the window, then types `stty size` until the shell in it reports the new size: the
    /// resize reaches the program as a signal, on its own schedule, and on a loaded machine a
    /// command typed at once can be read before it.
    ///
    /// What is tested is the way from the terminal to the container, not tmux: if tmux has not
    /// given its terminal the new size after a few looks, it is asked again. A size that the
    /// terminal has and the shell never shows fails, with what tmux and the kernel said.
    func resizeUntilShown(columns: Int, rows: Int) async throws {
        try await resize(columns: columns, rows: rows)
        let size = "\(rows) \(columns)"
        var notes: [String] = []
        for attempt in 1...20 {
            try await type("stty size")
            if (try? await waitFor(size, seconds: 1)) != nil { return }
            // Every fifth look, the window is resized again: tmux may not have resized its
            // terminal, or the SIGWINCH of one that it did was lost on the way to the container's
            // shell (a loaded CI: the kernel said 40 120, the shell kept saying 30 100).
            if attempt % 5 == 0 {
                let terminal = try await terminalSize()
                notes.append("after \(attempt) looks (the terminal said \(terminal)) resized again")
                try await resize(columns: columns, rows: rows - 1)
                try await resize(columns: columns, rows: rows)
            }
        }
        let window = try await Testbed.run(["tmux", "display-message", "-p", "-t", name, "#{window_width}x#{window_height}"])
        throw TestbedError(
            "stty size never said \(size); tmux's window: \(window.trimmingCharacters(in: .newlines)), its terminal's size: "
                + "\(try await terminalSize()) \(notes); the screen was:\n\(try await screen())"
        )
    }

    /// The size the kernel gives the window's terminal, as `stty size` prints it.
    private func terminalSize() async throws -> String {
        let tty = try await Testbed.run(["tmux", "display-message", "-p", "-t", name, "#{pane_tty}"]).trimmingCharacters(in: .newlines)
        return try await Testbed.run(["stty", "-F", tty, "size"]).trimmingCharacters(in: .newlines)
    }

    /// Waits until the screen shows `needle`, and no longer shows `gone` when given (what a
    /// `clear` typed with the command removes: an older prompt must not be taken for the new
    /// one); returns the screen.
    func waitFor(_ needle: String, without gone: String? = nil, seconds: Double = 60) async throws -> String {
        let deadline = Date() + seconds
        while Date() < deadline {
            let text = try await screen()
            if text.contains(needle), !(gone.map(text.contains) ?? false) { return text }
            try await Task.sleep(for: .milliseconds(100))
        }
        let unless = gone.map { " without '\($0)'" } ?? ""
        throw TestbedError("'\(needle)'\(unless) never showed; the screen was:\n\(try await screen())")
    }

    func close() { _ = try? Testbed.run(["tmux", "kill-session", "-t", name]) }
}

@Suite("The resalloc command line", .serialized, .timeLimit(.minutes(5)))
struct CLITests {
    @Test("The seed README's journey: register, login, resources create, machine create, lease create, ssh, lease delete")
    func journey() async throws {
        try await withMaster { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            let machine = testbed.machine("m1")
            #expect(try await cli.ok("register", "alice", "alice-password").contains("admin"))
            let loggedIn = try await cli.ok("login", "alice", "alice-password")
            #expect(loggedIn == "logged in as alice\n")
            let config = "\(cli.home)/.config/resalloc/config.json"
            #expect((try FileManager.default.attributesOfItem(atPath: config)[.posixPermissions] as? Int) == 0o600)
            #expect((try FileManager.default.attributesOfItem(atPath: "\(cli.home)/.config/resalloc")[.posixPermissions] as? Int) == 0o700)
            // A second user waits for the admin's approval.
            let bob = try CLI(server: cli.server)
            #expect(try await bob.ok("register", "bob", "bob-password").contains("an admin must approve"))
            let waiting = try await bob.run(["login", "bob", "bob-password"])
            #expect(waiting.status != 0)
            #expect(waiting.stderr.contains("approval"), "\(waiting.stderr)")
            #expect(try await cli.ok("user", "list").contains("pending"))
            try await cli.ok("user", "approve", "bob")
            #expect(try await bob.ok("login", "bob", "bob-password") == "logged in as bob\n")
            #expect(try await bob.run(["user", "approve", "bob"]).stderr.contains("admin"))

            // A file's path where the Dockerfile's text goes: told to use -f, and nothing is created.
            let path = "\(cli.home)/Dockerfile"
            #expect(FileManager.default.createFile(atPath: path, contents: Data("FROM busybox\n".utf8)))
            let slip = try await cli.run(["resources", "create", "busybox", path])
            #expect(slip.status != 0 && slip.stderr.contains("give the file with -f \(path)"), "\(slip.stderr)")
            #expect(!(try await cli.ok("resources", "list")).contains("busybox"))
            try await cli.ok("resources", "create", "busybox", #"FROM busybox \nRUN echo journey > /journey"#)
            let resources = try await cli.ok("resources", "list", "--json")
            #expect(resources.contains(#""File" : "FROM busybox \nRUN echo journey > \/journey""#))
            try await cli.ok("machine", "create", "m1", machine.login, machine.host)
            #expect(try await cli.ok("machines").contains("m1"))
            #expect(try await cli.ok("lease", "create", "busybox", "mylease", "--ttl", "2h").contains("runs on m1"))
            let table = try await cli.ok("leases")
            #expect(table.hasPrefix("NAME"))
            // Two hours left, to the minute, rounded: 2h within half a second of the start.
            #expect(table.contains("mylease") && table.contains("running") && (table.contains("1h59m") || table.contains(" 2h ")), "\(table)")
            #expect(try await cli.ok("ssh", "mylease", "--", "cat", "/journey") == "journey\n")

            let piped = try await cli.run(["ssh", "mylease", "--", "cat"], stdin: "hi from stdin\n")
            #expect(piped.stdout == "hi from stdin\n")
            #expect(piped.status == 0)
            let split = try await cli.run(["ssh", "mylease", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 4"])
            #expect(split.stdout == "to-out\n")
            #expect(split.stderr == "to-err\n")
            #expect(split.status == 4)

            try await cli.ok("lease", "delete", "mylease")
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).isEmpty)
            try await cli.ok("logout")
            let after = try await cli.run(["leases"])
            #expect(after.status != 0)
            #expect(after.stderr.contains("resalloc login"))
        }
    }

    @Test("Errors are one line on stderr with what to do next")
    func errors() async throws {
        let nowhere = try CLI(server: "http://127.0.0.1:1")
        let down = try await nowhere.run(["login", "x", "yyyyyyyy"])
        #expect(down.status != 0)
        #expect(down.stderr.contains("cannot reach the master at http://127.0.0.1:1"))
        #expect(down.stderr.split(separator: "\n").count == 1)
        let anonymous = try await nowhere.run(["leases"])
        #expect(anonymous.stderr == "resalloc: not logged in: run resalloc login NAME\n")
        let help = try await nowhere.run(["lease", "create", "--help"])
        #expect(help.stdout.contains("Example: resalloc lease create busybox mylease"))
    }

    @Test("An interactive shell on a real terminal: type, resize, idle through pings, exit 5, terminal restored; another user's lease refused")
    func interactive() async throws {
        // The master pings every 3 s: a client that did not answer would be cut off while idle. (A
        // ping is answered before the next one is due, or the session ends: 1 s was shorter than
        // this in-process master's stalls on a loaded CI machine.)
        let pingOften: (inout TestArguments) -> Void = { $0.webSocketPingEvery = .seconds(3) }
        try await withMaster(configure: pingOften) { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            let machine = testbed.machine("m1")
            try await cli.setUpAdmin(resource: "busybox", dockerfile: "FROM busybox", machine: machine)
            try await cli.ok("lease", "create", "busybox", "box")
            let container = "resalloc-\(try masterID(databasePath).prefix(8))-1"

            let tmux = try TmuxScreen(columns: 100, rows: 30)
            defer { tmux.close() }
            try await tmux.type("\(cli.exports); stty -g > \(cli.home)/before; resalloc ssh box; st=$?; stty -g > \(cli.home)/after; echo EXIT=$st")
            _ = try await tmux.waitFor("/ #")
            try await tmux.type("stty size; echo typed-\("$((6*7))"); touch /typed-here")
            #expect(try await tmux.waitFor("typed-42").contains("30 100"))
            try await tmux.resizeUntilShown(columns: 120, rows: 40)
            try await Task.sleep(for: .seconds(7))  // idle through two pings
            try await tmux.type("exit 5")
            _ = try await tmux.waitFor("EXIT=5")
            #expect(
                try String(contentsOfFile: "\(cli.home)/before", encoding: .utf8)
                    == (try String(contentsOfFile: "\(cli.home)/after", encoding: .utf8))
            )
            #expect(try await testbed.docker("m1", ["exec", container, "ls", "/typed-here"]) == "/typed-here\n")

            // Another user's lease: refused, and nothing of it runs in the lease. (m1's sshd log
            // is no witness: other suites open sessions on m1 meanwhile.)
            try await cli.ok("register", "mallory", "mallory-password")
            _ = try await api.call(.post, "/user/mallory/approve", token: try await api.login("admin", password: "admin-password", register: false))
            let other = try CLI(server: cli.server)
            try await other.ok("login", "mallory", "mallory-password")
            let refused = try await other.run(["ssh", "box", "--", "touch", "/mallory-was-here"])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("no lease box"))
            let listed = try await testbed.docker("m1", ["exec", container, "ls", "/"])
            #expect(!listed.contains("mallory-was-here"))
            try await cli.ok("lease", "delete", "box")
        }
    }

    @Test("Killing the master mid-session ends the CLI with a clear message and a restored terminal")
    func masterDies() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-kill")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!, logPath: "\(directory)/master.log")
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        defer { master.kill9() }
        try await master.start()
        try await cli.setUpAdmin(resource: "busybox", dockerfile: "FROM busybox", machine: testbed.machine("m2"))
        try await cli.ok("lease", "create", "busybox", "doomed")

        let tmux = try TmuxScreen()
        defer { tmux.close() }
        try await tmux.type("\(cli.exports); stty -g > \(cli.home)/before; resalloc ssh doomed; st=$?; stty -g > \(cli.home)/after; echo EX''IT=$st")
        _ = try await tmux.waitFor("/ #")
        master.kill9()
        let screen = try await tmux.waitFor("EXIT=")
        #expect(screen.contains("resalloc: cannot reach the master"))
        #expect(screen.contains("EXIT=255"))
        #expect(
            try String(contentsOfFile: "\(cli.home)/before", encoding: .utf8) == (try String(contentsOfFile: "\(cli.home)/after", encoding: .utf8))
        )
        // Leave m2 as we found it.
        let mine = try await leaseContainers(testbed, "m2", master: try masterID("\(directory)/resalloc.db"))
        if !mine.isEmpty { try await testbed.docker("m2", ["rm", "-f"] + mine) }
    }
}
