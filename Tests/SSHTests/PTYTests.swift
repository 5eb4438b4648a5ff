import Foundation
import SSH
import Testbed
import Testing

/// Collects a PTY's output and waits for text to appear in it.
final class Screen {
    private var text = ""
    private var iterator: AsyncStream<[UInt8]>.Iterator

    init(_ pty: PTYChannel) { iterator = pty.output.makeAsyncIterator() }

    /// Reads until `needle` has appeared after everything seen so far; returns the new text.
    func waitFor(_ needle: String, timeout: Duration = .seconds(10)) async throws -> String {
        let start = text.endIndex
        let deadline = ContinuousClock.now + timeout
        var bytes: [UInt8] = []
        while !String(decoding: bytes, as: UTF8.self).contains(needle) {
            guard ContinuousClock.now < deadline, let chunk = await iterator.next() else {
                throw TestbedError("'\(needle)' never appeared; the screen had: \(text)\(String(decoding: bytes, as: UTF8.self))")
            }
            bytes += chunk
        }
        text += String(decoding: bytes, as: UTF8.self)
        return String(text[start...])
    }
}

@Suite("Pseudo-terminals")
struct PTYTests {
    @Test("Type, read the echo, resize, read stty size, exit 7")
    func interactiveShell() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let pty = try await connection.openPTY("sh", term: "xterm", size: TerminalSize(columns: 80, rows: 24))
        let screen = Screen(pty)
        pty.write(Array("echo h''i\n".utf8))
        #expect(try await screen.waitFor("hi\r\n").contains("hi"))
        pty.write(Array("stty size\n".utf8))
        #expect(try await screen.waitFor("24 80").contains("24 80"))
        pty.resize(TerminalSize(columns: 132, rows: 40))
        pty.write(Array("stty size\n".utf8))
        #expect(try await screen.waitFor("40 132").contains("40 132"))
        pty.write(Array("exit 7\n".utf8))
        #expect(try await pty.exitStatus() == 7)
    }
}
