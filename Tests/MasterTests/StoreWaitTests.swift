import Foundation
import GRDB
import SSH
import Synchronization
import Testbed
import Testing

@Suite("The master while SQLite makes it wait", .timeLimit(.minutes(2)))
struct StoreWaitTests {
    @Test("While another process holds the database's write lock, requests that write wait for it and those that only read are answered at once")
    func heldWriteLock() async throws {
        // The real resalloc-master, whose tasks run on NIO's event loops: a thread that waits on
        // SQLite there holds up every connection on its loop.
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-store-wait")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        // Every request comes from a CLI process of its own, so that nothing in this test
        // process can delay them.
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.ok("register", "admin", "admin-password")
        try await cli.ok("login", "admin", "admin-password")
        let dockerfile = "\(directory)/Dockerfile"
        try "FROM busybox\n".write(toFile: dockerfile, atomically: true, encoding: .utf8)
        let databasePath = master.databasePath
        do {
            let release = try await Self.holdWriteLock(databasePath).release
            // More resources created (each a write) than this host has cores wait for the lock...
            let writers = try (1...4).map { try cli.start("resources", "create", "r\($0)", "-f", dockerfile).process }
            // The four are in the master, waiting, before the read is timed.
            try await waitUntil(seconds: 30, "four writes waiting in the master") {
                try await scrape(master.port).samples.value("http_server_active_requests", ["http_request_method": "POST"]) ?? 0 >= 4
            }
            // ...and meanwhile a read, which SQLite's WAL lets through, is answered without them.
            // A master whose event loops wait on SQLite answers it only when the writes give up
            // (SQLite's 10 s busy timeout). Timed by the shell that runs it, not by this busy
            // test process.
            let timed = try await Subprocess.run(
                [
                    "sh", "-c",
                    #"s=$(date +%s%N); out=$("$0" resources list) || exit 1; e=$(date +%s%N); printf '%s\nTOOK %s\n' "$out" $(((e - s) / 1000000))"#,
                    CLI.binary,
                ],
                environment: cli.environment,
                timeout: .seconds(60)
            )
            #expect(timed.status == 0)
            let took = Int(timed.output.split(separator: "\n").last { $0.hasPrefix("TOOK ") }?.dropFirst(5) ?? "") ?? .max
            #expect(!timed.output.contains("r1"))
            #expect(took < 5000, "resalloc resources list took \(took) ms while four writes waited on SQLite's lock")
            // Once the lock is let go of, the writes go through.
            release()
            for writer in writers { #expect(try await writer.wait(timeout: .seconds(30)) == 0) }
            print("a read while four writes waited on the lock took \(took) ms")
            let after = try await cli.ok("resources", "list")
            #expect(["r1", "r2", "r3", "r4"].allSatisfy { after.contains($0) })
        }
    }

    @Test("While another process holds the database's write lock, an open resalloc ssh session echoes what is typed")
    func shellEchoesUnderLock() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-store-echo")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m2"))
        try await cli.ok("lease", "create", "box", "box", "-q")
        do {
            let (ssh, input, output) = try Subprocess.startPiped([CLI.binary, "ssh", "box", "--", "cat"], environment: cli.environment)
            defer { ssh.kill9() }
            let echoed = Mutex("")
            try DedicatedThread.start(named: "echo reader") {
                var buffer = [UInt8](repeating: 0, count: 4096)
                while case let count = read(output.fileDescriptor, &buffer, buffer.count), count > 0 {
                    echoed.withLock { $0 += String(decoding: buffer[..<count], as: UTF8.self) }
                }
            }
            input.write(Data("before\n".utf8))
            try await waitUntil(seconds: 30, "the session's first echo") { echoed.withLock { $0.contains("before") } }

            // The session writes to the database on its way (its lease's last activity, its end's
            // event); those wait for the lock, and nothing else that carries the session does.
            let holder = try await Self.holdWriteLock(master.databasePath)
            defer { holder.release() }
            input.write(Data("during\n".utf8))
            try await waitUntil(seconds: 15, "the echo while the lock is held") { echoed.withLock { $0.contains("during") } }
            #expect(!holder.released(), "the lock was let go of before the echo came")
        }
        await testbed.removeContainers(ofMaster: try masterID(master.databasePath))
    }

    /// Another process's long write (a `resalloc-master cleanup`, say): the write lock of the
    /// database at `path`, held from a connection of the test's own, on a thread of its own,
    /// until `release` (or 20 s). Returns once it is held.
    static func holdWriteLock(_ path: String) async throws -> (release: @Sendable () -> Void, released: @Sendable () -> Bool) {
        let locked = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let done = Mutex(false)
        try DedicatedThread.start(named: "lock holder") {
            let other = try? DatabaseQueue(path: path)
            try? other?.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                _ = release.wait(timeout: .now() + 20)
                try db.execute(sql: "COMMIT")
            }
            done.withLock { $0 = true }
        }
        try await onOwnThread { locked.wait() }
        return ({ release.signal() }, { done.withLock { $0 } })
    }
}
