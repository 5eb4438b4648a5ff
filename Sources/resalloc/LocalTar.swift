import Foundation
import NIOCore
import ResallocClient

/// This machine's `tar`, unpacking a stream into a directory as it arrives (`resalloc cp` out of
/// a lease): modes and times as in the archive, the files owned by whoever runs resalloc. It
/// starts with the first bytes, so a copy refused at once runs no tar.
final class LocalTar: @unchecked Sendable {
    private let directory: String
    private var pid: pid_t = 0
    private var input: Int32 = -1

    init(extractingInto directory: String) { self.directory = directory }

    private func start() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ClientError.local("cannot start tar: \(String(cString: strerror(errno)))") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
        posix_spawn_file_actions_addclose(&actions, fds[1])
        let arguments = ["tar", "-x", "-p", "--no-same-owner", "-f", "-", "-C", directory]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, "tar", &actions, nil, &argv, environ)
        close(fds[0])
        guard result == 0 else {
            close(fds[1])
            throw ClientError.local("cannot start tar (is it installed?): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        self.input = fds[1]
    }

    func write(_ buffer: ByteBuffer) throws {
        if pid == 0 { try start() }
        try buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Foundation.write(input, bytes.baseAddress! + offset, bytes.count - offset)
                guard n > 0 else { throw ClientError.local("tar stopped reading: \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
    }

    /// Ends the stream and waits for tar; returns its exit status.
    func finish() -> Int32 {
        guard pid != 0 else { return 0 }
        if input >= 0 {
            close(input)
            input = -1
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
