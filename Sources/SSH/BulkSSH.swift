import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSH
import Synchronization

/// A command that moves a bulk stream (a copy's tar stream, in or out) on an SSH connection of
/// its own, made with swift-nio-ssh instead of libssh2.
///
/// libssh2 1.10 encrypts and decrypts a packet 16 bytes at a time, one `EVP_Cipher` call per
/// AES block: `perf` put 20 % of all samples of a 512 MB copy (1.4 CPU-seconds on this 2-core
/// machine) in the master's libssh2 thread's libcrypto calls, twice what OpenSSH's client spent
/// on the same stream. swift-nio-ssh seals each packet whole with AES-GCM (BoringSSL). The
/// connection lives as long as its command; the machine is the same one, checked against the
/// same pinned host key, logged in to with the same key.
///
/// It is not always available: the key file must be an unencrypted OpenSSH Ed25519 or ECDSA key,
/// and the machine's pinned host key must be of the type swift-nio-ssh asks for first (it
/// prefers `ssh-ed25519`, and libssh2's first contact pins what it was offered). `start` returns
/// nil then, and remembers it for the endpoint: the caller uses libssh2, as before.
enum BulkSSH {
    /// Endpoints (by host, port and pinned key) found not to be reachable this way.
    private static let unavailable = Mutex<Set<String>>([])

    private static func identity(_ endpoint: SSHEndpoint) -> String {
        "\(endpoint.user)@\(endpoint.host):\(endpoint.port) \(endpoint.expectedHostKey?.description ?? "-") \(endpoint.privateKeyPath)"
    }

    /// Starts `command` on its own connection to `endpoint`; nil when this way is not available
    /// there (see the type's note). Throws when the machine refused the key, presented another
    /// key of its pinned type, or could not be reached.
    static func start(on endpoint: SSHEndpoint, _ command: String, timeout: Duration) async throws(SSHError) -> RemoteProcess? {
        let identity = identity(endpoint)
        guard unavailable.withLock({ !$0.contains(identity) }) else { return nil }
        guard let expected = endpoint.expectedHostKey, let key = OpenSSHKeyFile.privateKey(at: endpoint.privateKeyPath) else {
            unavailable.withLock { _ = $0.insert(identity) }
            return nil
        }
        let check = PinnedHostKey(expected: expected)
        let parent: Channel
        do {
            parent = try await ClientBootstrap(group: otherLoop())
                .connectTimeout(Self.timeAmount(timeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let configuration = SSHClientConfiguration(
                            userAuthDelegate: KeyOffer(user: endpoint.user, key: key),
                            serverAuthDelegate: check
                        )
                        let handler = NIOSSHHandler(role: .client(configuration), allocator: channel.allocator, inboundChildChannelInitializer: nil)
                        try channel.pipeline.syncOperations.addHandlers(handler, CloseOnError())
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            throw SSHError(.connect, "could not connect to \(endpoint.host):\(endpoint.port) for a copy", detail: "\(error)")
        }
        let (output, sink) = AsyncStream.makeStream(of: OutputChunk.self)
        let finished = OneShot<Result<ExecResult, SSHError>>()
        let started = parent.eventLoop.makePromise(of: Void.self)
        let exec = BulkExecHandler(command: command, sink: sink, finished: finished, started: started)
        // The whole start (handshake, login, channel, exec) within `timeout`, as libssh2's.
        let deadline = parent.eventLoop.scheduleTask(in: Self.timeAmount(timeout)) {
            parent.close(promise: nil)
        }
        started.futureResult.whenComplete { _ in deadline.cancel() }
        do {
            let child = try await parent.eventLoop.flatSubmit { () -> EventLoopFuture<Channel> in
                let promise = parent.eventLoop.makePromise(of: Channel.self)
                // A handshake that fails (a host key refused, the key refused) closes the
                // connection without a word to channels waiting for it.
                parent.closeFuture.whenComplete { _ in promise.fail(SSHError(.disconnected, "the copy's connection closed before its channel opened"))
                }
                do {
                    let ssh = try parent.pipeline.syncOperations.handler(type: NIOSSHHandler.self)
                    ssh.createChannel(promise, channelType: .session) { child, _ in
                        child.eventLoop.makeCompletedFuture {
                            try child.pipeline.syncOperations.addHandler(exec)
                        }.flatMap { child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true) }
                    }
                } catch {
                    promise.fail(error)
                }
                return promise.futureResult
            }.get()
            try await started.futureResult.get()
            child.closeFuture.whenComplete { _ in parent.close(promise: nil) }
            return RemoteProcess(bulk: BulkControl(child: child, handler: exec), output: output, finished: finished)
        } catch {
            parent.eventLoop.execute { exec.giveUp(error) }
            parent.close(promise: nil)
            sink.finish()
            switch check.outcome {
            case .otherType?:
                unavailable.withLock { _ = $0.insert(identity) }
                return nil
            case .mismatch(let presented)?:
                throw SSHError(
                    .hostKeyMismatch,
                    "the host key of \(endpoint.host):\(endpoint.port) changed: pinned \(expected), presented \(presented); "
                        + "if the machine was reinstalled, delete and re-add it"
                )
            case .matched?, nil:
                if let failure = error as? SSHError { throw failure }
                throw SSHError(.channel, "could not start a copy on \(endpoint.host):\(endpoint.port)", detail: "\(error)")
            }
        }
    }
}

extension BulkSSH {
    /// An event loop other than the caller's, when the caller runs on one: a copy's HTTP body
    /// and its SSH stream can then take two cores, not one (copies in measured 0.90 and 0.95 of
    /// the direct path's throughput with it, 0.94 and 0.90 without: within the runs' spread).
    static func otherLoop() -> any EventLoop {
        let group = MultiThreadedEventLoopGroup.singleton
        let loops = Array(group.makeIterator())
        guard loops.contains(where: \.inEventLoop) else { return group.next() }
        return loops.first { !$0.inEventLoop } ?? group.next()
    }

    /// `duration` as NIO counts time (to the millisecond; less than one counts as one).
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        .milliseconds(max(1, Int64(duration / .milliseconds(1))))
    }
}

/// What a running bulk command's `RemoteProcess` drives.
final class BulkControl: Sendable {
    let child: Channel
    let handler: BulkExecHandler
    /// Writes not yet handed to the connection, and their sizes: a writer waits while more than
    /// `window` bytes are.
    private let inFlight = Mutex<(writes: [(EventLoopFuture<Void>, Int)], bytes: Int)>(([], 0))
    static let window = 2 << 20

    init(child: Channel, handler: BulkExecHandler) {
        self.child = child
        self.handler = handler
    }

    func write(_ bytes: [UInt8]) {
        let data = SSHChannelData(type: .channel, data: .byteBuffer(child.allocator.buffer(bytes: bytes)))
        child.writeAndFlush(data, promise: nil)
    }

    func send(_ bytes: [UInt8]) async {
        let data = SSHChannelData(type: .channel, data: .byteBuffer(child.allocator.buffer(bytes: bytes)))
        let promise = child.eventLoop.makePromise(of: Void.self)
        child.writeAndFlush(data, promise: promise)
        let written = promise.futureResult
        inFlight.withLock { queue in
            queue.writes.append((written, bytes.count))
            queue.bytes += bytes.count
        }
        while let oldest = inFlight.withLock({ queue -> EventLoopFuture<Void>? in
            guard queue.bytes > Self.window, let (first, size) = queue.writes.first else { return nil }
            queue.writes.removeFirst()
            queue.bytes -= size
            return first
        }) {
            _ = try? await oldest.get()
        }
    }

    func consumed(_ count: Int) {
        let handler = handler
        child.eventLoop.execute { handler.consumed(count) }
    }

    func closeInput() {
        let futures = inFlight.withLock { queue in
            defer { queue = ([], 0) }
            return queue.writes.map(\.0)
        }
        let child = child
        EventLoopFuture.andAllComplete(futures, on: child.eventLoop).whenComplete { _ in child.close(mode: .output, promise: nil) }
    }

    func close() { child.close(promise: nil) }
}

/// The session channel of a bulk command: sends the exec request, passes its output on (holding
/// back reads while a window of it is not yet consumed), and keeps its exit status. Its state is
/// touched only on its channel's event loop (`BulkControl` hops there), hence unchecked.
final class BulkExecHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = SSHChannelData
    typealias OutboundIn = SSHChannelData
    typealias OutboundOut = SSHChannelData

    /// Output not yet consumed past which reading stops, as for libssh2's flow-controlled processes.
    static let window = 1 << 20

    private let command: String
    private let sink: AsyncStream<OutputChunk>.Continuation
    private let finished: OneShot<Result<ExecResult, SSHError>>
    private var started: EventLoopPromise<Void>?
    private var status: Int32?
    private var signal: String?
    private var unconsumed = 0
    private var readHeld = false
    private var context: ChannelHandlerContext?

    init(
        command: String,
        sink: AsyncStream<OutputChunk>.Continuation,
        finished: OneShot<Result<ExecResult, SSHError>>,
        started: EventLoopPromise<Void>
    ) {
        self.command = command
        self.sink = sink
        self.finished = finished
        self.started = started
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        context.triggerUserOutboundEvent(SSHChannelRequestEvent.ExecRequest(command: command, wantReply: true), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let data = unwrapInboundIn(data)
        guard case .byteBuffer(let buffer) = data.data else { return }
        let bytes = Array(buffer.readableBytesView)
        unconsumed += bytes.count
        switch data.type {
        case .channel: sink.yield(.stdout(bytes))
        case .stdErr: sink.yield(.stderr(bytes))
        default: unconsumed -= bytes.count
        }
    }

    func read(context: ChannelHandlerContext) {
        if unconsumed >= Self.window {
            readHeld = true
        } else {
            context.read()
        }
    }

    func consumed(_ count: Int) {
        unconsumed -= count
        if readHeld, unconsumed < Self.window, let context {
            readHeld = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelSuccessEvent:
            started?.succeed()
            started = nil
        case is ChannelFailureEvent:
            started?.fail(SSHError(.channel, "the machine refused to run the copy's command"))
            started = nil
            context.close(promise: nil)
        case let exit as SSHChannelRequestEvent.ExitStatus:
            status = Int32(truncatingIfNeeded: exit.exitStatus)
        case let exit as SSHChannelRequestEvent.ExitSignal:
            signal = exit.signalName
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        started?.fail(SSHError(.disconnected, "the connection closed before the copy's command started"))
        started = nil
        sink.finish()
        if status != nil || signal != nil {
            // As libssh2 says it: status 0 beside the signal's name when it was killed by one.
            finished.fulfill(.success(ExecResult(stdout: [], stderr: [], exitStatus: status ?? 0, exitSignal: signal)))
        } else {
            finished.fulfill(.failure(SSHError(.disconnected, "the copy's connection closed before its command ended", commandStarted: true)))
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// The channel never came (refused, or the connection failed first): the start fails, once.
    func giveUp(_ error: any Error) {
        started?.fail(error)
        started = nil
        finished.fulfill(.failure(SSHError(.channel, "the copy's command never started", detail: "\(error)")))
    }
}

/// Closes the connection on any error: swift-nio-ssh reports a failed handshake as one.
private final class CloseOnError: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// Offers the master's key, once.
private final class KeyOffer: NIOSSHClientUserAuthenticationDelegate {
    let user: String
    var key: NIOSSHPrivateKey?

    init(user: String, key: NIOSSHPrivateKey) {
        self.user = user
        self.key = key
    }

    func nextAuthenticationType(
        availableMethods: NIOSSHAvailableUserAuthenticationMethods,
        nextChallengePromise: EventLoopPromise<NIOSSHUserAuthenticationOffer?>
    ) {
        guard let key, availableMethods.contains(.publicKey) else {
            nextChallengePromise.fail(SSHError(.auth, "the machine refused the master's key"))
            return
        }
        self.key = nil
        nextChallengePromise.succeed(NIOSSHUserAuthenticationOffer(username: user, serviceName: "", offer: .privateKey(.init(privateKey: key))))
    }
}

/// Accepts only the pinned host key; says what it saw.
private final class PinnedHostKey: NIOSSHClientServerAuthenticationDelegate, Sendable {
    enum Outcome: Sendable {
        case matched
        case otherType(HostKey)
        case mismatch(HostKey)
    }

    let expected: HostKey
    private let seen = Mutex<Outcome?>(nil)
    var outcome: Outcome? { seen.withLock { $0 } }

    init(expected: HostKey) { self.expected = expected }

    func validateHostKey(hostKey: NIOSSHPublicKey, validationCompletePromise: EventLoopPromise<Void>) {
        let line = String(openSSHPublicKey: hostKey).split(separator: " ")
        guard line.count >= 2, let blob = Data(base64Encoded: String(line[1])) else {
            validationCompletePromise.fail(SSHError(.handshake, "unreadable host key"))
            return
        }
        let presented = HostKey(type: String(line[0]), sha256: Array(SHA256.hash(data: blob)))
        let outcome: Outcome = presented == expected ? .matched : presented.type == expected.type ? .mismatch(presented) : .otherType(presented)
        seen.withLock { $0 = outcome }
        if case .matched = outcome {
            validationCompletePromise.succeed()
        } else {
            validationCompletePromise.fail(SSHError(.hostKeyMismatch, "presented \(presented)"))
        }
    }
}

/// Reads an unencrypted private key file in OpenSSH's own format (`ssh-keygen`'s default) holding
/// an Ed25519 or ECDSA key, for swift-nio-ssh, which reads no key files; nil for anything else
/// (a passphrase, RSA, another format).
enum OpenSSHKeyFile {
    static func privateKey(at path: String) -> NIOSSHPrivateKey? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let body = text.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("-----") }.joined()
        // The format is known by the magic at the start of the armored bytes, checked below.
        guard let data = Data(base64Encoded: body) else { return nil }
        var reader = Reader(bytes: Array(data))
        guard reader.take(15) == Array("openssh-key-v1\0".utf8),
            reader.string() == Array("none".utf8), reader.string() == Array("none".utf8), reader.string() != nil,
            reader.uint32() == 1, reader.string() != nil,
            let secret = reader.string()
        else { return nil }
        var section = Reader(bytes: secret)
        guard let check1 = section.uint32(), check1 == section.uint32(), let type = section.string().map({ String(decoding: $0, as: UTF8.self) })
        else { return nil }
        switch type {
        case "ssh-ed25519":
            guard section.string() != nil, let pair = section.string(), pair.count == 64,
                let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: pair.prefix(32))
            else { return nil }
            return NIOSSHPrivateKey(ed25519Key: key)
        case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
            guard section.string() != nil, section.string() != nil, let scalar = section.string() else { return nil }
            func raw(_ size: Int) -> [UInt8] {
                let digits = Array(scalar.drop(while: { $0 == 0 }))
                return [UInt8](repeating: 0, count: max(0, size - digits.count)) + digits
            }
            switch type {
            case "ecdsa-sha2-nistp256": return (try? P256.Signing.PrivateKey(rawRepresentation: raw(32))).map { NIOSSHPrivateKey(p256Key: $0) }
            case "ecdsa-sha2-nistp384": return (try? P384.Signing.PrivateKey(rawRepresentation: raw(48))).map { NIOSSHPrivateKey(p384Key: $0) }
            default: return (try? P521.Signing.PrivateKey(rawRepresentation: raw(66))).map { NIOSSHPrivateKey(p521Key: $0) }
            }
        default:
            return nil
        }
    }

    /// SSH wire format: big-endian lengths before strings.
    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take(_ count: Int) -> [UInt8]? {
            guard count >= 0, offset + count <= bytes.count else { return nil }
            defer { offset += count }
            return Array(bytes[offset..<offset + count])
        }

        mutating func uint32() -> UInt32? {
            take(4).map { $0.reduce(0) { $0 << 8 | UInt32($1) } }
        }

        mutating func string() -> [UInt8]? {
            guard let length = uint32(), length <= 1 << 20 else { return nil }
            return take(Int(length))
        }
    }
}
