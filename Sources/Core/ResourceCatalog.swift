import Crypto
import Foundation
import Store

/// Resources: Dockerfiles stored byte for byte, and the image tag each one builds as.
public struct ResourceCatalog: Sendable {
    public static let maxDockerfileBytes = 64 * 1024
    let database: AppDatabase

    public init(database: AppDatabase) { self.database = database }

    public func create(name: String, dockerfile: Data) throws(MasterError) -> Resource {
        try Names.validate(name, "resource")
        guard !dockerfile.isEmpty else { throw MasterError(.invalid, "the Dockerfile is empty") }
        guard dockerfile.count <= Self.maxDockerfileBytes else {
            throw MasterError(.invalid, "the Dockerfile has \(dockerfile.count) bytes; at most \(Self.maxDockerfileBytes) are accepted")
        }
        let text = String(decoding: dockerfile, as: UTF8.self)
        let hasFrom = text.split(whereSeparator: \.isNewline).contains { line in
            line.drop(while: { $0 == " " || $0 == "\t" }).uppercased().hasPrefix("FROM ")
        }
        guard hasFrom else { throw MasterError(.invalid, "the Dockerfile has no FROM line") }
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
