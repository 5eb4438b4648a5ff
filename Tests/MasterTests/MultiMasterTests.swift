import Foundation
import NIOHTTP1
import Store
import Testbed
import Testing

/// Started and stopped from one task at a time; the two are started side by side once.
extension MasterProcess: @unchecked Sendable {}

/// Two real `resalloc-master serve` processes on one real PostgreSQL database (the testbed's),
/// with machines m1 and m2 at capacity 5 each.
struct TwoMasters {
    let url: String
    let a: MasterProcess
    let b: MasterProcess
    let token: String
    let masterID: String
    let testbed: Testbed

    /// A new database, both masters started at once on it (each schema version is applied once,
    /// and both serve), an admin, the resource `box` and the two machines.
    static func start(dockerfile: String = "FROM busybox", environmentOfA: [String: String] = [:]) async throws -> TwoMasters {
        let testbed = try await Testbed.shared()
        let server = try await Testbed.postgresURL()
        let name = "resalloc_multi_\(UUID().uuidString.prefix(8).lowercased())"
        try await Testbed.run(["psql", server, "-qc", "CREATE DATABASE \(name)"])
        var url = try #require(URLComponents(string: server))
        url.path = "/\(name)"
        let database = try #require(url.string)
        let key = testbed.keys["ed25519"]!
        let (a, b) = (
            MasterProcess(databasePath: database, keyPath: key, environment: environmentOfA), MasterProcess(databasePath: database, keyPath: key)
        )
        async let startedA: Void = a.start()
        async let startedB: Void = b.start()
        _ = try await (startedA, startedB)
        let applied = try await Testbed.run(["psql", database, "-tAc", "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version"])
        #expect(applied.trimmingCharacters(in: .whitespacesAndNewlines) == (1...Schema.latestVersion).map(String.init).joined(separator: ","))

        let token = try await Self.login(a.port)
        #expect(try await Self.call(b.port, .POST, "/resource", token, ["Name": "box", "File": dockerfile]).status == 201)
        for machine in ["m1", "m2"] {
            let found = testbed.machine(machine)
            let reply = try await Self.call(
                a.port,
                .POST,
                "/machine",
                token,
                ["Name": machine, "Username": found.login, "IP": found.host, "Capacity": 5]
            )
            #expect(reply.status == 201, "\(reply.message)")
        }
        let id = try await Testbed.run(["psql", database, "-tAc", "SELECT value FROM setting WHERE key = 'masterId'"])
        return TwoMasters(url: database, a: a, b: b, token: token, masterID: id.trimmingCharacters(in: .whitespacesAndNewlines), testbed: testbed)
    }

    func stop() {
        a.kill9()
        b.kill9()
    }

    /// This installation's lease containers on `machine`.
    func containers(_ machine: String) async throws -> [String] {
        try await leaseContainers(testbed, machine, master: masterID)
    }

    /// What must hold whatever happened: no machine over capacity, no owner with two live leases of
    /// one name, every running lease's container on its machine and no other.
    func checkInvariants() async throws {
        let over = try await Testbed.run([
            "psql", url, "-tAc",
            """
            SELECT m.name FROM machine m WHERE m.capacity < (SELECT COUNT(*) FROM lease l WHERE l."machineId" = m.id AND l.state IN
            ('creating', 'running', 'deleting')) + (SELECT COUNT(*) FROM "poolSlot" s WHERE s."machineId" = m.id)
            """,
        ])
        #expect(over.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "over capacity: \(over)")
        let duplicates = try await Testbed.run([
            "psql", url, "-tAc", #"SELECT name FROM lease WHERE state <> 'failed' GROUP BY "ownerId", name HAVING COUNT(*) > 1"#,
        ])
        #expect(duplicates.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "duplicate names: \(duplicates)")
        for machine in ["m1", "m2"] {
            let running = try await Testbed.run([
                "psql", url, "-tAc",
                #"SELECT COUNT(*) FROM lease l JOIN machine m ON m.id = l."machineId" WHERE m.name = '\#(machine)' AND l.state = 'running'"#,
            ])
            let present = try await containers(machine)
            #expect(Int(running.trimmingCharacters(in: .whitespacesAndNewlines)) == present.count, "\(machine): \(running) running, \(present)")
            #expect(present.count <= 5)
        }
    }

    /// Removes this installation's containers.
    func clean() async throws {
        for machine in ["m1", "m2"] {
            let left = try await containers(machine)
            if !left.isEmpty { try await testbed.docker(machine, ["rm", "-f"] + left) }
        }
    }

    static func login(_ port: Int) async throws -> String {
        _ = try await call(port, .POST, "/register", nil, ["Name": "admin", "Password": "admin-password"])
        let reply = try await call(port, .POST, "/login", nil, ["Name": "admin", "Password": "admin-password"])
        return try #require(reply.json["Token"] as? String)
    }

    struct Reply: @unchecked Sendable {
        let status: Int
        let json: [String: Any]
        var message: String { json["Message"] as? String ?? "" }
    }

    static func call(_ port: Int, _ method: HTTPMethod, _ path: String, _ token: String?, _ body: [String: Any]? = nil) async throws -> Reply {
        let reply = try await sendJSON(
            port: port,
            method,
            path,
            headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [],
            body: try body.map { try JSONSerialization.data(withJSONObject: $0) }
        )
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: reply.body))) as? [String: Any] ?? [:]
        return Reply(status: reply.status, json: json)
    }
}

@Suite("Several masters on one PostgreSQL", .serialized, .timeLimit(.minutes(5)))
struct MultiMasterTests {
    @Test("Racing through both masters: 30 creates on 10 places give 10 leases and 20 clear 503s, none over; one lease of a name and four 409s")
    func racingPlacement() async throws {
        let masters = try await TwoMasters.start()
        defer { masters.stop() }
        let ports = [masters.a.port, masters.b.port]
        let token = masters.token

        let byIndex = try await withThrowingTaskGroup(of: (Int, TwoMasters.Reply).self) { group in
            for index in 0..<30 {
                group.addTask {
                    (index, try await TwoMasters.call(ports[index % 2], .POST, "/lease", token, ["ResourceName": "box", "LeaseName": "r\(index)"]))
                }
            }
            return try await group.reduce(into: [Int: TwoMasters.Reply]()) { $0[$1.0] = $1.1 }
        }
        let replies = Array(byIndex.values)
        let statuses = replies.map(\.status)
        #expect(statuses.filter { $0 == 201 }.count == 10, "\(statuses.sorted())")
        #expect(statuses.filter { $0 == 503 }.count == 20, "\(statuses.sorted())")
        #expect(replies.filter { $0.status == 503 }.allSatisfy { $0.message.contains("no machine has room") })
        #expect(try await masters.containers("m1").count == 5)
        #expect(try await masters.containers("m2").count == 5)
        try await masters.checkInvariants()

        // With room again, five creates of one name racing through both: one lease, four 409s.
        for (index, reply) in byIndex where reply.status == 201 {
            _ = try await TwoMasters.call(ports[(index + 1) % 2], .DELETE, "/lease/r\(index)", token)
        }
        let sameName = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<5 {
                group.addTask {
                    try await TwoMasters.call(ports[index % 2], .POST, "/lease", token, ["ResourceName": "box", "LeaseName": "same"]).status
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(sameName.sorted() == [201, 409, 409, 409, 409], "\(sameName)")
        try await masters.checkInvariants()
        try await masters.clean()
    }

    @Test(
        "kill -9 of one master mid-creation: the other settles its leases within seconds; cron's cleanup waits its turn; a shell through one master on the other's lease"
    )
    func oneMasterDies() async throws {
        let masters = try await TwoMasters.start()
        defer { masters.stop() }
        // A lease made through b, reached through a.
        #expect(
            try await TwoMasters.call(masters.b.port, .POST, "/lease", masters.token, ["ResourceName": "box", "LeaseName": "kept"]).status == 201
        )
        let cli = try CLI(server: "http://127.0.0.1:\(masters.a.port)")
        try await cli.ok("login", "admin", "admin-password")
        #expect(try await cli.ok("ssh", "kept", "--", "cat", "/etc/hostname").isEmpty == false)

        // Creations through b on a new image with a slow build, then b dies mid-build.
        let fresh = "FROM busybox\nRUN sleep 20 && echo \(UUID().uuidString) > /other"
        #expect(try await TwoMasters.call(masters.a.port, .POST, "/resource", masters.token, ["Name": "slow", "File": fresh]).status == 201)
        let (port, token) = (masters.b.port, masters.token)
        let inflight = (0..<3).map { index in
            Task { try? await TwoMasters.call(port, .POST, "/lease", token, ["ResourceName": "slow", "LeaseName": "f\(index)"]) }
        }
        var creating = 0
        for _ in 0..<100 where creating < 3 {
            try await Task.sleep(for: .milliseconds(100))
            let counted = try await Testbed.run(["psql", masters.url, "-tAc", "SELECT COUNT(*) FROM lease WHERE state = 'creating'"])
            creating = Int(counted.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        #expect(creating == 3)
        masters.b.kill9()
        for task in inflight { _ = await task.value }
        // The surviving master notices within a heartbeat or two and fails what b left.
        let killed = ContinuousClock.now
        var states = ""
        while ContinuousClock.now - killed < .seconds(60) {
            states = try await Testbed.run(["psql", masters.url, "-tAc", "SELECT name || ':' || state FROM lease ORDER BY name"])
            if states.split(separator: "\n").map(String.init) == ["f0:failed", "f1:failed", "f2:failed", "kept:running"] { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(states.split(separator: "\n").map(String.init) == ["f0:failed", "f1:failed", "f2:failed", "kept:running"], "\(states)")
        print("the surviving master settled the dead one's leases \(ContinuousClock.now - killed) after the kill")

        // While another pass holds the lock, cron's cleanup says so and does nothing.
        let holder = try Subprocess.start(
            ["psql", masters.url, "-qc", "SELECT pg_advisory_lock(\(0x7265_7361_6c6c_6f64)); SELECT pg_sleep(4)"],
            stdout: .null,
            stderr: .null
        )
        defer { holder.kill9() }
        var held = false
        for _ in 0..<100 where !held {
            // A lock another session holds: trying it here fails (and this session's own try ends with it).
            held = try await Testbed.run(["psql", masters.url, "-tAc", "SELECT pg_try_advisory_lock(\(0x7265_7361_6c6c_6f64))"]).hasPrefix("f")
            if !held { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(held)
        let cleanup = [CLI.masterBinary, "cleanup", "--db", masters.url, "--key", masters.testbed.keys["ed25519"]!]
        let waited = try await Subprocess.run(cleanup, timeout: .seconds(60))
        #expect(waited.status == 0 && waited.output == "another cleanup is running; nothing to do\n", "\(waited.output) \(waited.errors)")
        // A backend inside a statement keeps its lock until the statement ends: let it end.
        try await holder.wait(timeout: .seconds(30))
        let done = try await Subprocess.run(cleanup, timeout: .seconds(120))
        #expect(done.status == 0 && done.output.contains("machines 2 ok / 0 down"), "\(done.output) \(done.errors)")
        try await masters.checkInvariants()
        try await masters.clean()
    }

    @Test("Leases asked through both masters at once of an image neither machine has: one build per machine among the two masters")
    func sharedBuilds() async throws {
        let masters = try await TwoMasters.start()
        defer { masters.stop() }
        // Made through a: a builds it ahead on both machines; b's leases wait for those builds.
        let slow = "FROM busybox\nRUN sleep 3 && echo \(UUID().uuidString) > /id"
        #expect(try await TwoMasters.call(masters.a.port, .POST, "/resource", masters.token, ["Name": "shared", "File": slow]).status == 201)
        let (a, b, token) = (masters.a.port, masters.b.port, masters.token)
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<8 {
                group.addTask {
                    let reply = try await TwoMasters.call(
                        index % 2 == 0 ? a : b,
                        .POST,
                        "/lease",
                        token,
                        ["ResourceName": "shared", "LeaseName": "s\(index)"]
                    )
                    return Int(reply.status)
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses == Array(repeating: 201, count: 8), "\(statuses)")
        var builds = 0.0
        for port in [a, b] {
            let samples = try await scrape(port).samples
            builds += ["m1", "m2"].map { samples.value("resalloc_remote_command_seconds_count", ["machine": $0, "command": "build"]) ?? 0 }.reduce(
                0,
                +
            )
        }
        #expect(builds == 2, "\(builds) builds of one image on two machines")
        try await masters.checkInvariants()
        try await masters.clean()
    }

    @Test("A master whose clock is 30 s ahead judges the other's heartbeats by the database's clock: it fails none of its work")
    func skewedClock() async throws {
        // a's process clock runs 30 s ahead (a test-only override); its heartbeats are three
        // intervals of 5 s, so by its own clock b would look dead at once.
        let masters = try await TwoMasters.start(environmentOfA: ["RESALLOC_TEST_CLOCK_SKEW": "30"])
        defer { masters.stop() }
        let slow = "FROM busybox\nRUN sleep 12 && echo \(UUID().uuidString) > /other"
        #expect(try await TwoMasters.call(masters.a.port, .POST, "/resource", masters.token, ["Name": "slow", "File": slow]).status == 201)
        // b builds for 12 s: a's watch looks at b's heartbeat twice or more meanwhile, and so
        // does a cron's cleanup on a host whose clock is as far ahead.
        let (port, token) = (masters.b.port, masters.token)
        let creation = Task { try await TwoMasters.call(port, .POST, "/lease", token, ["ResourceName": "slow", "LeaseName": "built"]) }
        try await waitUntil(seconds: 60, "the lease being created") {
            try await Testbed.run(["psql", masters.url, "-tAc", "SELECT state FROM lease"]).hasPrefix("creating")
        }
        let skewed = ProcessInfo.processInfo.environment.merging(["RESALLOC_TEST_CLOCK_SKEW": "30"]) { $1 }
        let cleanup = [CLI.masterBinary, "cleanup", "--db", masters.url, "--key", masters.testbed.keys["ed25519"]!]
        let pass = try await Subprocess.run(cleanup, environment: skewed, timeout: .seconds(60))
        #expect(pass.status == 0, "\(pass.output) \(pass.errors)")
        let created = try await creation.value
        #expect(created.status == 201, "\(created.message)")
        let states = try await Testbed.run(["psql", masters.url, "-tAc", "SELECT name || ':' || state FROM lease ORDER BY name"])
        #expect(states.trimmingCharacters(in: .whitespacesAndNewlines) == "built:running")
        let settled = try await Testbed.run(["psql", masters.url, "-tAc", "SELECT COUNT(*) FROM event WHERE action LIKE 'lease.settled%'"])
        #expect(settled.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        // Expiries too: a lease a makes for an hour ends an hour from the database's now.
        let extended = try await TwoMasters.call(masters.a.port, .POST, "/lease/built/extend", masters.token, ["TTL": "1h"])
        #expect(extended.status == 200, "\(extended.message)")
        let left = try await Testbed.run(["psql", masters.url, "-tAc", #"SELECT EXTRACT(EPOCH FROM ("expiresAt" - now()))::int FROM lease"#])
        #expect((3590...3600).contains(Int(left.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0), "\(left)")
        try await masters.checkInvariants()
        try await masters.clean()
    }

    @Test("The database going away: requests fail within seconds with a sentence, and are served again when it is back, no restart")
    func databaseAway() async throws {
        let testbed = try await Testbed.shared()
        // A server of its own (the testbed's is shared with other suites), halted and started again.
        let root = try makeTemporaryDirectory("resalloc-pg-away")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root)
        let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TESTBED_DIR": root, "TESTBED_POSTGRES_PORT": String(freeLoopbackPort())]
        let script = "\(CLI.repositoryRoot)/scripts/testbed"
        func testbedCommand(_ command: String) async throws -> String {
            let run = try await Subprocess.run([script, command], environment: environment, timeout: .seconds(60))
            guard run.status == 0 else { throw TestbedError("testbed \(command): \(run.errors)") }
            return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let url = try await testbedCommand("postgres-start")
        defer { _ = try? Subprocess.runBlocking([script, "postgres-stop"], environment: environment, timeout: .seconds(60)) }
        let master = MasterProcess(databasePath: url, keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let token = try await TwoMasters.login(master.port)
        #expect(try await TwoMasters.call(master.port, .GET, "/resource", token).status == 200)

        _ = try await testbedCommand("postgres-halt")
        let asked = ContinuousClock.now
        let away = try await TwoMasters.call(master.port, .GET, "/resource", token)
        let took = ContinuousClock.now - asked
        #expect(away.status == 503, "\(away.status) \(away.message)")
        #expect(away.message == "the master's database cannot be reached now; try again shortly")
        #expect(took < .seconds(12), "the refusal took \(took)")
        print("with the database down, a request was refused after \(took)")

        _ = try await testbedCommand("postgres-start")
        let back = ContinuousClock.now
        var status = 0
        while status != 200 && ContinuousClock.now - back < .seconds(60) {
            status = (try? await TwoMasters.call(master.port, .GET, "/resource", token).status) ?? 0
            if status != 200 { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(status == 200, "the master did not serve again within 60 s of the database's return")
        print("served again \(ContinuousClock.now - back) after the database came back")
    }
}
