import Docker
import SSH
import Store

/// A failure of a master operation, with a sentence for the person who asked and, separately,
/// the technical detail for the log. The server maps `kind` to an HTTP status.
public struct MasterError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case invalid, unauthorized, forbidden, notFound, conflict, buildFailed, unprocessable, unreachable, noCapacity, timeout, `internal`
        /// The master's own database cannot be reached now.
        case unavailable
        /// The caller asked too often or holds too much: try again after `retryAfter` seconds.
        case tooManyRequests
    }

    public var kind: Kind
    public var message: String
    /// For the log only: libssh2, docker or SQLite text.
    public var detail: String?
    /// For `tooManyRequests`: when asking again may succeed, in seconds (HTTP's `Retry-After`).
    public var retryAfter: Int?

    public init(_ kind: Kind, _ message: String, detail: String? = nil, retryAfter: Int? = nil) {
        self.kind = kind
        self.message = message
        self.detail = detail
        self.retryAfter = retryAfter
    }

    public var description: String { detail.map { "\(message) [\($0)]" } ?? message }

    func with(detail: String) -> MasterError { MasterError(kind, message, detail: detail, retryAfter: retryAfter) }

    /// Translates store, SSH and docker failures into sentences; anything else is internal.
    public static func from(_ error: any Error, machine: String? = nil) -> MasterError {
        let on = machine.map { " \($0)" } ?? ""
        switch error {
        case let error as MasterError:
            return error
        case let error as StoreError:
            switch error {
            case .conflict(let message): return MasterError(.conflict, message)
            case .notFound(let message): return MasterError(.notFound, message)
            case .schemaOutdated: return MasterError(.internal, "the server's database needs an upgrade", detail: error.description)
            case .invalid(let message): return MasterError(.invalid, message)
            case .unavailable(let message): return MasterError(.unavailable, message)
            }
        case let error as SSHError:
            switch error.kind {
            case .timeout: return MasterError(.timeout, "machine\(on) did not answer in time", detail: error.description)
            case .hostKeyMismatch:
                return MasterError(
                    .unreachable,
                    "machine\(on) presented another host key than the one pinned; an admin must check it",
                    detail: error.description
                )
            case .auth: return MasterError(.unreachable, "machine\(on) refused the master's key", detail: error.description)
            case .busy:
                return MasterError(
                    .tooManyRequests,
                    "machine\(on) has as many sessions open as it may carry (the rest of its channels are the master's); try again when one ends",
                    detail: error.description,
                    retryAfter: 5
                )
            default: return MasterError(.unreachable, "machine\(on) cannot be reached over SSH", detail: error.description)
            }
        case let error as DockerError:
            switch error {
            case .transport(let ssh): return from(ssh, machine: machine)
            case .invalidArgument(let message): return MasterError(.invalid, message)
            case .buildFailed(_, let tail): return MasterError(.buildFailed, "the image failed to build:\n\(tail)")
            case .noSuchContainer: return MasterError(.notFound, "the container is gone", detail: error.description)
            case .engineUnavailable(let reason, _): return MasterError(.unreachable, "machine\(on): \(reason)", detail: error.description)
            case .engineNotAnswering: return MasterError(.unreachable, "machine\(on): \(error.description)")
            case .commandFailed(let command, _, let stderr):
                // The engine's own reason, in one line: what the user can act on or report.
                let line = stderr.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                let reason = line.isEmpty ? "" : ": " + line.replacingOccurrences(of: "Error response from daemon: ", with: "").prefix(500)
                return MasterError(.unreachable, "docker \(command) on machine\(on) failed\(reason)", detail: error.description)
            case .unparsable: return MasterError(.unreachable, "docker on machine\(on) failed", detail: error.description)
            }
        default:
            if let store = StoreError.classify(error) { return MasterError.from(store).with(detail: String(reflecting: error)) }
            return MasterError(.internal, "something went wrong on the server", detail: String(describing: error))
        }
    }
}
