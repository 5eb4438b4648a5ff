import Docker
import Foundation
import NIOCore
import NIOPosix
import SSH
import Testbed

// resalloc's benchmarks (make bench [BENCH=transport|master|shell|cleanup|reach|pool|store|jobs|first|burst]) on real local test
// machines: the SSH transport against one ssh process per call and the machine's own engine;
// the master's HTTP path; resalloc ssh through the bridge against ssh -t; cleanup at scale.
// Prints medians and ratios against the targets; it asserts nothing, it reports.

// The master in this process runs Swift Concurrency on NIO's event loops, as resalloc-master
// does; BENCH_NIO_EXECUTOR=0 leaves Swift's own global executor, to compare.
if ProcessInfo.processInfo.environment["BENCH_NIO_EXECUTOR"] != "0" {
    print("Swift Concurrency on NIO's event loops: \(NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor())")
}
let runs = Int(ProcessInfo.processInfo.environment["BENCH_RUNS"] ?? "") ?? 30
let keystrokes = Int(ProcessInfo.processInfo.environment["BENCH_KEYSTROKES"] ?? "") ?? 200
let only = CommandLine.arguments.dropFirst().first ?? "all"
let testbed = try await Testbed.shared()
if only == "all" || only == "transport" { try await transportBenchmark() }
if only == "all" || only == "master" { try await masterBenchmarks(testbed: testbed, runs: runs, only: only) }
if only == "all" || only == "shell" { try await shellBenchmark(testbed: testbed, keystrokes: keystrokes) }
if only == "all" || only == "cleanup" { try await cleanupBenchmark(testbed: testbed) }
if only == "all" || only == "reach" { try await reachBenchmark(testbed: testbed) }
if only == "all" || only == "pool" { try await poolBenchmark(testbed: testbed, runs: min(runs, 20)) }
if only == "restart" { try await restartBenchmark(testbed: testbed) }
if only == "all" || only == "store" { try await storeBenchmark(testbed: testbed, runs: min(runs, 20)) }
if only == "all" || only == "jobs" { try await jobBenchmark(testbed: testbed, runs: min(runs, 20)) }
if only == "all" || only == "first" { try await firstLeaseBenchmark(testbed: testbed, runs: min(runs, 10)) }
if only == "all" || only == "burst" { try await burstBenchmark(testbed: testbed, rounds: 3) }
if only == "all" || only == "shell-deployed" { try await deployedShellBenchmark(testbed: testbed, keystrokes: keystrokes, runs: 10) }
if only == "all" || only == "cp-deployed" { try await deployedCopyBenchmark(testbed: testbed, rounds: 4) }
if only == "rungap" { try await runGapBenchmark(testbed: testbed, runs: min(runs, 30)) }

func transportBenchmark() async throws {
    let machine = testbed.machine("m1")
    let endpoint = testbed.endpoint("m1")
    let socket = "unix://\(machine.directory)/docker.sock"
    let sshArguments = [
        "ssh", "-q", "-i", endpoint.privateKeyPath, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-p", String(machine.port), "\(machine.login)@\(machine.host)",
    ]

    print("resalloc transport benchmark: machine \(machine.name) (\(machine.host)), \(runs) runs each, libssh2 \(libssh2Version())")
    print("(the ways of doing one thing alternate run by run, so the host's load falls on each alike)")
    print("")

    var samples: [Sample] = []
    let connect = try await measure("connect + handshake + auth", runs: runs) {
        let connection = try await SSHConnection.connect(to: endpoint)
        await connection.close()
    }
    samples.append(connect)

    let connection = try await SSHConnection.connect(to: endpoint)
    let ps = try await measureInterleaved(
        [
            (
                "docker ps -q, reused connection",
                {
                    let result = try await connection.execute("docker ps -q")
                    precondition(result.exitStatus == 0, result.stderrText)
                }
            ),
            ("docker ps -q, one ssh process per call", { try await Testbed.run(sshArguments + ["docker ps -q"]) }),
            ("docker ps -q, machine's own engine (local CLI)", { try await Testbed.run(["docker", "-H", socket, "ps", "-q"]) }),
        ],
        runs: runs
    )
    let (reusedPs, sshPs, localPs) = (ps[0], ps[1], ps[2])
    samples += ps

    // What the transport itself costs, apart from docker: a command that does nothing, through
    // the reused connection (channel open, exec, sshd's session process, exit status, close)
    // and spawned here (what the local column above pays for starting the docker CLI).
    let nothing = try await measureInterleaved(
        [
            (
                "true, reused connection",
                {
                    let result = try await connection.execute("true")
                    precondition(result.exitStatus == 0, result.stderrText)
                }
            ),
            ("true, spawned locally", { try await Testbed.run(["true"]) }),
        ],
        runs: runs
    )
    let (reusedTrue, localTrue) = (nothing[0], nothing[1])
    samples += nothing

    func nextName() -> String { "resalloc-bench-\(UUID().uuidString.prefix(12).lowercased())" }
    let runs3 = try await measureInterleaved(
        [
            (
                "docker run -d + rm -f, reused connection",
                {
                    let name = nextName()
                    let result = try await connection.execute("docker run -d --name \(name) busybox sleep 60 && docker rm -f \(name)")
                    precondition(result.exitStatus == 0, result.stderrText)
                }
            ),
            (
                "docker run -d + rm -f, one ssh process per call",
                {
                    let name = nextName()
                    try await Testbed.run(sshArguments + ["docker run -d --name \(name) busybox sleep 60"])
                    try await Testbed.run(sshArguments + ["docker rm -f \(name)"])
                }
            ),
            (
                "docker run -d + rm -f, machine's own engine",
                {
                    let name = nextName()
                    try await Testbed.run(["docker", "-H", socket, "run", "-d", "--name", name, "busybox", "sleep", "60"])
                    try await Testbed.run(["docker", "-H", socket, "rm", "-f", name])
                }
            ),
        ],
        runs: runs
    )
    let (runRemote, runLocal) = (runs3[0], runs3[2])
    samples += runs3

    let sequential = try await measure("10x docker ps, one after another", runs: runs) {
        for _ in 0..<10 { _ = try await connection.execute("docker ps -q") }
    }
    let concurrent = try await measure("10x docker ps, concurrent on one connection", runs: runs) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<10 { group.addTask { _ = try await connection.execute("docker ps -q") } }
            try await group.waitForAll()
        }
    }
    samples += [sequential, concurrent]
    await connection.close()

    printTable(samples)
    print("")
    let overhead = reusedPs.median.milliseconds / localPs.median.milliseconds
    verdict("reused connection / local engine (docker ps)", ratio: overhead, target: "<= 1.15", met: overhead <= 1.15)
    let fixed = reusedTrue.median.milliseconds - localTrue.median.milliseconds
    print(String(format: "  of which the transport's fixed cost per command (true): %.2f ms over a local spawn", fixed))
    let speedup = sshPs.median.milliseconds / reusedPs.median.milliseconds
    verdict("ssh process per call / reused connection (docker ps)", ratio: speedup, target: ">= 10  ", met: speedup >= 10)
    let runOverhead = runRemote.median.milliseconds / runLocal.median.milliseconds
    verdict("reused connection / local engine (run + rm)", ratio: runOverhead, target: "<= 1.15", met: runOverhead <= 1.15)
    let parallel = sequential.median.milliseconds / concurrent.median.milliseconds
    verdict("sequential / concurrent (10x docker ps)", ratio: parallel, target: ">= 1.5 ", met: parallel >= 1.5)

}

func libssh2Version() -> String { SSHConnection.libraryVersion }
