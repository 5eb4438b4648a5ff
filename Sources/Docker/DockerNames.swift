/// Validation of every name that reaches the remote shell. Names are also quoted; validating
/// them first means a hostile one is refused with a clear error before anything is sent.
public enum DockerNames {
    /// Container names: what Docker accepts, and never a leading `-` (it would read as an option).
    public static func validateContainer(_ name: String) throws(DockerError) {
        guard name.wholeMatch(of: /[A-Za-z0-9][A-Za-z0-9_.-]{0,127}/) != nil else {
            throw .invalidArgument("'\(printable(name))' is not a valid container name")
        }
    }

    /// Image references as we use them: `name[:tag]`, lowercase path components.
    public static func validateImage(_ reference: String) throws(DockerError) {
        guard reference.count <= 255,
            reference.wholeMatch(of: /[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?/) != nil
        else {
            throw .invalidArgument("'\(printable(reference))' is not a valid image name")
        }
    }

    /// Label keys (`resalloc.lease`) and values (printable, one line, at most 256 characters).
    public static func validateLabel(key: String, value: String) throws(DockerError) {
        guard key.wholeMatch(of: /[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?/) != nil else {
            throw .invalidArgument("'\(printable(key))' is not a valid label key")
        }
        guard value.count <= 256, value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw .invalidArgument("the value of label \(key) must be one printable line of at most 256 characters")
        }
    }

    /// Arguments for a process inside a container: anything but NUL, which no argv can carry.
    public static func validateArgument(_ argument: String) throws(DockerError) {
        guard !argument.utf8.contains(0) else { throw .invalidArgument("an argument contains a NUL byte") }
    }

    /// Environment variable names for `docker exec -e`.
    public static func validateEnvironment(name: String, value: String) throws(DockerError) {
        guard name.wholeMatch(of: /[A-Za-z_][A-Za-z0-9_]{0,63}/) != nil else {
            throw .invalidArgument("'\(printable(name))' is not a valid environment variable name")
        }
        try validateArgument(value)
    }

    static func printable(_ text: String) -> String {
        String(text.prefix(80).unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "?" : Character($0) })
    }
}
