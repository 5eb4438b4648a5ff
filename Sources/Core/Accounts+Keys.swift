import Crypto
import Foundation
import Store

/// Users' SSH public keys, for the gateway (`ssh -p 2222 LEASE@MASTER`).
extension Accounts {
    /// Key types the gateway verifies (swift-nio-ssh): Ed25519 and ECDSA.
    static let acceptedKeyTypes = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"]

    /// Registers the OpenSSH public key `line` (as in a `.pub` file) for `user` as `name`.
    public func addKey(for user: User, name: String, line: String) async throws(MasterError) -> UserKey {
        try InputRules.validateName(name, "key")
        let (algorithm, blob) = try Self.parsePublicKey(line)
        let digest = Data(SHA256.hash(data: Data(base64Encoded: blob)!)).base64EncodedString().replacingOccurrences(of: "=", with: "")
        let key = UserKey(userId: user.id!, name: name, algorithm: algorithm, blob: blob, fingerprint: "SHA256:\(digest)")
        do { return try await database.createUserKey(key) } catch { throw .from(error) }
    }

    public func keys(of user: User) async throws(MasterError) -> [UserKey] {
        do { return try await database.userKeys(userId: user.id!) } catch { throw .from(error) }
    }

    public func removeKey(of user: User, name: String) async throws(MasterError) {
        do { try await database.deleteUserKey(userId: user.id!, name: name) } catch { throw .from(error) }
    }

    /// The active user who registered the key with this wire form (base64), if any.
    /// Whether `user` may still act: approved, not disabled since, not gone.
    public func stillMayAct(_ user: User) async throws(MasterError) -> Bool {
        do { return try await database.user(named: user.name)?.mayAct ?? false } catch { throw .from(error) }
    }

    public func user(withKeyBlob blob: String) async throws(MasterError) -> User? {
        do {
            guard let user = try await database.user(withKeyBlob: blob), user.mayAct else { return nil }
            return user
        } catch { throw .from(error) }
    }

    /// The type and base64 wire form of an OpenSSH public key line, checked to agree.
    static func parsePublicKey(_ text: String) throws(MasterError) -> (algorithm: String, blob: String) {
        let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count >= 2 else {
            throw MasterError(.invalid, "that is not an OpenSSH public key: give the contents of a .pub file, such as ~/.ssh/id_ed25519.pub")
        }
        let (algorithm, blob) = (fields[0], fields[1])
        if algorithm == "ssh-rsa" || algorithm.hasPrefix("rsa-") {
            throw MasterError(
                .invalid,
                "RSA keys cannot log in to the gateway (its SSH library verifies only Ed25519 and ECDSA); make one with ssh-keygen -t ed25519"
            )
        }
        guard acceptedKeyTypes.contains(algorithm) else {
            throw MasterError(.invalid, "\(algorithm.prefix(40)) keys cannot log in to the gateway: use Ed25519 (ssh-keygen -t ed25519) or ECDSA")
        }
        guard InputRules.matches(line, InputRules.publicKey) else {
            throw MasterError(.invalid, "that is not an OpenSSH public key line: TYPE BASE64 [COMMENT], as in a .pub file")
        }
        // Well formed, but is it a key? (422: the line has the right shape and wrong content.)
        guard let data = Data(base64Encoded: blob), data.count >= 4 else { throw MasterError(.unprocessable, "the key's base64 part is damaged") }
        let length = Int(data[0]) << 24 | Int(data[1]) << 16 | Int(data[2]) << 8 | Int(data[3])
        guard data.count >= 4 + length, String(decoding: data[4..<(4 + length)], as: UTF8.self) == algorithm else {
            throw MasterError(.unprocessable, "the key's base64 part does not hold a \(algorithm) key")
        }
        return (algorithm, blob)
    }
}
