import Core
import Foundation
import GRDB
import Logging
import Server
import Store
import Testbed
import Testing

@Suite("Schema and API description", .timeLimit(.minutes(3)))
struct SchemaTests {
    @Test("Migrations go down to 0 and back up, leaving a working database")
    func downAndUp() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resalloc-migrate-\(UUID().uuidString).db").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let database = try AppDatabase(path: path)
        #expect(try await database.writer.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
        #expect(try await database.writer.read { try Bool.fetchOne($0, sql: "PRAGMA foreign_keys") } == true)
        let all = Array(1...Schema.latestVersion)
        #expect(try database.migrateUp() == all)
        _ = try await database.createUser(name: "before", passwordHash: "x")
        let firstID = try database.masterID()
        #expect(try database.migrateDown(to: 1) == Array(all.dropFirst().reversed()))
        #expect(try database.schemaVersion() == 1)
        #expect(throws: StoreError.self) { try database.requireCurrentSchema() }
        #expect(try await database.users().map(\.name) == ["before"])
        #expect(try database.migrateDown() == [1])
        #expect(try database.migrationStatus().allSatisfy { $0.appliedAt == nil })
        #expect(try database.migrateUp(to: 2) == [1, 2])
        #expect(try database.migrateUp() == Array(all.dropFirst(2)))
        #expect(try database.migrateUp().isEmpty)
        try database.requireCurrentSchema()
        let user = try await database.createUser(name: "after", passwordHash: "x")
        #expect(user.role == .admin)
        #expect(try database.masterID() != firstID)
        let resource = try await database.createResource(name: "r", dockerfile: Data("FROM busybox".utf8))
        await #expect(throws: StoreError.conflict("a resource named r exists already")) {
            try await database.createResource(name: "r", dockerfile: Data())
        }
        _ = resource
    }

    @Test("resalloc-master migrate status, down --to 1 and up on a file; a mistyped --db is an error and creates nothing")
    func migrateCommand() async throws {
        let directory = try makeTemporaryDirectory("resalloc-migrate-cli")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/resalloc.db"
        for command in [["migrate", "status"], ["migrate", "down"], ["user", "list"], ["user", "approve", "bob"], ["cleanup"]] {
            let result = try await CLI.master(command + ["--db", path])
            #expect(result.status != 0, "\(command)")
            #expect(result.stderr.contains("there is no database at \(path)"), "\(command): \(result.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)

        let all = Array(1...Schema.latestVersion)
        func listed(_ versions: some Sequence<Int>) -> String { versions.map(String.init).joined(separator: ", ") }
        #expect(try await CLI.master("migrate", "up", "--db", path).stdout == "applied \(listed(all))\n")
        let status = try await CLI.master("migrate", "status", "--db", path).stdout.split(separator: "\n")
        #expect(status.count == all.count)
        #expect(status.allSatisfy { $0.contains("applied 20") })
        #expect(try await CLI.master("migrate", "down", "--to", "1", "--db", path).stdout == "reverted \(listed(all.dropFirst().reversed()))\n")
        let down = try await CLI.master("migrate", "status", "--db", path).stdout.split(separator: "\n")
        #expect(down.map { $0.hasSuffix("pending") } == all.map { $0 > 1 })
        let outdated = try await CLI.master("user", "list", "--db", path)
        #expect(outdated.status != 0)
        #expect(outdated.stderr.contains("migrate up"), "\(outdated.stderr)")
        let invalid = try await CLI.master("migrate", "down", "--to", "-1", "--db", path)
        #expect(invalid.status != 0)
        #expect(
            try await CLI.master("migrate", "status", "--db", path).stdout.split(separator: "\n").map { $0.hasSuffix("pending") }
                == all.map { $0 > 1 }
        )
        // RESALLOC_DB stands in for --db.
        let up = try await CLI.master(["migrate", "up"], environment: ["PATH": "/usr/bin:/bin", "RESALLOC_DB": path])
        #expect(up.stdout == "applied \(listed(all.dropFirst()))\n")
        #expect(try await CLI.master("migrate", "up", "--db", path).stdout == "already up to date\n")
        #expect(try await CLI.master("user", "list", "--db", path).stdout == "NAME                    ROLE   STATUS\n")
    }

    @Test("Every registered route is in openapi.yaml, served at /openapi.yaml")
    func openAPICoversRoutes() async throws {
        let testbed = try await Testbed.shared()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resalloc-openapi-\(UUID().uuidString).db").path
        let master = try await Master(databasePath: path, keyPath: testbed.keys["ed25519"]!, logger: Logger(label: "test"))
        let document = OpenAPIDocument.text
        let documented = Self.operations(in: document)
        let registered = endpoints(master).map {
            "\($0.method.rawValue.lowercased()) \($0.path.replacingOccurrences(of: #":(\w+)"#, with: "{$1}", options: .regularExpression))"
        }
        #expect(!registered.isEmpty)
        for route in registered { #expect(documented.contains(route), "\(route) is not in openapi.yaml") }
        for operation in documented { #expect(registered.contains(operation), "openapi.yaml documents \(operation), which is not served") }
        try await withMaster { api, _, _ in
            let response = try await api.client.execute(uri: "/openapi.yaml", method: .get)
            #expect(response.status == .ok)
            #expect(String(buffer: response.body) == document)
        }
    }

    @Test("openapi.yaml states the server's own patterns and lengths")
    func documentStatesTheRules() throws {
        let document = OpenAPIDocument.text
        #expect(Self.schemaField("Name", "pattern", in: document) == "^\(InputRules.name)$")
        #expect(Self.schemaField("Login", "pattern", in: document) == "^\(InputRules.login)$")
        #expect(Self.schemaField("TTL", "pattern", in: document) == "^\(InputRules.ttl)$")
        #expect(Self.schemaField("Address", "pattern", in: document) == "^\(InputRules.address)$")
        #expect(Self.schemaField("Dockerfile", "pattern", in: document) == InputRules.dockerfileFrom)
        #expect(Self.schemaField("PublicKey", "pattern", in: document) == "^\(InputRules.publicKey)$")
        #expect(Self.schemaField("Memory", "pattern", in: document) == "^(?:\(InputRules.memorySize))$")
        #expect(Self.schemaField("Password", "minLength", in: document) == "\(InputRules.passwordLength.lowerBound)")
        #expect(Self.schemaField("Password", "maxLength", in: document) == "\(InputRules.passwordLength.upperBound)")
        #expect(Self.schemaField("Dockerfile", "maxLength", in: document) == "\(InputRules.dockerfileLength.upperBound)")
        #expect(
            document.contains("Capacity: { type: integer, minimum: \(InputRules.capacity.lowerBound), maximum: \(InputRules.capacity.upperBound),")
        )
        #expect(
            document.contains("PoolSize: { type: integer, minimum: \(InputRules.poolSize.lowerBound), maximum: \(InputRules.poolSize.upperBound),")
        )
    }

    @Test("The rules match what they should, scalar by scalar")
    func rules() {
        for good in ["127.0.0.11", "127.0.0.11:2222", "host-1.example", "[::1]", "[::1]:22", "::1", "fe80::1", "::ffff:127.0.0.1", "a:65535"] {
            #expect(InputRules.matches(good, InputRules.address), "\(good)")
        }
        for bad in ["", "127.0.0.11:0", "127.0.0.11:65536", "127.0.0.11:022", "a;id", "a b", "127.0.0.11\n", "[::1]:", "::1;id"] {
            #expect(!InputRules.matches(bad, InputRules.address), "\(bad)")
        }
        #expect(InputRules.matches("2h", InputRules.ttl))
        for bad in ["0s", "+5s", "05m", "1w", "1000000d", "2h\n"] { #expect(!InputRules.matches(bad, InputRules.ttl), "\(bad)") }
        #expect(InputRules.contains("# a comment\n  from\tbusybox", InputRules.dockerfileFrom))
        #expect(!InputRules.contains("RUN echo FROM x", InputRules.dockerfileFrom))
        #expect(!InputRules.contains("x\u{2028}FROM busybox", InputRules.dockerfileFrom))
        // A combining mark after a letter is a second code point, not part of a letter.
        #expect(!InputRules.matches("e\u{301}", InputRules.name))
    }

    /// The value of `field` in the component schema `schema` (a double-quoted YAML string unescaped).
    static func schemaField(_ schema: String, _ field: String, in document: String) -> String? {
        let lines = document.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(of: "    \(schema):") else { return nil }
        for line in lines[(start + 1)...] {
            guard line.hasPrefix("      ") else { return nil }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("\(field): ") else { continue }
            var value = String(trimmed.dropFirst(field.count + 2))
            if value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast()).replacingOccurrences(of: "\\\\", with: "\\")
            }
            return value
        }
        return nil
    }

    /// `method path` pairs of an OpenAPI document's `paths`, read line by line.
    static func operations(in document: String) -> Set<String> {
        var operations: Set<String> = []
        var inPaths = false
        var currentPath: String?
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" {
                inPaths = true
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":") { currentPath = String(line.dropFirst(2).dropLast()) }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("    "), !line.hasPrefix("     "), let path = currentPath,
                ["get:", "post:", "delete:", "put:", "patch:"].contains(trimmed)
            {
                operations.insert("\(trimmed.dropLast()) \(path)")
            }
        }
        return operations
    }
}
