import Foundation
import Testbed
import Testing

@Suite("Passwords off the command line: a prompt without echo, or standard input", .timeLimit(.minutes(3)))
struct PasswordPromptTests {
    @Test("On a real terminal: register asks twice without echo, a mismatch creates nothing, login asks once, Ctrl-C restores echo")
    func prompt() async throws {
        try await withMaster { api, _, databasePath in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            let tmux = try TmuxScreen()
            defer { tmux.close() }
            try await tmux.type("\(cli.exports); stty -g > \(cli.home)/before")

            // Two different answers: refused here, nothing sent.
            try await tmux.type("resalloc register alice; echo EX''IT=$?")
            _ = try await tmux.waitFor("Password:")
            try await tmux.type("first-secret-1")
            _ = try await tmux.waitFor("Password again:")
            try await tmux.type("other-secret-2")
            var screen = try await tmux.waitFor("EXIT=")
            #expect(screen.contains("resalloc: the two passwords differ; nothing was sent"))
            #expect(screen.contains("EXIT=2"))
            #expect(!screen.contains("first-secret-1") && !screen.contains("other-secret-2"))
            #expect(try await CLI.master("user", "list", "--db", databasePath).stdout == "NAME                    ROLE   STATUS\n")

            try await tmux.type("clear; resalloc register alice && resalloc login alice; echo EX''IT=$?")
            _ = try await tmux.waitFor("Password:", without: "EXIT=2")
            try await tmux.type("alice-password")
            _ = try await tmux.waitFor("Password again:", without: "EXIT=2")
            try await tmux.type("alice-password")
            // Type only once login's own prompt is up, or the terminal would still echo.
            _ = try await tmux.waitFor("registered alice, the first user, as an admin\nPassword:")
            try await tmux.type("alice-password")
            screen = try await tmux.waitFor("EXIT=")
            #expect(screen.contains("logged in as alice"))
            #expect(screen.contains("EXIT=0"))
            #expect(!screen.contains("alice-password"))
            #expect(try await cli.ok("user", "list").contains("alice"))

            // Ctrl-C at the prompt ends the command and gives echo back.
            try await tmux.type("clear; resalloc login alice; st=$?; stty -g > \(cli.home)/after; echo EX''IT=$st")
            _ = try await tmux.waitFor("Password:", without: "EXIT=0")
            try await tmux.key("C-c")
            _ = try await tmux.waitFor("EXIT=130")
            #expect(
                try String(contentsOfFile: "\(cli.home)/before", encoding: .utf8)
                    == (try String(contentsOfFile: "\(cli.home)/after", encoding: .utf8))
            )
        }
    }

    @Test("--password-stdin for scripts; the positional password still works; no terminal and no password is a clear error")
    func standardInput() async throws {
        try await withMaster { api, _, _ in
            let cli = try CLI(server: "http://127.0.0.1:\(api.client.port!)")
            #expect(try await cli.ok("register", "bob", "--password-stdin", stdin: "bob-password\n").contains("registered bob"))
            #expect(try await cli.ok("login", "bob", "--password-stdin", stdin: "bob-password\r\n") == "logged in as bob\n")
            #expect(try await cli.ok("login", "bob", "bob-password") == "logged in as bob\n")
            let wrong = try await cli.run(["login", "bob", "--password-stdin"], stdin: "not-his-password\n")
            #expect(wrong.status == 2)
            #expect(wrong.stderr.contains("wrong user name or password"))
            let both = try await cli.run(["login", "bob", "bob-password", "--password-stdin"], stdin: "bob-password\n")
            #expect(both.status != 0)
            #expect(both.stderr.contains("give the password once"))
            // The tests' processes have no controlling terminal: nothing to prompt on.
            let none = try await cli.run(["register", "carol"])
            #expect(none.status == 2)
            #expect(none.stderr == "resalloc: there is no terminal to ask for the password: give it with --password-stdin\n")
            #expect(try await cli.ok("user", "list").contains("carol") == false)
        }
    }
}
