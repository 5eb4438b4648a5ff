import Foundation
import ResallocAPI
import ResallocClient
import Synchronization
import Testbed
import Testing

/// Build lines with the moment each arrived.
final class ArrivedLines: Sendable {
    private let lines = Mutex<[(line: String, at: ContinuousClock.Instant)]>([])
    func append(_ line: String) { lines.withLock { $0.append((line, .now)) } }
    func first(containing text: String) -> ContinuousClock.Instant? { lines.withLock { $0.first { $0.line.contains(text) }?.at } }
    var all: [String] { lines.withLock { $0.map(\.line) } }
}

@Suite("Image build output streams to the client", .timeLimit(.minutes(3)))
struct BuildStreamTests {
    /// A Dockerfile whose build prints a line, waits 10 s, prints another; new to every machine.
    /// Under a full test run the two cores are busy and a line can be seen seconds late (3.6 s
    /// once in CI), hence 10 s of sleep against a bar of 3.
    /// The quotes keep the markers out of docker's "Step 2/2 : RUN …" line.
    static func slowDockerfile() -> String {
        "FROM busybox\nRUN echo first-\(UUID().uuidString.prefix(8)) && echo early-''marker && sleep 10 && echo late-''marker\n"
    }

    @Test("Build lines arrive while the build runs, then the lease; a failing build streams its log and a 422")
    func streamsThroughTheAPI() async throws {
        try await withMaster { api, testbed, databasePath in
            let admin = try await LeaseTests.setUp(api, testbed)
            _ = try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "slow", "File": Self.slowDockerfile()]))
            let client = ResallocClient(server: "http://127.0.0.1:\(api.client.port!)", token: admin)

            let lines = ArrivedLines()
            let reply = try await client.createLease("slow", name: "streamed", ttl: nil) { lines.append($0) }
            let done = ContinuousClock.now
            #expect(reply.value.name == "streamed" && reply.value.state == "running" && reply.value.machine == "m1")
            #expect(reply.message == "lease streamed runs on m1")
            let early = try #require(lines.first(containing: "early-marker"), "no early-marker in \(lines.all)")
            let late = try #require(lines.first(containing: "late-marker"), "no late-marker in \(lines.all)")
            // The first line came while the build still slept, not all at the end.
            #expect(late - early > .seconds(3), "early-marker came only \(late - early) before late-marker")
            #expect(done - early > .seconds(3))
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).count == 1)

            // An image already on the machine: no build, no lines.
            let cached = ArrivedLines()
            _ = try await client.createLease("slow", name: "cached", ttl: nil) { cached.append($0) }
            #expect(cached.all.isEmpty)

            // A failing build: its log streams, then the failure with the status a plain request gets.
            _ = try await api.call(
                .post,
                "/resource",
                token: admin,
                body: api.json(["Name": "broken", "File": "FROM busybox\nRUN echo about-to-''fail && exit 3\n"])
            )
            let failing = ArrivedLines()
            await #expect {
                _ = try await client.createLease("broken", name: "doomed", ttl: nil) { failing.append($0) }
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == 422 && message.contains("about-to-fail")
            }
            #expect(failing.first(containing: "about-to-fail") != nil)
            #expect(try await api.call(.get, "/lease/doomed", token: admin).object("Lease")["State"] as? String == "failed")
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).count == 2)

            // Refused before anything starts: a plain error reply, whatever was asked for.
            await #expect {
                _ = try await client.createLease("nothing-like-it", name: "x", ttl: "forever") { _ in }
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == 400 && message.contains("forever")
            }
            for name in ["streamed", "cached"] { _ = try await client.deleteLease(name) }
        }
    }

    @Test("resalloc lease create shows the build on stderr as it happens, then prints the lease")
    func streamsThroughTheCLI() async throws {
        try await withMaster { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            let machine = testbed.machine("m1")
            try await cli.setUpAdmin(resource: "slow", dockerfile: Self.slowDockerfile(), machine: machine)

            let (create, stdout, stderr) = try cli.start("lease", "create", "slow", "box")
            defer { create.kill9() }
            var sawEarlyWhileRunning = false
            let deadline = ContinuousClock.now + .seconds(60)
            while create.isRunning && ContinuousClock.now < deadline {
                let progress = (try? String(contentsOfFile: stderr, encoding: .utf8)) ?? ""
                if progress.contains("early-marker") && !progress.contains("late-marker") {
                    sawEarlyWhileRunning = true
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(sawEarlyWhileRunning, "the build's first line did not show before the build ended")
            #expect(try await create.wait(timeout: .seconds(60)) == 0)
            let shown = try String(contentsOfFile: stderr, encoding: .utf8)
            #expect(shown.contains("  | early-marker") && shown.contains("  | late-marker"))
            #expect(try String(contentsOfFile: stdout, encoding: .utf8).hasPrefix("lease box runs on m1"))

            // --quiet: the lease only, though this image is built too.
            try await cli.ok("resources", "create", "other", "FROM busybox\nRUN echo quiet-\(UUID().uuidString.prefix(8))")
            let quiet = try await cli.run(["lease", "create", "other", "box2", "--quiet"])
            #expect(quiet.status == 0 && quiet.stderr.isEmpty)
            for name in ["box", "box2"] { try await cli.ok("lease", "delete", name) }
            #expect(try await leaseContainers(testbed, "m1", master: try masterID(databasePath)).isEmpty)
        }
    }
}
