import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ResallocAPI

/// The shell's WebSocket as plain NIO channel handlers on one event loop.
///
/// A keystroke is the whole of an interactive session's traffic, and its echo is what a user
/// feels. Here it goes from the terminal's read to the socket's write, and from the socket's read
/// to `onOutput`, inside one event loop tick each way: no async sequence, writer or task in
/// between (which cost the CLI twice the CPU of `ssh` for each keystroke; README, benchmarks).
/// Copies and forwarded ports, which move bulk data, connect with `dial` as well but keep
/// swift-websocket's async streams (`WebSocketTarget`).
enum ShellWire {
    /// Connects, upgrades to a WebSocket with the bearer token, and returns the channel, whose
    /// frames from then on go to `outcome` and `onOutput`. Throws `UpgradeRefused` when the
    /// master answers with plain HTTP.
    static func connect(
        _ address: ShellAddress,
        token: String,
        eventLoop: any EventLoop,
        outcome: Outcome,
        onOutput: @escaping @Sendable (ShellStream, ByteBuffer) -> Void
    ) async throws -> any Channel {
        try await dial(address, token: token, eventLoop: eventLoop, maxFrameSize: 1 << 22) { channel in
            let aggregator = NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0,
                maxAccumulatedFrameCount: 1 << 16,
                maxAccumulatedFrameSize: 1 << 22
            )
            try channel.pipeline.syncOperations.addHandlers(aggregator, ShellFrameHandler(outcome: outcome, onOutput: onOutput))
            return channel
        }
    }

    /// Connects to `address` (TLS for https://, with the master's name, or its IP address checked
    /// against the certificate when the URL has one), sends the upgrade request with the bearer
    /// token, and once the master switches protocols hands the WebSocket channel to `upgraded`, on
    /// its event loop, for the handlers it needs. Throws `UpgradeRefused` when the master answers
    /// with plain HTTP.
    static func dial<Value: Sendable>(
        _ address: ShellAddress,
        token: String,
        eventLoop: any EventLoop,
        maxFrameSize: Int,
        upgraded: @escaping @Sendable (any Channel) throws -> Value
    ) async throws -> Value {
        let tls = try address.tls ? NIOSSLContext(configuration: ClientTLS.configuration) : nil
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: address.hostHeader)
        headers.add(name: "Authorization", value: "Bearer \(token)")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: address.uri, headers: headers)
        let upgrade = try await ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // SNI names no IP address; NIOSSL then checks the certificate against the peer's.
                        let handler = try NIOSSLClientHandler(context: tls, serverHostname: address.isIPLiteral ? nil : address.host)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade<Value>>(maxFrameSize: maxFrameSize) { channel, _ in
                        channel.eventLoop.makeCompletedFuture { .upgraded(try upgraded(channel)) }
                    }
                    var configuration = NIOUpgradableHTTPClientPipelineConfiguration(
                        upgradeConfiguration: NIOTypedHTTPClientUpgradeConfiguration(upgradeRequestHead: head, upgraders: [upgrader]) { channel in
                            // The answer's head comes down the pipeline once this returns.
                            let status = channel.eventLoop.makePromise(of: Int.self)
                            return channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(RefusalReader(status: status))
                                return .refused(status.futureResult)
                            }
                        }
                    )
                    configuration.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
                }
            }
        switch try await upgrade.get() {
        case .upgraded(let value): return value
        case .refused(let status): throw UpgradeRefused(status: try? await status.get())
        }
    }

    /// What the WebSocket request came to.
    enum Upgrade<Value: Sendable>: Sendable {
        case upgraded(Value)
        /// Plain HTTP; the future has its status.
        case refused(EventLoopFuture<Int>)
    }

    /// A frame from the client: masked, as RFC 6455 requires.
    static func frame(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }

    static func frame(_ opcode: WebSocketOpcode, _ text: String) -> WebSocketFrame {
        frame(opcode, ByteBuffer(string: text))
    }
}

/// Where the shell's WebSocket goes: `server` (http:// or https://, perhaps with a path) + `path`.
struct ShellAddress {
    let host: String
    let port: Int
    let tls: Bool
    let uri: String
    let hostHeader: String

    init(server: String, path: String) throws {
        guard let url = URL(string: server), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", let host = url.host,
            !host.isEmpty
        else { throw ClientError.local("the master's address \(server) is not an http:// or https:// URL") }
        self.host = host
        tls = scheme == "https"
        port = url.port ?? (tls ? 443 : 80)
        let base = url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path
        uri = base + path
        let bracketed = host.contains(":") ? "[\(host)]" : host
        hostHeader = url.port.map { "\(bracketed):\($0)" } ?? bracketed
    }

    /// TLS names no IP address (SNI).
    var isIPLiteral: Bool { (try? SocketAddress(ipAddress: host, port: 0)) != nil }
}

/// The status of a plain HTTP answer to the WebSocket request; then it closes the connection, on
/// which no shell will run.
final class RefusalReader: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let status: EventLoopPromise<Int>

    init(status: EventLoopPromise<Int>) { self.status = status }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { status.succeed(Int(head.status.code)) }
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) { status.fail(ChannelError.ioOnClosedChannel) }
}

/// The shell's frames from the master, on the connection's event loop: output to `onOutput` at
/// once, events to `outcome`, pings answered, and the closing handshake.
final class ShellFrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let outcome: Outcome
    private let onOutput: @Sendable (ShellStream, ByteBuffer) -> Void
    private var closeSent = false

    init(outcome: Outcome, onOutput: @escaping @Sendable (ShellStream, ByteBuffer) -> Void) {
        self.outcome = outcome
        self.onOutput = onOutput
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        var payload = frame.unmaskedData
        switch frame.opcode {
        case .binary:
            guard let tag: UInt8 = payload.readInteger(), let stream = ShellStream(rawValue: tag) else { return }
            onOutput(stream, payload)
        case .text:
            if let event = try? JSONDecoder().decode(ShellEvent.self, from: Data(payload.readableBytesView)) { outcome.set(event) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(ShellWire.frame(.pong, payload)), promise: nil)
        case .connectionClose:
            // Answer the master's close with its status code, then close; or close, if it answers ours.
            let channel = context.channel
            guard !closeSent else { return channel.close(promise: nil) }
            closeSent = true
            let code = payload.readSlice(length: min(2, payload.readableBytes)) ?? ByteBuffer()
            context.writeAndFlush(wrapOutboundOut(ShellWire.frame(.connectionClose, code))).whenComplete { _ in channel.close(promise: nil) }
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A terminal's keystrokes, read on the shell connection's event loop and written to it as they
/// come; its end (the terminal closed) is the shell's end of input.
final class KeystrokeForwarder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let shell: any Channel

    init(shell: any Channel) { self.shell = shell }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        shell.writeAndFlush(ShellWire.frame(.binary, unwrapInboundIn(data)), promise: nil)
        if !shell.isWritable { pause(context) }
    }

    /// A paste faster than the connection: stop reading the terminal until the master takes it.
    private func pause(_ context: ChannelHandlerContext) {
        context.channel.setOption(.autoRead, value: false).whenSuccess {}
        Self.resume(context.channel, whenWritable: shell)
    }

    private static func resume(_ keys: any Channel, whenWritable shell: any Channel) {
        keys.eventLoop.scheduleTask(in: .milliseconds(5)) {
            guard shell.isWritable || !shell.isActive else { return resume(keys, whenWritable: shell) }
            keys.setOption(.autoRead, value: true).whenSuccess {}
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        shell.writeAndFlush(ShellWire.frame(.text, ShellSession.encode(ShellControl(type: .eof))), promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
