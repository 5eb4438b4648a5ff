import AsyncHTTPClient
import Foundation
import Store
import Testbed
import Testing

/// The web console in a real browser (headless Chromium) against a real master and machine.
/// With `RESALLOC_SCREENSHOTS=DIR` the tests leave a PNG of each page there (docs/ holds them).
@Suite("The web console, in a real browser", .timeLimit(.minutes(4)))
struct ConsoleTests {
    @Test("Sign in (a wrong password first), see a lease made through the API, extend and delete it from the page: gone on the machine")
    func leaseFromThePage() async throws {
        let (master, cli, testbed) = try await Self.start()
        defer { master.kill9() }
        let bob = try CLI(server: cli.server)
        try await bob.ok("register", "bob", "bob-password")
        try await cli.ok("lease", "create", "box", "web1", "-q")
        // A lease whose build fails, for the admin's list of failures.
        try await cli.ok("resources", "create", "broken", "-f", "-", stdin: "FROM busybox\nRUN echo the build broke && exit 3")
        #expect(try await cli.run(["lease", "create", "broken", "bad1", "-q"]).status != 0)
        let base = "http://127.0.0.1:\(master.port)"

        let browser = try await Browser.launch()
        defer { browser.close() }
        try await browser.open("\(base)/")
        #expect(try await browser.location() == "\(base)/ui/login")
        try await Self.screenshot(browser, "console-sign-in.png")

        try await browser.fill("#name", "admin")
        try await browser.fill("#password", "not-the-password")
        try await browser.click("#login button")
        #expect(try await browser.status() == 401)
        #expect(try await browser.text("#error") == "wrong user name or password")

        try await browser.fill("#password", "admin-password")
        try await browser.click("#login button")
        #expect(try await browser.location() == "\(base)/ui")
        #expect(try await browser.text("#lease-web1 .state") == "running")
        #expect(try await browser.text("#machine-m2 .state") == "up")
        #expect(try await browser.text("#machine-m2 td:nth-child(4)")?.hasPrefix("1 / ") == true)
        #expect(try await browser.text("#machine-m2 td:nth-child(6)")?.hasPrefix("1g / ") == true, "web1's memory limit is counted")
        #expect(try await browser.text("#pool-box td:nth-child(3)") == "1g", "box's containers get the default memory")
        #expect(try await browser.text("#pool-box td:nth-child(5)") == "1024")
        #expect(try await browser.text("#user-bob .name") == "bob")
        #expect(try await browser.text("#failures")?.contains("admin/bad1 (broken)") == true)
        // The session is an HttpOnly, SameSite=Strict cookie that the page's scripts cannot read.
        let session = try await browser.cookies().first { $0["name"] as? String == "resalloc_session" }
        #expect(session?["httpOnly"] as? Bool == true)
        #expect(session?["sameSite"] as? String == "Strict")
        #expect(try await browser.evaluate("document.cookie") as? String == "")

        // Extend by a day: the API sees the new end.
        let before = try await Self.expiry(cli, "web1")
        try await browser.click("#lease-web1 button.extend", choosing: [("#lease-web1 select", "1d")])
        #expect(try await browser.text("#notice") == "Lease web1 extended.")
        let after = try await Self.expiry(cli, "web1")
        #expect(after.timeIntervalSince(Date()) > 86400 - 120 && after > before, "\(before) → \(after)")

        // Approve bob from the page: bob can log in.
        try await browser.click("#user-bob button.approve")
        #expect(try await browser.text("#notice") == "bob approved.")
        #expect(try await bob.ok("login", "bob", "bob-password") == "logged in as bob\n")

        // A lease and a warm pool made meanwhile show up without a reload (which would drop this mark).
        try await browser.evaluate("window.stayed = true")
        try await cli.ok("lease", "create", "box", "web2", "-q")
        try await cli.ok("resources", "pool", "box", "1")
        var shown = false
        for _ in 0..<80 where !shown {
            try await Task.sleep(for: .milliseconds(250))
            let lease = try await browser.text("#lease-web2 .state")
            let pool = try await browser.text("#pool-box td:nth-child(2)")
            shown = lease == "running" && pool == "1 / 1"
        }
        #expect(shown, "the panel did not show web2 and a ready pool within 20 s")
        #expect(try await browser.evaluate("window.stayed") as? Bool == true, "the page was reloaded")
        try await Self.screenshot(browser, "console-admin.png")

        // Delete from the page: the row and the container are gone.
        let container = try #require(try await AppDatabase(path: master.databasePath).leaseListings(ownerID: nil).first { $0.lease.name == "web1" })
            .lease.containerName(masterID: try masterID(master.databasePath))
        try await browser.click("#lease-web1 button.delete")
        #expect(try await browser.text("#notice") == "Lease web1 deleted.")
        #expect(try await browser.text("#lease-web1") == nil)
        let left = try await testbed.docker("m2", ["ps", "-a", "--filter", "name=^\(container)$", "--format", "{{.Names}}"])
        #expect(left.isEmpty, "\(left)")
        _ = try await cli.run(["lease", "delete", "web2"])
        try await cli.ok("resources", "pool", "box", "0")
    }

    @Test("A user sees only their leases and no fleet; a form without its token, or another's lease, changes nothing; signing out ends the session")
    func userBoundaries() async throws {
        let (master, cli, _) = try await Self.start()
        defer { master.kill9() }
        let bob = try CLI(server: cli.server)
        try await bob.ok("register", "bob", "bob-password")
        try await cli.ok("user", "approve", "bob")
        try await bob.ok("login", "bob", "bob-password")
        try await cli.ok("lease", "create", "box", "secret", "-q")
        try await bob.ok("lease", "create", "box", "mine", "-q")
        let base = "http://127.0.0.1:\(master.port)"

        let browser = try await Browser.launch()
        defer { browser.close() }
        try await browser.open("\(base)/ui/login")
        try await browser.fill("#name", "bob")
        try await browser.fill("#password", "bob-password")
        try await browser.click("#login button")
        #expect(try await browser.text("#lease-mine .state") == "running")
        #expect(try await browser.text("#lease-secret") == nil)
        #expect(try await browser.text("#machines") == nil)
        #expect(try await browser.text("#approvals") == nil)
        try await Self.screenshot(browser, "console-user.png")

        // Posts the page could make: without the form token, with a wrong one, and with the
        // right one against the admin's lease.
        let token = try #require(try await browser.evaluate("document.querySelector('#lease-mine input[name=csrf]').value") as? String)
        func post(_ path: String, _ fields: String) async throws -> Int {
            let script = "fetch('\(path)', {method: 'POST', body: new URLSearchParams(\(fields)), redirect: 'manual'}).then(r => r.status)"
            return (try await browser.evaluate(script) as? NSNumber)?.intValue ?? 0
        }
        #expect(try await post("/ui/lease/mine/delete", "{}") == 403)
        #expect(try await post("/ui/lease/mine/delete", "{csrf: 'x\(token.dropFirst())'}") == 403)
        #expect(try await post("/ui/lease/secret/delete", "{csrf: '\(token)'}") == 404)
        #expect(try await post("/ui/user/bob/approve", "{csrf: '\(token)'}") == 403)
        let leases = try await AppDatabase(path: master.databasePath).leaseListings(ownerID: nil).map { "\($0.lease.name):\($0.lease.state)" }
            .sorted()
        #expect(leases == ["mine:running", "secret:running"])

        // Signing out revokes the token: the old cookie no longer opens the panel.
        let cookie = try #require(try await browser.cookies().first { $0["name"] as? String == "resalloc_session" }?["value"] as? String)
        try await browser.click("#sign-out")
        // The page that loaded first may still be on its way to the sign-in page on a loaded run.
        var location = ""
        try? await waitUntil(seconds: 15) {
            location = try await browser.location()
            return location == "\(base)/ui/login?signed-out"
        }
        #expect(location == "\(base)/ui/login?signed-out")
        var request = HTTPClientRequest(url: "\(base)/ui/panel")
        request.headers.add(name: "Cookie", value: "resalloc_session=\(cookie)")
        #expect(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status == .unauthorized)
        for name in ["mine", "secret"] { _ = try await (name == "mine" ? bob : cli).run(["lease", "delete", name]) }
    }

    /// A master with an admin (admin/admin-password), the resource `box` and machine m2.
    static func start() async throws -> (MasterProcess, CLI, Testbed) {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-console")
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        try await cli.setUpAdmin(resource: "box", dockerfile: "FROM busybox", machine: testbed.machine("m2"))
        return (master, cli, testbed)
    }

    static func expiry(_ cli: CLI, _ lease: String) async throws -> Date {
        let listed = try await cli.ok("lease", "list", "--json")
        let leases = try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [[String: Any]] ?? []
        let text = try #require(leases.first { $0["Name"] as? String == lease }?["ExpiresAt"] as? String)
        return try #require(ISO8601DateFormatter().date(from: text))
    }

    static func screenshot(_ browser: Browser, _ name: String) async throws {
        guard let directory = ProcessInfo.processInfo.environment["RESALLOC_SCREENSHOTS"], !directory.isEmpty else { return }
        try await browser.screenshot(to: "\(directory)/\(name)")
    }
}
