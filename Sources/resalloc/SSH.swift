import ArgumentParser
import Dispatch
import Foundation
import NIOCore
import ResallocAPI
import ResallocClient

struct SSH: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh",
        abstract: "Open a shell in one of your leases, or run a command there.",
        discussion: """
            With a terminal: an interactive shell (bash if the image has it, else sh); the window size follows
            yours, Ctrl-C and Ctrl-D go to the remote shell, and resalloc exits with the shell's status.
            With -- COMMAND, or when stdin is not a terminal: the command runs without a terminal, stdin is
            piped in and stdout and stderr stay apart.
            Examples:
              resalloc ssh mylease
              resalloc ssh mylease -- ls -l /
              echo hi | resalloc ssh mylease -- cat
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The lease's name.") var name: String
    @Argument(parsing: .postTerminator, help: "A command to run instead of a shell.") var command: [String] = []

    func run() async throws {
        let interactive = Terminal.isInteractive && command.isEmpty
        if !interactive && command.isEmpty {
            throw ValidationError("stdin is not a terminal: say what to run, as resalloc ssh \(name) -- COMMAND")
        }
        let terminal = Terminal()
        let size = Terminal.size
        let start = ShellStart(
            tty: interactive,
            term: ProcessInfo.processInfo.environment["TERM"] ?? "xterm",
            columns: size.columns,
            rows: size.rows,
            command: command.isEmpty ? nil : command
        )
        let (input, continuation) = AsyncStream.makeStream(of: ShellInput.self)
        var sources: [any DispatchSourceSignal] = []
        // Leave the terminal as it was on every way out, signals included.
        for signalNumber in [SIGTERM, SIGHUP, SIGINT] where interactive || signalNumber != SIGINT {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                terminal.restore()
                FileHandle.standardError.write(Data("\r\nresalloc: interrupted\n".utf8))
                // At once: exit()'s handlers can wait on threads that a hung-up terminal holds,
                // and the master learns that the client left only when its connection closes.
                _exit(128 + signalNumber)
            }
            source.resume()
            sources.append(source)
        }
        if interactive {
            let resize = DispatchSource.makeSignalSource(signal: SIGWINCH, queue: .global())
            signal(SIGWINCH, SIG_IGN)
            resize.setEventHandler {
                let size = Terminal.size
                continuation.yield(.resize(columns: size.columns, rows: size.rows))
            }
            resize.resume()
            sources.append(resize)
        }
        // A terminal is read by the session on its connection's event loop, through a descriptor
        // of its own: non-blocking reads there must not make writes to standard output, which
        // shares the terminal's open file, non-blocking too.
        let keyboard = interactive ? open("/proc/self/fd/0", O_RDONLY | O_NOCTTY | O_CLOEXEC) : -1
        // Standard input is read at most `InputGate.chunks` pieces ahead of what went out.
        let gate = InputGate()
        if keyboard < 0 { Self.readStandardInput(into: continuation, gate: gate) }

        if interactive { terminal.enterRawMode() }
        defer { terminal.restore() }
        let status: Int32
        do {
            status = try await ShellSession(client: global.client).run(
                lease: name,
                start: start,
                input: input,
                terminal: keyboard < 0 ? nil : keyboard,
                onSent: gate.sent,
                onOutput: { stream, buffer in Self.write(buffer, to: stream == .stderr ? STDERR_FILENO : STDOUT_FILENO) }
            )
        } catch let error as ClientError {
            terminal.restore()
            FileHandle.standardError.write(Data("\(interactive ? "\r\n" : "")resalloc: \(error)\n".utf8))
            throw ExitCode(255)
        }
        terminal.restore()
        for source in sources { source.cancel() }
        throw ExitCode(status)
    }

    /// Writes all of `buffer` to a blocking descriptor, straight from its bytes; a closed one
    /// (the terminal gone) drops it.
    static func write(_ buffer: ByteBuffer, to descriptor: Int32) {
        buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    /// Standard input on a thread of its own (a blocking read must not hold a Swift task), read
    /// only while `gate` has room: a command that does not read its input holds the reader back,
    /// and the writer into `resalloc ssh` with it, instead of filling this process's memory.
    static func readStandardInput(into continuation: AsyncStream<ShellInput>.Continuation, gate: InputGate) {
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 32 * 1024)
            while true {
                gate.waitForRoom()
                let count = read(STDIN_FILENO, &buffer, buffer.count)
                if count > 0 {
                    continuation.yield(.bytes(Array(buffer[0..<count])))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    continuation.yield(.endOfInput)
                    return
                }
            }
        }
        thread.start()
    }
}

/// How far standard input is read ahead of the connection: at most `chunks` pieces (of up to
/// 32 KiB) read and not yet written out.
final class InputGate: @unchecked Sendable {
    static let chunks = 32
    private let condition = NSCondition()
    private var ahead = 0

    /// Blocks the reader's thread until a piece may be read, and counts it.
    func waitForRoom() {
        condition.lock()
        while ahead >= Self.chunks { condition.wait() }
        ahead += 1
        condition.unlock()
    }

    /// A piece went out.
    func sent() {
        condition.lock()
        ahead -= 1
        condition.signal()
        condition.unlock()
    }
}
