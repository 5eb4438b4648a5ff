import Foundation
import NIOCore
import NIOPosix
import ResallocAPI
import Synchronization

/// What the local side of `resalloc ssh` feeds into a session.
public enum ShellInput: Sendable {
    case bytes([UInt8])
    case resize(columns: Int, rows: Int)
    case endOfInput
}

/// One `resalloc ssh` session over the master's WebSocket: sends `start`, relays `input` out,
/// hands output to `onOutput`, and returns the remote exit status.
public struct ShellSession: Sendable {
    public let client: ResallocClient

    public init(client: ResallocClient) { self.client = client }

    /// Runs the session to its end. Throws when the connection breaks before an exit status.
    /// - Parameters:
    ///   - input: bytes, resizes and end of input to send.
    ///   - terminal: a terminal's descriptor whose keystrokes are sent as well, read on the
    ///     connection's own event loop, so that a keystroke wakes no other thread on its way out
    ///     (`resalloc ssh` on a terminal). The session closes it, however it ends.
    ///   - onSent: called once each `bytes` item of `input` has been written to the connection:
    ///     a producer that waits for it before reading more holds at most what it queued
    ///     (the master stops reading while a command does not take its input).
    public func run(
        lease: String,
        start: ShellStart,
        input: AsyncStream<ShellInput>,
        terminal: Int32? = nil,
        onSent: (@Sendable () -> Void)? = nil,
        onOutput: @escaping @Sendable (ShellStream, ByteBuffer) -> Void
    ) async throws -> Int32 {
        // A plain GET first: ownership, state and reachability come back as sentences.
        let info = try await client.lease(lease)
        guard info.state == "running" else { throw ClientError.server(status: 409, message: "lease \(lease) is \(info.state), not running") }
        guard let token = client.token else { throw ClientError.notLoggedIn }
        let address = try ShellAddress(server: client.server, path: "/lease/\(lease)/shell")
        let outcome = Outcome()
        let keyboard = terminal.map(Keyboard.init)
        defer { keyboard?.closeIfUnused() }
        do {
            let channel = try await ShellWire.connect(
                address,
                token: token,
                eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                outcome: outcome,
                onOutput: onOutput
            )
            defer { channel.close(promise: nil) }  // already closed, unless the relay failed
            try await relay(channel, start: start, input: input, keyboard: keyboard, onSent: onSent)
        } catch {
            if let refused = error as? UpgradeRefused { throw await client.refusal(of: "shell", lease: lease, status: refused.status) }
            if outcome.event == nil { throw ClientError.unreachable(url: client.server, detail: "the shell connection failed: \(error)") }
        }
        guard let event = outcome.event else {
            throw ClientError.unreachable(url: client.server, detail: "the connection to the master closed before the shell ended")
        }
        switch event.type {
        case .exit: return event.status ?? 255
        case .error: throw ClientError.server(status: 502, message: event.message ?? "the shell failed")
        }
    }

    /// Sends `start`, then keystrokes and `input` until the master closes the connection.
    private func relay(
        _ channel: any Channel,
        start: ShellStart,
        input: AsyncStream<ShellInput>,
        keyboard: Keyboard?,
        onSent: (@Sendable () -> Void)?
    ) async throws {
        try await channel.writeAndFlush(ShellWire.frame(.text, Self.encode(start)))
        var keys: (any Channel)?
        if let keyboard, let descriptor = keyboard.take() {
            do {
                keys = try await NIOPipeBootstrap(group: channel.eventLoop)
                    .channelInitializer { pipe in
                        pipe.eventLoop.makeCompletedFuture { try pipe.pipeline.syncOperations.addHandler(KeystrokeForwarder(shell: channel)) }
                    }
                    .takingOwnershipOfDescriptor(input: descriptor).get()
            } catch {
                close(descriptor)  // still ours when NIO did not take it
                channel.close(promise: nil)
                throw error
            }
        }
        let feeder = Task {
            for await item in input {
                switch item {
                case .bytes(let bytes):
                    try await channel.writeAndFlush(ShellWire.frame(.binary, ByteBuffer(bytes: bytes)))
                    onSent?()
                case .resize(let columns, let rows):
                    try await channel.writeAndFlush(ShellWire.frame(.text, Self.encode(ShellControl(type: .resize, columns: columns, rows: rows))))
                case .endOfInput: try await channel.writeAndFlush(ShellWire.frame(.text, Self.encode(ShellControl(type: .eof))))
                }
            }
        }
        defer {
            feeder.cancel()
            keys?.close(promise: nil)
        }
        try await channel.closeFuture.get()
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
    }
}

/// The last event the master sent, set from the WebSocket handler.
final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: ShellEvent?
    func set(_ event: ShellEvent) { lock.withLock { stored = event } }
    var event: ShellEvent? { lock.withLock { stored } }
}

/// The terminal descriptor a session reads keystrokes from: handed to NIO once, which then
/// closes it; closed here if the session ended before that.
private final class Keyboard: Sendable {
    private let descriptor: Mutex<Int32?>

    init(_ descriptor: Int32) { self.descriptor = Mutex(descriptor) }

    /// The descriptor, to whoever takes it first.
    func take() -> Int32? { descriptor.withLock { $0.take() } }

    func closeIfUnused() {
        if let unused = take() { close(unused) }
    }
}
