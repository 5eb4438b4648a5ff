import AsyncHTTPClient
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import Server
import Store
import Synchronization
import Testbed

/// The arguments `resalloc-master serve` would pass, for a fresh SQLite file.
struct TestArguments: AppArguments {
    var host = "127.0.0.1"
    var port = 0
    var databasePath: String
    var keyPath: String
    var logLevel: Logger.Level = .warning
    var bcryptCost: UInt8 = 4
    var reconcileEvery: Duration = .zero
    /// No pass after the one at start: the tests run cleanup themselves.
    var reconcileFollowUp: Duration = .zero
    var recordInput = false
    var webSocketPingEvery: Duration = .seconds(30)
    var tokenLifetime: Duration = .seconds(30 * 86400)
    var recordMax = 64 << 20
    /// Loopback test machines have no firewall of their own: only the tenancy suite's real
    /// machine (m10) runs with owner networks.
    var limitSettings = LimitPolicy.Settings(ownerNetworks: false)
    var maxSessionsPerUser = 8
    var keepRecordings: Duration = .seconds(30 * 86400)
}

/// A JSON reply as a user of the API sees it.
struct APIReply: @unchecked Sendable {
    let status: HTTPResponse.Status
    let json: [String: Any]

    var success: Bool { json["Success"] as? Bool ?? false }
    var message: String { json["Message"] as? String ?? "" }
    func list(_ key: String) -> [[String: Any]] { json[key] as? [[String: Any]] ?? [] }
    func object(_ key: String) -> [String: Any] { json[key] as? [String: Any] ?? [:] }
}

/// Talks to a live master over HTTP on loopback.
struct API: Sendable {
    let client: any TestClientProtocol

    func call(_ method: HTTPRequest.Method, _ path: String, token: String? = nil, bearer: Bool = false, body: String? = nil) async throws -> APIReply
    {
        var headers: [(String, String)] = []
        if let token { headers.append(bearer ? ("Authorization", "Bearer \(token)") : ("token", token)) }
        let reply = try await sendJSON(port: client.port!, .init(rawValue: method.rawValue), path, headers: headers, body: body.map { Data($0.utf8) })
        let status = HTTPResponse.Status(code: reply.status)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: reply.body))) as? [String: Any] else {
            throw TestbedError("\(method) \(path) answered \(status) with a body that is not a JSON object: \(String(buffer: reply.body))")
        }
        return APIReply(status: status, json: object)
    }

    func json(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    /// Registers and logs in; returns the token.
    func login(_ name: String, password: String = "password-\(UUID().uuidString.prefix(6))", register: Bool = true) async throws -> String {
        if register {
            let registered = try await call(.post, "/register", body: json(["Name": name, "Password": password]))
            guard registered.status == .created else { throw TestbedError("register \(name): \(registered.status) \(registered.message)") }
        }
        let reply = try await call(.post, "/login", body: json(["Name": name, "Password": password]))
        guard let token = reply.json["Token"] as? String else { throw TestbedError("login \(name): \(reply.status) \(reply.message)") }
        return token
    }

    /// Adds a testbed machine as an admin.
    func addMachine(_ testbed: Testbed, _ name: String, token: String, capacity: Int? = nil) async throws -> APIReply {
        let machine = testbed.machine(name)
        var body: [String: Any] = ["Name": name, "Username": machine.login, "IP": "\(machine.host):\(machine.port)"]
        if let capacity { body["Capacity"] = capacity }
        return try await call(.post, "/machine", token: token, body: json(body))
    }
}

/// One request with a JSON body to the master on 127.0.0.1:`port`, as a user's HTTP client makes
/// it: through AsyncHTTPClient with a 120 s deadline, not Hummingbird's test client, which gives
/// up after 20 s without a byte (a build behind `POST /lease` passed that in a loaded CI run).
func sendJSON(
    port: Int,
    _ method: HTTPMethod,
    _ path: String,
    headers: [(String, String)] = [],
    body: Data? = nil
) async throws -> (status: Int, body: ByteBuffer) {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    request.method = method
    request.headers.add(name: "Content-Type", value: "application/json")
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body { request.body = .bytes(ByteBuffer(data: body)) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
    return (Int(response.status.code), try await response.body.collect(upTo: 16 << 20))
}

/// Runs `body` against a live master on loopback with a new database file, using the test
/// machines' key as the master's key; `configure` changes what `serve` would be given.
func withMaster(
    configure: (inout TestArguments) -> Void = { _ in },
    _ body: @escaping @Sendable (API, Testbed, String) async throws -> Void
) async throws {
    let testbed = try await Testbed.shared()
    let directory = try makeTemporaryDirectory("resalloc-master")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let databasePath = "\(directory)/resalloc.db"
    var arguments = TestArguments(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!)
    configure(&arguments)
    let app = try await buildApplication(arguments)
    let id = try? masterID(databasePath)
    // The master's shutdown waits for every request and session it serves: one that never ends
    // would hold the run until its deadline, so it fails this test, by name, instead.
    let bodyEnded = Mutex(false)
    do {
        let ended: @Sendable () -> Bool = { bodyEnded.withLock { $0 } }
        try await within(.seconds(60), after: ended, "the in-process master's shutdown after the test") {
            try await app.test(.live) { client in
                defer { bodyEnded.withLock { $0 = true } }
                try await body(API(client: client), testbed, databasePath)
            }
        }
    } catch {
        if let id { await testbed.removeContainers(ofMaster: id) }
        throw error
    }
    if let id { await testbed.removeContainers(ofMaster: id) }
}

/// A live master, the CLI logged in as its admin, a resource `box` built from `dockerfile`,
/// `machine`, and a running lease `box`: for the suites that reach into one lease. `body`
/// gets the API, the CLI, the testbed and the lease's container.
func withLeasedBox(
    dockerfile: String = "FROM busybox",
    machine: String = "m2",
    _ body: @escaping @Sendable (API, CLI, Testbed, String) async throws -> Void
) async throws {
    try await withMaster { api, testbed, databasePath in
        let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
        try await cli.setUpAdmin(resource: "box", dockerfile: dockerfile, machine: testbed.machine(machine))
        try await cli.ok("lease", "create", "box", "box", "-q")
        try await body(api, cli, testbed, "resalloc-\(try masterID(databasePath).prefix(8))-1")
    }
}

/// The containers on a machine that carry `resalloc.lease`, by name, as the machine's own docker sees them.
func leaseContainers(_ testbed: Testbed, _ machine: String, master: String? = nil) async throws -> [String] {
    var arguments = ["ps", "-a", "--format", "{{.Names}}", "--filter", "label=resalloc.lease"]
    if let master { arguments += ["--filter", "label=resalloc.master=\(master)"] }
    return try await testbed.docker(machine, arguments).split(separator: "\n").map(String.init)
}

/// The master id a database was given, as its containers are labelled.
func masterID(_ databasePath: String) throws -> String {
    try AppDatabase(path: databasePath).masterID()
}
