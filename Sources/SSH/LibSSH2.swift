import CLibSSH2
import Foundation

/// Process-wide libssh2 set-up. `libssh2_init` is not thread-safe; a Swift global is initialised
/// exactly once, so every session creation goes through `LibSSH2.ensureInitialised()`.
enum LibSSH2 {
    private static let initialised: Void = {
        signal(SIGPIPE, SIG_IGN)
        libssh2_init(0)
    }()

    static func ensureInitialised() { _ = initialised }

    /// libssh2's last error of a session, as `rc: message`, for logs.
    static func lastError(_ session: OpaquePointer) -> (code: Int32, text: String) {
        var message: UnsafeMutablePointer<CChar>?
        var length: Int32 = 0
        let code = libssh2_session_last_error(session, &message, &length, 0)
        let text = message.map { String(cString: $0) } ?? "no message"
        return (code, "libssh2 \(code): \(text)")
    }

    /// Errors after which the whole session is unusable (socket gone, protocol broken).
    static func isSessionFatal(_ rc: Int32) -> Bool {
        switch rc {
        case LIBSSH2_ERROR_SOCKET_SEND, LIBSSH2_ERROR_SOCKET_RECV, LIBSSH2_ERROR_SOCKET_DISCONNECT,
            LIBSSH2_ERROR_SOCKET_TIMEOUT, LIBSSH2_ERROR_TIMEOUT, LIBSSH2_ERROR_PROTO, LIBSSH2_ERROR_DECRYPT,
            LIBSSH2_ERROR_BANNER_RECV, LIBSSH2_ERROR_BANNER_SEND, LIBSSH2_ERROR_KEX_FAILURE,
            LIBSSH2_ERROR_SOCKET_NONE, LIBSSH2_ERROR_INVALID_MAC, LIBSSH2_ERROR_ALLOC:
            return true
        default:
            return false
        }
    }

    static func hostKeyTypeName(_ type: Int32) -> String {
        switch type {
        case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa"
        case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss"
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256"
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384"
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521"
        case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519"
        default: return "unknown"
        }
    }
}

/// Milliseconds left until `deadline`, for `poll`, never negative.
func millisecondsLeft(until deadline: ContinuousClock.Instant, cap: Int = Int(Int32.max)) -> Int32 {
    let left = deadline - .now
    if left <= .zero { return 0 }
    let (seconds, attoseconds) = left.components
    let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1
    return Int32(min(Int(ms), cap))
}
