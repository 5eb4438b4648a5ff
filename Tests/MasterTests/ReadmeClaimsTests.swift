import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Testbed
import Testing

/// What the README says and no other test showed (TESTS.md's sample of untested claims).
@Suite("README claims, each shown once", .timeLimit(.minutes(3)))
struct ReadmeClaimsTests {
    @Test("The console's pages carry a Content-Security-Policy; its cookies are Secure behind X-Forwarded-Proto: https only")
    func consoleHeaders() async throws {
        try await withMaster { api, _, _ in
            let base = "http://127.0.0.1:\(api.client.port!)"
            func signInPage(proxied: Bool) async throws -> HTTPClientResponse {
                var request = HTTPClientRequest(url: "\(base)/ui/login")
                if proxied { request.headers.add(name: "X-Forwarded-Proto", value: "https") }
                return try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            }
            let plain = try await signInPage(proxied: false)
            #expect(plain.headers.first(name: "Content-Security-Policy")?.contains("default-src 'none'") == true, "\(plain.headers)")
            let plainCookie = try #require(plain.headers.first(name: "Set-Cookie"))
            #expect(plainCookie.contains("HttpOnly") && !plainCookie.contains("Secure"), "\(plainCookie)")
            let proxied = try await signInPage(proxied: true)
            #expect(try #require(proxied.headers.first(name: "Set-Cookie")).contains("Secure"))
        }
    }

    @Test("GET /gateway on a master without one: 404 with a sentence; a machine's capacity defaults to 4 per CPU (at least 4)")
    func gatewayAndCapacity() async throws {
        try await withMaster { api, testbed, _ in
            let admin = try await api.login("admin")
            let gateway = try await api.call(.get, "/gateway", token: admin)
            #expect(gateway.status == .notFound)
            #expect(gateway.message == "this master runs no SSH gateway (serve --ssh-port)")
            #expect(try await api.addMachine(testbed, "m1", token: admin).status == .created)
            let machine = try #require(try await api.call(.get, "/machine", token: admin).list("Machines").first)
            let cpus = try #require(machine["CPUs"] as? Int)
            #expect(machine["Capacity"] as? Int == max(4, cpus * 4), "\(machine)")
        }
    }

    @Test("The CLI's master: --server, else RESALLOC_URL, else the one logged in to, else http://127.0.0.1:8080")
    func serverChoice() async throws {
        try await withMaster { api, _, _ in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.ok("register", "admin", "admin-password")
            try await cli.ok("login", "admin", "admin-password")
            let nowhere = "http://127.0.0.1:\(freeLoopbackPort())"
            func whoami(_ arguments: [String], url: String?) async throws -> CLI.Result {
                var environment = cli.environment
                environment["RESALLOC_URL"] = url
                let outcome = try await Subprocess.run([CLI.binary, "whoami"] + arguments, environment: environment, timeout: .seconds(30))
                return CLI.Result(status: outcome.status, stdout: outcome.output, stderr: outcome.errors)
            }
            // RESALLOC_URL over the one logged in to; --server over both.
            let env = try await whoami([], url: nowhere)
            #expect(env.status != 0 && env.stderr.contains(nowhere), "\(env.stderr)")
            #expect(try await whoami(["--server", cli.server], url: nowhere).status == 0)
            // Neither: the one logged in to.
            #expect(try await whoami([], url: nil).stdout.contains("admin"))
            // A new home, nothing said: the default.
            let fresh = try await Subprocess.run(
                [CLI.binary, "login", "admin", "--password-stdin"],
                environment: ["HOME": try makeTemporaryDirectory("resalloc-fresh-home"), "PATH": "/usr/bin:/bin"],
                input: Data("admin-password\n".utf8),
                timeout: .seconds(30)
            )
            #expect(fresh.status != 0 && fresh.errors.contains("127.0.0.1:8080"), "\(fresh.errors)")
        }
    }

    @Test("A failed lease is kept an hour for its owner to read, then the pass removes it")
    func failedLeasePurged() async throws {
        try await withMaster { api, testbed, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            try await cli.setUpAdmin(resource: "broken", dockerfile: "FROM busybox\nRUN exit 7", machine: testbed.machine("m1"))
            #expect(try await cli.run(["lease", "create", "broken", "doomed", "-q"]).status != 0)
            let listed = try await cli.ok("lease", "list")
            #expect(listed.contains("doomed") && listed.contains("failed"), "\(listed)")
            func pass(hoursLater: Bool) async throws -> CLI.Result {
                // An hour later, as far as the pass can tell: its clock set ahead (a test-only override).
                var environment = ["PATH": "/usr/bin:/bin"]
                if hoursLater { environment["RESALLOC_TEST_CLOCK_SKEW"] = "3700" }
                return try await CLI.master(["cleanup", "--db", databasePath, "--key", testbed.keys["ed25519"]!], environment: environment)
            }
            #expect(try await pass(hoursLater: false).stdout.contains("failed purged 0"))
            #expect(try await cli.ok("lease", "list").contains("doomed"))
            let later = try await pass(hoursLater: true)
            #expect(later.stdout.contains("failed purged 1"), "\(later.stdout) \(later.stderr)")
            #expect(try await cli.ok("lease", "list").contains("doomed") == false)
        }
    }
}
