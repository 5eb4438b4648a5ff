import Core
import Docker
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ResallocAPI
import SSH
import Store
import Synchronization

/// The request context of the WebSocket upgrade router.
struct ShellRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>

    /// The client's IP address, for the audit trail.
    let address: String?
    /// The connection's event loop, which the relay runs on.
    let executor: EventLoopExecutor
    /// The connection itself, which the shell's output is written to directly.
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        address = source.channel.remoteAddress?.ipAddress
        executor = EventLoopExecutor(source.channel.eventLoop)
        channel = source.channel
    }
}

/// `GET /lease/{name}/shell`: a WebSocket bridged to `docker exec` in the lease's container over
/// the machine's SSH connection. The caller's token and ownership of a running lease are checked
/// before the upgrade, so a refused request opens nothing remote. It is logged as a failed request
/// with its reason, but answered 400 with no body (Hummingbird's way); the CLI asks again with a
/// plain GET of the lease to tell its user why.
struct ShellController {
    let master: Master

    func add(to router: Router<ShellRequestContext>) {
        router.ws("/lease/:name/shell") { request, context in
            _ = try await target(request, context.parameters)
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            let logger = context.logger
            do {
                try await withTaskExecutorPreference(context.requestContext.executor) {
                    try await relay(
                        inbound,
                        outbound,
                        target: try target(context.request, context.requestContext.parameters),
                        address: context.requestContext.address,
                        connection: context.requestContext.channel,
                        logger: logger
                    )
                }
            } catch {
                let failure = MasterError.from(error)
                logger.notice("shell failed", metadata: ["error": "\(failure)"])
                try? await outbound.write(.text(Self.encode(ShellEvent(type: .error, message: failure.message))))
                try? await outbound.close(.unexpectedServerError, reason: nil)
            }
        }
    }

    /// The caller's running lease named in the path.
    private func target(_ request: Request, _ parameters: Parameters) async throws -> LeaseTarget {
        let caller = try await Endpoint.authenticate(request, accounts: master.accounts)
        return try await master.reach(try parameters.require("name"), for: caller.user)
    }

    private func relay(
        _ inbound: WebSocketInboundStream,
        _ outbound: WebSocketOutboundWriter,
        target: LeaseTarget,
        address: String?,
        connection: any Channel,
        logger: Logger
    ) async throws {
        let machine = target.machine
        let container = target.container
        var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
        guard case .text(let text) = try await messages.next(), let start = try? JSONDecoder().decode(ShellStart.self, from: Data(text.utf8)) else {
            throw MasterError(.invalid, "the first message must be a ShellStart")
        }
        let size = TerminalSize(columns: min(max(start.columns, 1), 1000), rows: min(max(start.rows, 1), 1000))
        let command: SessionCommand
        if let argv = start.command, !argv.isEmpty {
            command = .argv(argv)
        } else {
            guard start.tty else { throw MasterError(.invalid, "without a terminal, say which command to run") }
            command = .shell
        }
        let session = try await master.openSession(target, SessionSpec(terminal: start.tty ? (start.term, size) : nil, command: command))
        let process = session.process
        let exited = ExitRecord()
        let recorder = master.recorder(target, terminal: start.tty ? (start.term, size) : nil, logger: logger)
        MasterMetrics.sessionOpened("shell")
        await master.audit.record(target.user, "shell.opened", target.name, detail: start.command.map { $0.joined(separator: " ") }, address: address)
        // What ends the session, however the relay below ends.
        func finish() async {
            recorder?.close()
            MasterMetrics.sessionClosed("shell")
            let detail = exited.value.map { "exit status \($0)" } ?? "the client went away"
            await master.audit.record(target.user, "shell.closed", target.name, detail: detail, address: address)
        }
        logger.info("shell opened", metadata: ["machine": "\(machine.name)", "container": "\(container)", "tty": "\(start.tty)"])
        do {
            try await relay(
                process,
                session,
                exited,
                recorder,
                &messages,
                outbound,
                connection,
                machine: machine,
                container: container,
                logger: logger
            )
        } catch {
            await finish()
            throw error
        }
        await finish()
        logger.info("shell closed", metadata: ["machine": "\(machine.name)", "container": "\(container)"])
    }

    /// Carries output to the client and the client's input, resizes and end of input to the
    /// process, until both sides are done.
    private func relay(
        _ process: RemoteProcess,
        _ session: OpenedSession,
        _ exited: ExitRecord,
        _ recorder: SessionRecorder?,
        _ messages: inout WebSocketInboundMessageStream.AsyncIterator,
        _ outbound: WebSocketOutboundWriter,
        _ connection: any Channel,
        machine: Machine,
        container: String,
        logger: Logger
    ) async throws {
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // What the user sees is sent first, then recorded. It is written to the connection
                // from this task, on the connection's event loop: no async writer between the SSH
                // thread's hand-off and the socket. The process is told what has left, and waits
                // while a window of it has not (a client slower than the program).
                for await chunk in process.output {
                    let (stream, bytes): (ShellStream, [UInt8])
                    switch chunk {
                    case .stdout(let data): (stream, bytes) = (.stdout, data)
                    case .stderr(let data): (stream, bytes) = (.stderr, data)
                    }
                    var buffer = connection.allocator.buffer(capacity: bytes.count + 1)
                    buffer.writeInteger(stream.rawValue)
                    buffer.writeBytes(bytes)
                    connection.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: buffer)).whenComplete { _ in
                        process.consumed(bytes.count)
                    }
                    if stream == .stdout { recorder?.output(bytes) }
                }
                let event: ShellEvent
                do {
                    let exit = try await process.exitStatus()
                    exited.set(exit)
                    event = ShellEvent(type: .exit, status: exit)
                } catch {
                    event = ShellEvent(type: .error, message: MasterError.from(error, machine: machine.name).message)
                }
                await recorder?.closeAndWait()
                try await outbound.write(.text(Self.encode(event)))
                try await outbound.close(.normalClosure, reason: nil)
            }
            // The client's side: input, resizes, end of input, until it closes.
            do {
                while let message = try await messages.next() {
                    switch message {
                    case .binary(let buffer):
                        // Waits while a window of input is unsent: the WebSocket is not read
                        // meanwhile, so a client streaming into a command that does not read
                        // is held back by TCP instead of filling the master's memory.
                        let bytes = Array(buffer: buffer)
                        await process.send(bytes)
                        recorder?.input(bytes)
                    case .text(let text):
                        guard let control = try? JSONDecoder().decode(ShellControl.self, from: Data(text.utf8)) else { continue }
                        switch control.type {
                        case .resize:
                            let size = TerminalSize(columns: min(max(control.columns ?? 80, 1), 1000), rows: min(max(control.rows ?? 24, 1), 1000))
                            recorder?.resize(columns: size.columns, rows: size.rows)
                            process.resize(size)
                        case .eof:
                            process.closeInput()
                        }
                    }
                }
            } catch {}  // a client cut off mid-frame ends the same way as one that closed
            // The client left: stop the remote side if it still runs, and at once what it started
            // (docker exec leaves that running when its own client is cut off).
            process.close()
            await session.close(clientLeft: exited.value == nil)
            if exited.value == nil {
                logger.info("shell's client went away; its processes were ended", metadata: ["container": "\(container)"])
            }
            try? await group.waitForAll()
        }
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
    }
}

/// A session's exit status once it is known, read from anywhere.
final class ExitRecord: Sendable {
    private let state = Mutex<Int32?>(nil)
    func set(_ status: Int32) { state.withLock { $0 = status } }
    var value: Int32? { state.withLock { $0 } }
}
