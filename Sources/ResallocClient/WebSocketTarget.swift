import HTTPTypes
import HummingbirdWSClient
import Logging

/// Where one of the master's WebSockets is (`resalloc ssh`, `cp`, `forward`), with the
/// caller's token, frames up to 1 MiB, and a logger that stays quiet (errors reach the user
/// as sentences instead).
struct WebSocketTarget {
    let url: String
    let configuration: WebSocketClientConfiguration
    let logger: Logger

    init(_ client: ResallocClient, path: String, label: String) throws {
        guard let token = client.token else { throw ClientError.notLoggedIn }
        try ClientTLS.check(client.server)
        url = client.server.replacingOccurrences(of: "http://", with: "ws://").replacingOccurrences(of: "https://", with: "wss://") + path
        var configuration = WebSocketClientConfiguration()
        configuration.additionalHeaders = [.authorization: "Bearer \(token)"]
        configuration.maxFrameSize = 1 << 20
        self.configuration = configuration
        var logger = Logger(label: label)
        logger.logLevel = .critical
        self.logger = logger
    }
}
