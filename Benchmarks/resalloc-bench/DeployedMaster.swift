import Foundation
import ResallocClient
import Testbed

/// What the benchmarks of the deployed shape share: `resalloc-master serve` as its own release
/// process, a user logged in through the API and through the CLI (its own process), test machine
/// m1 added, and one OpenSSH connection to m1 kept open (`ssh -o ControlMaster`), the agentless
/// way without resalloc to compare with.
struct DeployedMaster {
    let work: String
    let master: Subprocess
    var client: ResallocClient
    let cliBinary: String
    /// The CLI's environment: its own HOME (the login's token) and the master's URL.
    let environment: [String: String]
    /// `ssh` through the kept connection; `target` is m1's login@host.
    let ssh: [String]
    let target: String

    /// Nil, said, when the release binaries are not beside the benchmark (make bench builds them).
    static func start(_ testbed: Testbed, benchmark: String, addingM1: Bool = true) async throws -> DeployedMaster? {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let masterBinary = directory.appendingPathComponent("resalloc-master").path
        let cliBinary = directory.appendingPathComponent("resalloc").path
        guard FileManager.default.isExecutableFile(atPath: masterBinary), FileManager.default.isExecutableFile(atPath: cliBinary) else {
            print("\n\(benchmark) benchmark skipped: no resalloc-master and resalloc beside this benchmark (make bench builds them)")
            return nil
        }
        let work = try makeTemporaryDirectory("resalloc-bench-\(benchmark)")
        let port = freeLoopbackPort()
        let master = try Subprocess.start(
            [
                masterBinary, "serve", "--port", String(port), "--db", "\(work)/bench.db", "--key", testbed.keys["ed25519"]!, "--log-level",
                "error", "--reconcile-every", "0", "--ssh-port", "0", "--tenant-networks", "off",
            ],
            stdout: .null,
            stderr: .null
        )
        let server = "http://127.0.0.1:\(port)"
        let client = try await benchAdmin(server)
        let machine = testbed.machine("m1")
        if addingM1 { _ = try await client.createMachine("m1", login: machine.login, address: machine.host, capacity: 100) }
        let environment = ["HOME": work, "RESALLOC_URL": server, "PATH": "/usr/bin:/bin"]
        let login = try await Subprocess.run(
            [cliBinary, "login", "bench", "--password-stdin"],
            environment: environment,
            input: Data("bench-password\n".utf8),
            timeout: .seconds(30)
        )
        guard login.status == 0 else { throw TestbedError("resalloc login: \(login.errors)") }
        let ssh = [
            "ssh", "-q", "-i", testbed.keys["ed25519"]!, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
            "BatchMode=yes", "-o", "ControlPath=\(work)/ssh-control", "-p", String(machine.port),
        ]
        let target = "\(machine.login)@\(machine.host)"
        try await Testbed.run(ssh + ["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-fN", target])
        return DeployedMaster(
            work: work,
            master: master,
            client: client,
            cliBinary: cliBinary,
            environment: environment,
            ssh: ssh,
            target: target
        )
    }

    /// Runs the CLI with `arguments`; throws unless it exits 0.
    func cli(_ arguments: [String]) async throws {
        let outcome = try await Subprocess.run([cliBinary] + arguments, environment: environment, timeout: .seconds(120))
        guard outcome.status == 0 else { throw TestbedError("resalloc \(arguments.joined(separator: " ")): \(outcome.status) \(outcome.errors)") }
    }

    /// The sum of the samples of `/metrics` named `name` whose labels include each of `labels`
    /// (as printed: `command="run"`).
    func metric(_ name: String, _ labels: [String] = []) async throws -> Double {
        let text: String = try await Testbed.run(["curl", "-sf", "\(client.server)/metrics"])
        return text.split(separator: "\n")
            .filter { line in (line.hasPrefix(name + "{") || line.hasPrefix(name + " ")) && labels.allSatisfy { line.contains($0) } }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            .reduce(0, +)
    }

    /// Runs `command` on m1 through the kept connection.
    func onMachine(_ command: String) async throws { try await Testbed.run(ssh + [target, command]) }

    func stop() {
        _ = try? Testbed.run(ssh + ["-O", "exit", target]) as String
        master.kill9()
        try? FileManager.default.removeItem(atPath: work)
    }
}

/// The benchmarks' admin on a master just started at `server`: registered as soon as the master
/// answers (within 10 s), then logged in.
func benchAdmin(_ server: String) async throws -> ResallocClient {
    var client = ResallocClient(server: server, token: nil)
    for _ in 0..<200 {
        if (try? await client.register("bench", password: "bench-password")) != nil { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    client.token = try await client.login("bench", password: "bench-password").token
    return client
}
