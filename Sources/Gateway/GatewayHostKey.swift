import Crypto
import Foundation
import NIOSSH

/// The gateway's host key: Ed25519, made on first start and kept in a file of its own (the raw
/// 32-byte seed, mode 0600; swift-nio-ssh reads no OpenSSH key files), so that clients pin it
/// once and it survives restarts.
public struct GatewayHostKey: Sendable {
    public let key: NIOSSHPrivateKey
    /// `SHA256:…`, as `ssh-keygen -l` and OpenSSH's prompts print it.
    public let fingerprint: String
    /// `ssh-ed25519 AAAA…`, as in known_hosts.
    public let publicKeyLine: String

    /// Reads the key at `path`, or creates it there when the file does not exist.
    public static func loadOrCreate(at path: String) throws -> GatewayHostKey {
        let signing: Curve25519.Signing.PrivateKey
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count == 32, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: data) else {
                throw GatewayError("\(path) is not a resalloc gateway host key (32 bytes of an Ed25519 seed); move it away to make a new one")
            }
            signing = key
        } else {
            signing = Curve25519.Signing.PrivateKey()
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else { throw GatewayError("cannot create the gateway host key \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            let bytes = [UInt8](signing.rawRepresentation)
            guard write(fd, bytes, bytes.count) == bytes.count else { throw GatewayError("cannot write the gateway host key \(path)") }
        }
        let key = NIOSSHPrivateKey(ed25519Key: signing)
        let line = String(openSSHPublicKey: key.publicKey)
        return GatewayHostKey(key: key, fingerprint: Self.fingerprint(of: line), publicKeyLine: line)
    }

    /// `SHA256:` and the unpadded base64 of the SHA-256 of the key's wire form.
    static func fingerprint(of line: String) -> String {
        let blob = line.split(separator: " ").dropFirst().first.flatMap { Data(base64Encoded: String($0)) } ?? Data()
        return "SHA256:" + Data(SHA256.hash(data: blob)).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }
}

public struct GatewayError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
