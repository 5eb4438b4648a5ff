import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ResallocAPI
import ResallocClient
import Server
import Testbed

/// Arguments for an in-process master on a loopback port, as `serve` would pass them.
struct BenchArguments: AppArguments {
    var host = "127.0.0.1"
    var port: Int
    var databasePath: String
    var keyPath: String
    /// Critical only: stopping the in-process master by cancellation logs errors that mean
    /// nothing here; a real failure reaches the benchmark as a client error.
    var logLevel: Logger.Level = .critical
    var bcryptCost: UInt8 = 10
    var reconcileEvery: Duration = .zero
    var reconcileFollowUp: Duration = .zero
    /// nil: sessions are recorded beside the database, as `serve` does by default; "": not.
    var recordDirectory: String?
    var sshPort = 0
}

/// Runs `body` with a master in this process on a loopback port (every request is real HTTP),
/// logged in as its admin, with a `busybox` resource and `machines` added. `body` gets the
/// client, the server's URL and the database's path.
func withBenchMaster(
    _ testbed: Testbed,
    machines: [String] = ["m1"],
    sshPort: Int = 0,
    recording: Bool = true,
    _ body: (ResallocClient, String, String) async throws -> Void
) async throws {
    let directory = try makeTemporaryDirectory("resalloc-bench")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let port = freeLoopbackPort()
    let databasePath = "\(directory)/bench.db"
    let app = try await buildApplication(
        BenchArguments(
            port: port,
            databasePath: databasePath,
            keyPath: testbed.keys["ed25519"]!,
            recordDirectory: recording ? nil : "",
            sshPort: sshPort
        )
    )
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await app.runService() }
        defer { group.cancelAll() }
        let server = "http://127.0.0.1:\(port)"
        let client = try await benchAdmin(server)
        _ = try await client.createResource("busybox", dockerfile: "FROM busybox\n")
        for name in machines {
            let machine = testbed.machine(name)
            _ = try await client.createMachine(name, login: machine.login, address: machine.host, capacity: 500)
        }
        try await body(client, server, databasePath)
    }
}

/// The master's HTTP path, measured against the machine's own engine.
func masterBenchmarks(testbed: Testbed, runs: Int, only: String) async throws {
    try await withBenchMaster(testbed) { client, server, _ in
        _ = try await client.createLease("busybox", name: "warmup", ttl: nil)  // builds the image once
        _ = try await client.deleteLease("warmup")
        let socket = "unix://\(testbed.machine("m1").directory)/docker.sock"

        do {
            print("\nmaster benchmark: lease round trip over HTTP, image already built, \(runs) runs")
            var counter = 0
            let measured = try await measureInterleaved(
                [
                    (
                        "POST /lease + DELETE /lease",
                        {
                            counter += 1
                            _ = try await client.createLease("busybox", name: "rt\(counter)", ttl: nil)
                            _ = try await client.deleteLease("rt\(counter)")
                        }
                    ),
                    (
                        "docker run -d + rm -f, machine's own engine",
                        {
                            let name = "resalloc-bench-\(UUID().uuidString.prefix(12).lowercased())"
                            try await Testbed.run(["docker", "-H", socket, "run", "-d", "--init", "--name", name, "busybox", "sleep", "infinity"])
                            try await Testbed.run(["docker", "-H", socket, "rm", "-f", name])
                        }
                    ),
                ],
                runs: runs
            )
            let (lease, local) = (measured[0], measured[1])
            printTable([lease, local])
            let ratio = lease.median.milliseconds / local.median.milliseconds
            verdict("lease round trip / local docker run + rm", ratio: ratio, target: "<= 1.3 ", met: ratio <= 1.3)

            for index in 0..<100 { _ = try await client.createLease("busybox", name: "load\(index)", ttl: nil) }
            print("\nGET /lease with 100 leases, wrk -t2 -c32 -d5s (2 cores shared by wrk and the master):")
            let token = client.token!
            for (label, path) in [("GET /lease (100 leases)", "/lease"), ("GET /health (trivial route)", "/health")] {
                let output = try await Testbed.run(["wrk", "-t2", "-c32", "-d5s", "--latency", "-H", "token: \(token)", server + path])
                let rps = output.firstMatch(of: /Requests\/sec:\s+([\d.]+)/).map { String($0.1) } ?? "?"
                let p99 = output.firstMatch(of: /99%\s+([\d.]+\w+)/).map { String($0.1) } ?? "?"
                let errors = output.contains("Non-2xx") ? " (non-2xx responses!)" : ""
                print("\(pad(label, 32)) \(rps) requests/s, p99 \(p99)\(errors)")
            }
            for index in 0..<100 { _ = try await client.deleteLease("load\(index)") }
        }
    }
}
