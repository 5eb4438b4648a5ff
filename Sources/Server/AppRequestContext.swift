import Foundation
import Hummingbird
import ResallocAPI

/// The request context of every route: ISO 8601 dates both ways.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's IP address, for the audit trail.
    public let address: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        address = source.channel.remoteAddress?.ipAddress
    }

    public var requestDecoder: JSONDecoder { WireCoding.decoder() }
    public var responseEncoder: JSONEncoder { WireCoding.encoder() }
    /// Dockerfiles are limited to 65536 characters, up to 6 bytes each as JSON escapes; nothing
    /// else is large.
    public var maxUploadSize: Int { 1024 * 1024 }
}
