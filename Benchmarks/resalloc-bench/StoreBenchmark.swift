import AsyncHTTPClient
import Foundation
import ResallocClient
import Testbed

/// `BENCH=store`: the lease round trip (create + delete, through the real master binary) on SQLite
/// against PostgreSQL, and 50 leases at once through one master against two masters sharing one
/// PostgreSQL database. Machines m1 and m2; the testbed's PostgreSQL server.
func storeBenchmark(testbed: Testbed, runs: Int) async throws {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("resalloc-master").path
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        print("\nstore benchmark skipped: no resalloc-master beside this benchmark (make bench builds it)")
        return
    }
    let server = try await Testbed.postgresURL()
    let directory = try makeTemporaryDirectory("resalloc-bench-store")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let name = "resalloc_bench_\(UUID().uuidString.prefix(8).lowercased())"
    try await Testbed.run(["psql", server, "-qc", "CREATE DATABASE \(name)"])
    defer { _ = try? Testbed.run(["psql", server, "-qc", "DROP DATABASE \(name) WITH (FORCE)"]) as String }
    var url = URLComponents(string: server)!
    url.path = "/\(name)"
    let postgres = url.string!

    var processes: [Subprocess] = []
    defer { for process in processes { process.kill9() } }
    func serve(_ database: String) async throws -> String {
        let port = freeLoopbackPort()
        processes.append(
            try Subprocess.start(
                [
                    binary, "serve", "--port", String(port), "--db", database, "--key", testbed.keys["ed25519"]!, "--log-level", "error",
                    "--ssh-port", "0", "--record-dir", "",
                ],
                stdout: .null,
                stderr: .null
            )
        )
        let address = "http://127.0.0.1:\(port)"
        for _ in 0..<200 {
            if (try? await HTTPClient.shared.execute(HTTPClientRequest(url: "\(address)/health"), timeout: .seconds(2)))?.status == .ok { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        return address
    }
    /// An admin with the resource box and the machines m1, m2 (capacity 100 each); its client.
    func setUp(_ address: String) async throws -> ResallocClient {
        var client = ResallocClient(server: address, token: nil)
        _ = try? await client.register("bench", password: "bench-password")
        client.token = try await client.login("bench", password: "bench-password").token
        _ = try? await client.createResource("box", dockerfile: "FROM busybox\n")
        for machine in ["m1", "m2"] {
            let found = testbed.machine(machine)
            _ = try? await client.createMachine(machine, login: found.login, address: found.host, capacity: 100)
        }
        return client
    }

    let sqlite = try await setUp(try await serve("\(directory)/bench.db"))
    let first = try await setUp(try await serve(postgres))
    let second = try await setUp(try await serve(postgres))
    print("\nstore benchmark: the real resalloc-master on SQLite and on PostgreSQL (\(runs) runs each, alternating)")
    var counter = 0
    func roundTrip(_ client: ResallocClient) async throws {
        counter += 1
        let lease = "rt\(counter)"
        _ = try await client.createLease("box", name: lease, ttl: nil)
        _ = try await client.deleteLease(lease)
    }
    let trips = try await measureInterleaved(
        [("lease create + delete, SQLite", { try await roundTrip(sqlite) }), ("lease create + delete, PostgreSQL", { try await roundTrip(first) })],
        runs: runs
    )
    printTable(trips)
    print(String(format: "PostgreSQL / SQLite round trip: %.2f", trips[1].median.milliseconds / trips[0].median.milliseconds))

    /// 50 leases at once, spread over `clients`; the time until all have answered, then deleted.
    func burst(_ clients: [ResallocClient], _ label: String) async throws -> Duration {
        let clock = ContinuousClock()
        let started = clock.now
        let failures = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<50 {
                let client = clients[index % clients.count]
                group.addTask { (try? await client.createLease("box", name: "\(label)\(index)", ttl: nil)) == nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        let took = clock.now - started
        if failures > 0 { print("\(label): \(failures) of 50 failed") }
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                let client = clients[index % clients.count]
                group.addTask { _ = try? await client.deleteLease("\(label)\(index)") }
            }
        }
        return took
    }
    var one: [Duration] = []
    var two: [Duration] = []
    for round in 0..<3 {
        one.append(try await burst([first], "one\(round)-"))
        two.append(try await burst([first, second], "two\(round)-"))
    }
    let oneSample = Sample(name: "50 leases at once, one master (PostgreSQL)", durations: one)
    let twoSample = Sample(name: "50 leases at once, two masters (PostgreSQL)", durations: two)
    printTable([oneSample, twoSample])
    print(
        String(
            format: "two masters / one: %.2f (on two cores, the same speed is the point: correctness)",
            twoSample.median.milliseconds / oneSample.median.milliseconds
        )
    )
}
