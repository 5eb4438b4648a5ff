import AsyncHTTPClient
import Foundation
import Testbed
import Testing

/// One sample of a scrape, as Python's prometheus_client parses it.
struct MetricSample: Decodable, Equatable {
    let name: String
    let labels: [String: String]
    let value: Double
}

/// `GET /metrics` of a real master, parsed by a real Prometheus parser.
func scrape(_ port: Int, token: String? = nil) async throws -> (status: Int, samples: [MetricSample]) {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics")
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
    let body = try await response.body.collect(upTo: 16 << 20)
    guard response.status == .ok else { return (Int(response.status.code), []) }
    #expect(response.headers["Content-Type"].first?.hasPrefix("text/plain; version=0.0.4") == true)
    let python = "\(CLI.repositoryRoot)/.build/schemathesis-venv/bin/python"
    let program = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        print(json.dumps([{"name": s.name, "labels": s.labels, "value": s.value}
                          for family in text_string_to_metric_families(sys.stdin.read()) for s in family.samples]))
        """
    let parsed = try await Subprocess.run([python, "-c", program], input: Data(buffer: body), timeout: .seconds(30))
    guard parsed.status == 0 else {
        throw TestbedError("prometheus_client did not parse /metrics (scripts/api-check installs it): \(parsed.errors)")
    }
    return (200, try JSONDecoder().decode([MetricSample].self, from: Data(parsed.output.utf8)))
}

extension Array where Element == MetricSample {
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }?.value
    }
}

@Suite("Prometheus metrics", .timeLimit(.minutes(3)))
struct MetricsTests {
    @Test("/metrics parses as Prometheus text and follows leases, builds, remote commands, shells and requests; no user names")
    func followsTheFleet() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-metrics")
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox\nRUN echo \(UUID().uuidString) > /id", machine: testbed.machine("m2"))
        try await cli.ok("lease", "create", "box", "first", "-q")  // waits for the image's build
        try await cli.ok("lease", "create", "box", "second", "-q")  // image present

        var samples = try await scrape(master.port).samples
        #expect(samples.value("resalloc_leases", ["state": "running", "resource": "box"]) == 2)
        #expect(samples.value("resalloc_leases", ["state": "failed", "resource": "box"]) == 0)
        // The master builds the image ahead as soon as the machine is added: the first lease
        // waits for that build ("build"), or finds it done on a loaded host ("cold"); the second
        // finds the image.
        let built = samples.value("resalloc_lease_create_seconds_count", ["served": "build"]) ?? 0
        let cold = samples.value("resalloc_lease_create_seconds_count", ["served": "cold"]) ?? 0
        #expect(built + cold == 2 && cold >= 1, "build \(built), cold \(cold)")
        #expect(samples.value("resalloc_machine_up", ["machine": "m2"]) == 1)
        #expect(samples.value("resalloc_machine_active_leases", ["machine": "m2"]) == 2)
        #expect((samples.value("resalloc_machine_capacity", ["machine": "m2"]) ?? 0) >= 4)
        #expect((samples.value("resalloc_remote_command_seconds_count", ["machine": "m2", "command": "run"]) ?? 0) >= 2)
        #expect(samples.value("resalloc_pool_size", ["resource": "box"]) == 0)
        // Hummingbird's request metrics, by route and status.
        #expect(
            samples.contains { $0.name.hasPrefix("http_server_request_duration") && $0.labels.values.contains("/lease") },
            "\(samples.map(\.name))"
        )
        #expect(!samples.contains { $0.labels.values.contains("admin") }, "a user's name in a label")

        // An open shell is counted while it runs, and no more once its client has gone (a
        // long command, ended by killing the client, so that a loaded host cannot miss the window).
        let shell = try cli.start("ssh", "first", "--", "sleep", "60")
        defer { shell.process.kill9() }
        var open: Double?
        let asked = ContinuousClock.now
        while ContinuousClock.now - asked < .seconds(30) {
            open = try await scrape(master.port).samples.value("resalloc_sessions_open", ["kind": "shell"])
            if open == 1 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(open == 1)
        shell.process.kill9()
        let killed = ContinuousClock.now
        while ContinuousClock.now - killed < .seconds(30) {
            open = try await scrape(master.port).samples.value("resalloc_sessions_open", ["kind": "shell"])
            if open == 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(open == 0)

        try await cli.ok("lease", "delete", "second")
        samples = try await scrape(master.port).samples
        #expect(samples.value("resalloc_leases", ["state": "running", "resource": "box"]) == 1)
        #expect(samples.value("resalloc_machine_active_leases", ["machine": "m2"]) == 1)
        try await cli.ok("lease", "delete", "first")
    }

    @Test("--metrics-token or RESALLOC_METRICS_TOKEN: /metrics refuses a scrape without the bearer token, or with another")
    func token() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-metrics-token")
        let flag = MasterProcess(
            databasePath: "\(directory)/flag.db",
            keyPath: testbed.keys["ed25519"]!,
            extraArguments: ["--metrics-token", "scrape-secret"]
        )
        let variable = MasterProcess(
            databasePath: "\(directory)/variable.db",
            keyPath: testbed.keys["ed25519"]!,
            environment: ["RESALLOC_METRICS_TOKEN": "scrape-secret"]
        )
        defer {
            flag.kill9()
            variable.kill9()
        }
        for master in [flag, variable] {
            try await master.start()
            #expect(try await scrape(master.port).status == 401)
            #expect(try await scrape(master.port, token: "wrong").status == 401)
            let allowed = try await scrape(master.port, token: "scrape-secret")
            #expect(allowed.status == 200)
            #expect(allowed.samples.contains { $0.name.hasPrefix("http_server_request_duration") })
        }
    }
}
