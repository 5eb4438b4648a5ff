/// A request the master refused or could not get to, with one line for the person at the terminal.
public enum ClientError: Error, Sendable, CustomStringConvertible {
    /// The master answered with a failure.
    case server(status: Int, message: String)
    /// The master could not be reached at `url`.
    case unreachable(url: String, detail: String)
    /// No token is saved.
    case notLoggedIn
    /// The master's answer made no sense to this client.
    case protocolError(String)
    /// Something on this machine: a local file that cannot be read or written.
    case local(String)

    public var description: String {
        switch self {
        case .server(let status, let message):
            return status == 401 && !message.contains("resalloc login") ? "\(message) (run resalloc login NAME)" : message
        case .unreachable(let url, let detail): return "cannot reach the master at \(url) (\(detail)); is it running? set --server or RESALLOC_URL"
        case .notLoggedIn: return "not logged in: run resalloc login NAME"
        case .protocolError(let message): return "unexpected answer from the master: \(message)"
        case .local(let message): return message
        }
    }
}
