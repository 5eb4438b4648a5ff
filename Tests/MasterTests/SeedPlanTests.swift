import Foundation
import Testbed
import Testing

@Suite("The seed's test plan, step by step, over HTTP", .timeLimit(.minutes(3)))
struct SeedPlanTests {
    @Test("The Postman collection's order: register, login, POST /resource, /machine, /lease, GET /lease, DELETE /lease, GET /lease")
    func seedTestPlan() async throws {
        try await withMaster { api, testbed, databasePath in
            let master = try masterID(databasePath)
            // The seed's Postman collection registers with "secret": 6 characters, under our minimum of 8.
            let short = try await api.call(.post, "/register", body: #"{"Name": "seed", "Password": "secret"}"#)
            #expect(short.status == .badRequest)
            #expect(short.message == "a password needs 8 to 1024 characters")
            let registered = try await api.call(.post, "/register", body: #"{"Name": "seed", "Password": "seedpassword"}"#)
            #expect(registered.status == .created)
            #expect(registered.success)

            let login = try await api.call(.post, "/login", body: #"{"Name": "seed", "Password": "seedpassword"}"#)
            #expect(login.status == .ok)
            #expect(login.success)
            let token = try #require(login.json["Token"] as? String)
            #expect(token.count >= 43)  // 256 bits

            let resource = try await api.call(
                .post,
                "/resource",
                token: token,
                body: #"{"Name": "busybox", "File": "FROM busybox \nRUN echo seeded > /seed"}"#
            )
            #expect(resource.status == .created)
            #expect(resource.success)

            let machine = try await api.addMachine(testbed, "m1", token: token)
            #expect(machine.status == .created)
            #expect(machine.success)
            #expect(machine.object("Machine")["HostKey"] as? String == "ssh-ed25519 \(try await testbed.hostKeyFingerprint("m1"))")
            // CPUs and memory as the machine's own engine reports them.
            let engine = try await testbed.docker("m1", ["info", "--format", "{{.NCPU}} {{.MemTotal}}"])
            #expect("\(machine.object("Machine")["CPUs"] ?? "-") \(machine.object("Machine")["MemoryBytes"] ?? "-")\n" == engine)
            #expect(machine.object("Machine")["Healthy"] as? Bool == true)

            let lease = try await api.call(.post, "/lease", token: token, body: #"{"ResourceName": "busybox", "LeaseName": "mylease"}"#)
            #expect(lease.status == .created)
            #expect(lease.success)
            // The old Go master's CreateLeaseSuccess keys, at the top level, beside the Lease object.
            #expect(lease.json["Name"] as? String == "mylease")
            #expect(lease.json["Machine"] as? String == "m1")
            #expect(lease.json["Username"] as? String == "seed")
            #expect(lease.message == "lease mylease runs on m1")
            let container = try #require(lease.object("Lease")["Container"] as? String)
            #expect(try await leaseContainers(testbed, "m1", master: master) == [container])
            #expect(try await testbed.docker("m1", ["exec", container, "cat", "/seed"]) == "seeded\n")
            let labels = try await testbed.docker("m1", ["inspect", "--format", "{{json .Config.Labels}}", container])
            #expect(labels.contains("\"resalloc.owner\":\"seed\""))
            #expect(labels.contains("\"resalloc.master\":\"\(master)\""))

            let listed = try await api.call(.get, "/lease", token: token)
            #expect(listed.success)
            #expect(listed.list("Leases").map { $0["Name"] as? String } == ["mylease"])
            #expect(listed.list("Leases").first?["State"] as? String == "running")
            #expect(listed.list("Leases").first?["Machine"] as? String == "m1")
            // The master's default lifetime, 24 hours from now.
            let expires = try #require((listed.list("Leases").first?["ExpiresAt"] as? String).flatMap { try? Date($0, strategy: .iso8601) })
            #expect(abs(expires.timeIntervalSinceNow - 86400) < 120)

            let deleted = try await api.call(.delete, "/lease", token: token, body: #"{"LeaseName": "mylease"}"#)
            #expect(deleted.status == .ok)
            #expect(deleted.success)
            #expect(try await leaseContainers(testbed, "m1", master: master).isEmpty)

            let empty = try await api.call(.get, "/lease", token: token)
            #expect(empty.success)
            #expect(empty.list("Leases").isEmpty)
        }
    }
}
