/// A failure of the SSH transport, with a sentence for a person and libssh2's own words for the log.
///
/// Shaped like swift-nio-ssh's `NIOSSHError`: one struct, a small set of kinds.
public struct SSHError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// The TCP connection could not be made (refused, unreachable, name unknown).
        case connect
        /// The SSH handshake failed (protocol, algorithms).
        case handshake
        /// The machine presented a host key other than the pinned one.
        case hostKeyMismatch
        /// The machine refused our key, or the key could not be used.
        case auth
        /// A channel could not be opened or a request on it was refused.
        case channel
        /// Every channel that long-lived processes may hold on the machine is held: the rest are
        /// kept for short commands (the master's own work).
        case busy
        /// A deadline passed.
        case timeout
        /// The connection broke or was closed.
        case disconnected
    }

    public var kind: Kind
    /// What happened, for a person (operator or log reader); never contains key material.
    public var message: String
    /// libssh2's error code and message, for the log.
    public var detail: String?
    /// Whether the remote command had been sent before the failure. When false, retrying the
    /// command on a fresh connection cannot run it twice.
    public var commandStarted: Bool

    public init(_ kind: Kind, _ message: String, detail: String? = nil, commandStarted: Bool = false) {
        self.kind = kind
        self.message = message
        self.detail = detail
        self.commandStarted = commandStarted
    }

    public var description: String {
        if let detail { return "\(message) (\(detail))" }
        return message
    }
}
