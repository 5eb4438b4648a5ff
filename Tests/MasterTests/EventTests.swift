import Foundation
import GRDB
import Store
import Testbed
import Testing

@Suite("The audit trail", .timeLimit(.minutes(3)))
struct EventTests {
    @Test(
        "A full journey is in the trail in order, with who and from where; a user cannot read it; it pages; rows cannot be changed; cleanup purges old ones"
    )
    func journey() async throws {
        try await withMaster { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.ok("register", "admin", "admin-password")
            try await cli.ok("login", "admin", "admin-password")
            _ = try await api.call(.post, "/login", body: api.json(["Name": "admin", "Password": "wrong-password"]))
            _ = try await api.call(.post, "/register", body: api.json(["Name": "bob", "Password": "bob-password"]))
            try await cli.ok("user", "approve", "bob")
            try await cli.ok("resources", "create", "box", "FROM busybox")
            try await cli.ok("machine", "create", "m1", testbed.machine("m1").login, testbed.machine("m1").host)
            try await cli.ok("lease", "create", "box", "audited", "-q")
            try await cli.ok("lease", "extend", "audited", "--ttl", "2h")
            _ = try await cli.run(["ssh", "audited", "--", "sh", "-c", "exit 3"])
            try await cli.ok("lease", "delete", "audited")

            let admin = try await api.login("admin", password: "admin-password", register: false)
            let events = try await api.call(.get, "/event?limit=1000", token: admin).list("Events")
            let steps = events.map { "\($0["Actor"] as? String ?? "?") \($0["Action"] as? String ?? "?") \($0["Subject"] as? String ?? "?")" }
            #expect(
                steps == [
                    "admin user.registered admin",
                    "admin user.login-failed admin",
                    "bob user.registered bob",
                    "admin user.approved bob",
                    "admin resource.created box",
                    "admin machine.created m1",
                    "admin lease.created admin/audited",
                    "admin lease.extended admin/audited",
                    "admin shell.opened audited",
                    "admin shell.closed audited",
                    "admin lease.deleted admin/audited",
                ],
                "\(steps)"
            )
            #expect(events.allSatisfy { $0["Address"] as? String == "127.0.0.1" }, "\(events)")
            #expect(events.first { $0["Action"] as? String == "shell.closed" }?["Detail"] as? String == "exit status 3")
            let ids = events.compactMap { $0["Id"] as? Int }
            #expect(ids == ids.sorted())

            // Paged: three at a time, each page after the last Id of the one before.
            let first = try await api.call(.get, "/event?limit=3", token: admin).list("Events")
            let second = try await api.call(.get, "/event?limit=3&after=\(first.last?["Id"] as? Int ?? 0)", token: admin).list("Events")
            #expect((first + second).compactMap { $0["Id"] as? Int } == Array(ids.prefix(6)))
            #expect(try await api.call(.get, "/event?user=bob", token: admin).list("Events").count == 1)
            #expect(try await api.call(.get, "/event?limit=0", token: admin).status == .badRequest)

            let bob = try await api.login("bob", password: "bob-password", register: false)
            #expect(try await api.call(.get, "/event", token: bob).status == .forbidden)

            // The server's shell reads the same trail.
            let printed = try await CLI.master("events", "--db", databasePath, "--user", "admin", "--since", "1h")
            #expect(printed.status == 0, "\(printed.stderr)")
            #expect(printed.stdout.split(separator: "\n").count == 10, "\(printed.stdout)")
            #expect(printed.stdout.contains("lease.created  admin/audited  box on m1  127.0.0.1"), "\(printed.stdout)")

            // Append-only.
            let store = try AppDatabase(path: databasePath)
            #expect(throws: DatabaseError.self) {
                try store.writer.write { db in try db.execute(sql: "UPDATE event SET actor = 'someone else'") }
            }

            // Cleanup purges what is older than --keep-events.
            try await Task.sleep(for: .milliseconds(1500))
            let pass = try await cleanup(databasePath, testbed, "--keep-events", "1s")
            #expect(pass.status == 0, "\(pass.stderr)")
            #expect(try await store.events().isEmpty)
        }
    }
}
