import Foundation
import Store
import Testbed
import Testing

@Suite("What a session started ends when its client goes away", .timeLimit(.minutes(3)))
struct SessionEndTests {
    @Test(
        "resalloc ssh killed with -9: what it ran is gone from the container within seconds; a session that ends by itself leaves what it detached running"
    )
    func killedClient() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox") { api, cli, testbed, container in
            let processes = try await testbed.processes(in: container, on: "m2")

            let (command, _, _) = try cli.start("ssh", "box", "--", "sleep", "999")
            try await waitUntil(seconds: 15) { processes().contains("sleep 999") }
            // A session that has run for a second gets its lease's guard, which ends it at once.
            try await Self.waitForGuard(testbed, "m2", container)
            command.kill9()
            let killedAt = Date()
            try await waitUntil(seconds: 5, "sleep 999 gone after kill -9") { !processes().contains("sleep 999") }
            print("a killed resalloc ssh's process was gone after \(String(format: "%.1f", Date().timeIntervalSince(killedAt))) s")
            // A session that ends by itself ends nothing else, as with OpenSSH: what the user
            // detached from it stays, from a quick session (no guard) and from one its lease's
            // guard tracked, and so does a process of the container's own.
            try await testbed.docker("m2", ["exec", "-d", container, "sleep", "997"])
            #expect(try await cli.ok("ssh", "box", "--", "sh", "-c", "sleep 996 >/dev/null 2>&1 &") == "")
            #expect(try await cli.ok("ssh", "box", "--", "sh", "-c", "setsid sleep 995 >/dev/null 2>&1 & sleep 2") == "")
            // The master records a session's end once it has finished with it (ending what a
            // dropped session left takes place before): three ends, the killed one first.
            let admin = try await api.login("admin", password: "admin-password", register: false)
            try await waitUntil(seconds: 30, "the sessions' ends recorded") {
                let events = try await api.call(.get, "/event?limit=1000", token: admin).list("Events")
                return events.filter { $0["Action"] as? String == "shell.closed" }.count == 3
            }
            let left = processes()
            for detached in ["sleep 997", "sleep 996", "sleep 995"] { #expect(left.contains(detached), "\(left)") }
        }
    }

    @Test("The master killed with -9 mid-session: what the session ran is gone from the container within seconds")
    func killedMaster() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-session-end")
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m2"))
        try await cli.ok("lease", "create", "box", "orphaned", "-q")
        let container = try #require(try await AppDatabase(path: master.databasePath).leaseListings(ownerID: nil).first).lease
            .containerName(masterID: try masterID(master.databasePath))
        let processes = try await testbed.processes(in: container, on: "m2")

        let (command, _, _) = try cli.start("ssh", "orphaned", "--", "sleep", "998")
        defer { command.kill9() }
        try await waitUntil(seconds: 15) { processes().contains("sleep 998") }
        try await Self.waitForGuard(testbed, "m2", container)
        master.kill9()
        // The guard's SSH connection died with the master: its input ended, so it ended the session.
        try await waitUntil(seconds: 5, "sleep 998 gone after the master was killed") { !processes().contains("sleep 998") }
        try await testbed.docker("m2", ["rm", "-f", container])
    }

    /// Waits until the session guard of `container` runs on `machine` (a relay in its PID
    /// namespace, started once a session has lasted a second).
    static func waitForGuard(_ testbed: Testbed, _ machine: String, _ container: String) async throws {
        let id = try await testbed.docker(machine, ["inspect", "--format", "{{.Id}}", container]).trimmingCharacters(in: .whitespacesAndNewlines)
        // Under the whole suite a machine runs dozens of containers and starting one takes seconds.
        try await waitUntil(seconds: 30, "a session guard on \(container)") {
            let listed = try await testbed.docker(machine, ["ps", "--no-trunc", "--format", "{{.ID}}|{{.Command}}"]).split(separator: "\n")
            for line in listed where line.contains("tracked=") {
                let other = String(line.prefix { $0 != "|" })
                let mode = try? await testbed.docker(machine, ["inspect", "--format", "{{.HostConfig.PidMode}}", other])
                if mode?.hasPrefix("container:\(id)") == true || mode == "container:\(container)\n" { return true }
            }
            return false
        }
    }
}
