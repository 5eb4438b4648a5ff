import SSH

/// What the master accepts from a user, in one place. `openapi.yaml` states the same patterns
/// (as `^…$`) and lengths, and a test compares the two, so the document and the server cannot
/// drift apart. Lengths are counted in Unicode code points, as JSON Schema counts them.
public enum InputRules {
    /// User, resource, machine and lease names: a leading `-` would read as an option somewhere.
    public static let name = #"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"#
    /// The login a machine's sshd accepts (Debian's `useradd` rule).
    public static let login = #"[a-z_][a-z0-9_-]{0,31}"#
    /// A lease lifetime: 90s, 15m, 2h, 1d.
    public static let ttl = #"[1-9][0-9]{0,5}[smhd]"#
    /// A machine's address: a host name or IPv4 address with an optional `:PORT`, an IPv6
    /// address in brackets with an optional `:PORT`, or a bare IPv6 address.
    public static let address =
        #"(?:[A-Za-z0-9.-]{1,253}(?::\#(port))?|\[[0-9A-Fa-f:.]{2,45}\](?::\#(port))?|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f.]{0,15})"#
    static let port = #"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"#
    /// A Dockerfile needs a `FROM` line somewhere (searched for, not anchored to the whole text).
    public static let dockerfileFrom = #"(^|\n)[ \t]*[Ff][Rr][Oo][Mm][ \t]"#
    /// An OpenSSH public key line the gateway can verify: Ed25519 or ECDSA, base64, a comment.
    public static let publicKey = #"(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/]+={0,2}(?:[ \t][^\n]*)?"#
    public static let passwordLength = 8...1024
    public static let dockerfileLength = 1...65536
    public static let capacity = 1...10_000
    /// Warm containers one resource may keep.
    public static let poolSize = 0...100
    /// A container's memory limit in bytes: docker's smallest (6 MiB) to 1 TiB.
    public static let memory: ClosedRange<Int64> = (6 << 20)...(1 << 40)
    /// A container's CPU limit in thousandths of a CPU.
    public static let milliCPUs = 10...1_024_000
    /// A container's process limit: enough for a shell and a command at least.
    public static let pids = 8...4_194_304
    /// `Memory` as a request writes it: 6m to 999999m, or 0.1g to 999.9g (one decimal); every
    /// value it matches is within `memory`, so the API document can state the rule exactly.
    public static let memorySize = #"(?:[6-9]|[1-9][0-9]{1,5})[mM]|(?:0\.[1-9]|[1-9][0-9]{0,2}(?:\.[0-9])?)[gG]"#

    /// Whether all of `text` matches `pattern`, scalar by scalar (as JSON Schema's regexes see it).
    public static func matches(_ text: String, _ pattern: String) -> Bool {
        guard let regex = try? Regex(pattern).matchingSemantics(.unicodeScalar) else { return false }
        return (try? regex.wholeMatch(in: text)) != nil
    }

    /// Whether `pattern` is found anywhere in `text`.
    public static func contains(_ text: String, _ pattern: String) -> Bool {
        guard let regex = try? Regex(pattern).matchingSemantics(.unicodeScalar) else { return false }
        return (try? regex.firstMatch(in: text)) != nil
    }

    public static func validateName(_ name: String, _ what: String) throws(MasterError) {
        guard matches(name, Self.name) else {
            let shown =
                name.isEmpty ? "an empty name" : "'\(String(name.prefix(70)).unicodeScalars.map { $0.value < 0x20 ? "?" : String($0) }.joined())'"
            throw MasterError(.invalid, "\(shown) is not a valid \(what) name: use 1 to 63 letters, digits, - or _, starting with a letter or digit")
        }
    }

    public static func validateLogin(_ login: String) throws(MasterError) {
        guard matches(login, Self.login) else { throw MasterError(.invalid, "'\(login.prefix(40))' is not a valid login name") }
    }

    /// Splits a valid address into host and port (22 when none is given).
    public static func parseAddress(_ address: String) throws(MasterError) -> (host: String, port: Int) {
        guard matches(address, Self.address), let parsed = SSHEndpoint.parseAddress(address) else {
            throw MasterError(.invalid, "'\(address.prefix(80))' is not an address: use IP or IP:PORT")
        }
        return parsed
    }

    public static func validatePassword(_ password: String) throws(MasterError) {
        guard passwordLength.contains(password.unicodeScalars.count) else {
            throw MasterError(.invalid, "a password needs 8 to 1024 characters")
        }
    }

    public static func validateDockerfile(_ text: String) throws(MasterError) {
        let length = text.unicodeScalars.count
        guard length > 0 else { throw MasterError(.invalid, "the Dockerfile is empty") }
        guard dockerfileLength.contains(length) else {
            throw MasterError(.invalid, "the Dockerfile has \(length) characters; at most \(dockerfileLength.upperBound) are accepted")
        }
        guard contains(text, dockerfileFrom) else { throw MasterError(.invalid, "the Dockerfile has no FROM line") }
    }

    /// A lifetime as `TTL` takes it, or a sentence that says how to write one.
    public static func ttl(_ text: String) throws(MasterError) -> Duration {
        guard matches(text, ttl), let duration = TTL.parse(text) else {
            throw MasterError(.invalid, "'\(text.prefix(20))' is not a lifetime: use 90s, 15m, 2h or 1d")
        }
        return duration
    }
}
