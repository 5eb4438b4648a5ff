import Foundation
import ResallocClient
import Testbed

// A job's round trip (BENCH=jobs), as an operator and a user run it: `resalloc-master serve` as
// its own release process, `resalloc run bb -- true` as its own process, cold (the machine has
// the image) and from a warm pool, against `docker run --rm busybox true` sent to the same
// machine through OpenSSH's multiplexing (`ssh -o ControlMaster`: one connection, kept open), the
// agentless way without resalloc, and a pooled lease's `resalloc lease create`. Rounds alternate
// the cases; the pool refills between rounds, untimed.

func jobBenchmark(testbed: Testbed, runs: Int) async throws {
    guard let deployed = try await DeployedMaster.start(testbed, benchmark: "jobs") else { return }
    defer { deployed.stop() }
    _ = try await deployed.client.createResource("bb", dockerfile: "FROM busybox\n")
    _ = try await deployed.client.createResource("warm", dockerfile: "FROM busybox\n", pool: 2)
    let client = deployed.client
    func run(_ resource: String) async throws { try await deployed.cli(["run", resource, "--", "true"]) }
    func raw() async throws { try await deployed.onMachine("docker run --rm busybox true") }
    // The same, with what every resalloc container gets (limits, dropped privileges, --init).
    let limited =
        "docker run --rm --init --security-opt no-new-privileges --cap-drop NET_RAW --memory 1073741824b --memory-swap 1073741824b "
        + "--pids-limit 1024 busybox true"
    func rawLimited() async throws { try await deployed.onMachine(limited) }

    // A pooled lease's round trip as a user has it: `resalloc lease create` as its own process,
    // until it says the lease runs (its delete is not timed).
    var leases = 0
    func pooledLease() async throws {
        leases += 1
        try await deployed.cli(["lease", "create", "warm", "bench-\(leases)", "-q"])
    }
    func poolReady() async throws -> Bool { try await client.resources().first { $0.name == "warm" }?.poolReady == 2 }
    for _ in 0..<2 {  // builds the image, fills the pool, warms every path
        try await run("bb")
        while try await !poolReady() { try await Task.sleep(for: .milliseconds(50)) }
        try await run("warm")
        try await raw()
    }

    print("\njob benchmark: one job's round trip, the CLI as its own process (exit status 0), \(runs) rounds; pool refills are not timed")
    print("(resalloc run is a process start and three HTTP requests, about 20 ms here, besides its docker run)")
    var cold: [Duration] = []
    var pooled: [Duration] = []
    var direct: [Duration] = []
    var directLimited: [Duration] = []
    var lease: [Duration] = []
    let clock = ContinuousClock()
    for round in 0..<runs {
        while try await !poolReady() { try await Task.sleep(for: .milliseconds(50)) }
        // The lease comes last: the refill its handout starts would run beside the others.
        let order = [0, 1, 2, 3].map { ($0 + round) % 4 } + [4]
        for item in order {
            let start = clock.now
            switch item {
            case 0: try await run("bb")
            case 1: try await run("warm")
            case 2: try await raw()
            case 3: try await rawLimited()
            default: try await pooledLease()
            }
            let took = clock.now - start
            switch item {
            case 0: cold.append(took)
            case 1: pooled.append(took)
            case 2: direct.append(took)
            case 3: directLimited.append(took)
            default: lease.append(took)
            }
        }
        _ = try await client.deleteLease("bench-\(leases)")
    }
    let samples = [
        Sample(name: "resalloc run bb -- true (cold, image present)", durations: cold),
        Sample(name: "resalloc run warm -- true (from the pool)", durations: pooled),
        Sample(name: "docker run --rm busybox true, ssh ControlMaster", durations: direct),
        Sample(name: "the same with resalloc's limits and --init", durations: directLimited),
        Sample(name: "resalloc lease create warm (from the pool)", durations: lease),
    ]
    printTable(samples)
    let coldRatio = samples[0].median.milliseconds / samples[2].median.milliseconds
    let pooledRatio = samples[1].median.milliseconds / samples[2].median.milliseconds
    verdict("cold job / docker run --rm", ratio: coldRatio, target: "<= 1.2 ", met: coldRatio <= 1.2)
    verdict("pooled job / docker run --rm", ratio: pooledRatio, target: "<= 0.5 ", met: pooledRatio <= 0.5)
    let limitedRatio = samples[0].median.milliseconds / samples[3].median.milliseconds
    print("cold job / docker run --rm with the same limits: \(String(format: "%.2f", limitedRatio))")
    let leaseRatio = samples[4].median.milliseconds / samples[2].median.milliseconds
    print("pooled lease / docker run --rm: \(String(format: "%.2f", leaseRatio))")
}
