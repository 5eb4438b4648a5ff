import Foundation
import Testbed
import Testing

@Suite("The README's journey, typed as it is printed", .timeLimit(.minutes(5)))
struct ReadmeJourneyTests {
    /// The commands of the README's "Using it" block, without their comments; the first line
    /// (`export PATH=…`) is left to the terminal's setup, which puts the built CLI on `PATH`.
    static func journey() throws -> [String] {
        let readme = try String(contentsOfFile: "\(CLI.repositoryRoot)/README.md", encoding: .utf8)
        guard let section = readme.range(of: "## Using it"), let open = readme.range(of: "```sh\n", range: section.upperBound..<readme.endIndex),
            let close = readme.range(of: "```", range: open.upperBound..<readme.endIndex)
        else { throw TestbedError("README.md has no sh block under \"## Using it\"") }
        return readme[open.upperBound..<close.lowerBound].split(separator: "\n").map { line in
            // A comment starts at two spaces and a #, outside the quotes of these lines.
            String(line.range(of: #"\s{2,}# "#, options: .regularExpression).map { line[..<$0.lowerBound] } ?? line[...])
        }.filter { !$0.hasPrefix("export PATH=") }
    }

    @Test("Every command of README.md's \"Using it\" block, typed in a terminal, does what its comment says")
    func journey() async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-readme")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let master = MasterProcess(databasePath: "\(directory)/resalloc.db", keyPath: testbed.keys["ed25519"]!)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        let work = "\(directory)/work"
        try FileManager.default.createDirectory(atPath: "\(work)/app", withIntermediateDirectories: true)
        try "an app\n".write(toFile: "\(work)/app/main.txt", atomically: true, encoding: .utf8)
        let tmux = try TmuxScreen(columns: 200, rows: 50)
        defer { tmux.close() }
        try await tmux.type("\(cli.exports); cd \(work)")

        // The two things that are this host's and not the README's: the machine (make run's
        // m1 lives at 10.250.1.2; here a test machine) and the forwarded port (8000 may be taken).
        let machine = testbed.machine("m2")
        let port = freeLoopbackPort()
        let password = "readme-password"
        var ran: [String] = []
        for (step, printed) in try Self.journey().enumerated() {
            let line = printed.trimmingCharacters(in: .whitespaces)
                .replacingOccurrences(of: "machine create m1 resalloc 10.250.1.2", with: "machine create m1 \(machine.login) \(machine.host)")
                .replacingOccurrences(of: "forward mylease 8000", with: "forward mylease \(port)")
            // Ctrl-C, which ends `forward`, ends the shell's whole list: its status is asked after.
            let interrupted = line.hasPrefix("resalloc forward")
            // Each step's own markers, split by quotes so that the typed line does not show them.
            let (begun, ended) = ("STEP-\(step)", "EXIT-\(step)=")
            let start = "clear; echo STEP-''\(step); \(line)"
            try await tmux.type(interrupted ? start : "\(start); echo EX''IT-\(step)=$?")
            _ = try await tmux.waitFor(begun)
            switch line {
            case _ where line.hasPrefix("resalloc register"):
                _ = try await tmux.waitFor("Password:")
                try await tmux.type(password)
                _ = try await tmux.waitFor("Password again:")
                try await tmux.type(password)
            case _ where line.hasPrefix("resalloc login"):
                _ = try await tmux.waitFor("Password:")
                try await tmux.type(password)
            case "resalloc ssh mylease":
                _ = try await tmux.waitFor("/ #")
                try await tmux.type("echo in-the-lease; exit")
            case _ where line.hasPrefix("resalloc forward"):
                _ = try await tmux.waitFor("\(port)")
                #expect(try await onOwnThread { try SilentConnection(port: port) } != nil, "nothing listens on \(port)")
                try await tmux.key("C-c")
                try await tmux.type("echo EX''IT-\(step)=$?")
            default:
                break
            }
            let screen = try await tmux.waitFor(ended, seconds: 120)
            let expected = line.contains("exit 3") ? 3 : interrupted ? 130 : 0
            #expect(screen.contains("\(ended)\(expected)"), "\(printed)\n\(screen)")
            if line == "resalloc ssh mylease -- cat /hello" || line.hasPrefix("resalloc run") { #expect(screen.contains("hello"), "\(screen)") }
            ran.append(line)
        }
        #expect(ran.count >= 15, "\(ran)")
        #expect(try String(contentsOfFile: "\(work)/hello", encoding: .utf8) == "hello\n")
        await testbed.removeContainers(ofMaster: try masterID(master.databasePath))
    }
}
