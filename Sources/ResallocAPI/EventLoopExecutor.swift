import NIOCore

/// Runs a task's jobs on one NIO event loop: the loop of the connection the task reads and
/// writes. Under `withTaskExecutorPreference`, a task that relays a connection's bytes then
/// resumes on the thread that already holds them, instead of waking another thread at every
/// hop (each wake-up cost 0.05–0.1 ms of a keystroke's echo on this 2-core host).
public final class EventLoopExecutor: TaskExecutor, @unchecked Sendable {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
