import Crypto
import Foundation
import NIOCore
import ResallocAPI
import ResallocClient
import Testbed
import Testing

@Suite("resalloc cp: files in and out of a lease through the engine's tar streams", .serialized, .timeLimit(.minutes(3)))
struct CopyTests {
    /// A tree with modes, an old modification time, a symlink and a 20 MB file of random bytes.
    static func makeTree(_ root: String) throws -> String {
        try FileManager.default.createDirectory(atPath: "\(root)/sub", withIntermediateDirectories: true)
        try Data("alpha\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a.txt"))
        try Data("#!/bin/sh\necho beta\n".utf8).write(to: URL(fileURLWithPath: "\(root)/sub/b.sh"))
        let big = try randomBytes(20 * 1024 * 1024 + 333)
        try big.write(to: URL(fileURLWithPath: "\(root)/big.bin"))
        try FileManager.default.createSymbolicLink(atPath: "\(root)/link", withDestinationPath: "a.txt")
        chmod("\(root)/a.txt", 0o640)
        chmod("\(root)/sub/b.sh", 0o755)
        let old = Date(timeIntervalSince1970: 1_600_000_000)
        for file in ["a.txt", "sub/b.sh", "big.bin"] {
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: "\(root)/\(file)")
        }
        return SHA256.hash(data: big).map { String(format: "%02x", $0) }.joined()
    }

    static func localSHA256(_ path: String) throws -> String {
        SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: path))).map { String(format: "%02x", $0) }.joined()
    }

    @Test("A tree with modes, times, a symlink and 20 MB goes in and comes back the same; into a directory or under a new name")
    func roundTrip() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox") { api, cli, testbed, container in
            let tree = "\(cli.home)/tree"
            let digest = try Self.makeTree(tree)

            // /work does not exist: the tree is created under that name.
            try await cli.ok("cp", tree, "box:/work")
            let listing = try await testbed.docker(
                "m2",
                ["exec", container, "sh", "-c", "cd /work && stat -c '%n %a %Y' a.txt sub/b.sh big.bin && readlink link"]
            )
            #expect(listing == "a.txt 640 1600000000\nsub/b.sh 755 1600000000\nbig.bin 644 1600000000\na.txt\n")
            #expect(try await testbed.docker("m2", ["exec", container, "sha256sum", "/work/big.bin"]).hasPrefix(digest))
            // Into an existing directory: under the source's own name.
            try await cli.ok("cp", "\(tree)/a.txt", "box:/tmp")
            #expect(try await testbed.docker("m2", ["exec", container, "cat", "/tmp/a.txt"]) == "alpha\n")
            // Again onto what is there, as docker cp does: a file replaced, a directory merged into
            // (what the lease added to it stays), and nothing of the copy's staging left beside.
            // The lease's `link` now points at a directory: replaced, not followed.
            try await testbed.docker(
                "m2",
                ["exec", container, "sh", "-c", "echo mine > /work/sub/own.txt && echo old > /work/a.txt && rm /work/link && ln -s /tmp /work/link"]
            )
            try await cli.ok("cp", "\(tree)/.", "box:/work")
            let merged = try await testbed.docker(
                "m2",
                ["exec", container, "sh", "-c", "cat /work/a.txt /work/sub/own.txt; readlink /work/link; ls -a /work"]
            )
            #expect(merged.hasPrefix("alpha\nmine\na.txt\n"), "\(merged)")
            #expect(!merged.contains(".resalloc-cp"), "\(merged)")
            let tmp = try await testbed.docker("m2", ["exec", container, "ls", "-a", "/tmp"])
            #expect(!tmp.contains("link") && !tmp.contains(".resalloc-cp"), "nothing went through the old link: \(tmp)")

            // Out, under a new name, then into an existing directory.
            try await cli.ok("cp", "box:/work", "\(cli.home)/back")
            #expect(try Self.localSHA256("\(cli.home)/back/big.bin") == digest)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(cli.home)/back/link") == "a.txt")
            let attributes = try FileManager.default.attributesOfItem(atPath: "\(cli.home)/back/sub/b.sh")
            #expect(attributes[.posixPermissions] as? Int == 0o755)
            #expect((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 == 1_600_000_000)
            try FileManager.default.createDirectory(atPath: "\(cli.home)/into", withIntermediateDirectories: true)
            try await cli.ok("cp", "box:/work/a.txt", "\(cli.home)/into")
            #expect(try String(contentsOfFile: "\(cli.home)/into/a.txt", encoding: .utf8) == "alpha\n")
            // Nothing of the staging is left beside the destination.
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(cli.home)/into") == ["a.txt"])
        }
    }

    @Test("- is a tar stream on stdin or stdout")
    func tarStreams() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox\nRUN mkdir /data && echo one > /data/one") { api, cli, testbed, container in
            let out = try await Subprocess.run(
                ["sh", "-c", "resalloc cp box:/data - | tar -tf -"],
                environment: cli.environment.merging(["PATH": "\(URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().path):/usr/bin:/bin"]) {
                    $1
                },
                timeout: .seconds(60)
            )
            #expect(out.status == 0, "\(out.errors)")
            #expect(out.output.split(separator: "\n").sorted() == ["data/", "data/one"])
            try FileManager.default.createDirectory(atPath: "\(cli.home)/s", withIntermediateDirectories: true)
            try Data("streamed\n".utf8).write(to: URL(fileURLWithPath: "\(cli.home)/s/streamed.txt"))
            let into = try await Subprocess.run(
                ["sh", "-c", "tar -C \(cli.home)/s -cf - streamed.txt | resalloc cp - box:/data"],
                environment: cli.environment.merging(["PATH": "\(URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().path):/usr/bin:/bin"]) {
                    $1
                },
                timeout: .seconds(60)
            )
            #expect(into.status == 0, "\(into.errors)")
            #expect(try await testbed.docker("m2", ["exec", container, "cat", "/data/streamed.txt"]) == "streamed\n")
        }
    }

    @Test("PUT /lease/{name}/files takes a tar stream from curl; a body that is not one is refused with a sentence and writes nothing")
    func plainHTTP() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox\nRUN mkdir /data") { api, cli, testbed, container in
            let token = try await api.login("admin", password: "admin-password", register: false)
            try FileManager.default.createDirectory(atPath: "\(cli.home)/s", withIntermediateDirectories: true)
            try Data("by curl\n".utf8).write(to: URL(fileURLWithPath: "\(cli.home)/s/curled.txt"))
            let put = { (body: String) in
                try await Subprocess.run(
                    [
                        "sh", "-c",
                        "\(body) | curl -sS -X PUT -T - -H 'Authorization: Bearer \(token)' '\(cli.server)/lease/box/files?path=/data'",
                    ],
                    timeout: .seconds(60)
                )
            }
            let sent = try await put("tar -C \(cli.home)/s -cf - curled.txt")
            #expect(sent.status == 0 && sent.output.contains(#""Success":true"#), "\(sent.output) \(sent.errors)")
            #expect(try await testbed.docker("m2", ["exec", container, "cat", "/data/curled.txt"]) == "by curl\n")

            let garbage = try await put("head -c 100000 /dev/urandom")
            #expect(garbage.output.contains(#""Success":false"#), "\(garbage.output)")
            // The engine's own reason, with the place: "/data in lease box: … invalid tar header".
            #expect(garbage.output.contains(#"\/data in lease box: "#) && garbage.output.contains("invalid tar header"), "\(garbage.output)")
            #expect(try await testbed.docker("m2", ["exec", container, "ls", "-a", "/data"]) == ".\n..\ncurled.txt\n")
        }
    }

    @Test("Errors name the path; a copy cut short leaves nothing in the lease or on the machine; another user's lease is not found")
    func errors() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox") { api, cli, testbed, container in
            try Data("x\n".utf8).write(to: URL(fileURLWithPath: "\(cli.home)/file.txt"))

            let missing = try await cli.run(["cp", "box:/nope", cli.home])
            #expect(missing.status == 1)
            #expect(missing.stderr == "resalloc: no such path in lease box: /nope\n")
            let noParent = try await cli.run(["cp", "\(cli.home)/file.txt", "box:/nope/deeper"])
            #expect(noParent.status == 1)
            #expect(noParent.stderr == "resalloc: no such path in lease box: /nope\n")
            let ontoFile = try await cli.run(["cp", cli.home, "box:/etc/passwd"])
            #expect(ontoFile.stderr.contains("box:/etc/passwd is a file; a directory cannot be copied onto it"))
            let localMissing = try await cli.run(["cp", "\(cli.home)/absent", "box:/tmp"])
            #expect(localMissing.stderr == "resalloc: \(cli.home)/absent: No such file or directory\n")
            let both = try await cli.run(["cp", "box:/a", "box:/b"])
            #expect(both.status != 0)
            #expect(both.stderr.contains("one side only"))

            // Cut short after 5 MB of a 50 MB stream: nothing under the name, nothing staged.
            let stagedBefore = Set(try FileManager.default.contentsOfDirectory(atPath: "/var/tmp").filter { $0.hasPrefix("resalloc-copy.") })
            let client = ResallocClient(server: cli.server, token: try await api.login("admin", password: "admin-password", register: false))
            await #expect(throws: (any Error).self) {
                _ = try await CopySession(client: client).upload(lease: "box", directory: "/tmp") { send in
                    try await send(TarWriter.header(name: "partial.bin", mode: 0o644, size: 50 << 20, mtime: 0, type: "0"))
                    for _ in 0..<20 { try await send([UInt8](repeating: 7, count: 256 << 10)) }
                    throw CancellationError()
                }
            }
            var staged: Set<String> = []
            for _ in 0..<50 {
                staged = Set(try FileManager.default.contentsOfDirectory(atPath: "/var/tmp").filter { $0.hasPrefix("resalloc-copy.") })
                    .subtracting(stagedBefore)
                if staged.isEmpty { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(staged.isEmpty, "\(staged)")
            // Nor in the lease: no partial file, and the hidden directory it was unpacked into is gone.
            var left = ""
            for _ in 0..<50 {
                left = try await testbed.docker("m2", ["exec", container, "ls", "-a", "/tmp"])
                if !left.contains("partial") && !left.contains(".resalloc-cp") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(!left.contains("partial") && !left.contains(".resalloc-cp"), "\(left)")

            // Another user: the same "not found" as for the shell.
            try await cli.ok("register", "eve", "eve-password-1")
            try await cli.ok("user", "approve", "eve")
            let eve = try CLI(server: cli.server)
            try await eve.ok("login", "eve", "eve-password-1")
            let stolen = try await eve.run(["cp", "box:/etc/passwd", eve.home])
            #expect(stolen.stderr == "resalloc: no lease box\n")
            let planted = try await eve.run(["cp", "\(cli.home)/file.txt", "box:/tmp"])
            #expect(planted.stderr == "resalloc: no lease box\n")
        }
    }
}
