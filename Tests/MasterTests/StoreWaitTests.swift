import Foundation
import GRDB
import SSH
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
            // Another process's long write (a `resalloc-master cleanup`, say): the write lock,
            // held from a connection of the test's own until the test lets go of it.
            let locked = DispatchSemaphore(value: 0)
            let release = DispatchSemaphore(value: 0)
            try DedicatedThread.start(named: "lock holder") {
                let other = try? DatabaseQueue(path: databasePath)
                try? other?.writeWithoutTransaction { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    locked.signal()
                    _ = release.wait(timeout: .now() + 20)
                    try db.execute(sql: "COMMIT")
                }
            }
            try await onOwnThread { locked.wait() }
            // More resources created (each a write) than this host has cores wait for the lock...
            let writers = try (1...4).map { try cli.start("resources", "create", "r\($0)", "-f", dockerfile).process }
            try await Task.sleep(for: .seconds(1))
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
            release.signal()
            for writer in writers { #expect(try await writer.wait(timeout: .seconds(30)) == 0) }
            print("a read while four writes waited on the lock took \(took) ms")
            let after = try await cli.ok("resources", "list")
            #expect(["r1", "r2", "r3", "r4"].allSatisfy { after.contains($0) })
        }
    }
}
