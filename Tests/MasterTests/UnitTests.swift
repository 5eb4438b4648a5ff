import Core
import Docker
import Foundation
import Store
import Testing

@Suite("Pure rules: placement, image tags, lifetimes")
struct UnitTests {
    static func machine(_ name: String, id: Int64, capacity: Int, healthy: Bool = true) -> Machine {
        var machine = Machine(
            name: name,
            login: "l",
            host: "127.0.0.1",
            port: 22,
            hostKeyType: "t",
            hostKeyFingerprint: "f",
            cpus: 1,
            memoryBytes: 1,
            capacity: capacity,
            healthy: healthy
        )
        machine.id = id
        return machine
    }

    @Test("Least loaded healthy machine with room first; full and unhealthy ones never")
    func placement() {
        let machines = [
            Self.machine("a", id: 1, capacity: 4), Self.machine("b", id: 2, capacity: 10), Self.machine("c", id: 3, capacity: 2),
            Self.machine("down", id: 4, capacity: 10, healthy: false),
        ]
        let two = MachineLoad(containers: 2)
        let order = Placement.candidates(machines, loads: [1: two, 2: two, 3: two]).map(\.name)
        #expect(order == ["b", "a"])  // b is at 20 %, a at 50 %, c is full, down is down
        #expect(Placement.candidates(machines, loads: [:]).map(\.name) == ["a", "b", "c"])
    }

    @Test("Placement fits memory and CPUs: a machine takes a container only while the limits add up within what it has")
    func placementByMemoryAndCPUs() {
        var big = Self.machine("big", id: 1, capacity: 100)
        big.memoryBytes = 10 << 30
        big.cpus = 2
        let gib: Int64 = 1 << 30
        // 40 % of its memory fits twice, not a third time.
        let used = MachineLoad(containers: 2, memoryBytes: 8 * gib, milliCPUs: 0)
        #expect(MachineLoad(containers: 1, memoryBytes: 4 * gib).refusal(of: big, memoryBytes: 4 * gib, milliCPUs: 0, cpuOvercommit: 4) == nil)
        #expect(used.refusal(of: big, memoryBytes: 4 * gib, milliCPUs: 0, cpuOvercommit: 4) == .memory)
        #expect(used.refusal(of: big, memoryBytes: 2 * gib, milliCPUs: 0, cpuOvercommit: 4) == nil, "exactly full still fits")
        // 2 CPUs × overcommit 2 = 4 CPUs of limits.
        let cpus = MachineLoad(containers: 3, memoryBytes: 0, milliCPUs: 3500)
        #expect(cpus.refusal(of: big, memoryBytes: 0, milliCPUs: 500, cpuOvercommit: 2) == nil)
        #expect(cpus.refusal(of: big, memoryBytes: 0, milliCPUs: 600, cpuOvercommit: 2) == .cpus)
        #expect(cpus.refusal(of: big, memoryBytes: 0, milliCPUs: 600, cpuOvercommit: 4) == nil)
        #expect(Placement.candidates([big], loads: [1: used], memoryBytes: 4 * gib).isEmpty)
        let sentence = Placement.shortage([big], loads: [1: used], memoryBytes: 4 * gib, milliCPUs: 0, cpuOvercommit: 4)
        #expect(sentence == "memory ran out (a lease needs 4g; the most any machine has free is 2g)")
        var down = big
        down.healthy = false
        #expect(Placement.shortage([down], loads: [:], memoryBytes: gib, milliCPUs: 0, cpuOvercommit: 4) == "no machine is up")
    }

    @Test("Sizes and CPUs as people write them, and the docker run options they become")
    func limitsText() {
        #expect(ByteSize.parse("2g") == 2 << 30)
        #expect(ByteSize.parse("1.5G") == 3 << 29)
        #expect(ByteSize.parse("512m") == 512 << 20)
        #expect(ByteSize.parse("1048576") == 1 << 20)
        for bad in ["", "g", "-1g", "2x", "abc", "0"] { #expect(ByteSize.parse(bad) == nil, "\(bad)") }
        #expect(ByteSize.format(2 << 30) == "2g")
        #expect(ByteSize.format(3 << 29) == "1.5g")
        #expect(ByteSize.format(512 << 20) == "512m")
        #expect(CPUAmount.parse("1.5") == 1500)
        #expect(CPUAmount.format(1500) == "1.5")
        #expect(CPUAmount.format(2000) == "2")
        #expect(CPUAmount.format(250) == "0.25")
        #expect(CPUAmount.parse("0") == nil)
        let options = ContainerLimits(memoryBytes: 2 << 30, milliCPUs: 1500, pids: 64).runOptions
        #expect(
            options == [
                "--security-opt", "no-new-privileges", "--cap-drop", "NET_RAW", "--memory", "2147483648b", "--memory-swap", "2147483648b",
                "--cpus", "1.5", "--pids-limit", "64",
            ]
        )
        #expect(ContainerLimits().runOptions == ["--security-opt", "no-new-privileges", "--cap-drop", "NET_RAW"])
        #expect(throws: MasterError.self) { try ResourceCatalog.limits(memory: "1k", cpus: nil, pids: nil) }
        #expect(throws: MasterError.self) { try ResourceCatalog.limits(memory: nil, cpus: 0.001, pids: nil) }
        #expect(throws: MasterError.self) { try ResourceCatalog.limits(memory: nil, cpus: nil, pids: 2) }
        let merged = try? ResourceCatalog.limits(memory: nil, cpus: 2, pids: nil, over: ResourceLimits(memoryBytes: 1 << 30, pids: 100))
        #expect(merged == ResourceLimits(memoryBytes: 1 << 30, milliCPUs: 2000, pids: 100))
    }

    @Test("Guessing throttle: a name after 10 failures, an address after 30, each for the window from the failures it counts")
    func loginThrottle() {
        let throttle = LoginThrottle()
        let start = ContinuousClock.now
        for i in 0..<10 {
            #expect(throttle.refusal(name: "alice", address: "10.0.0.\(i)", now: start) == nil)
            throttle.failed(name: "alice", address: "10.0.0.\(i)", now: start)
        }
        let wait = throttle.refusal(name: "alice", address: "10.0.0.99", now: start + .seconds(60))
        #expect(wait.map { (839...841).contains($0) } == true, "\(String(describing: wait))")
        #expect(throttle.refusal(name: "bob", address: "10.0.0.99", now: start) == nil, "another name from another address")
        #expect(throttle.refusal(name: "alice", address: nil, now: start + .seconds(15 * 60)) == nil, "the window has passed")
        for i in 0..<30 { throttle.failed(name: "user\(i)", address: "10.9.9.9", now: start) }
        #expect(throttle.refusal(name: "carol", address: "10.9.9.9", now: start) != nil, "30 from one address")
        #expect(throttle.refusal(name: "carol", address: "10.9.9.8", now: start) == nil)
    }

    @Test("Image tags: lowercase repository, 12 hex of the Dockerfile's SHA-256, new tag when it changes")
    func imageTags() {
        let first = ResourceCatalog.imageTag(for: Resource(name: "My_Box-", dockerfile: Data("FROM busybox\n".utf8)))
        let same = ResourceCatalog.imageTag(for: Resource(name: "My_Box-", dockerfile: Data("FROM busybox\n".utf8)))
        let edited = ResourceCatalog.imageTag(for: Resource(name: "My_Box-", dockerfile: Data("FROM busybox\nRUN true\n".utf8)))
        // printf 'FROM busybox\n' | sha256sum: bd6eb7cda7ad…
        #expect(first == "resalloc/my-box:bd6eb7cda7ad")
        #expect(first == same)
        #expect(first != edited)
    }

    @Test("Lifetimes", arguments: [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)])
    func lifetimes(text: String, seconds: Int64) {
        #expect(TTL.parse(text)?.components.seconds == seconds)
    }

    @Test("Not lifetimes", arguments: ["", "h", "0s", "-5m", "2x", "1.5h", "forever"])
    func notLifetimes(text: String) {
        #expect(TTL.parse(text) == nil)
    }
}
