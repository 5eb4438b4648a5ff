import Foundation
import ResallocClient
import Store
import Testbed

// `resalloc-master cleanup` as cron runs it (the real binary, on the master's database) over
// machines m1 and m2, each with half live leases and half orphans (containers labelled with
// this master's id that no lease explains), growing from 20 to 200 containers a machine. Then
// the same pass when there is nothing to do, which is what cron pays every minute.

func cleanupBenchmark(testbed: Testbed, sizes: [Int] = [20, 50, 100, 200]) async throws {
    let masterBinary = Bundle.main.executableURL!.deletingLastPathComponent().appendingPathComponent("resalloc-master").path
    guard FileManager.default.isExecutableFile(atPath: masterBinary) else {
        throw TestbedError("\(masterBinary) is missing: build it with the benchmark (make bench does)")
    }
    let machines = ["m1", "m2"]
    try await withBenchMaster(testbed, machines: machines) { client, _, databasePath in
        let masterID = try AppDatabase(path: databasePath).masterID()
        let cleanup = [masterBinary, "cleanup", "--db", databasePath, "--key", testbed.keys["ed25519"]!]
        print("\ncleanup benchmark: resalloc-master cleanup over \(machines.joined(separator: " and ")), half live leases and half orphans on each")
        print("containers/machine  live  orphans  cleanup wall s  removed  nothing-to-do wall s  summary")

        var leases = 0
        var rows: [(size: Int, seconds: Double)] = []
        var engine: [Double] = []
        for size in sizes {
            // Live leases through the API, placed by the master (it spreads them over both).
            let liveTarget = size / 2 * machines.count
            while leases < liveTarget {
                let batch = min(4, liveTarget - leases)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in leases..<(leases + batch) {
                        group.addTask { _ = try await client.createLease("busybox", name: "live\(index)", ttl: "1d") }
                    }
                    try await group.waitForAll()
                }
                leases += batch
            }
            // Orphans, as a master killed mid-creation would leave them.
            let orphans = size / 2
            try await plantOrphans(testbed, machines, count: orphans, masterID: masterID)
            var counts: [Int] = []
            for machine in machines {
                counts.append(
                    try await testbed.docker(machine, ["ps", "-q", "--filter", "label=resalloc.master=\(masterID)"]).split(separator: "\n").count
                )
            }

            let start = ContinuousClock.now
            let pass = try await Subprocess.run(cleanup, timeout: .seconds(900))
            let seconds = (ContinuousClock.now - start).milliseconds / 1000
            let idleStart = ContinuousClock.now
            let idle = try await Subprocess.run(cleanup, timeout: .seconds(900))
            let idleSeconds = (ContinuousClock.now - idleStart).milliseconds / 1000
            let removed = pass.output.firstMatch(of: /orphans removed (\d+)/).map { Int($0.1)! } ?? -1
            let summary = pass.output.split(separator: "\n").last.map(String.init) ?? pass.errors
            print(
                "\(pad("\(counts.map(String.init).joined(separator: "+"))", 19)) \(pad(String(leases), 5)) \(pad(String(orphans * machines.count), 8)) "
                    + "\(String(format: "%14.2f", seconds))  \(pad(String(removed), 7)) \(String(format: "%20.2f", idleSeconds))  \(summary)"
            )
            if pass.status != 0 || idle.status != 0 { print("  cleanup exited \(pass.status) / \(idle.status): \(pass.errors)\(idle.errors)") }
            if removed != orphans * machines.count { print("  expected \(orphans * machines.count) orphans removed") }
            rows.append((size, seconds))

            // The same removal by each machine's own engine, both at once: what docker itself costs.
            try await plantOrphans(testbed, machines, count: orphans, masterID: masterID)
            let engineStart = ContinuousClock.now
            try await onEachMachine(testbed, machines) { socket in
                "docker -H \(socket) rm -f $(docker -H \(socket) ps -aq --filter label=bench.orphan) >/dev/null"
            }
            engine.append((ContinuousClock.now - engineStart).milliseconds / 1000)
        }
        print("")
        for (row, seconds) in zip(rows, engine) {
            print(
                "\(pad("\(row.size / 2) orphans a machine: docker rm -f on each machine's own engine, both at once", 78)) \(String(format: "%6.2f", seconds)) s"
            )
        }

        // Parallel across machines: the largest backlog on m1 alone.
        if let last = rows.last {
            try await plantOrphans(testbed, ["m1"], count: last.size / 2, masterID: masterID)
            let start = ContinuousClock.now
            let pass = try await Subprocess.run(cleanup, timeout: .seconds(900))
            let seconds = (ContinuousClock.now - start).milliseconds / 1000
            print(
                "\(pad("\(last.size / 2) orphans on m1 alone (m2 idle): cleanup", 78)) \(String(format: "%6.2f", seconds)) s   (both machines: \(String(format: "%.2f", last.seconds)) s)  \(pass.output.split(separator: "\n").last ?? "")"
            )
        }
        if let first = rows.first, let last = rows.last, first.size != last.size {
            let growth = last.seconds / first.seconds
            let containers = Double(last.size) / Double(first.size)
            print(
                "\n\(pad("wall time growth \(first.size) → \(last.size) containers a machine", 52)) \(String(format: "%7.2f", growth))×  (containers grew \(String(format: "%.0f", containers))×)"
            )
        }
        for index in 0..<leases { _ = try await client.deleteLease("live\(index)") }
    }
}

/// Starts `count` containers on each machine with this master's labels and no lease behind
/// them, as a master killed mid-creation would leave them; six at a time.
func plantOrphans(_ testbed: Testbed, _ machines: [String], count: Int, masterID: String) async throws {
    try await onEachMachine(testbed, machines) { socket in
        "seq \(count) | xargs -P 6 -I{} docker -H \(socket) run -d --init --label resalloc.master=\(masterID) --label resalloc.lease=orphan-{} --label bench.orphan=1 busybox sleep 86400 >/dev/null"
    }
}

/// Runs a shell command for each machine, all at once; `command` gets the machine's docker socket.
func onEachMachine(_ testbed: Testbed, _ machines: [String], _ command: @escaping @Sendable (String) -> String) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for machine in machines {
            let socket = "unix://\(testbed.machine(machine).directory)/docker.sock"
            group.addTask { try await Testbed.run(["sh", "-c", command(socket)], timeout: .seconds(600)) }
        }
        try await group.waitForAll()
    }
}
