import Foundation
import ResallocAPI
import ResallocClient
import Testbed

// Leases at once over two machines (BENCH=burst), as deployed: `resalloc-master serve` as its own
// release process, each `resalloc lease create` a process of its own, and two machines whose sshd
// keeps its defaults (MaxStartups 10:30:100, MaxSessions 10): a second sshd of m1's and of m2's
// own configuration without the testbed's MaxStartups 100. Beside each burst, the same number of
// `docker run -d` sent at once through OpenSSH's multiplexing, one `ssh -o ControlMaster`
// connection per machine: the agentless way's limit. Rounds interleave the two; leases and
// containers are removed between them, untimed.

func burstBenchmark(testbed: Testbed, rounds: Int) async throws {
    guard let deployed = try await DeployedMaster.start(testbed, benchmark: "burst", addingM1: false) else { return }
    defer { deployed.stop() }
    // OpenSSH's multiplexing: sshd's MaxSessions (10) bounds the sessions of one connection, so
    // each machine gets three kept connections (25 at once need them), commands spread over them.
    var sshds: [VariantSSHD] = []
    var controls: [(control: [String], target: String)] = []
    defer {
        for (control, target) in controls { _ = try? Testbed.run(control + ["-O", "exit", target]) as String }
        for sshd in sshds { sshd.stop() }
    }
    for name in ["m1", "m2"] {
        let sshd = try await testbed.variantSSHD(of: name) { config in
            config.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("MaxStartups") }.joined(separator: "\n")
        }
        sshds.append(sshd)
        let target = "\(sshd.endpoint.user)@\(sshd.endpoint.host)"
        for connection in 0..<3 {
            let control = [
                "ssh", "-q", "-i", testbed.keys["ed25519"]!, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
                "BatchMode=yes", "-o", "ControlPath=\(deployed.work)/control-\(name)-\(connection)", "-p", String(sshd.endpoint.port),
            ]
            try await Testbed.run(control + ["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-fN", target])
            controls.append((control, target))
        }
        _ = try await deployed.client.createMachine("d\(sshds.count)", login: sshd.endpoint.user, address: sshd.address, capacity: 100)
    }
    // 256 MiB a lease: 50 at once fit two machines of this host's memory (1 GiB each would not).
    let connections = controls
    _ = try await deployed.client.createResource("bb", dockerfile: "FROM busybox\n", limits: LimitsRequest(memory: "256m"))
    while try await deployed.client.resources().first(where: { $0.name == "bb" })?.imageOn != 2 { try await Task.sleep(for: .milliseconds(50)) }

    /// Each of `count` jobs at once, timed from the burst's start to its own end.
    func burst(_ count: Int, _ one: @escaping @Sendable (Int) async throws -> Void) async throws -> [Duration] {
        let start = ContinuousClock.now
        return try await withThrowingTaskGroup(of: Duration.self) { group in
            for index in 0..<count {
                group.addTask {
                    try await one(index)
                    return ContinuousClock.now - start
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }
    let limits = "--init --security-opt no-new-privileges --cap-drop NET_RAW --memory 268435456b --memory-swap 268435456b --pids-limit 1024"
    print("\nburst benchmark: leases at once over two machines with sshd's defaults, \(rounds) interleaved rounds per size")
    var samples: [Sample] = []
    var verdicts: [(Int, Double)] = []
    for size in [20, 50] {
        var leases: [Duration] = []
        var raw: [Duration] = []
        for round in 0..<rounds {
            for item in round % 2 == 0 ? [0, 1] : [1, 0] {
                if item == 0 {
                    leases += try await burst(size) { index in try await deployed.cli(["lease", "create", "bb", "b\(size)-\(round)-\(index)", "-q"]) }
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for index in 0..<size { group.addTask { _ = try await deployed.client.deleteLease("b\(size)-\(round)-\(index)") } }
                        try await group.waitForAll()
                    }
                } else {
                    let tag = "resalloc-burst-\(UUID().uuidString.prefix(8).lowercased())"
                    raw += try await burst(size) { index in
                        // Alternating machines, and on each its three connections in turn.
                        let (control, target) = connections[(index % 2) * 3 + (index / 2) % 3]
                        try await Testbed.run(control + [target, "docker run -d \(limits) --label \(tag)=1 busybox sleep 3600 >/dev/null"])
                    }
                    for (control, target) in [connections[0], connections[3]] {
                        try await Testbed.run(control + [target, "docker ps -aq --filter label=\(tag) | xargs -r docker rm -f >/dev/null"])
                    }
                }
            }
        }
        let leaseSample = Sample(name: "\(size) lease create at once, each its own CLI", durations: leases)
        let rawSample = Sample(name: "\(size) docker run -d at once, ssh ControlMaster", durations: raw)
        samples += [leaseSample, rawSample]
        verdicts.append((size, leaseSample.median.milliseconds / rawSample.median.milliseconds))
    }
    printTable(samples)
    for (size, ratio) in verdicts {
        verdict("\(size) at once: lease / docker run through ssh -M", ratio: ratio, target: "<= 1.2 ", met: ratio <= 1.2)
    }
}
