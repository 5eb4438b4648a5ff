import Foundation
import Testbed
import Testing

@Suite("resalloc forward: ports on the lease's own loopback", .timeLimit(.minutes(3)))
struct ForwardTests {
    @Test("HTTP from a busybox httpd on the lease's 127.0.0.1 and one on all addresses; two at once; a closed port is said and the forward goes on")
    func forward() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox\nRUN mkdir /www && echo hello-from-lease > /www/index.html") {
            api,
            cli,
            testbed,
            container in
            try await testbed.docker("m2", ["exec", "-d", container, "httpd", "-f", "-p", "127.0.0.1:8000", "-h", "/www"])
            try await testbed.docker("m2", ["exec", "-d", container, "httpd", "-f", "-p", "8002", "-h", "/www"])
            // `exec -d` returns before the servers listen: wait for both sockets in the lease's tables.
            try await waitUntil(seconds: 60, "both httpd servers listening in the lease") {
                let table = try await testbed.docker("m2", ["exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
                let rows: [[Substring]] = table.split(separator: "\n").map { $0.split(separator: " ") }
                let listening: [Substring] = rows.filter { $0.count > 3 && $0[3] == "0A" }.map { $0[1] }
                // 8000 on 127.0.0.1; 8002 on every address, of IPv4 or IPv6 as busybox chose.
                return listening.contains("0100007F:1F40") && listening.contains { $0.hasSuffix(":1F42") }
            }

            let (process, stdout, stderr) = try cli.start("forward", "box", "0:8000", "0:8001", "0:8002")
            defer { process.kill9() }
            var lines: [String] = []
            try? await waitUntil(seconds: 30) {
                lines = ((try? String(contentsOfFile: stdout, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
                return lines.count >= 3
            }
            let ports = Dictionary(
                uniqueKeysWithValues: lines.compactMap { line -> (Int, String)? in
                    guard let match = line.wholeMatch(of: /forwarding 127\.0\.0\.1:(\d+) -> box:(\d+)/) else { return nil }
                    return (Int(match.2)!, String(match.1))
                }
            )
            #expect(ports.count == 3, "\(lines)")
            let local = try #require(ports[8000])

            // Two connections at once, to the server that listens only on the lease's localhost.
            async let first = Self.curl("http://127.0.0.1:\(local)/")
            async let second = Self.curl("http://127.0.0.1:\(local)/index.html")
            #expect(try await first.output == "hello-from-lease\n")
            #expect(try await second.output == "hello-from-lease\n")
            #expect(try await Self.curl("http://127.0.0.1:\(try #require(ports[8002]))/").output == "hello-from-lease\n")

            // Nothing on 8001: that connection closes, the forward says so and carries on.
            let refused = try await Self.curl("http://127.0.0.1:\(try #require(ports[8001]))/")
            #expect(refused.status != 0)
            try await waitUntil(seconds: 15, "the forward's message about port 8001") {
                try String(contentsOfFile: stderr, encoding: .utf8).contains("nothing listens on port 8001 in lease box: the connection was refused")
            }
            #expect(try await Self.curl("http://127.0.0.1:\(local)/").output == "hello-from-lease\n")
            #expect(process.isRunning)
        }
    }

    static func curl(_ url: String) async throws -> Subprocess.Outcome {
        try await Subprocess.run(["curl", "-sS", "--max-time", "20", url], timeout: .seconds(30))
    }
}
