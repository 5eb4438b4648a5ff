/// A request the master refused or could not get to, with one line for the person at the terminal.
public enum ClientError: Error, Sendable, CustomStringConvertible {
    /// The master answered with a failure.
    case server(status: Int, message: String)
    /// The master could not be reached at `url`.
    case unreachable(url: String, detail: String)
    /// The https:// master's certificate is not one this machine trusts (or not for that name).
    case untrusted(url: String, detail: String)
    /// No token is saved.
    case notLoggedIn
    /// The master's answer made no sense to this client.
    case protocolError(String)
    /// Something on this machine: a local file that cannot be read or written.
    case local(String)

    /// `unreachable`, or `untrusted` when the TLS handshake failed on the master's certificate:
    /// the clients wrap NIOSSL's errors differently, and all of them keep BoringSSL's reason.
    static func connecting(to url: String, failedWith error: any Error) -> ClientError {
        let detail = "\(error)"
        if detail.contains("CERTIFICATE_VERIFY_FAILED") || detail.contains("failedToValidateHostname") {
            let why =
                detail.contains("failedToValidateHostname")
                ? "its certificate is for another name" : "its certificate did not verify (an issuer this machine does not know, or out of date)"
            return .untrusted(url: url, detail: why)
        }
        return .unreachable(url: url, detail: detail)
    }

    public var description: String {
        switch self {
        case .server(let status, let message):
            return status == 401 && !message.contains("resalloc login") ? "\(message) (run resalloc login NAME)" : message
        case .unreachable(let url, let detail): return "cannot reach the master at \(url) (\(detail)); is it running? set --server or RESALLOC_URL"
        case .untrusted(let url, let detail):
            return "cannot trust the master at \(url): \(detail); if your fleet has its own CA, set \(ClientTLS.caFileVariable) to its PEM file"
        case .notLoggedIn: return "not logged in: run resalloc login NAME"
        case .protocolError(let message): return "unexpected answer from the master: \(message)"
        case .local(let message): return message
        }
    }
}
