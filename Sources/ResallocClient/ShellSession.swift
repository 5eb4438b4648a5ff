import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
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
    public func run(
        lease: String,
        start: ShellStart,
        input: AsyncStream<ShellInput>,
        terminal: Int32? = nil,
        onOutput: @escaping @Sendable (ShellStream, ByteBuffer) -> Void
    ) async throws -> Int32 {
        // A plain GET first: ownership, state and reachability come back as sentences.
        let info = try await client.lease(lease)
        guard info.state == "running" else { throw ClientError.server(status: 409, message: "lease \(lease) is \(info.state), not running") }
        let target = try WebSocketTarget(client, path: "/lease/\(lease)/shell", label: "resalloc.ssh")
        let outcome = Outcome()
        // The connection and the tasks that relay it share one event loop (EventLoopExecutor).
        let executor = EventLoopExecutor(MultiThreadedEventLoopGroup.singleton.next())
        let keyboard = terminal.map(Keyboard.init)
        defer { keyboard?.closeIfUnused() }
        do {
            try await withTaskExecutorPreference(executor) {
                try await connect(target, executor: executor, start: start, input: input, keyboard: keyboard, outcome: outcome, onOutput: onOutput)
            }
        } catch {
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

    private func connect(
        _ target: WebSocketTarget,
        executor: EventLoopExecutor,
        start: ShellStart,
        input: AsyncStream<ShellInput>,
        keyboard: Keyboard?,
        outcome: Outcome,
        onOutput: @escaping @Sendable (ShellStream, ByteBuffer) -> Void
    ) async throws {
        try await WebSocketClient.connect(
            url: target.url,
            configuration: target.configuration,
            eventLoopGroup: executor.eventLoop,
            logger: target.logger
        ) { inbound, outbound, _ in
            try await outbound.write(.text(Self.encode(start)))
            try await withThrowingTaskGroup(of: Void.self) { group in
                if let keyboard, let descriptor = keyboard.take() {
                    group.addTask {
                        let keys: NIOAsyncChannel<ByteBuffer, ByteBuffer>
                        do {
                            keys = try await NIOPipeBootstrap(group: executor.eventLoop).takingOwnershipOfDescriptor(input: descriptor) { channel in
                                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel(wrappingChannelSynchronously: channel) }
                            }
                        } catch {
                            close(descriptor)  // still ours when NIO did not take it
                            throw error
                        }
                        try await keys.executeThenClose { keystrokes, _ in
                            for try await buffer in keystrokes { try await outbound.write(.binary(buffer)) }
                        }
                        try await outbound.write(.text(Self.encode(ShellControl(type: .eof))))
                    }
                }
                group.addTask {
                    for await item in input {
                        switch item {
                        case .bytes(let bytes): try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                        case .resize(let columns, let rows):
                            try await outbound.write(.text(Self.encode(ShellControl(type: .resize, columns: columns, rows: rows))))
                        case .endOfInput: try await outbound.write(.text(Self.encode(ShellControl(type: .eof))))
                        }
                    }
                }
                for try await message in inbound.messages(maxSize: 1 << 22) {
                    switch message {
                    case .binary(var buffer):
                        guard let tag: UInt8 = buffer.readInteger(), let stream = ShellStream(rawValue: tag) else { continue }
                        onOutput(stream, buffer)
                    case .text(let text):
                        guard let event = try? JSONDecoder().decode(ShellEvent.self, from: Data(text.utf8)) else { continue }
                        outcome.set(event)
                    }
                }
                group.cancelAll()
            }
        }
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
    }
}

/// The last event the master sent, set from the WebSocket handler.
private final class Outcome: @unchecked Sendable {
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
