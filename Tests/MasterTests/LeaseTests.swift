import Foundation
import Testbed
import Testing

@Suite("Leases against real machines", .timeLimit(.minutes(3)))
struct LeaseTests {
    /// An admin with a busybox resource and machine m1; returns the admin's token.
    static func setUp(_ api: API, _ testbed: Testbed, machines: [String] = ["m1"], capacity: Int? = nil) async throws -> String {
        let admin = try await api.login("admin")
        let resource = try await api.call(.post, "/resource", token: admin, body: #"{"Name": "busybox", "File": "FROM busybox\n"}"#)
        #expect(resource.status == .created)
        for machine in machines {
            let added = try await api.addMachine(testbed, machine, token: admin, capacity: capacity)
            #expect(added.status == .created, "\(added.message)")
        }
        return admin
    }

    /// A second, approved user.
    static func user(_ api: API, _ name: String, admin: String) async throws -> String {
        _ = try await api.call(.post, "/register", body: api.json(["Name": name, "Password": "\(name)-password"]))
        _ = try await api.call(.post, "/user/\(name)/approve", token: admin)
        return try await api.login(name, password: "\(name)-password", register: false)
    }

    @Test("A user never sees or touches another user's lease")
    func crossUser() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await Self.setUp(api, testbed)
            let alice = try await Self.user(api, "alice", admin: admin)
            let bob = try await Self.user(api, "bob", admin: admin)
            #expect(try await api.call(.post, "/lease", token: alice, body: #"{"ResourceName": "busybox", "LeaseName": "box"}"#).status == .created)
            #expect(try await api.call(.get, "/lease", token: bob).list("Leases").isEmpty)
            #expect(try await api.call(.get, "/lease/box", token: bob).status == .notFound)
            #expect(try await api.call(.delete, "/lease", token: bob, body: #"{"Name": "box"}"#).status == .notFound)
            #expect(try await api.call(.get, "/lease/box?owner=alice", token: bob).status == .notFound)
            // The same name is bob's own to use.
            #expect(try await api.call(.post, "/lease", token: bob, body: #"{"ResourceName": "busybox", "LeaseName": "box"}"#).status == .created)
            let all = try await api.call(.get, "/lease?all=true", token: admin)
            #expect(Set(all.list("Leases").map { $0["Owner"] as? String ?? "" }) == ["alice", "bob"])
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).count == 2)
            for token in [alice, bob] {
                #expect(try await api.call(.delete, "/lease/box", token: token).status == .ok)
            }
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).isEmpty)
        }
    }

    @Test("Duplicate names are 409; of two concurrent creates of one name exactly one wins")
    func duplicates() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await Self.setUp(api, testbed)
            #expect(try await api.call(.post, "/resource", token: admin, body: #"{"Name": "busybox", "File": "FROM busybox\n"}"#).status == .conflict)
            #expect(try await api.addMachine(testbed, "m1", token: admin).status == .conflict)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "twin"}"#).status.code
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.sorted() == [201, 409])
            let again = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "twin"}"#)
            #expect(again.status == .conflict)
            #expect(again.message == "you already have a lease named twin")
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).count == 1)
            #expect(try await api.call(.delete, "/resource/busybox", token: admin).status == .conflict)
            #expect(try await api.call(.delete, "/machine/m1", token: admin).status == .conflict)
            #expect(try await api.call(.delete, "/machine/m1?force=true", token: admin).status == .ok)
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).isEmpty)
            #expect(try await api.call(.get, "/lease", token: admin).list("Leases").isEmpty)
        }
    }

    @Test("Unknown resource 404; no machine 503; a failing build 422 with its log, and nothing left running")
    func failures() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await api.login("admin")
            _ = try await api.call(
                .post,
                "/resource",
                token: admin,
                body: #"{"Name": "broken", "File": "FROM busybox\nRUN echo doomed && exit 7\n"}"#
            )
            _ = try await api.call(.post, "/resource", token: admin, body: #"{"Name": "busybox", "File": "FROM busybox\n"}"#)
            let unknown = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "nope", "LeaseName": "a"}"#)
            #expect(unknown.status == .notFound)
            #expect(unknown.message == "no resource nope")
            let empty = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "a"}"#)
            #expect(empty.status == .serviceUnavailable)

            #expect(try await api.addMachine(testbed, "m2", token: admin).status == .created)
            let broken = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "broken", "LeaseName": "b"}"#)
            #expect(broken.status == .unprocessableContent)
            #expect(broken.message.contains("doomed"))
            #expect(broken.message.contains("non-zero code: 7"))
            let listed = try await api.call(.get, "/lease", token: admin).list("Leases")
            #expect(listed.first { $0["Name"] as? String == "b" }?["State"] as? String == "failed")
            #expect(try await leaseContainers(testbed, "m2", master: try masterID(databasePath)).isEmpty)
            // A failed lease's name can be used again.
            _ = try await api.call(.post, "/resource", token: admin, body: #"{"Name": "fixed", "File": "FROM busybox\n"}"#)
            #expect(try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "fixed", "LeaseName": "b"}"#).status == .created)
            #expect(try await api.call(.delete, "/lease/b", token: admin).status == .ok)
        }
    }

    @Test("An image removed from the machine behind the master's back is built again, and the lease is made")
    func imageRemovedBehindTheMastersBack() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await api.login("admin", password: "admin-password")
            let marker = UUID().uuidString
            let dockerfile = api.json(["Name": "gone", "File": "FROM busybox\nRUN echo \(marker) > /id\n"])
            #expect(try await api.call(.post, "/resource", token: admin, body: dockerfile).status == .created)
            #expect(try await api.addMachine(testbed, "m4", token: admin).status == .created)
            // Through the CLI, as a user makes leases.
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.ok("login", "admin", "admin-password")
            try await cli.ok("lease", "create", "gone", "first", "-q")
            let image = try await api.call(.get, "/resource", token: admin).list("Resources").first?["Image"] as? String
            // An operator prunes the machine: the lease's container and its image go.
            let master = try masterID(databasePath)
            try await testbed.docker("m4", ["rm", "-f"] + (try await leaseContainers(testbed, "m4", master: master)))
            try await testbed.docker("m4", ["rmi", try #require(image)])

            let second = try await cli.run(["lease", "create", "gone", "second", "-q"])
            #expect(second.status == 0, "\(second.stderr)")
            let container = try #require(try await leaseContainers(testbed, "m4", master: master).first)
            #expect(try await testbed.docker("m4", ["exec", container, "cat", "/id"]) == "\(marker)\n")
            for lease in ["first", "second"] { _ = try await api.call(.delete, "/lease/\(lease)", token: admin) }
            try await testbed.docker("m4", ["rmi", try #require(image)])
        }
    }

    @Test("Placement spreads leases over two machines")
    func placementSpreads() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await Self.setUp(api, testbed, machines: ["m1", "m2"], capacity: 2)
            for index in 0..<4 {
                let reply = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "spread\#(index)"}"#)
                #expect(reply.status == .created)
            }
            let master = try masterID(databasePath)
            #expect(try await leaseContainers(testbed, "m1", master: master).count == 2)
            #expect(try await leaseContainers(testbed, "m2", master: master).count == 2)
            let full = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "spread4"}"#)
            #expect(full.status == .serviceUnavailable)
            let machines = try await api.call(.get, "/machine", token: admin).list("Machines")
            #expect(machines.map { $0["ActiveLeases"] as? Int } == [2, 2])
            for index in 0..<4 { _ = try await api.call(.delete, "/lease/spread\(index)", token: admin) }
            #expect(try await leaseContainers(testbed, "m1", master: master).isEmpty)
            #expect(try await leaseContainers(testbed, "m2", master: master).isEmpty)
        }
    }

    @Test("Unreachable machines: 502 at add time and nothing stored; at lease time the next machine takes it; a changed host key is refused")
    func unreachable() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await Self.setUp(api, testbed, machines: ["m5", "m2"])
            let nowhere = try await api.call(.post, "/machine", token: admin, body: #"{"Name": "ghost", "Username": "resalloc", "IP": "127.0.0.99"}"#)
            #expect(nowhere.status == .badGateway)
            #expect(nowhere.message.contains("ghost"))
            #expect(!nowhere.message.contains("libssh2"))
            #expect(try await api.call(.get, "/machine", token: admin).list("Machines").count == 2)

            try await testbed.control("sshd-stop", "m5")
            defer { testbed.restartSSHD("m5") }
            // m5 sorts first at equal load; it is down, so m2 gets the lease.
            let moved = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "moved"}"#)
            #expect(moved.status == .created)
            #expect(moved.object("Lease")["Machine"] as? String == "m2")
            #expect(try await api.call(.delete, "/lease/moved", token: admin).status == .ok)

            // With m2 gone from the fleet, nothing can take it: 502, lease failed.
            #expect(try await api.call(.delete, "/machine/m2", token: admin).status == .ok)
            let stranded = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "stranded"}"#)
            #expect(stranded.status == .badGateway)
            #expect(stranded.message.contains("m5"))
            #expect(try await api.call(.get, "/lease/stranded", token: admin).object("Lease")["State"] as? String == "failed")

            // m5 comes back with another host key (reinstalled, or someone in the middle): refused.
            try await testbed.control("rekey", "m5")
            let impostor = try await api.call(.post, "/lease", token: admin, body: #"{"ResourceName": "busybox", "LeaseName": "impostor"}"#)
            #expect(impostor.status == .badGateway)
            #expect(impostor.message.contains("m5 presented another host key than the one pinned"), "\(impostor.message)")
            #expect(!impostor.message.contains("SHA256:"))
            #expect(try await leaseContainers(testbed, "m5").isEmpty)
            _ = databasePath
        }
    }
}
