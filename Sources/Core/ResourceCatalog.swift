import Crypto
import Foundation
import Store

/// Resources: Dockerfiles stored byte for byte, and the image tag each one builds as.
public struct ResourceCatalog: Sendable {
    let database: AppDatabase

    public init(database: AppDatabase) { self.database = database }

    public func create(name: String, dockerfile: Data) throws(MasterError) -> Resource {
        try InputRules.validateName(name, "resource")
        try InputRules.validateDockerfile(String(decoding: dockerfile, as: UTF8.self))
        do { return try database.createResource(name: name, dockerfile: dockerfile) } catch { throw .from(error) }
    }

    public func resources() throws(MasterError) -> [Resource] {
        do { return try database.resources() } catch { throw .from(error) }
    }

    public func delete(name: String) throws(MasterError) {
        do { try database.deleteResource(named: name) } catch { throw .from(error) }
    }

    /// `resalloc/<name>:<first 12 hex of sha256(Dockerfile)>`: an edited resource builds anew,
    /// an unchanged one is never rebuilt.
    public static func imageTag(for resource: Resource) -> String {
        let digest = SHA256.hash(data: resource.dockerfile).map { String(format: "%02x", $0) }.joined()
        // Docker repositories are lowercase words joined by single separators, never at the ends.
        let words = resource.name.lowercased().split { !($0.isASCII && ($0.isLetter || $0.isNumber)) }
        return "resalloc/\(words.isEmpty ? "resource" : words.joined(separator: "-")):\(digest.prefix(12))"
    }
}
