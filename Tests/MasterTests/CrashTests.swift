import AsyncHTTPClient
import Foundation
import Store
import Testbed
import Testing

/// A `resalloc-master serve` process that the test can stop (SIGTERM or kill -9) and start again
/// on the same database and port. With `logPath`, its log goes there at level info.
final class MasterProcess {
    let databasePath: String
    let port = freeLoopbackPort()
    let keyPath: String
    let logPath: String?
    /// The SSH gateway's port; 0 (off) unless a test asks for it.
    let sshPort: Int
    private var process: Subprocess?

    init(databasePath: String, keyPath: String, logPath: String? = nil, sshPort: Int = 0) {
        self.databasePath = databasePath
        self.keyPath = keyPath
        self.logPath = logPath
        self.sshPort = sshPort
    }

    /// Starts it and returns once it answers `GET /health`.
    func start() async throws {
        let log: Subprocess.Stream = logPath.map { .file($0) } ?? .null
        process = try Subprocess.start(
            [
                CLI.masterBinary, "serve", "--port", String(port), "--db", databasePath, "--key", keyPath,
                "--log-level", logPath == nil ? "error" : "info", "--reconcile-every", "0", "--ssh-port", String(sshPort),
            ],
            stdout: log,
            stderr: log
        )
        let health = HTTPClientRequest(url: "http://127.0.0.1:\(port)/health")
        for _ in 0..<200 {
            if let status = process?.exitStatus { throw TestbedError("the master exited with status \(status) on start") }
            if (try? await HTTPClient.shared.execute(health, timeout: .seconds(2)))?.status == .ok { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestbedError("the master did not answer on port \(port) within 10 s")
    }

    /// SIGTERM: what systemd or an operator's `kill` sends.
    func terminate() { process?.signal(SIGTERM) }

    /// Waits for the master to exit; its status.
    func wait(timeout: Duration) async throws -> Int32 {
        guard let process else { throw TestbedError("the master was never started") }
        return try await process.wait(timeout: timeout)
    }

    func kill9() { process?.kill9() }
}

@Suite("Crash safety", .timeLimit(.minutes(5)))
struct CrashTests {
    @Test("kill -9 of the master at several points of lease creation leaks nothing once cleanup ran")
    func killDuringCreation() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-crash")
        let databasePath = "\(directory)/resalloc.db"
        let master = MasterProcess(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!)
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        defer { master.kill9() }
        try await master.start()
        let machine = testbed.machine("m2")
        // A resource that is new to the machine, so the first creations build as well as run.
        try await cli.setUpAdmin(resource: "crashy", dockerfile: "FROM busybox\nRUN echo \(UUID().uuidString) > /id", machine: machine)
        let id = try masterID(databasePath)

        for (index, delay) in [0, 30, 80, 150, 250, 400, 700, 1200].enumerated() {
            let create = try cli.start("lease", "create", "crashy", "crash\(index)").process
            try await Task.sleep(for: .milliseconds(delay))
            master.kill9()
            // The CLI sees the connection drop and exits.
            try await create.wait(timeout: .seconds(30))
            try await master.start()
        }
        master.kill9()

        let result = try await cleanup(databasePath, testbed, "--stuck-after", "0s")
        #expect(result.status == 0, "\(result.stderr)")
        let store = try AppDatabase(path: databasePath)
        let leases = try store.leaseListings(ownerID: nil).map(\.lease)
        let live = Set(leases.filter { $0.state == .running }.map { $0.containerName(masterID: id) })
        let containers = Set(try await leaseContainers(testbed, "m2", master: id))
        #expect(live == containers, "leases \(leases.map { "\($0.name):\($0.state)" }), containers \(containers)")
        #expect(leases.allSatisfy { $0.state == .running || $0.state == .failed })
        // Running ones really run.
        for container in containers {
            #expect(try await testbed.docker("m2", ["inspect", "--format", "{{.State.Running}}", container]) == "true\n")
        }
        if !containers.isEmpty { try await testbed.docker("m2", ["rm", "-f"] + Array(containers)) }
    }
}
