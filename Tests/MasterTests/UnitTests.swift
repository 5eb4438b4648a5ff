import Core
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
        let order = Placement.candidates(machines, activeLeases: [1: 2, 2: 2, 3: 2]).map(\.name)
        #expect(order == ["b", "a"])  // b is at 20 %, a at 50 %, c is full, down is down
        #expect(Placement.candidates(machines, activeLeases: [:]).map(\.name) == ["a", "b", "c"])
    }

    @Test("Image tags: lowercase repository, 12 hex of the Dockerfile's SHA-256, new tag when it changes")
    func imageTags() {
        let first = ResourceCatalog.imageTag(for: Resource(name: "My_Box-", dockerfile: Data("FROM busybox\n".utf8)))
        let same = ResourceCatalog.imageTag(for: Resource(name: "My_Box-", dockerfile: Data("FROM busybox\n".utf8)))
        let edited = ResourceCatalog.imageTag(for: Resource(name: "My_Box-", dockerfile: Data("FROM busybox\nRUN true\n".utf8)))
        #expect(first.wholeMatch(of: /resalloc\/my-box:[0-9a-f]{12}/) != nil)
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
