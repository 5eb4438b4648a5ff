import Docker
import Foundation
import SSH
import Synchronization
import Testbed
import Testing

@Suite("The remote Docker driver against a real machine", .timeLimit(.minutes(3)))
struct RemoteDockerTests {
    let testbed: Testbed
    let docker: RemoteDocker
    let pool = SSHConnectionPool()

    init() async throws {
        testbed = try await Testbed.shared()
        docker = RemoteDocker(endpoint: testbed.endpoint("m1"), pool: pool)
    }

    @Test("version and info parse the engine's JSON")
    func versionAndInfo() async throws {
        let version = try await docker.version()
        #expect(version.server?.version.isEmpty == false)
        let info = try await docker.info()
        #expect(info.cpus == ProcessInfo.processInfo.activeProcessorCount)
        #expect(info.memoryBytes > 1_000_000_000)
        let local = try await testbed.docker("m1", ["info", "--format", "{{.ServerVersion}}"])
        #expect(info.serverVersion == local.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test("build → run → exec → list → inspect → rm, checked with the machine's own docker")
    func roundTrip() async throws {
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let tag = "resalloc/test-\(suffix):v1"
        let name = "resalloc-test-\(suffix)"
        let lines = LineCollector()
        try await docker.build(tag: tag, dockerfile: Array("FROM busybox\nRUN echo built-\(suffix) > /marker\nCMD [\"false\"]\n".utf8)) {
            lines.append($0)
        }
        #expect(lines.all.contains { $0.contains("Successfully tagged \(tag)") || $0.contains("naming to docker.io/\(tag)") })
        #expect(try await docker.imageExists(tag))
        #expect(try await testbed.docker("m1", ["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).contains(tag))

        let id = try await docker.run(ContainerSpec(name: name, image: tag, labels: ["resalloc.lease": "42", "resalloc.owner": "alice"]))
        defer { testbed.removeContainers("m1", [name]) }
        // The image's CMD is `false`; the keep-alive replaced it, so the container is up.
        let state = try await testbed.docker(
            "m1",
            ["inspect", "--format", "{{.State.Status}} {{.HostConfig.Init}} {{index .Config.Labels \"resalloc.owner\"}}", id]
        )
        #expect(state.trimmingCharacters(in: .whitespacesAndNewlines) == "running true alice")

        let exec = try await docker.exec(name, ["cat", "/marker"])
        #expect(exec.stdoutText == "built-\(suffix)\n")
        let piped = try await docker.exec(name, ["sh", "-c", "cat > /typed; wc -c < /typed"], stdin: Array("hello".utf8))
        #expect(piped.stdoutText.trimmingCharacters(in: .whitespaces) == "5\n")
        #expect(try await testbed.docker("m1", ["exec", name, "cat", "/typed"]) == "hello")

        let listed = try await docker.list(labels: ["resalloc.lease": "42", "resalloc.owner": "alice"])
        #expect(listed.map(\.id).contains(id))
        #expect(try await docker.list(labels: ["resalloc.owner": "nobody-\(suffix)"]).isEmpty)

        let details = try await docker.inspect([name, "resalloc-missing-\(suffix)"])
        #expect(details.count == 1)
        #expect(details.first?.labels["resalloc.lease"] == "42")
        #expect(details.first?.state.running == true)
        #expect(details.first?.hostConfig.initProcess == true)

        #expect(try await docker.remove(name))
        #expect(try await docker.remove(name) == false)
        #expect(try await testbed.docker("m1", ["ps", "-aq", "--filter", "name=^\(name)$"]).isEmpty)
        _ = try? await testbed.docker("m1", ["rmi", tag])
    }

    @Test("A failing build throws with the log's tail")
    func buildFailure() async throws {
        let tag = "resalloc/test-broken-\(UUID().uuidString.prefix(8).lowercased()):v1"
        let error = await #expect(throws: DockerError.self) {
            try await docker.build(tag: tag, dockerfile: Array("FROM busybox\nRUN echo about-to-fail && exit 3\n".utf8))
        }
        guard case .buildFailed(_, let tail) = error else {
            Issue.record("expected buildFailed, got \(String(describing: error))")
            return
        }
        #expect(tail.contains("about-to-fail"))
        #expect(tail.contains("non-zero code: 3"))
        #expect(try await docker.imageExists(tag) == false)
    }

    @Test("Hostile strings never run: refused names, or literal labels and arguments")
    func hostileStrings() async throws {
        let marker = "/tmp/resalloc-pwned-\(UUID().uuidString)"
        let payloads = ["x; touch \(marker)", "$(touch \(marker))", "`touch \(marker)`", "'; touch \(marker); '", "x\ntouch \(marker)", "--help"]
        for payload in payloads {
            await #expect(throws: DockerError.self) { try await docker.remove(payload) }
            await #expect(throws: DockerError.self) { try await docker.run(ContainerSpec(name: payload, image: "busybox")) }
            await #expect(throws: DockerError.self) { try await docker.imageExists(payload) }
            await #expect(throws: DockerError.self) { try await docker.exec(payload, ["true"]) }
        }
        // Quoted, not refused: one-line label values and exec arguments arrive literally.
        let name = "resalloc-hostile-\(UUID().uuidString.prefix(8).lowercased())"
        let value = "$(touch \(marker)) `touch \(marker)` '; touch \(marker)'"
        _ = try await docker.run(ContainerSpec(name: name, image: "busybox", labels: ["resalloc.owner": value]))
        defer { testbed.removeContainers("m1", [name]) }
        #expect(try await docker.inspect([name]).first?.labels["resalloc.owner"] == value)
        let echoed = try await docker.exec(name, ["echo", "$(touch \(marker))", "`id`", "a;b", "x\ny", "-n"])
        #expect(echoed.stdoutText == "$(touch \(marker)) `id` a;b x\ny -n\n")
        await #expect(throws: DockerError.self) { try await docker.exec(name, ["echo", "nul\0byte"]) }
        #expect(!FileManager.default.fileExists(atPath: marker))
        #expect(try await testbed.docker("m1", ["exec", name, "ls", "/tmp"]).isEmpty)
    }

    @Test("An interactive shell in a container: echo, stty size, exit 5")
    func interactiveShell() async throws {
        let name = "resalloc-pty-\(UUID().uuidString.prefix(8).lowercased())"
        _ = try await docker.run(ContainerSpec(name: name, image: "busybox"))
        defer { testbed.removeContainers("m1", [name]) }
        let shell = try await docker.openShell(name, term: "xterm-256color", size: TerminalSize(columns: 100, rows: 30))
        let screen = Screen(shell)
        shell.write(Array("echo $TERM; stty size\n".utf8))
        #expect(try await screen.waitFor("30 100").contains("xterm-256color"))
        shell.write(Array("touch /from-pty; exit 5\n".utf8))
        #expect(try await within(.seconds(15), "the shell's exit status") { try await shell.exitStatus() } == 5)
        #expect(try await testbed.docker("m1", ["exec", name, "ls", "/from-pty"]).contains("/from-pty"))
    }

    @Test("A command on a container that does not exist says so")
    func missingContainer() async throws {
        await #expect(throws: DockerError.self) { try await docker.exec("resalloc-does-not-exist", ["true"]) }
        #expect(try await docker.inspect(["resalloc-does-not-exist"]).isEmpty)
    }
}

/// Lines from a build callback, collected across threads.
final class LineCollector: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
