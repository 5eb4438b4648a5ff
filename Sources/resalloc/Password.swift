import ArgumentParser
import Foundation

/// Where `register` and `login` get the password: the positional argument (the seed's client
/// took it so, and scripts still may), standard input with `--password-stdin`, or, by default, a
/// prompt on the terminal without echo. Passwords on the command line land in shell history
/// and in `ps`; the prompt and stdin keep them out.
struct PasswordOptions: ParsableArguments {
    @Argument(help: "Your password. Better left out: you are asked for it without echo, or use --password-stdin.")
    var password: String?

    @Flag(help: "Read the password from standard input (one line), for scripts.")
    var passwordStdin = false

    func validate() throws {
        if password != nil && passwordStdin { throw ValidationError("give the password once: as an argument or with --password-stdin") }
    }

    /// The password; `confirm` asks twice on a terminal, and a mismatch is an error.
    func read(confirm: Bool) throws -> String {
        if let password { return password }
        if passwordStdin {
            guard var line = Swift.readLine(strippingNewline: true) else { throw Resalloc.failure("--password-stdin: standard input is empty") }
            if line.hasSuffix("\r") { line.removeLast() }
            return line
        }
        let tty = try PasswordPrompt()
        let password = try tty.ask("Password: ")
        if confirm, try tty.ask("Password again: ") != password {
            throw Resalloc.failure("the two passwords differ; nothing was sent")
        }
        return password
    }

}

/// A prompt on the controlling terminal (`/dev/tty`, as ssh and sudo use) with echo off. Echo
/// comes back after the answer, and also when Ctrl-C ends the program while it is off.
struct PasswordPrompt {
    let fd: Int32

    init() throws {
        fd = open("/dev/tty", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { throw Resalloc.failure("there is no terminal to ask for the password: give it with --password-stdin") }
    }

    /// Echo goes off, and Ctrl-C's handler is in place, before the prompt shows: what is typed
    /// once the prompt is up is never echoed, and Ctrl-C at the prompt always gives echo back.
    func ask(_ prompt: String) throws -> String {
        var saved = termios()
        let hasTerminal = tcgetattr(fd, &saved) == 0
        if hasTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            PasswordPrompt.restoreOnInterrupt(fd: fd, saved)
            tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        write(prompt)
        defer {
            if hasTerminal {
                tcsetattr(fd, TCSAFLUSH, &saved)
                signal(SIGINT, SIG_DFL)
            }
            write("\n")
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while Foundation.read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        return String(decoding: line, as: UTF8.self)
    }

    private func write(_ text: String) {
        _ = text.utf8CString.withUnsafeBufferPointer { Foundation.write(fd, $0.baseAddress, $0.count - 1) }
    }

    /// What Ctrl-C restores, for the signal handler, which cannot capture.
    nonisolated(unsafe) private static var interrupted: (fd: Int32, saved: termios) = (-1, termios())

    private static func restoreOnInterrupt(fd: Int32, _ saved: termios) {
        interrupted = (fd, saved)
        signal(SIGINT) { _ in
            tcsetattr(PasswordPrompt.interrupted.fd, TCSAFLUSH, &PasswordPrompt.interrupted.saved)
            _exit(130)
        }
    }
}
