import Foundation
import GRDB
import Store
import Testbed
import Testing

@Suite("Accounts, approval and roles", .timeLimit(.minutes(3)))
struct AccountTests {
    @Test("The first user is an admin; later ones wait for approval, by API or from the server's shell")
    func approvalFlow() async throws {
        try await withMaster { api, _, databasePath in
            let admin = try await api.login("admin")
            let registered = try await api.call(.post, "/register", body: #"{"Name": "bob", "Password": "bobpassword"}"#)
            #expect(registered.status == .created)
            #expect(registered.message.contains("approve"))
            let refused = try await api.call(.post, "/login", body: #"{"Name": "bob", "Password": "bobpassword"}"#)
            #expect(refused.status == .forbidden)
            #expect(refused.message.contains("approval"))

            let users = try await api.call(.get, "/user", token: admin)
            #expect(users.list("Users").map { "\($0["Name"]!):\($0["Role"]!):\($0["Status"]!)" } == ["admin:admin:active", "bob:user:pending"])
            let approved = try await api.call(.post, "/user/bob/approve", token: admin)
            #expect(approved.status == .ok)
            _ = try await api.login("bob", password: "bobpassword", register: false)

            // From the server's shell, on the database the running master uses.
            _ = try await api.call(.post, "/register", body: #"{"Name": "carol", "Password": "carolpassword"}"#)
            let approve = try await CLI.master("user", "approve", "carol", "--db", databasePath)
            #expect(approve.status == 0, "\(approve.stderr)")
            #expect(approve.stdout == "approved carol\n")
            _ = try await api.login("carol", password: "carolpassword", register: false)
            let nobody = try await CLI.master("user", "approve", "nobody", "--db", databasePath)
            #expect(nobody.status != 0)
            #expect(nobody.stderr.contains("nobody"))
            #expect(try await CLI.master("user", "admin", "carol", "--db", databasePath).status == 0)
            let listed = try await CLI.master("user", "list", "--db", databasePath)
            #expect(
                listed.stdout.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") } == [
                    "NAME ROLE STATUS", "admin admin active", "bob user active", "carol admin active",
                ]
            )
            #expect(try await api.call(.get, "/user", token: admin).list("Users").last?["Role"] as? String == "admin")
        }
    }

    @Test("A token lasts the master's --token-ttl and stops working once it is over")
    func tokenExpiry() async throws {
        let oneHour: (inout TestArguments) -> Void = { $0.tokenLifetime = .seconds(3600) }
        try await withMaster(configure: oneHour) { api, _, databasePath in
            let loggedIn = Date()
            let token = try await api.login("fred", password: "fredpassword")
            #expect(try await api.call(.get, "/lease", token: token).status == .ok)
            // The row the master wrote: an hour from the login, and only the token's SHA-256.
            let store = try AppDatabase(path: databasePath)
            let rows = try await store.writer.read { try Token.fetchAll($0) }
            #expect(rows.count == 1)
            #expect(rows.allSatisfy { abs($0.expiresAt.timeIntervalSince(loggedIn) - 3600) < 60 })
            #expect(rows.allSatisfy { $0.hash != token && $0.hash.count == 64 })
            // An hour later, as far as the database can tell (the wait itself is not worth an hour).
            _ = try await store.writer.write { try Token.updateAll($0, Token.Columns.expiresAt.set(to: Date() - 1)) }
            let expired = try await api.call(.get, "/lease", token: token)
            #expect(expired.status == .unauthorized)
            #expect(expired.message == "your token is invalid or has expired: run resalloc login")
            // Logging in again gives a fresh one.
            let fresh = try await api.login("fred", password: "fredpassword", register: false)
            #expect(try await api.call(.get, "/lease", token: fresh).status == .ok)
        }
    }

    @Test("Wrong passwords, missing and revoked tokens are 401 with a next step")
    func tokens() async throws {
        try await withMaster { api, _, _ in
            let token = try await api.login("dora", password: "dorapassword")
            let wrong = try await api.call(.post, "/login", body: #"{"Name": "dora", "Password": "nope-nope"}"#)
            #expect(wrong.status == .unauthorized)
            let unknown = try await api.call(.post, "/login", body: #"{"Name": "nobody", "Password": "nope-nope"}"#)
            #expect(unknown.status == .unauthorized)
            #expect(unknown.message == wrong.message)

            let anonymous = try await api.call(.get, "/lease")
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.message.contains("resalloc login"))
            #expect(try await api.call(.get, "/lease", token: "made-up").status == .unauthorized)
            #expect(try await api.call(.get, "/lease", token: token, bearer: true).status == .ok)

            #expect(try await api.call(.post, "/logout", token: token).status == .ok)
            let revoked = try await api.call(.get, "/lease", token: token)
            #expect(revoked.status == .unauthorized)
        }
    }

    @Test("Users cannot do what only admins may")
    func roles() async throws {
        try await withMaster { api, testbed, _ in
            let admin = try await api.login("admin")
            _ = try await api.call(.post, "/register", body: #"{"Name": "eve", "Password": "evepassword"}"#)
            _ = try await api.call(.post, "/user/eve/approve", token: admin)
            let eve = try await api.login("eve", password: "evepassword", register: false)
            let attempts: [(String, String, String?)] = [
                ("POST", "/resource", #"{"Name": "x", "File": "FROM busybox"}"#), ("DELETE", "/resource/x", nil),
                ("GET", "/machine", nil), ("POST", "/machine", #"{"Name": "m1", "Username": "resalloc", "IP": "127.0.0.11"}"#),
                ("DELETE", "/machine/m1", nil), ("GET", "/user", nil), ("POST", "/user/eve/admin", nil), ("GET", "/lease?all=true", nil),
            ]
            for (method, path, body) in attempts {
                let reply = try await api.call(.init(method)!, path, token: eve, body: body)
                #expect(reply.status == .forbidden, "\(method) \(path)")
                #expect(!reply.success)
            }
            #expect(try await api.call(.get, "/machine", token: admin).list("Machines").isEmpty)
            #expect(try await api.call(.get, "/resource", token: eve).status == .ok)
            _ = testbed
        }
    }
}
