import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
@_spi(WSInternal) import WSCore

/// One of the master's WebSockets for bulk data (`resalloc cp`, `forward`), with the caller's
/// token and frames up to 1 MiB, run by swift-websocket's own frame handling (pings, fragments,
/// the closing handshake) over `ShellWire.dial`'s connection. HummingbirdWSClient's own
/// connection cannot reach an https:// master by IP address: it always names the host for SNI,
/// which TLS forbids for an address.
struct WebSocketTarget {
    /// What a handler gets besides the streams: the logger, which stays quiet (errors reach the
    /// user as sentences instead).
    struct Context: WebSocketContext {
        let logger: Logger
    }

    let address: ShellAddress
    let token: String
    let logger: Logger

    init(_ client: ResallocClient, path: String, label: String) throws {
        guard let token = client.token else { throw ClientError.notLoggedIn }
        try ClientTLS.check(client.server)
        address = try ShellAddress(server: client.server, path: path)
        self.token = token
        var logger = Logger(label: label)
        logger.logLevel = .critical
        self.logger = logger
    }

    /// Connects and runs `handler` with the socket's inbound and outbound streams until it returns
    /// and the socket is closed. Throws `UpgradeRefused` when the master answers with plain HTTP.
    func connect(_ handler: @escaping WebSocketDataHandler<Context>) async throws {
        let channel = try await ShellWire.dial(address, token: token, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), maxFrameSize: 1 << 20)
        {
            try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: $0)
        }
        _ = try await WebSocketHandler.handle(
            type: .client,
            configuration: .init(extensions: [], autoPing: .disabled, validateUTF8: false, maxFrameSize: 1 << 20),
            asyncChannel: channel,
            context: Context(logger: logger),
            handler: handler
        )
    }
}
