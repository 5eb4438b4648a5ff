import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process for tests and benchmarks: started with `posix_spawnp`, read with `poll`, and
/// reaped with `waitpid` on its own pid, every wait bounded by a deadline.
///
/// Foundation's `Process` is not used. Its `waitUntilExit()` spins a run loop and relies on
/// Foundation delivering the child's exit there; called off the main thread it can miss it and
/// wait forever for a child that has already gone. That is how a CI run of this project hung
/// for 90 minutes with no child left (also reported as cai-layer/cai#49).
public final class Subprocess: @unchecked Sendable {
    /// Where a standard stream of the child goes.
    public enum Stream: Sendable {
        /// `/dev/null`.
        case null
        /// The test process's own stream.
        case inherit
        /// Appended to a file.
        case file(String)
    }

    /// What a finished command left.
    public struct Outcome: Sendable {
        /// The exit code, or 128 + the signal that killed it (as a shell reports it).
        public let status: Int32
        public let stdout: Data
        public let stderr: Data
        /// The deadline passed and the child was killed.
        public let timedOut: Bool

        public var output: String { String(decoding: stdout, as: UTF8.self) }
        public var errors: String { String(decoding: stderr, as: UTF8.self) }
    }

    public let pid: pid_t
    public let arguments: [String]
    private let lock = NSLock()
    private var reaped: Int32?

    private init(pid: pid_t, arguments: [String]) {
        self.pid = pid
        self.arguments = arguments
    }

    // MARK: Long-running children

    /// Starts `arguments` (searched on PATH) and returns at once; stdin is `/dev/null`.
    public static func start(
        _ arguments: [String],
        environment: [String: String]? = nil,
        stdout: Stream = .null,
        stderr: Stream = .null
    ) throws -> Subprocess {
        let descriptors = [try descriptor(.null), try descriptor(stdout), try descriptor(stderr)]
        defer { for descriptor in descriptors.compactMap({ $0 }) { close(descriptor) } }
        let pid = try spawn(arguments, environment: environment, stdin: descriptors[0], stdout: descriptors[1], stderr: descriptors[2])
        return Subprocess(pid: pid, arguments: arguments)
    }

    /// Starts `arguments` with pipes on its stdin and stdout, to be driven as it runs (stderr
    /// goes to `stderr`). Returns the child and this process's ends of the two pipes.
    public static func startPiped(
        _ arguments: [String],
        environment: [String: String]? = nil,
        stderr: Stream = .null
    ) throws -> (child: Subprocess, input: FileHandle, output: FileHandle) {
        let input = try makePipe()
        let output = try makePipe()
        let errors = try descriptor(stderr)
        defer {
            close(input.read)
            close(output.write)
            if let errors { close(errors) }
        }
        let pid: pid_t
        do {
            pid = try spawn(arguments, environment: environment, stdin: input.read, stdout: output.write, stderr: errors)
        } catch {
            close(input.write)
            close(output.read)
            throw error
        }
        return (
            Subprocess(pid: pid, arguments: arguments), FileHandle(fileDescriptor: input.write, closeOnDealloc: true),
            FileHandle(fileDescriptor: output.read, closeOnDealloc: true)
        )
    }

    /// Starts `arguments` on a new pseudo-terminal of `columns`×`rows`, as someone at a terminal
    /// would run it; returns the child and the terminal's master side, to type into and read
    /// from. Reads from it fail (EIO) once the child and its descendants have closed the terminal.
    public static func startOnTerminal(
        _ arguments: [String],
        environment: [String: String]? = nil,
        columns: Int = 200,
        rows: Int = 50
    ) throws -> (child: Subprocess, terminal: FileHandle) {
        let (master, slave) = try spawnLock.withLock { () throws -> (Int32, Int32) in
            // posix_openpt, unlockpt and ptsname are hidden from Swift behind _XOPEN_SOURCE: their ioctls,
            // TIOCSPTLCK and TIOCGPTN (Linux's values; function-like macros are not imported).
            let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
            var unlock: Int32 = 0
            var number: UInt32 = 0
            guard master >= 0, ioctl(master, 0x4004_5431, &unlock) == 0, ioctl(master, 0x8004_5430, &number) == 0 else {
                if master >= 0 { close(master) }
                throw TestbedError("no pseudo-terminal: \(String(cString: strerror(errno)))")
            }
            let slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY | O_CLOEXEC)
            guard slave >= 0 else {
                close(master)
                throw TestbedError("cannot open /dev/pts/\(number): \(String(cString: strerror(errno)))")
            }
            return (master, slave)
        }
        defer { close(slave) }
        var size = winsize(ws_row: UInt16(rows), ws_col: UInt16(columns), ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(slave, UInt(TIOCSWINSZ), &size)
        let pid: pid_t
        do {
            pid = try spawn(arguments, environment: environment, stdin: slave, stdout: slave, stderr: slave)
        } catch {
            close(master)
            throw error
        }
        return (Subprocess(pid: pid, arguments: arguments), FileHandle(fileDescriptor: master, closeOnDealloc: true))
    }

    /// A descriptor for the child's end of `stream`, which the caller closes after the spawn;
    /// nil to inherit this process's own.
    private static func descriptor(_ stream: Stream) throws -> Int32? {
        switch stream {
        case .inherit: return nil
        case .null: return try openOrThrow("/dev/null", O_RDWR)
        case .file(let path): return try openOrThrow(path, O_WRONLY | O_CREAT | O_APPEND)
        }
    }

    /// The exit status once the child has exited, without waiting.
    public var exitStatus: Int32? {
        lock.withLock {
            if reaped == nil {
                var status: Int32 = 0
                let result = waitpid(pid, &status, WNOHANG)
                if result == pid { reaped = Self.decode(status) }
                // Reaped by someone else: gone, status unknown.
                if result == -1 && errno == ECHILD { reaped = -1 }
            }
            return reaped
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Waits up to `timeout` for the child to exit; past it, kills it and throws.
    @discardableResult
    public func wait(timeout: Duration) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = exitStatus { return status }
            try? await Task.sleep(for: .milliseconds(20))
        }
        kill9()
        throw TestbedError("\(arguments.joined(separator: " ")) was still running after \(timeout); it was killed")
    }

    /// Sends `signal` (SIGTERM by default) and returns; ``wait(timeout:)`` sees the exit.
    public func signal(_ signal: Int32 = SIGTERM) {
        lock.withLock {
            guard reaped == nil else { return }
            _ = kill(pid, signal)
        }
    }

    /// SIGKILL, then reap. Does nothing to a child already reaped.
    public func kill9() {
        lock.withLock {
            guard reaped == nil else { return }
            kill(pid, SIGKILL)
            var status: Int32 = 0
            var result: pid_t
            repeat { result = waitpid(pid, &status, 0) } while result == -1 && errno == EINTR
            reaped = result == pid ? Self.decode(status) : -1
        }
    }

    // MARK: Commands that run to completion

    /// Runs `arguments` to completion with `input` on its stdin, reading stdout and stderr
    /// together; past `timeout` the child is killed and `timedOut` is set. Blocks the calling
    /// thread: from async code use ``run(_:environment:input:timeout:)``.
    public static func runBlocking(
        _ arguments: [String],
        environment: [String: String]? = nil,
        input: Data = Data(),
        timeout: Duration = .seconds(120)
    ) throws -> Outcome {
        let stdinPipe = try makePipe()
        let stdoutPipe = try makePipe()
        let stderrPipe = try makePipe()
        let pid: pid_t
        do {
            pid = try spawn(arguments, environment: environment, stdin: stdinPipe.read, stdout: stdoutPipe.write, stderr: stderrPipe.write)
        } catch {
            for descriptor in [stdinPipe.read, stdinPipe.write, stdoutPipe.read, stdoutPipe.write, stderrPipe.read, stderrPipe.write] {
                close(descriptor)
            }
            throw error
        }
        close(stdinPipe.read)
        close(stdoutPipe.write)
        close(stderrPipe.write)
        let child = Subprocess(pid: pid, arguments: arguments)

        var stdinFD: Int32 = stdinPipe.write
        _ = fcntl(stdinFD, F_SETFL, fcntl(stdinFD, F_GETFL) | O_NONBLOCK)
        var pending = input[...]
        if pending.isEmpty {
            close(stdinFD)
            stdinFD = -1
        }
        var open: [Int32: Data] = [stdoutPipe.read: Data(), stderrPipe.read: Data()]
        var collected: [Int32: Data] = [:]
        let deadline = ContinuousClock.now + timeout
        var killedAt: ContinuousClock.Instant?
        var buffer = [UInt8](repeating: 0, count: 65536)

        while !open.isEmpty || stdinFD >= 0 {
            let now = ContinuousClock.now
            if killedAt == nil && now >= deadline {
                kill(pid, SIGKILL)
                killedAt = now
            }
            // A grandchild may hold the pipes after the child is killed; stop waiting for it.
            if let killedAt, now - killedAt > .seconds(2) { break }
            var fds = open.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), 100)
            if ready < 0 && errno != EINTR { break }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdinFD {
                    let written = pending.withUnsafeBytes { write(stdinFD, $0.baseAddress, $0.count) }
                    if written > 0 { pending = pending.dropFirst(written) }
                    if pending.isEmpty || (written < 0 && errno != EAGAIN && errno != EINTR) {
                        close(stdinFD)
                        stdinFD = -1
                    }
                } else {
                    let count = read(entry.fd, &buffer, buffer.count)
                    if count > 0 {
                        open[entry.fd]!.append(contentsOf: buffer[0..<count])
                    } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                        collected[entry.fd] = open.removeValue(forKey: entry.fd)
                        close(entry.fd)
                    }
                }
            }
        }
        for (fd, data) in open {
            collected[fd] = data
            close(fd)
        }
        if stdinFD >= 0 { close(stdinFD) }
        if killedAt == nil {
            // Output is closed; the child is exiting. Give it the rest of the deadline.
            while child.exitStatus == nil {
                if ContinuousClock.now >= deadline {
                    killedAt = ContinuousClock.now
                    break
                }
                usleep(5_000)
            }
        }
        child.kill9()
        return Outcome(
            status: child.exitStatus ?? -1,
            stdout: collected[stdoutPipe.read] ?? Data(),
            stderr: collected[stderrPipe.read] ?? Data(),
            timedOut: killedAt != nil
        )
    }

    /// ``runBlocking(_:environment:input:timeout:)`` on a thread of its own (``onOwnThread(_:)``),
    /// so that no thread of Swift's executor waits on the child (which may be talking to a server
    /// that this process runs).
    public static func run(
        _ arguments: [String],
        environment: [String: String]? = nil,
        input: Data = Data(),
        timeout: Duration = .seconds(120)
    ) async throws -> Outcome {
        try await onOwnThread { try runBlocking(arguments, environment: environment, input: input, timeout: timeout) }
    }

    // MARK: posix_spawn

    private static func spawn(_ arguments: [String], environment: [String: String]?, stdin: Int32?, stdout: Int32?, stderr: Int32?) throws -> pid_t {
        guard !arguments.isEmpty else { throw TestbedError("no program to run") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (source, target) in [(stdin, Int32(0)), (stdout, 1), (stderr, 2)] {
            if let source { posix_spawn_file_actions_adddup2(&actions, source, target) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The test process ignores SIGPIPE and its threads may block signals; a child starts
        // with neither, as it would from a shell.
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // A session of its own: no controlling terminal, so a child that would prompt on
        // /dev/tty behaves the same under a developer's terminal as in CI. (glibc's
        // POSIX_SPAWN_SETSID, 0x80, which Swift does not import.)
        let newSession: Int32 = 0x80
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | newSession))

        let environment = environment ?? ProcessInfo.processInfo.environment
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv + envp { free(pointer) }
        }
        var pid: pid_t = 0
        // posix_spawnp searches the PATH of this process, whatever `environment` says.
        let result = spawnLock.withLock { posix_spawnp(&pid, arguments[0], &actions, &attributes, &argv, &envp) }
        guard result == 0 else { throw TestbedError("cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
        return pid
    }

    /// Held while a pipe is not yet close-on-exec and while a child is spawned, so no child of
    /// this process inherits another one's pipe (Glibc's module has no `pipe2`).
    private static let spawnLock = NSLock()

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        try spawnLock.withLock {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw TestbedError("pipe: \(String(cString: strerror(errno)))") }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return (fds[0], fds[1])
        }
    }

    private static func openOrThrow(_ path: String, _ flags: Int32) throws -> Int32 {
        let fd = open(path, flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TestbedError("cannot open \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    private static func decode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}
