import Foundation
import Testbed

// `resalloc ssh` as deployed (BENCH=shell-deployed): `resalloc-master serve` as its own release
// process, the `resalloc` CLI on a pseudo-terminal, beside `ssh -t` straight to the machine
// running the same `docker exec -it` in the same container. Ten runs, each its own pair of
// fresh sessions; in each, the keystrokes of the two alternate one by one (see `measureShells`),
// and `cat` of ~50 MB is timed in each. Issue 23 asks for at most 1.5x `ssh -t` in every run, and
// at least 0.8x its throughput.

func deployedShellBenchmark(testbed: Testbed, keystrokes: Int, runs: Int) async throws {
    guard let deployed = try await DeployedMaster.start(testbed, benchmark: "shell-deployed") else { return }
    defer { deployed.stop() }
    _ = try await deployed.client.createResource("busybox", dockerfile: "FROM busybox\n")
    let lease = try await deployed.client.createLease("busybox", name: "bench-shell", ttl: nil)
    let container = try require(lease.value.container, "the lease's container")
    try await makeBigFile(testbed, container)
    let machine = testbed.machine("m1")
    let ssh = [
        "ssh", "-t", "-q", "-i", testbed.keys["ed25519"]!, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-p", String(machine.port), "\(machine.login)@\(machine.host)", "docker exec -it -e TERM=xterm \(container) sh",
    ]
    print("\nresalloc ssh, deployed: resalloc-master serve as its own process, the CLI on a pseudo-terminal, beside ssh -t to m1")
    print("\(runs) runs of \(keystrokes) keystrokes each (alternating) and cat of ~50 MB\n")
    print("run  resalloc ssh median  ssh -t median   ratio   p99 ratio   cat resalloc / ssh -t MB/s   ratio")
    var latencyRatios: [Double] = []
    var throughputRatios: [Double] = []
    for run in 1...runs {
        let terminals = [
            try cliTerminal(server: deployed.client.server, token: deployed.client.token, lease: "bench-shell", home: deployed.work),
            try programTerminal("ssh -t", ssh),
        ]
        let numbers = try await measureShells(terminals, keystrokes: keystrokes)
        let (resalloc, direct) = (numbers[0], numbers[1])
        let latency = resalloc.keystrokes.median.milliseconds / direct.keystrokes.median.milliseconds
        let p99 = resalloc.keystrokes.p99.milliseconds / direct.keystrokes.p99.milliseconds
        let throughput = resalloc.megabytesPerSecond / direct.megabytesPerSecond
        latencyRatios.append(latency)
        throughputRatios.append(throughput)
        print(
            String(
                format: "%3d  %16.2f ms  %10.2f ms  %6.2f  %10.2f   %10.1f / %-10.1f      %6.2f",
                run,
                resalloc.keystrokes.median.milliseconds,
                direct.keystrokes.median.milliseconds,
                latency,
                p99,
                resalloc.megabytesPerSecond,
                direct.megabytesPerSecond,
                throughput
            )
        )
    }
    let worst = latencyRatios.max() ?? 0
    verdict("keystroke round trip / ssh -t, worst of \(runs) runs", ratio: worst, target: "<= 1.5 ", met: worst <= 1.5)
    let slowest = throughputRatios.min() ?? 0
    verdict("cat throughput / ssh -t, worst of \(runs) runs", ratio: slowest, target: ">= 0.8 ", met: slowest >= 0.8)
    _ = try await deployed.client.deleteLease("bench-shell")
}
