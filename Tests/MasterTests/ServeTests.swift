import AsyncHTTPClient
import Foundation
import Testbed
import Testing

@Suite("resalloc-master serve, as an operator runs it", .serialized, .timeLimit(.minutes(5)))
struct ServeTests {
    @Test("/health answers; on SIGTERM the lease being built is finished, then the master exits 0 and frees its port")
    func drainsOnSIGTERM() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-serve")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!, logPath: "\(directory)/master.log")
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        defer { master.kill9() }
        try await master.start()

        let health = try await HTTPClient.shared.execute(HTTPClientRequest(url: "\(cli.server)/health"), timeout: .seconds(10))
        #expect(health.status == .ok)
        #expect(String(buffer: try await health.body.collect(upTo: 4096)) == #"{"Message":"ok","Success":true}"#)

        // A build that takes three seconds, on an image no machine has yet.
        let marker = UUID().uuidString
        try await cli.setUpAdmin(
            resource: "slow",
            dockerfile: "FROM busybox\nRUN echo build-''started && sleep 3 && echo \(marker) > /id\n",
            machine: testbed.machine("m2")
        )
        let (create, output, errors) = try cli.start("lease", "create", "slow", "drained")
        defer { create.kill9() }
        try await within(.seconds(60), "the build to start") {
            while !((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "").contains("build-started") {
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        // A connection opened ahead of need, on which no request ever comes, does not hold the
        // drain: the master closes it.
        let silent = try SilentConnection(port: master.port)
        master.terminate()
        #expect(try await onOwnThread { try silent.closedByPeer(within: 60) }, "the master kept a connection that sent nothing")
        #expect(try await create.wait(timeout: .seconds(60)) == 0, "\((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")")
        #expect(try String(contentsOfFile: output, encoding: .utf8).contains("resalloc ssh drained"))
        #expect(try await master.wait(timeout: .seconds(30)) == 0)
        #expect(try String(contentsOfFile: "\(directory)/master.log", encoding: .utf8).contains("resalloc-master stopped: requests drained"))

        // The lease the master finished while stopping really runs.
        let id = try masterID("\(directory)/resalloc.db")
        let containers = try await leaseContainers(testbed, "m2", master: id)
        defer { testbed.removeContainers("m2", containers) }
        #expect(containers.count == 1)
        for container in containers {
            #expect(try await testbed.docker("m2", ["exec", container, "cat", "/id"]) == "\(marker)\n")
        }
        // Nothing listens any more.
        let after = try await cli.run(["resources", "list"])
        #expect(after.status != 0)
        #expect(after.stderr.contains("cannot reach"), "\(after.stderr)")
    }

    @Test("Bad settings are refused before anything starts, each with its flag named")
    func badSettings() async throws {
        let testbed = try await Testbed.shared()
        let key = testbed.keys["ed25519"]!
        let cases: [([String], [String: String], String)] = [
            (["--port", "0"], [:], "--port"),
            ([], ["RESALLOC_PORT": "eighty"], "RESALLOC_PORT"),
            (["--token-ttl", "forever"], [:], "--token-ttl"),
            (["--default-ttl", "8d"], [:], "--default-ttl must not exceed --max-ttl"),
            (["--key", "/nonexistent/resalloc.pem"], [:], "make keys"),
            (["--ssh-port", "70000"], [:], "--ssh-port"),
            ([], ["RESALLOC_SSH_PORT": "ssh"], "RESALLOC_SSH_PORT"),
        ]
        for (flags, environment, expected) in cases {
            let database = FileManager.default.temporaryDirectory.appendingPathComponent("resalloc-bad-\(UUID().uuidString).db").path
            let arguments = ["serve", "--db", database] + (flags.contains("--key") ? [] : ["--key", key]) + flags
            let result = try await CLI.master(arguments, environment: environment.merging(["PATH": "/usr/bin:/bin"]) { $1 })
            #expect(result.status != 0, "\(flags) \(environment)")
            #expect(result.stderr.contains(expected), "\(flags) \(environment): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: database), "\(flags) \(environment) created the database")
        }
    }
}
