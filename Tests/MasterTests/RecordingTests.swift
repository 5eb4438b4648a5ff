import Core
import Foundation
import Logging
import NIOCore
import ResallocAPI
import ResallocClient
import Synchronization
import Testbed
import Testing

@Suite("Session recordings", .timeLimit(.minutes(3)))
struct RecordingTests {
    /// Runs an interactive session that types `lines`, one every 300 ms; the bytes it showed and its status.
    static func session(_ port: Int, lease: String, lines: [String]) async throws -> (seen: [UInt8], status: Int32) {
        var client = ResallocClient(server: "http://127.0.0.1:\(port)", token: nil)
        client.token = try await client.login("admin", password: "admin-password").token
        let (input, feed) = AsyncStream.makeStream(of: ShellInput.self)
        let typing = Task {
            for line in lines {
                try? await Task.sleep(for: .milliseconds(300))
                feed.yield(.bytes(Array(line.utf8)))
            }
        }
        defer { typing.cancel() }
        let seen = Mutex<[UInt8]>([])
        let status = try await ShellSession(client: client).run(
            lease: lease,
            start: ShellStart(tty: true, term: "xterm", columns: 80, rows: 24, command: nil),
            input: input
        ) { stream, buffer in
            if stream == .stdout { seen.withLock { $0 += Array(buffer: buffer) } }
        }
        feed.finish()
        return (seen.withLock { $0 }, status)
    }

    /// The recordings beside the database. A session's recording is whole before its client gets
    /// the exit status, so no wait is needed after a session.
    static func recordings(_ databasePath: String) async throws -> [String] {
        let directory = URL(fileURLWithPath: databasePath).deletingLastPathComponent().appendingPathComponent("recordings").path
        return try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".cast") }.map { "\(directory)/\($0)" }
    }

    @Test("A recording stops at --record-max and says so, the session goes on to its end; GET /session/{id} streams it; the passes remove old ones")
    func capped() async throws {
        let smallRecordings: (inout TestArguments) -> Void = { $0.recordMax = 64 << 10 }
        try await withMaster(configure: smallRecordings) { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m1"))
            try await cli.ok("lease", "create", "box", "chatty", "-q")
            // 300 KB of output, then a line the user must still see.
            let (seen, status) = try await Self.session(
                api.client.port!,
                lease: "chatty",
                lines: ["head -c 300000 /dev/zero | tr '\\0' x; echo; echo after-the-$((1+1))-cut; exit 3\r"]
            )
            #expect(status == 3)
            #expect(String(decoding: seen, as: UTF8.self).contains("after-the-2-cut"), "the session went on")
            let file = try #require(try await Self.recordings(databasePath).first)
            let size = try #require(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
            #expect(size <= 64 << 10, "\(size) bytes")
            let text = try String(contentsOfFile: file, encoding: .utf8)
            #expect(text.contains("the recording stops here, at its limit of 65536 bytes"))
            #expect(!text.contains("after-the-2-cut"))
            let admin = try await api.login("admin", password: "admin-password", register: false)
            let id = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            let fetched = try await sendJSON(port: api.client.port!, .GET, "/session/\(id)", headers: [("token", admin)], body: nil)
            #expect(fetched.status == 200 && fetched.body.readableBytes == size)
            // Older than --keep-recordings: the next pass removes it.
            try FileManager.default.setAttributes([.modificationDate: Date() - 31 * 86400], ofItemAtPath: file)
            let pass = try await CLI.master("cleanup", "--db", databasePath, "--key", testbed.keys["ed25519"]!)
            #expect(pass.status == 0)
            #expect(FileManager.default.fileExists(atPath: file), "cron's cleanup does not know where recordings are")
            var server = try await Master(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!, logger: Logger(label: "recording-test"))
            server.recordDirectory = URL(fileURLWithPath: file).deletingLastPathComponent().path
            _ = await Reconciler(master: server).run(dryRun: false)
            await server.shutdown()
            #expect(!FileManager.default.fileExists(atPath: file), "the server's pass removed it")
        }
    }

    @Test("A resalloc ssh session is recorded in asciinema v2, mode 0600, and replays to the bytes the user saw; admins list and fetch it")
    func recorded() async throws {
        try await withMaster { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m1"))
            try await cli.ok("lease", "create", "box", "taped", "-q")
            let (seen, status) = try await Self.session(api.client.port!, lease: "taped", lines: ["echo hello-recorded \u{e9}t\u{e9}\r", "exit 4\r"])
            #expect(status == 4)
            #expect(String(decoding: seen, as: UTF8.self).contains("hello-recorded \u{e9}t\u{e9}"))

            let files = try await Self.recordings(databasePath)
            #expect(files.count == 1)
            let file = try #require(files.first)
            #expect((try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int) == 0o600)
            let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
            let header = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
            #expect(header["version"] as? Int == 2)
            #expect(header["width"] as? Int == 80 && header["height"] as? Int == 24)
            #expect(header["lease"] as? String == "taped" && header["user"] as? String == "admin")
            let events = try lines.dropFirst().map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [Any]) }
            #expect(events.allSatisfy { $0[1] as? String == "o" }, "input is not recorded unless asked")
            let times = events.compactMap { $0[0] as? Double }
            #expect(times == times.sorted())
            let replayed = events.compactMap { $0[2] as? String }.joined()
            #expect(Array(replayed.utf8) == seen, "the recording does not replay to what the user saw")

            // Admins list and fetch it, by API and from the server's shell; users may not.
            let admin = try await api.login("admin", password: "admin-password", register: false)
            let listed = try await api.call(.get, "/session?lease=taped", token: admin).list("Sessions")
            let id = try #require(listed.first?["Id"] as? String)
            #expect(file.hasSuffix("/\(id).cast"))
            let fetched = try await api.client.execute(uri: "/session/\(id)", method: .get, headers: [.init("token")!: admin])
            #expect(fetched.status == .ok)
            #expect(Data(buffer: fetched.body) == FileManager.default.contents(atPath: file))
            #expect(try await api.call(.get, "/session/..%2Fresalloc", token: admin).status == .notFound)
            let user = try await LeaseTests.user(api, "viewer", admin: admin)
            #expect(try await api.call(.get, "/session", token: user).status == .forbidden)
            #expect(try await CLI.master("sessions", "list", "--db", databasePath, "--user", "admin").stdout.contains(id))
            let shown = try await CLI.master("sessions", "show", id, "--db", databasePath)
            #expect(Data(shown.stdout.utf8) == FileManager.default.contents(atPath: file))
        }
    }

    @Test("serve --record-dir '' records nothing: the session runs, no file is written, none is listed")
    func off() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-record-off")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(
            databasePath: "\(directory)/resalloc.db",
            keyPath: testbed.keys["ed25519"]!,
            extraArguments: ["--record-dir", ""]
        )
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m1"))
        try await cli.ok("lease", "create", "box", "untaped", "-q")
        let (seen, status) = try await Self.session(master.port, lease: "untaped", lines: ["echo not-recorded\r", "exit 5\r"])
        #expect(status == 5)
        #expect(String(decoding: seen, as: UTF8.self).contains("not-recorded"))
        let written = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        #expect(!written.contains("recordings"), "\(written)")
        #expect(try await CLI.master("sessions", "list", "--db", master.databasePath).stdout.contains("untaped") == false)
        await testbed.removeContainers(ofMaster: try masterID(master.databasePath))
    }

    @Test("--record-input records what was typed too")
    func input() async throws {
        try await withMaster(configure: { $0.recordInput = true }, Self.typedSession)
    }

    @Sendable static func typedSession(_ api: API, _ testbed: Testbed, _ databasePath: String) async throws {
        let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m1"))
        try await cli.ok("lease", "create", "box", "typed", "-q")
        _ = try await Self.session(api.client.port!, lease: "typed", lines: ["echo typed-here\r", "exit\r"])
        let file = try #require(try await Self.recordings(databasePath).first)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.contains(#", "i", "echo typed-here\r"]"#), "\(text)")
    }
}
