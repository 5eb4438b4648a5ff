import Foundation
import NIOSSL

/// TLS to an https:// master: the system's trust store, and, when `RESALLOC_CA_FILE` names a PEM
/// file, its certificates as well (a fleet's own CA). One configuration for the HTTP calls, the
/// shell's WebSocket and those of `cp` and `forward`.
enum ClientTLS {
    static let caFileVariable = "RESALLOC_CA_FILE"

    static let caFile: String? = ProcessInfo.processInfo.environment[caFileVariable].flatMap { $0.isEmpty ? nil : $0 }

    static let configuration: TLSConfiguration = {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let caFile { configuration.additionalTrustRoots = [.file(caFile)] }
        return configuration
    }()

    /// What is wrong with `RESALLOC_CA_FILE`, as a sentence; checked before a connection to an
    /// https:// master, which would otherwise fail with a bare TLS error.
    static let problem: ClientError? = {
        guard let caFile else { return nil }
        do {
            guard !(try NIOSSLCertificate.fromPEMFile(caFile)).isEmpty else {
                return .local("\(caFileVariable)=\(caFile) holds no PEM certificate")
            }
            return nil
        } catch {
            let reason = FileManager.default.isReadableFile(atPath: caFile) ? "not PEM certificates" : "cannot be read"
            return .local("\(caFileVariable)=\(caFile): \(reason)")
        }
    }()

    /// Throws `problem` when `server` is an https:// URL.
    static func check(_ server: String) throws {
        if let problem, server.lowercased().hasPrefix("https://") { throw problem }
    }
}
