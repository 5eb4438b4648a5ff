import Core
import Foundation
import Logging
import NIOCore
import NIOSSH
import ResallocAPI
import SSH

/// A `session` channel: a PTY request and environment, then one shell, exec or `sftp`
/// subsystem, opened in the lease by `Master.openSession`, the same opener `resalloc ssh` uses.
/// When the client goes away before the command ends, what the session started is ended.
final class SessionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = SSHChannelData

    let master: Master
    let target: LeaseTarget
    let logger: Logger
    private var terminal: (term: String, size: TerminalSize)?
    private var environment: [String: String] = [:]
    private var started = false
    private var bridge: ChannelBridge?
    private let resizes = NSLock()
    private var process: RemoteProcess?
    private var recorder: SessionRecorder?

    init(master: Master, target: LeaseTarget, logger: Logger) {
        self.master = master
        self.target = target
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        bridge = ChannelBridge(channel: context.channel)
        context.channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).whenFailure { _ in }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let data = unwrapInboundIn(data)
        guard case .channel = data.type, case .byteBuffer(let buffer) = data.data else { return }
        bridge?.received(Array(buffer.readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        bridge?.clientGone()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let request as SSHChannelRequestEvent.PseudoTerminalRequest:
            let size = TerminalSize(
                columns: min(max(request.terminalCharacterWidth, 1), 1000),
                rows: min(max(request.terminalRowHeight, 1), 1000)
            )
            terminal = (request.term.isEmpty ? "xterm" : request.term, size)
            reply(context, request.wantReply, success: true)
        case let request as SSHChannelRequestEvent.EnvironmentRequest:
            let accepted = request.name == "LANG" || request.name.hasPrefix("LC_")
            if accepted { environment[request.name] = request.value }
            reply(context, request.wantReply, success: accepted)
        case let request as SSHChannelRequestEvent.ShellRequest:
            start(context, .shell, wantReply: request.wantReply)
        case let request as SSHChannelRequestEvent.ExecRequest:
            start(context, .line(request.command), wantReply: request.wantReply)
        case let request as SSHChannelRequestEvent.SubsystemRequest:
            if request.subsystem == "sftp" {
                start(context, .sftp, wantReply: request.wantReply)
            } else {
                reply(context, request.wantReply, success: false)
            }
        case let request as SSHChannelRequestEvent.WindowChangeRequest:
            let size = TerminalSize(columns: min(max(request.terminalCharacterWidth, 1), 1000), rows: min(max(request.terminalRowHeight, 1), 1000))
            let (process, recorder) = resizes.withLock { (self.process, self.recorder) }
            process?.resize(size)
            recorder?.resize(columns: size.columns, rows: size.rows)
        case let event as ChannelEvent where event == .inputClosed:
            bridge?.inputEnded()
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func reply(_ context: ChannelHandlerContext, _ wantReply: Bool, success: Bool) {
        guard wantReply else { return }
        if success {
            context.triggerUserOutboundEvent(ChannelSuccessEvent(), promise: nil)
        } else {
            context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil)
        }
    }

    private func start(_ context: ChannelHandlerContext, _ command: SessionCommand, wantReply: Bool) {
        guard !started, let bridge else {
            reply(context, wantReply, success: false)
            return
        }
        started = true
        let channel = context.channel
        let spec = SessionSpec(terminal: command == .sftp ? nil : terminal, command: command, environment: environment)
        let (master, target, logger) = (self.master, self.target, self.logger)
        Task(executorPreference: EventLoopExecutor(channel.eventLoop)) { [self] in
            let opened: OpenedSession
            do {
                opened = try await master.openSession(target, spec)
            } catch {
                // Accepted, then refused in words: OpenSSH prints only "exec request failed" for a
                // failed request and drops what follows, so the sentence would never be seen.
                if wantReply { try? await channel.triggerUserOutboundEvent(ChannelSuccessEvent()) }
                await bridge.say(MasterError.from(error).message)
                try? await channel.triggerUserOutboundEvent(SSHChannelRequestEvent.ExitStatus(exitStatus: 255))
                try? await channel.close()
                return
            }
            // A session with a terminal is recorded, as resalloc ssh's are.
            let recorder = master.recorder(target, terminal: spec.terminal, logger: logger)
            defer { recorder?.close() }
            resizes.withLock {
                process = opened.process
                self.recorder = recorder
            }
            if wantReply { try? await channel.triggerUserOutboundEvent(ChannelSuccessEvent()) }
            logger.info("gateway session opened", metadata: ["lease": "\(target.name)", "command": "\(command)"])
            MasterMetrics.sessionOpened("gateway")
            let address = channel.parent?.remoteAddress?.ipAddress ?? channel.remoteAddress?.ipAddress
            await master.audit.record(target.user, "gateway.session-opened", target.name, detail: "\(command)", address: address)
            defer { MasterMetrics.sessionClosed("gateway") }
            if let status = await bridge.run(opened.process, recorder: recorder) {
                await recorder?.closeAndWait()
                await master.audit.record(target.user, "gateway.session-closed", target.name, detail: "exit status \(status)", address: address)
                try? await channel.triggerUserOutboundEvent(SSHChannelRequestEvent.ExitStatus(exitStatus: Int(status)))
                await opened.close(clientLeft: false)
            } else {
                await master.audit.record(target.user, "gateway.session-closed", target.name, detail: "the client went away", address: address)
                // The client went away first: end what the session started.
                await opened.close(clientLeft: true)
                logger.info("gateway session's client went away; its processes were ended", metadata: ["lease": "\(target.name)"])
            }
            try? await channel.close()
        }
    }
}

/// A `direct-tcpip` channel (`ssh -L`, `ssh -D`): a connection to a port on the lease's own
/// loopback, through the same relay as `resalloc forward`.
final class TunnelHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = SSHChannelData

    let bridge: ChannelBridge

    init(channel: any Channel) { bridge = ChannelBridge(channel: channel) }

    func handlerAdded(context: ChannelHandlerContext) {
        context.channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).whenFailure { _ in }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let data = unwrapInboundIn(data)
        guard case .byteBuffer(let buffer) = data.data else { return }
        bridge.received(Array(buffer.readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        bridge.clientGone()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { bridge.inputEnded() } else { context.fireUserInboundEventTriggered(event) }
    }

    /// Relays until either end closes; a client gone first ends the relay's container too.
    func relay(_ forward: ForwardRelay, master: Master) {
        let bridge = self.bridge
        Task(executorPreference: EventLoopExecutor(bridge.channel.eventLoop)) {
            _ = await bridge.run(forward.process)
            if bridge.clientIsGone { await master.end(forward) }
            try? await bridge.channel.close()
        }
    }
}
