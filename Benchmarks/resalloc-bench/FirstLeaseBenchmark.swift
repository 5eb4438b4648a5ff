import Foundation
import ResallocClient
import Testbed

// The first lease of a new resource on a machine (BENCH=first), as an operator and a user run
// it: `resalloc-master serve` as its own release process, `resalloc lease create` as its own
// process. An admin makes a resource; its image is built ahead on the machine (how long that
// takes is printed, not compared); then the first lease of it is timed against a cold lease of a
// resource whose image has long been there, and against `docker run -d` sent to the machine
// through OpenSSH's multiplexing, bare and with resalloc's limits and --init. Rounds rotate the
// order; leases and containers are removed between rounds, untimed.

func firstLeaseBenchmark(testbed: Testbed, runs: Int) async throws {
    guard let deployed = try await DeployedMaster.start(testbed, benchmark: "first") else { return }
    defer { deployed.stop() }
    let client = deployed.client
    _ = try await client.createResource("built", dockerfile: "FROM busybox\n")
    func lease(_ resource: String, _ name: String) async throws { try await deployed.cli(["lease", "create", resource, name, "-q"]) }
    let limits = "--init --security-opt no-new-privileges --cap-drop NET_RAW --memory 1073741824b --memory-swap 1073741824b --pids-limit 1024"
    var rawNames: [String] = []
    func raw(_ options: String) async throws {
        let name = "resalloc-bench-raw-\(UUID().uuidString.prefix(8).lowercased())"
        rawNames.append(name)
        try await deployed.onMachine("docker run -d \(options) --name \(name) busybox sleep 3600 >/dev/null")
    }
    func builtAhead(_ resource: String) async throws -> Bool { try await client.resources().first { $0.name == resource }?.imageOn == 1 }

    try await lease("built", "warm-up")  // builds "built", warms every path
    try await raw("")
    print("\nfirst-lease benchmark: the first lease of a resource made a moment before, once its image is built ahead, \(runs) rounds")
    var first: [Duration] = []
    var cold: [Duration] = []
    var direct: [Duration] = []
    var directLimited: [Duration] = []
    var ahead: [Duration] = []
    // The master's own timing of its `docker run`s (one per lease), over the timed rounds.
    let runSum = { try await deployed.metric("resalloc_remote_command_seconds_sum", [#"command="run""#]) }
    let runCount = { try await deployed.metric("resalloc_remote_command_seconds_count", [#"command="run""#]) }
    let requestSum = { try await deployed.metric("http_server_request_duration_sum", [#""/lease""#, #""POST""#]) }
    let requestCount = { try await deployed.metric("http_server_request_duration_count", [#""/lease""#, #""POST""#]) }
    let (runSumBefore, runCountBefore) = (try await runSum(), try await runCount())
    let (requestSumBefore, requestCountBefore) = (try await requestSum(), try await requestCount())
    let clock = ContinuousClock()
    for round in 0..<runs {
        let resource = "new\(round)"
        let made = clock.now
        _ = try await client.createResource(resource, dockerfile: "FROM busybox\nRUN echo \(UUID().uuidString) > /id\n")
        while try await !builtAhead(resource) { try await Task.sleep(for: .milliseconds(20)) }
        ahead.append(clock.now - made)
        for item in [0, 1, 2, 3].map({ ($0 + round) % 4 }) {
            let start = clock.now
            switch item {
            case 0: try await lease(resource, "first\(round)")
            case 1: try await lease("built", "cold\(round)")
            case 2: try await raw("")
            default: try await raw(limits)
            }
            let took = clock.now - start
            switch item {
            case 0: first.append(took)
            case 1: cold.append(took)
            case 2: direct.append(took)
            default: directLimited.append(took)
            }
        }
        _ = try await client.deleteLease("first\(round)")
        _ = try await client.deleteLease("cold\(round)")
        try await deployed.onMachine("docker rm -f \(rawNames.joined(separator: " ")) >/dev/null")
        rawNames = []
    }
    let leaseRuns = try await runCount() - runCountBefore
    let meanLeaseRun = leaseRuns > 0 ? (try await runSum() - runSumBefore) / leaseRuns * 1000 : 0
    let requests = try await requestCount() - requestCountBefore
    let meanRequest = requests > 0 ? (try await requestSum() - requestSumBefore) / requests * 1000 : 0
    _ = try await client.deleteLease("warm-up")
    let samples = [
        Sample(name: "first lease of a new resource (built ahead)", durations: first),
        Sample(name: "cold lease of a resource built long ago", durations: cold),
        Sample(name: "docker run -d busybox, ssh ControlMaster", durations: direct),
        Sample(name: "the same with resalloc's limits and --init", durations: directLimited),
        Sample(name: "(untimed above) resource made to image on the machine", durations: ahead),
    ]
    printTable(samples)
    let firstToCold = samples[0].median.milliseconds / samples[1].median.milliseconds
    let firstToRun = samples[0].median.milliseconds / samples[2].median.milliseconds
    verdict("first lease / cold lease of a built image", ratio: firstToCold, target: "<= 1.05", met: firstToCold <= 1.05)
    verdict("first lease / docker run -d", ratio: firstToRun, target: "<= 1.1 ", met: firstToRun <= 1.1)
    let limitedRatio = samples[0].median.milliseconds / samples[3].median.milliseconds
    print("first lease / docker run -d with the same limits: \(String(format: "%.2f", limitedRatio))")
    print(
        "the master's own docker run of a lease, as it times it: mean \(String(format: "%.1f", meanLeaseRun)) ms over \(Int(leaseRuns)) (through ssh ControlMaster, with the same limits: median \(String(format: "%.1f", samples[3].median.milliseconds)) ms)"
    )
    print("POST /lease as the master times it: mean \(String(format: "%.1f", meanRequest)) ms over \(Int(requests))")
}
