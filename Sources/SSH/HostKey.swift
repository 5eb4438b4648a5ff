import Foundation

/// A machine's SSH host key as we pin it: its algorithm and the SHA-256 fingerprint of its blob,
/// written the way OpenSSH prints it (`SHA256:` + unpadded base64), so an operator can compare it
/// with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the machine.
public struct HostKey: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The SSH algorithm name, e.g. `ecdsa-sha2-nistp256` or `ssh-ed25519`.
    public var type: String
    /// `SHA256:…` as OpenSSH prints it.
    public var fingerprint: String

    public init(type: String, fingerprint: String) {
        self.type = type
        self.fingerprint = fingerprint
    }

    init(type: String, sha256: [UInt8]) {
        let base64 = Data(sha256).base64EncodedString()
        self.init(type: type, fingerprint: "SHA256:" + base64.replacingOccurrences(of: "=", with: ""))
    }

    public var description: String { "\(type) \(fingerprint)" }
}
