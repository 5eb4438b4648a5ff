import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore

extension HTTPServerBuilder {
    /// HTTP/1 with WebSocket upgrades, as `http1WebSocketUpgrade(webSocketRouter:configuration:)`,
    /// except that a graceful shutdown also closes a connection on which no byte has arrived.
    ///
    /// With WebSocket upgrades, the handler that closes idle connections on shutdown joins a
    /// connection's pipeline only with its first request. A client that opens a connection ahead
    /// of need (a browser's preconnect; an HTTP client's pool that made one connection more than it
    /// used) would otherwise hold SIGTERM's drain until it hangs up: measured here, forever for a
    /// socket that stays open, 60 s for AsyncHTTPClient's spare connection.
    static func http1WebSocketUpgradeClosingUnused<Responder: HTTPResponderBuilder & _HB_SendableMetatype>(
        webSocketRouter: Responder,
        configuration: HTTP1WebSocketUpgradeChannel.Configuration
    ) -> HTTPServerBuilder where Responder.Responder.Context: WebSocketRequestContext {
        let webSocketResponder = webSocketRouter.buildResponder()
        return .init { responder in
            ClosingUnusedOnShutdown(
                inner: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder, configuration: configuration)
            )
        }
    }
}

/// A child channel set up as `inner`, behind a first handler that closes it on shutdown while it
/// has received nothing.
struct ClosingUnusedOnShutdown<Inner: ServerChildChannel>: ServerChildChannel {
    let inner: Inner

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Inner.Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(UnusedConnectionCloser(), position: .first)
        }
        .flatMap { inner.setup(channel: channel, logger: logger) }
    }

    func handle(value: Inner.Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Closes the connection on `ChannelShouldQuiesceEvent` if no byte has been read on it; once one
/// has, the event goes on to the HTTP handlers, which finish the request under way first.
final class UnusedConnectionCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var received = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received = true
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent && !received {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension UnusedConnectionCloser: Sendable {}
