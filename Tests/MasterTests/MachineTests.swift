import Foundation
import Testbed
import Testing

@Suite("Adding machines", .timeLimit(.minutes(3)))
struct MachineTests {
    /// How a machine's login may be unable to use docker: the change to its sshd's `SetEnv` line,
    /// and the start of the sentence the admin should get.
    static let breakages: [String: (edit: @Sendable (String) -> String, expected: String)] = [
        "docker not on PATH": ({ $0 + " PATH=/nonexistent" }, "docker is not installed for the login"),
        "socket it may not open": ({ _ in "DOCKER_HOST=unix:///root/docker.sock" }, "the login may not use the Docker engine (permission denied"),
        "no engine": ({ _ in "DOCKER_HOST=unix:///nonexistent/docker.sock" }, "the Docker engine is not running"),
    ]

    @Test("A login that cannot use docker: 502 with what to fix, and nothing stored", arguments: breakages.keys.sorted())
    func dockerUnusable(breakage: String) async throws {
        let (edit, expected) = Self.breakages[breakage]!
        try await withMaster { api, testbed, _ in
            let admin = try await api.login("admin")
            let variant = try await testbed.variantSSHD(of: "m1") { config in
                config.split(separator: "\n", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix("SetEnv ") ? "SetEnv " + edit(String($0.dropFirst("SetEnv ".count))) : String($0) }
                    .joined(separator: "\n")
            }
            defer { variant.stop() }
            let body = api.json(["Name": "broken", "Username": variant.endpoint.user, "IP": variant.address])
            let reply = try await api.call(.post, "/machine", token: admin, body: body)
            #expect(reply.status == .badGateway)
            #expect(reply.message.hasPrefix("machine broken (\(variant.address)): \(expected)"), "\(reply.message)")
            #expect(try await api.call(.get, "/machine", token: admin).list("Machines").isEmpty)
            // The same machine with its docker working is taken.
            let working = try await api.addMachine(testbed, "m1", token: admin)
            #expect(working.status == .created, "\(working.message)")
        }
    }
}
