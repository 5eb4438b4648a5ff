import Foundation

/// Timing helpers for the benchmark: medians and p99 over repeated runs, printed as a table.
struct Sample {
    let name: String
    let durations: [Duration]

    var median: Duration { percentile(0.5) }
    var p99: Duration { percentile(0.99) }

    func percentile(_ fraction: Double) -> Duration {
        let sorted = durations.sorted()
        let index = min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))
        return sorted[index]
    }
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

func measure(_ name: String, runs: Int, warmup: Int = 2, _ body: () async throws -> Void) async throws -> Sample {
    let clock = ContinuousClock()
    for _ in 0..<warmup { try await body() }
    var durations: [Duration] = []
    for _ in 0..<runs {
        let start = clock.now
        try await body()
        durations.append(clock.now - start)
    }
    return Sample(name: name, durations: durations)
}

/// Measures several ways of doing the same thing, one run of each per round, in an order that
/// rotates every round, so that the host's drifting load (dockerd's housekeeping, the other core's
/// work) falls on all of them alike and their ratio means something.
func measureInterleaved(_ cases: [(name: String, body: () async throws -> Void)], runs: Int, warmup: Int = 2) async throws -> [Sample] {
    let clock = ContinuousClock()
    for _ in 0..<warmup { for item in cases { try await item.body() } }
    var durations = Array(repeating: [Duration](), count: cases.count)
    for round in 0..<runs {
        for offset in cases.indices {
            let index = (round + offset) % cases.count
            let start = clock.now
            try await cases[index].body()
            durations[index].append(clock.now - start)
        }
    }
    return cases.indices.map { Sample(name: cases[$0].name, durations: durations[$0]) }
}

func printTable(_ samples: [Sample]) {
    let width = samples.map(\.name.count).max() ?? 10
    print("\(pad("case", width))  median ms     p99 ms   runs")
    for sample in samples {
        print(
            "\(pad(sample.name, width))  \(format(sample.median.milliseconds))  \(format(sample.p99.milliseconds))  \(String(format: "%5d", sample.durations.count))"
        )
    }
}

func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
func format(_ value: Double) -> String { String(format: "%9.2f", value) }

/// One line of a target check: the measured ratio, the target, and whether it was met.
func verdict(_ label: String, ratio: Double, target: String, met: Bool) {
    print("\(pad(label, 52)) \(String(format: "%7.2f", ratio))  target \(target)  \(met ? "met" : "NOT MET")")
}
