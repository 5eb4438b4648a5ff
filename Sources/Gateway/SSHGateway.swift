import Core
import Logging
import NIOCore
import NIOPosix
import NIOSSH
import ServiceLifecycle
import Store

/// The SSH front door: `ssh -p 2222 LEASE@MASTER` with stock OpenSSH. Each connection logs in
/// with a key its user registered; the user name is the lease's name. Shells, commands and
/// the `sftp` subsystem run in the lease through `Master.openSession`, `-L`/`-D` tunnels reach
/// the lease's own loopback through `Master.forward`. A public port, hardened as one: 6
/// authentication attempts and 30 s to log in per connection, and a bad connection affects
/// no other.
public struct SSHGateway: Service {
    public let master: Master
    public let host: String
    public let port: Int
    public let hostKey: GatewayHostKey
    public let logger: Logger
    public static let loginDeadline: TimeAmount = .seconds(30)

    public init(master: Master, host: String, port: Int, hostKey: GatewayHostKey, logger: Logger) {
        self.master = master
        self.host = host
        self.port = port
        self.hostKey = hostKey
        self.logger = logger
    }

    public func run() async throws {
        let (master, hostKey, logger) = (self.master, self.hostKey, self.logger)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.setUp(channel, master: master, hostKey: hostKey, logger: logger)
                }
            }
            .bind(host: host, port: port)
            .get()
        logger.notice(
            "SSH gateway listening",
            metadata: ["address": "\(server.localAddress?.description ?? "?")", "hostKey": "\(hostKey.fingerprint)"]
        )
        try? await gracefulShutdown()
        try? await server.close()
    }

    static func setUp(_ channel: any Channel, master: Master, hostKey: GatewayHostKey, logger: Logger) throws {
        let state = ConnectionState()
        let authenticator = KeyAuthenticator(master: master, state: state, logger: logger, channel: channel)
        var configuration = SSHServerConfiguration(hostKeys: [hostKey.key], userAuthDelegate: authenticator)
        configuration.maxAuthAttempts = KeyAuthenticator.maxAttempts
        let handler = NIOSSHHandler(
            role: .server(configuration),
            allocator: channel.allocator,
            inboundChildChannelInitializer: { child, type in
                Self.open(child, type, state: state, master: master, logger: logger)
            }
        )
        try channel.pipeline.syncOperations.addHandlers([handler, CloseOnError(logger: logger)])
        // A connection that closes without a login counts as one failed attempt from its address.
        let address = channel.remoteAddress?.ipAddress
        channel.closeFuture.whenComplete { _ in
            if state.login == nil && state.refusals > 0 { master.accounts.throttle.failed(name: nil, address: address) }
        }
        // Not logged in within the deadline: the connection goes.
        channel.eventLoop.scheduleTask(in: loginDeadline) {
            if state.login == nil { channel.close(promise: nil) }
        }
    }

    static func open(_ child: any Channel, _ type: SSHChannelType, state: ConnectionState, master: Master, logger: Logger) -> EventLoopFuture<Void> {
        guard let login = state.login else { return child.eventLoop.makeFailedFuture(GatewayError("not logged in")) }
        // The key's owner is asked again for every channel: a user disabled since the login
        // opens nothing more on a connection that stayed open.
        let stillAllowed = child.eventLoop.makePromise(of: Void.self)
        stillAllowed.completeWithTask {
            guard (try? await master.accounts.stillMayAct(login.user)) == true else {
                logger.info("gateway channel refused: the user is disabled", metadata: ["user": "\(login.user.name)"])
                throw GatewayError("the user is disabled")
            }
        }
        return stillAllowed.futureResult.flatMap { open(child, type, login: login, master: master, logger: logger) }
    }

    private static func open(
        _ child: any Channel,
        _ type: SSHChannelType,
        login: (user: User, target: LeaseTarget),
        master: Master,
        logger: Logger
    ) -> EventLoopFuture<Void> {
        switch type {
        case .session:
            return child.eventLoop.makeCompletedFuture {
                try child.pipeline.syncOperations.addHandler(SessionHandler(master: master, target: login.target, logger: logger))
            }
        case .directTCPIP(let request):
            guard ["127.0.0.1", "localhost", "::1"].contains(request.targetHost) else {
                logger.info("gateway tunnel refused", metadata: ["lease": "\(login.target.name)", "host": "\(request.targetHost)"])
                return child.eventLoop.makeFailedFuture(GatewayError("tunnels reach the lease's own loopback only"))
            }
            let handler = TunnelHandler(channel: child)
            let promise = child.eventLoop.makePromise(of: Void.self)
            promise.completeWithTask {
                let forward = try await master.forward(login.target, port: request.targetPort)
                handler.relay(forward, master: master)
            }
            return child.pipeline.addHandler(handler).flatMap { promise.futureResult }
        case .forwardedTCPIP:
            return child.eventLoop.makeFailedFuture(GatewayError("remote forwarding is not offered"))
        }
    }
}

/// Garbage on the port or a broken handshake closes that connection, and only it.
final class CloseOnError: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any
    let logger: Logger
    init(logger: Logger) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("gateway connection closed on an error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
