import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testbed
import Testing

@Suite("Bad input gets a clear 400 and changes nothing", .timeLimit(.minutes(3)))
struct ValidationTests {
    @Test("Malformed JSON, wrong types, missing keys, hostile and oversized names, bad Dockerfiles")
    func badInput() async throws {
        try await withMaster { api, _, _ in
            let admin = try await api.login("admin")
            let hostile = ["", "a b", "x;rm -rf /", "$(id)", "`id`", "a'b", "new\nline", String(repeating: "n", count: 64), "../etc", "-rf", "ünï"]
            var cases: [(String, String, String)] = [
                ("/register", "{not json", "Name and Password"),
                ("/register", #"{"Name": 5, "Password": "password1"}"#, "Name and Password"),
                ("/register", #"{"Name": "short"}"#, "Name and Password"),
                ("/register", #"{"Name": "short", "Password": "123"}"#, "8 to 1024"),
                ("/resource", #"{"Name": "nofrom", "File": "RUN echo hi"}"#, "no FROM"),
                ("/resource", #"{"Name": "empty", "File": ""}"#, "empty"),
                ("/resource", api.json(["Name": "huge", "File": "FROM busybox\n" + String(repeating: "#", count: 70_000)]), "at most 65536"),
                ("/machine", #"{"Name": "m", "Username": "resalloc", "IP": "127.0.0.11;id"}"#, "not an address"),
                ("/machine", #"{"Name": "m", "Username": "root;id", "IP": "127.0.0.11"}"#, "not a valid login"),
                ("/lease", #"{"ResourceName": "busybox", "LeaseName": "x", "TTL": "forever"}"#, "not a lifetime"),
                ("/lease", #"{"ResourceName": "busybox", "LeaseName": "x", "TTL": 3600}"#, "ResourceName and LeaseName"),
                ("/machine", #"{"Name": "m", "Username": "resalloc", "IP": "127.0.0.11", "Capacity": 0}"#, "capacity must be 1 to 10000"),
                ("/machine", #"{"Name": "m", "Username": "resalloc", "IP": "127.0.0.11", "Capacity": "lots"}"#, "Name, Username and IP"),
                ("/machine", #"{"Name": "m", "Username": "resalloc", "IP": "127.0.0.11:99999"}"#, "not an address"),
            ]
            for name in hostile {
                cases.append(("/register", api.json(["Name": name, "Password": "password1"]), "not a valid user name"))
                cases.append(("/resource", api.json(["Name": name, "File": "FROM busybox"]), "not a valid resource name"))
                cases.append(("/machine", api.json(["Name": name, "Username": "resalloc", "IP": "127.0.0.11"]), "not a valid machine name"))
                cases.append(("/lease", api.json(["ResourceName": "busybox", "LeaseName": name]), "not a valid lease name"))
            }
            for (path, body, expected) in cases {
                let reply = try await api.call(.post, path, token: admin, body: body)
                #expect(reply.status == .badRequest, "\(path) \(body.prefix(80))")
                #expect(reply.message.contains(expected), "\(path): \(reply.message)")
                #expect(!reply.success)
            }
            #expect(try await api.call(.get, "/user", token: admin).list("Users").count == 1)
            #expect(try await api.call(.get, "/resource", token: admin).list("Resources").isEmpty)
            #expect(try await api.call(.get, "/machine", token: admin).list("Machines").isEmpty)
            #expect(try await api.call(.get, "/lease", token: admin).list("Leases").isEmpty)
            let route = try await api.call(.get, "/no/such/route", token: admin)
            #expect(route.status == .notFound)
            #expect(route.message.contains("no such route"))
        }
    }

    @Test("What the API document promises: bodies that name nothing, strict booleans, lengths in code points, 405 with Allow")
    func documentedRules() async throws {
        try await withMaster { api, _, _ in
            let admin = try await api.login("admin")
            let cases: [(HTTPRequest.Method, String, String?, String)] = [
                (.delete, "/lease", "{}", "Name (or LeaseName)"),
                (.delete, "/lease", nil, "JSON object"),
                (.delete, "/machine", #"{"Force": true}"#, "say Name"),
                (.delete, "/resource", #"{"Name": ""}"#, "say Name"),
                (.post, "/login", nil, "JSON object"),
                (.post, "/login", "[]", "JSON object"),
                (.post, "/lease/x/extend", "{}", "TTL"),
                (.post, "/lease/x/extend", #"{"TTL": "+5s"}"#, "not a lifetime"),
                (.get, "/lease?all=-7.0e306", nil, "all takes true or false"),
                (.get, "/lease?all=true&all=false", nil, "all takes true or false"),
                (.delete, "/machine/m1?force=yes", nil, "force takes true or false"),
                // 7 code points in 11 bytes: JSON Schema's minLength 8 counts code points.
                (.post, "/register", #"{"Name": "u2", "Password": "ünïcödé"}"#, "8 to 1024"),
                (.post, "/resource", #"{"Name": "r", "File": "RUN x FROM busybox"}"#, "no FROM"),
            ]
            for (method, path, body, expected) in cases {
                let reply = try await api.call(method, path, token: admin, body: body)
                #expect(reply.status == .badRequest, "\(method) \(path) \(body ?? "")")
                #expect(reply.message.contains(expected), "\(method) \(path): \(reply.message)")
            }
            #expect(try await api.call(.get, "/user", token: admin).list("Users").count == 1)
            #expect(try await api.call(.get, "/resource", token: admin).list("Resources").isEmpty)
            // Eight code points are enough, whatever their bytes.
            #expect(try await api.call(.post, "/register", body: #"{"Name": "u3", "Password": "ünïcödéé"}"#).status == .created)

            // A client that asks for the streamed reply is refused at once too, not inside a 200 stream.
            for (body, status) in [
                (#"{"ResourceName": "busybox", "LeaseName": "bad*name"}"#, HTTPResponse.Status.badRequest),
                (#"{"ResourceName": "nothing", "LeaseName": "fine"}"#, .notFound),
            ] {
                let response = try await api.client.execute(
                    uri: "/lease",
                    method: .post,
                    headers: [HTTPField.Name("token")!: admin, .accept: "application/x-ndjson", .contentType: "application/json"],
                    body: ByteBuffer(string: body)
                )
                #expect(response.status == status, "\(body)")
                #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
            }

            for (method, path, allow) in [
                (HTTPRequest.Method.trace, "/health", "GET, HEAD"), (.put, "/lease", "DELETE, GET, HEAD, POST"),
                (.trace, "/register", "POST"), (.patch, "/user", "GET, HEAD"), (.get, "/lease/x/extend", "POST"),
                (.post, "/lease/some-lease", "DELETE, GET, HEAD"),
            ] {
                let response = try await api.client.execute(uri: path, method: method, headers: [HTTPField.Name("token")!: admin])
                #expect(response.status == .methodNotAllowed, "\(method) \(path)")
                #expect(response.headers[.allow] == allow, "\(method) \(path)")
            }
        }
    }

    @Test("A Dockerfile arrives byte for byte")
    func dockerfileBytes() async throws {
        try await withMaster { api, _, _ in
            let admin = try await api.login("admin")
            let file = "FROM busybox \nRUN printf 'tab\\there' > /x\r\n# ünïcode ✓ \"quotes\" \\backslash\n"
            #expect(try await api.call(.post, "/resource", token: admin, body: api.json(["Name": "exact", "File": file])).status == .created)
            let listed = try await api.call(.get, "/resource", token: admin).list("Resources")
            #expect(listed.first?["File"] as? String == file)
        }
    }
}
