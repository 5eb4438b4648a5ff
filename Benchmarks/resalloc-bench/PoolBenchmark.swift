import Foundation
import ResallocAPI
import ResallocClient
import Store
import Testbed

// Fast leases (BENCH=pool): a lease from a warm pool and a cold one against a raw `docker run -d`
// on the machine's own engine; 20 and 50 leases at once against as many raw runs at once on the
// same two engines; and the time from a `kill -9` and restart of a real `resalloc-master` to
// leases that match the containers.

func poolBenchmark(testbed: Testbed, runs: Int) async throws {
    let machines = ["m1", "m2"]
    let sockets = machines.map { "unix://\(testbed.machine($0).directory)/docker.sock" }
    func rawName() -> String { "resalloc-bench-\(UUID().uuidString.prefix(12).lowercased())" }

    try await withBenchMaster(testbed, machines: machines) { client, _, _ in
        _ = try await client.createResource("warm", dockerfile: "FROM busybox\n", pool: 3)
        _ = try await client.createLease("busybox", name: "warmup", ttl: nil)  // builds the image on one machine
        _ = try await client.deleteLease("warmup")
        try await waitForPool(client, "warm", ready: 3)

        print("\npool benchmark: creating one lease (the reply), \(runs) runs; deletions and refills are not timed")
        var pooled: [Duration] = []
        var cold: [Duration] = []
        var raw: [Duration] = []
        let clock = ContinuousClock()
        for round in 0..<runs {
            let start = clock.now
            let lease = try await client.createLease("warm", name: "p\(round)", ttl: nil)
            pooled.append(clock.now - start)
            _ = try await client.deleteLease("p\(round)")
            try await waitForPool(client, "warm", ready: 3)  // its refill must not run beside the next case
            let coldStart = clock.now
            _ = try await client.createLease("busybox", name: "c\(round)", ttl: nil)
            cold.append(clock.now - coldStart)
            _ = try await client.deleteLease("c\(round)")
            let socket = sockets[round % sockets.count]
            let name = rawName()
            let rawStart = clock.now
            try await Testbed.run(["docker", "-H", socket, "run", "-d", "--init", "--name", name, "busybox", "sleep", "infinity"])
            raw.append(clock.now - rawStart)
            try await Testbed.run(["docker", "-H", socket, "rm", "-f", name])
            _ = lease
            try await waitForPool(client, "warm", ready: 3)
        }
        let samples = [
            Sample(name: "POST /lease, from the pool", durations: pooled),
            Sample(name: "POST /lease, cold (image present)", durations: cold),
            Sample(name: "docker run -d, machine's own engine", durations: raw),
        ]
        printTable(samples)
        let pooledRatio = samples[0].median.milliseconds / samples[2].median.milliseconds
        let coldRatio = samples[1].median.milliseconds / samples[2].median.milliseconds
        verdict("pooled lease / raw docker run -d", ratio: pooledRatio, target: "<= 0.3 ", met: pooledRatio <= 0.3)
        verdict("cold lease / raw docker run -d", ratio: coldRatio, target: "<= 1.1 ", met: coldRatio <= 1.1)
        _ = try await client.setPool("warm", size: 0)

        for count in [20, 50] {
            print("\n\(count) leases at once over \(machines.count) machines (cold), against \(count) raw docker run -d at once on the same engines:")
            var leaseTimes: [Duration] = []
            var rawTimes: [Duration] = []
            var failures = 0
            for round in 0..<3 {
                let start = clock.now
                let results = await withTaskGroup(of: Bool.self) { group in
                    for index in 0..<count {
                        group.addTask { (try? await client.createLease("busybox", name: "n\(round)-\(index)", ttl: nil)) != nil }
                    }
                    return await group.reduce(into: [Bool]()) { $0.append($1) }
                }
                leaseTimes.append(clock.now - start)
                failures += results.filter { !$0 }.count
                for index in 0..<count { _ = try? await client.deleteLease("n\(round)-\(index)") }

                let names = (0..<count).map { _ in rawName() }
                let rawStart = clock.now
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, name) in names.enumerated() {
                        group.addTask {
                            try await Testbed.run([
                                "docker", "-H", sockets[index % sockets.count], "run", "-d", "--init", "--name", name, "busybox", "sleep", "infinity",
                            ])
                        }
                    }
                    try await group.waitForAll()
                }
                rawTimes.append(clock.now - rawStart)
                for (index, socket) in sockets.enumerated() {
                    let mine = names.enumerated().filter { $0.offset % sockets.count == index }.map(\.element)
                    try await Testbed.run(["docker", "-H", socket, "rm", "-f"] + mine)
                }
            }
            let samples = [
                Sample(name: "\(count) leases at once", durations: leaseTimes),
                Sample(name: "\(count) raw docker run -d at once", durations: rawTimes),
            ]
            printTable(samples)
            print("failures: \(failures) of \(count * 3)")
            let ratio = samples[0].median.milliseconds / samples[1].median.milliseconds
            verdict("\(count) leases at once / \(count) raw runs at once", ratio: ratio, target: "<= 1.3 ", met: ratio <= 1.3)
        }
    }
    try await restartBenchmark(testbed: testbed)
}

/// Waits until the resource reports `ready` warm containers.
private func waitForPool(_ client: ResallocClient, _ resource: String, ready: Int) async throws {
    for _ in 0..<600 {
        if try await client.resources().first(where: { $0.name == resource })?.poolReady == ready { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestbedError("the pool of \(resource) did not reach \(ready) within 30 s")
}

/// kill -9 of a real `resalloc-master serve` with ten leases being created, then a restart:
/// how long until every lease is running or failed and the containers are exactly the running
/// leases' (the start pass settles what the dead incarnation left).
func restartBenchmark(testbed: Testbed) async throws {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("resalloc-master").path
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        print("\nrestart benchmark skipped: no resalloc-master beside this benchmark (make bench builds it)")
        return
    }
    print("\nkill -9 with 10 leases being created, then a restart: time until leases match containers (5 rounds)")
    var times: [Duration] = []
    for round in 0..<5 {
        let directory = try makeTemporaryDirectory("resalloc-bench-restart")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let databasePath = "\(directory)/bench.db"
        let port = freeLoopbackPort()
        func start() throws -> Subprocess {
            try Subprocess.start(
                [
                    binary, "serve", "--port", String(port), "--db", databasePath, "--key", testbed.keys["ed25519"]!, "--log-level", "error",
                    "--reconcile-every", "0", "--ssh-port", "0",
                ],
                stdout: .null,
                stderr: .null
            )
        }
        var process = try start()
        let server = "http://127.0.0.1:\(port)"
        let client = try await benchAdmin(server)
        _ = try await client.createResource("busybox", dockerfile: "FROM busybox\n")
        let machine = testbed.machine("m1")
        _ = try await client.createMachine("m1", login: machine.login, address: machine.host, capacity: 100)
        let authed = client
        let creating = Task {
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<10 { group.addTask { _ = try? await authed.createLease("busybox", name: "r\(index)", ttl: nil) } }
            }
        }
        try await Task.sleep(for: .milliseconds(150 + 50 * round))
        process.kill9()
        await creating.value
        let store = try AppDatabase(path: databasePath)
        let master = try store.masterID()
        let clock = ContinuousClock()
        let restarted = clock.now
        process = try start()
        defer { process.kill9() }
        var settled = false
        while clock.now - restarted < .seconds(60) {
            let leases = try await store.leaseListings(ownerID: nil).map(\.lease)
            let running = Set(leases.filter { $0.state == .running }.map { $0.containerName(masterID: master) })
            let containers = Set(
                try await testbed.docker("m1", ["ps", "-a", "--filter", "label=resalloc.master=\(master)", "--format", "{{.Names}}"]).split(
                    separator: "\n"
                ).map(String.init)
            )
            if leases.allSatisfy({ $0.state == .running || $0.state == .failed }) && running == containers {
                settled = true
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        times.append(clock.now - restarted)
        let leftovers = try await testbed.docker("m1", ["ps", "-aq", "--filter", "label=resalloc.master=\(master)"]).split(separator: "\n").map(
            String.init
        )
        if !leftovers.isEmpty { try await testbed.docker("m1", ["rm", "-f"] + leftovers) }
        if !settled {
            let leases = try await store.leaseListings(ownerID: nil).map { "\($0.lease.name):\($0.lease.state):\($0.lease.machineId ?? 0)" }
            print("round \(round): not settled within 60 s: leases \(leases), containers were \(leftovers)")
        }
    }
    printTable([Sample(name: "restart to leases = containers", durations: times)])
}
