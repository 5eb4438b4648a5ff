import Foundation

/// The local terminal for `resalloc ssh`: raw mode that is always undone, and its size.
final class Terminal: @unchecked Sendable {
    private var saved = termios()
    private var isRaw = false
    private let lock = NSLock()

    static var isInteractive: Bool { isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1 }

    /// Columns and rows of standard output's terminal (80×24 when unknown).
    static var size: (columns: Int, rows: Int) {
        var window = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0 else { return (80, 24) }
        return (Int(window.ws_col), Int(window.ws_row))
    }

    /// Raw mode: every key, Ctrl-C and Ctrl-D included, goes to the remote shell.
    func enterRawMode() {
        lock.withLock {
            guard !isRaw, tcgetattr(STDIN_FILENO, &saved) == 0 else { return }
            var raw = saved
            cfmakeraw(&raw)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw)
            isRaw = true
        }
    }

    /// Puts the terminal back as it was; safe to call more than once, from a signal handler's queue.
    func restore() {
        lock.withLock {
            guard isRaw else { return }
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
            isRaw = false
        }
    }
}
