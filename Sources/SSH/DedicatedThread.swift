import CLibSSH2

#if canImport(Glibc)
import Glibc
#endif

/// A thread of its own for work that blocks (a connection's `poll` loop, a child process), started
/// with `pthread_create` so that a failure to start is an error.
///
/// Foundation's `Thread.start()` ignores what `pthread_create` returns. A thread that could not be
/// made there runs nothing and says nothing, and whoever waits for its result waits forever.
public enum DedicatedThread {
    /// The system would not start another thread.
    public struct StartFailure: Error, CustomStringConvertible {
        public let name: String
        public let code: Int32
        public var description: String { "cannot start a thread for \(name): \(String(cString: strerror(code)))" }
    }

    private final class Work {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Runs `body` on a new detached thread named `name` (as `ps -L` and gdb show it, cut to
    /// 15 bytes); throws if the thread could not be started, and then `body` never runs.
    public static func start(named name: String, _ body: @escaping @Sendable () -> Void) throws(StartFailure) {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let work = Unmanaged.passRetained(Work(name: name, body: body))
        var thread = pthread_t()
        let result = pthread_create(
            &thread,
            &attributes,
            { context in
                let work = Unmanaged<Work>.fromOpaque(context!).takeRetainedValue()
                resalloc_name_thread(work.name)
                work.body()
                return nil
            },
            work.toOpaque()
        )
        if result != 0 {
            work.release()
            throw StartFailure(name: name, code: result)
        }
    }
}
