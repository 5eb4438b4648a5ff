import Foundation

/// An exclusive, non-blocking lock on a file beside the database, so that cleanup passes (cron,
/// or the server's own) never overlap. Released when the process ends, whatever the way.
public final class CleanupLock: Sendable {
    private let descriptor: Int32

    /// Takes the lock, or returns nil when another pass holds it.
    public init?(databasePath: String) throws {
        let path = databasePath + ".cleanup.lock"
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.unavailable("cannot open the lock file \(path)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        descriptor = fd
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
