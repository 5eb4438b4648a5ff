/// POSIX shell quoting for the remote login shell that runs every command we send.
public enum ShellQuote {
    /// `word` as one shell word, with no expansion of any kind: single-quoted unless it consists
    /// only of characters that are never special (`A-Z a-z 0-9 _ . / = : @ % + , -`).
    public static func quote(_ word: String) -> String {
        if !word.isEmpty, word.utf8.allSatisfy(isPlain) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// A command line from an argument vector, each argument quoted.
    public static func join(_ argv: [String]) -> String {
        argv.map(quote).joined(separator: " ")
    }

    private static func isPlain(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "_./=:@%+,-".utf8.contains(byte)
        }
    }
}
