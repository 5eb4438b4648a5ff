import Foundation
import Testbed
import Testing

@testable import Docker

@Suite("Shell quoting")
struct ShellQuoteTests {
    static let hostile = [
        "plain", "", "two words", "semi;colon", "$(touch /tmp/x)", "`id`", "it's", "\"double\"", "new\nline", "-leading-dash",
        "back\\slash", "*glob?", "tab\there", "ünïcode ✓", "'", "''", "$HOME", "a|b&c>d<e", "{brace,expansion}", "~tilde",
    ]

    @Test("A real sh reads every quoted word back exactly", arguments: hostile)
    func roundTripThroughSh(word: String) throws {
        let output = try Testbed.run(["sh", "-c", "printf %s " + ShellQuote.quote(word)])
        #expect(output == word)
    }

    @Test("join keeps argument boundaries")
    func joinKeepsBoundaries() throws {
        let argv = ["a b", "c;d", "", "$(x)"]
        let output = try Testbed.run(["sh", "-c", "for a in " + ShellQuote.join(argv) + "; do printf '[%s]' \"$a\"; done"])
        #expect(output == "[a b][c;d][][$(x)]")
    }

    @Test("Plain words stay readable in logs")
    func plainWordsUnquoted() {
        #expect(ShellQuote.join(["docker", "rm", "--force", "resalloc-12"]) == "docker rm --force resalloc-12")
        #expect(ShellQuote.quote("{{json .}}") == "'{{json .}}'")
    }
}

@Suite("Name validation")
struct DockerNamesTests {
    @Test(
        "Hostile container names are refused",
        arguments: ["", "-rf", "a;b", "$(id)", "a b", "a\nb", "`x`", "a'b", "../x", String(repeating: "a", count: 129)]
    )
    func hostileContainerNames(name: String) {
        #expect(throws: DockerError.self) { try DockerNames.validateContainer(name) }
    }

    @Test("Good names pass", arguments: ["resalloc-1", "a", "A_b.c-d", "resalloc-123456"])
    func goodContainerNames(name: String) throws {
        try DockerNames.validateContainer(name)
    }

    @Test(
        "Image references",
        arguments: [("resalloc/busybox:0123456789ab", true), ("busybox", true), ("Busybox", false), ("x:-y", false), ("a;b", false), ("-x", false)]
    )
    func images(reference: String, valid: Bool) {
        let accepted = (try? DockerNames.validateImage(reference)) != nil
        #expect(accepted == valid)
    }

    @Test("Label values must be one printable line")
    func labels() throws {
        try DockerNames.validateLabel(key: "resalloc.owner", value: "$(touch /tmp/x) `id` 'q'")
        #expect(throws: DockerError.self) { try DockerNames.validateLabel(key: "resalloc.owner", value: "a\nb") }
        #expect(throws: DockerError.self) { try DockerNames.validateLabel(key: "Bad Key", value: "x") }
    }
}

@Suite("Build output lines")
struct LineSplitterTests {
    @Test("Lines split across reads stay whole; a carriage return keeps what a terminal shows last")
    func splitting() {
        let splitter = LineSplitter()
        let euro = Array("€".utf8)
        #expect(splitter.feed(Array("Step 1/2 : FROM busybox\nhalf a ".utf8) + euro.prefix(1), from: .stdout) == ["Step 1/2 : FROM busybox"])
        #expect(splitter.feed(Array(euro.dropFirst()) + Array(" line\r\n".utf8), from: .stdout) == ["half a € line"])
        #expect(
            splitter.feed(Array("Sending build context  1kB\rSending build context  2.048kB\r\r\n".utf8), from: .stderr) == [
                "Sending build context  2.048kB"
            ]
        )
        #expect(splitter.feed(Array("no end".utf8), from: .stdout).isEmpty)
        #expect(splitter.finish() == ["no end"])
    }
}
