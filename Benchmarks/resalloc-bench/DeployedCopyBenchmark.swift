import Foundation
import Testbed

// `resalloc cp` as deployed (BENCH=cp-deployed): `resalloc-master serve` as its own release
// process and the CLI as its own, copying a 512 MB directory (eight files of random bytes) into a
// lease and out again, beside the same tar stream through one kept ssh connection to the machine
// (`tar -cf - DIR | ssh machine docker cp - C:/dir`, `ssh machine docker cp C:/dir - | tar -x`).
// Four rounds; within each the four copies rotate, and what a copy left is removed, untimed.

func deployedCopyBenchmark(testbed: Testbed, rounds: Int) async throws {
    guard let deployed = try await DeployedMaster.start(testbed, benchmark: "cp-deployed") else { return }
    defer { deployed.stop() }
    _ = try await deployed.client.createResource("busybox", dockerfile: "FROM busybox\n")
    let lease = try await deployed.client.createLease("busybox", name: "bench-cp", ttl: nil)
    let container = try require(lease.value.container, "the lease's container")
    let source = "\(deployed.work)/tree"
    let out = "\(deployed.work)/out"
    try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try await Testbed.run(
        ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do head -c 67108864 /dev/urandom > \(source)/part$i; done"],
        timeout: .seconds(300)
    )
    let megabytes = 536.870912
    let ssh = (deployed.ssh + [deployed.target]).joined(separator: " ")
    let cli = ["env"] + deployed.environment.map { "\($0)=\($1)" } + [deployed.cliBinary, "cp", "-q"]

    let cases: [(name: String, run: () async throws -> Void, tidy: () async throws -> Void)] = [
        (
            "resalloc cp 512 MB into the lease",
            { try await Testbed.run(cli + [source, "bench-cp:/tmp/in"], timeout: .seconds(600)) },
            { try await deployed.onMachine("docker exec \(container) rm -rf /tmp/in") }
        ),
        (
            "tar | ssh docker cp - C:/tmp/in",
            {
                try await Testbed.run(
                    ["sh", "-c", "tar -C \(deployed.work) -cf - tree | \(ssh) docker cp - \(container):/tmp/"],
                    timeout: .seconds(600)
                )
            },
            { try await deployed.onMachine("docker exec \(container) rm -rf /tmp/tree") }
        ),
        (
            "resalloc cp 512 MB out of the lease",
            { try await Testbed.run(cli + ["bench-cp:/tmp/kept", "\(out)/"], timeout: .seconds(600)) },
            { try await Testbed.run(["rm", "-rf", "\(out)/kept"]) }
        ),
        (
            "ssh docker cp C:/tmp/kept - | tar -x",
            { try await Testbed.run(["sh", "-c", "\(ssh) docker cp \(container):/tmp/kept - | tar -C \(out) -xf -"], timeout: .seconds(600)) },
            { try await Testbed.run(["rm", "-rf", "\(out)/kept"]) }
        ),
    ]
    // What the copies out read: the tree, in the container once, untimed.
    try await Testbed.run(["sh", "-c", "tar -C \(deployed.work) -cf - tree | \(ssh) docker cp - \(container):/tmp/"], timeout: .seconds(600))
    try await deployed.onMachine("docker exec \(container) mv /tmp/tree /tmp/kept")

    print("\nresalloc cp, deployed: resalloc-master serve and the CLI as their own processes, 512 MB in eight files, \(rounds) rounds")
    var seconds = Array(repeating: [Double](), count: cases.count)
    for round in 0..<rounds {
        for offset in cases.indices {
            let index = (round + offset) % cases.count
            seconds[index].append(try await timed { try await cases[index].run() })
            try await cases[index].tidy()
        }
    }
    for (index, item) in cases.enumerated() {
        let median = seconds[index].sorted()[seconds[index].count / 2]
        let all = seconds[index].map { String(format: "%.2f", $0) }.joined(separator: ", ")
        print("\(pad(item.name, 40)) median \(String(format: "%6.2f", median)) s, \(String(format: "%6.1f", megabytes / median)) MB/s  (\(all))")
    }
    func median(_ index: Int) -> Double { seconds[index].sorted()[seconds[index].count / 2] }
    let into = median(1) / median(0)
    let outOf = median(3) / median(2)
    verdict("resalloc cp in / tar | ssh docker cp (throughput)", ratio: into, target: ">= 0.9 ", met: into >= 0.9)
    verdict("resalloc cp out / ssh docker cp | tar (throughput)", ratio: outOf, target: ">= 0.9 ", met: outOf >= 0.9)
    _ = try await deployed.client.deleteLease("bench-cp")
}
