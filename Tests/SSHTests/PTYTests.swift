import Foundation
import SSH
import Testbed
import Testing

@Suite("Pseudo-terminals", .timeLimit(.minutes(3)))
struct PTYTests {
    /// Whether `text` shows `output` after the echo of the typed `command` (the output cannot
    /// come from the echo: the typed text differs from it).
    static func after(_ text: String, _ command: String, shows output: String) -> Bool {
        guard let typed = text.range(of: command) else { return false }
        return text[typed.upperBound...].contains(output)
    }

    @Test("Type, read the echo, resize, read stty size, exit 7")
    func interactiveShell() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let pty = try await connection.start("sh", pty: (term: "xterm", size: TerminalSize(columns: 80, rows: 24)))
        let screen = Screen(pty)
        pty.write(Array("echo h''i\n".utf8))
        let echoed = try await screen.waitFor("hi\r\n")
        #expect(Self.after(echoed, "echo h''i", shows: "hi\r\n"), "the typed line echoed, then its output on a line of its own: \(echoed)")
        pty.write(Array("stty size\n".utf8))
        let sized = try await screen.waitFor("24 80\r\n")
        #expect(Self.after(sized, "stty size", shows: "24 80\r\n"), "\(sized)")
        pty.resize(TerminalSize(columns: 132, rows: 40))
        pty.write(Array("stty size\n".utf8))
        let resized = try await screen.waitFor("40 132\r\n")
        #expect(Self.after(resized, "stty size", shows: "40 132\r\n"), "\(resized)")
        // A size set just before a command always reaches the terminal before the command does.
        for rows in 41...60 {
            pty.resize(TerminalSize(columns: 100, rows: rows))
            pty.write(Array("stty size\n".utf8))
            let shown = try await screen.waitFor("\(rows) 100\r\n")
            #expect(Self.after(shown, "stty size", shows: "\(rows) 100\r\n"), "\(shown)")
        }
        pty.write(Array("exit 7\n".utf8))
        #expect(try await within(.seconds(15), "exit status") { try await pty.exitStatus() } == 7)
    }

    @Test("Without a PTY: stdin streams in, stdout and stderr stay apart, EOF ends it")
    func streamingProcess() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let process = try await connection.start("while read line; do echo out:$line; echo err:$line >&2; done; exit 3")
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var output = process.output.makeAsyncIterator()
        process.write(Array("one\n".utf8))
        while !String(decoding: stdout, as: UTF8.self).contains("out:one"), let chunk = await output.next() {
            if case .stdout(let bytes) = chunk { stdout += bytes } else if case .stderr(let bytes) = chunk { stderr += bytes }
        }
        process.write(Array("two\n".utf8))
        process.closeInput()
        while let chunk = await output.next() {
            if case .stdout(let bytes) = chunk { stdout += bytes } else if case .stderr(let bytes) = chunk { stderr += bytes }
        }
        #expect(String(decoding: stdout, as: UTF8.self) == "out:one\nout:two\n")
        #expect(String(decoding: stderr, as: UTF8.self) == "err:one\nerr:two\n")
        #expect(try await process.exitStatus() == 3)
    }

    @Test("Keystrokes sent at once and large writes queued behind them arrive in order while output streams back")
    func orderedInput() async throws {
        let testbed = try await Testbed.shared()
        let connection = try await SSHConnection.connect(to: testbed.endpoint("m1"))
        defer { Task { await connection.close() } }
        let process = try await connection.start("cat")
        let collected = Task {
            var bytes: [UInt8] = []
            for await chunk in process.output { if case .stdout(let data) = chunk { bytes += data } }
            return bytes
        }
        // Small writes may go out on this thread (RemoteProcess.sendNow); 16 KiB ones through
        // the mailbox; some small ones land while a large one is still queued.
        var expected: [UInt8] = []
        for round in 0..<300 {
            let small = Array("<\(round)>".utf8)
            process.write(small)
            expected += small
            if round % 3 == 0 {
                let large = [UInt8](repeating: UInt8(round % 251), count: 16 * 1024)
                await process.send(large)
                expected += large
            }
        }
        process.closeInput()
        let received = try await within(.seconds(60), "cat's output") { await collected.value }
        #expect(received.count == expected.count)
        let firstDifference = zip(received, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(firstDifference == nil, "the bytes came back out of order from byte \(firstDifference ?? 0)")
        #expect(try await process.exitStatus() == 0)
    }
}
