import Foundation
import SSH
import Synchronization
import Testbed
import Testing

/// The kernel's own limit on threads, through a cgroup (v1) `pids` group of the test's own: the
/// real refusal a machine out of threads gives, which no fake stands in for.
private let pidsController = "/sys/fs/cgroup/pids"

@Suite("Starting a connection's thread")
struct ThreadStartTests {
    @Test(
        "A thread the system refuses is an error with the reason, and its work never runs",
        .enabled(if: FileManager.default.isWritableFile(atPath: "\(pidsController)/tasks"), "needs a writable cgroup v1 pids controller")
    )
    func refusedThread() async throws {
        let group = "\(pidsController)/resalloc-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: group, withIntermediateDirectories: false)
        defer { rmdir(group) }
        let ran = Atomic<Bool>(false)
        let outcome = try await onOwnThread { () throws -> (refused: DedicatedThread.StartFailure?, startedAfter: Bool) in
            // This thread alone joins a group that may hold one task: itself. A thread it
            // starts would be a second one.
            let thread = try String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8).prefix { $0 != " " }
            try "1".write(toFile: "\(group)/pids.max", atomically: false, encoding: .utf8)
            try String(thread).write(toFile: "\(group)/tasks", atomically: false, encoding: .utf8)
            var refused: DedicatedThread.StartFailure?
            do throws(DedicatedThread.StartFailure) {
                try DedicatedThread.start(named: "refused") { ran.store(true, ordering: .relaxed) }
            } catch {
                refused = error
            }
            try String(thread).write(toFile: "\(pidsController)/tasks", atomically: false, encoding: .utf8)
            // Back in the machine's own group, a thread starts again.
            let started = DispatchSemaphore(value: 0)
            try DedicatedThread.start(named: "allowed") { started.signal() }
            return (refused, started.wait(timeout: .now() + 10) == .success)
        }
        let refused = try #require(outcome.refused, "the thread was started past the limit")
        #expect(refused.code == EAGAIN)
        #expect(refused.description == "cannot start a thread for refused: Resource temporarily unavailable")
        try await Task.sleep(for: .milliseconds(300))
        let workRan = ran.load(ordering: .relaxed)
        #expect(!workRan, "the refused thread's work ran")
        #expect(outcome.startedAfter)
    }
}
