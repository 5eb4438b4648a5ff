import Foundation
import SSH
import Testbed
import Testing

@Suite("A session's output keeps pace with its client", .timeLimit(.minutes(5)))
struct ShellFlowTests {
    /// The program writes 64 KiB at a time and counts its writes in /tmp/written; the client is
    /// `resalloc ssh` with its standard output a pipe that nobody reads for a while. The count is
    /// renamed into place: `echo > /tmp/written` truncates first, and a `cat` at that moment
    /// would read nothing.
    static let writer =
        "i=0; while :; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > /tmp/w; mv /tmp/w /tmp/written; done"

    @Test("A client that stops reading holds the program back (the master does not buffer its output), and it goes on once the client reads")
    func slowClient() async throws {
        try await withLeasedBox(dockerfile: "FROM busybox") { _, cli, testbed, container in
            let written = {
                let text = try await testbed.docker("m2", ["exec", container, "cat", "/tmp/written"])
                guard let count = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                    throw TestbedError("/tmp/written holds \(text.debugDescription), not a count")
                }
                return count
            }
            let (command, _, output) = try Subprocess.startPiped(
                [CLI.binary, "ssh", "box", "--", "sh", "-c", Self.writer],
                environment: cli.environment
            )
            defer { command.kill9() }
            try await waitUntil(seconds: 15, "the writer started") { (try? await written()) ?? 0 > 0 }
            // Nobody reads: the program gets as far as the buffers on its way allow, then waits. How
            // soon depends on the machine's load (a loaded CI run wrote 1 MiB in its first 3 s), so
            // the test waits for the count to stand still for two seconds, while it stays under the
            // bound: about 1 MiB in the master plus socket, SSH window and pipe buffers on the way
            // (8 MiB here). A master that buffered without bound would take all the program writes.
            let bound = (40 << 20) / 65536
            var stalled = try await written()
            let deadline = ContinuousClock.now + .seconds(60)
            while stalled < bound {
                try await Task.sleep(for: .seconds(2))
                let now = try await written()
                if now == stalled { break }
                stalled = now
                guard ContinuousClock.now < deadline else { break }
            }
            print("with a client that does not read, the program wrote \(stalled * 64 / 1024) MiB and stopped there")
            #expect(stalled < bound, "the program wrote \(stalled * 64 / 1024) MiB to a client that does not read")
            try await Task.sleep(for: .seconds(1))
            let stalledLater = try await written()
            #expect(stalledLater == stalled, "the program went on writing: \(stalledLater - stalled) chunks more")

            // The client reads again: the output flows on.
            try DedicatedThread.start(named: "reader") {
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                while read(output.fileDescriptor, &buffer, buffer.count) > 0 {}
            }
            try await waitUntil(seconds: 30, "the writer going on once the client reads") { try await written() > stalledLater + 100 }
            command.kill9()
        }
    }
}
