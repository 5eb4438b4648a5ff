import Foundation
import SSH
import Testbed

// Where a `docker run -d` over the master's SSH transport differs from the same command through
// OpenSSH's multiplexing (BENCH=rungap): one kept libssh2 connection and one kept `ssh -o
// ControlMaster` connection to m1, the same command strings on each, interleaved. `true` shows
// the transport alone; `docker run -d` adds the engine; the bare `docker` client call
// (`docker version`) shows what the docker CLI's own start costs on the machine.

func runGapBenchmark(testbed: Testbed, runs: Int) async throws {
    let machine = testbed.machine("m1")
    let endpoint = testbed.endpoint("m1")
    let work = try makeTemporaryDirectory("resalloc-bench-rungap")
    defer { try? FileManager.default.removeItem(atPath: work) }
    let ssh = [
        "ssh", "-q", "-i", endpoint.privateKeyPath, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
        "BatchMode=yes", "-o", "ControlPath=\(work)/ssh-control", "-p", String(machine.port),
    ]
    let target = "\(machine.login)@\(machine.host)"
    try await Testbed.run(ssh + ["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-fN", target])
    defer { _ = try? Testbed.run(ssh + ["-O", "exit", target]) as String }
    let connection = try await SSHConnection.connect(to: endpoint)
    defer { Task { await connection.close() } }

    var names: [String] = []
    func run() -> String {
        let name = "resalloc-bench-gap-\(UUID().uuidString.prefix(8).lowercased())"
        names.append(name)
        return "docker run -d --init --name \(name) busybox sleep 3600 >/dev/null"
    }
    // The master's own argv for a cold lease of a built image (RemoteDocker.runArguments with
    // the default limits), on an image of its kind.
    func leaseRun() -> String {
        let name = "resalloc-bench-gap-\(UUID().uuidString.prefix(8).lowercased())"
        names.append(name)
        return "docker run --detach --init --name \(name) --security-opt no-new-privileges --cap-drop NET_RAW --memory 1073741824b"
            + " --memory-swap 1073741824b --pids-limit 1024 --label resalloc.lease=1 --label resalloc.master=bench"
            + " --label resalloc.owner=bench busybox sleep infinity >/dev/null"
    }
    func libssh2(_ command: String) async throws {
        let result = try await connection.execute(command)
        guard result.exitStatus == 0 else { throw TestbedError("\(command): \(result.stderrText)") }
    }
    func openssh(_ command: String) async throws { try await Testbed.run(ssh + [target, command]) }
    func local(_ arguments: [String]) async throws { try await Testbed.run(arguments) }

    print("\nrun-gap benchmark: one command over the master's libssh2 connection and over ssh ControlMaster to m1, \(runs) rounds")
    let samples = try await measureInterleaved(
        [
            ("true, libssh2", { try await libssh2("true") }),
            ("true, ssh ControlMaster", { try await openssh("true") }),
            ("ssh process start (ssh -V, local)", { try await local(["ssh", "-V"]) }),
            ("docker version, libssh2", { try await libssh2("docker version >/dev/null") }),
            ("docker version, ssh ControlMaster", { try await openssh("docker version >/dev/null") }),
            ("docker run -d --init, libssh2", { try await libssh2(run()) }),
            ("docker run -d --init, ssh ControlMaster", { try await openssh(run()) }),
            ("a lease's docker run, libssh2", { try await libssh2(leaseRun()) }),
            ("a lease's docker run, ssh ControlMaster", { try await openssh(leaseRun()) }),
        ],
        runs: runs
    )
    printTable(samples)
    for chunk in stride(from: 0, to: names.count, by: 50) {
        _ = try? await connection.execute("docker rm -f \(names[chunk..<min(chunk + 50, names.count)].joined(separator: " ")) >/dev/null")
    }
}
