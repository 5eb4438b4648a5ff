import Foundation
import Store

/// What a pass knows about the master processes that share the database: which of them are
/// gone, so that a lease one of them left mid-saga is settled at once, not after `stuckAfter`.
public struct Incarnations: Sendable {
    /// A process whose heartbeat is older than this many of its intervals is taken for dead.
    public static let missedBeats = 3

    let rows: [String: Incarnation]
    let current: String?
    let host: String
    let now: Date

    public init(rows: [Incarnation], current: String?, host: String = Incarnations.hostName, now: Date) {
        self.rows = Dictionary(rows.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.current = current
        self.host = host
        self.now = now
    }

    /// This host's name, as incarnations record it.
    public static let hostName = ProcessInfo.processInfo.hostName

    /// Whether the incarnation `id` is known to have stopped: it said so, its heartbeat is
    /// `missedBeats` intervals old, or it ran on this host and its process is gone. Nil when
    /// nothing is known (no id, or a row already purged): the caller falls back to age.
    public func isGone(_ id: String?) -> Bool? {
        guard let id, let row = rows[id] else { return nil }
        if id == current { return false }
        if row.stoppedAt != nil { return true }
        if now.timeIntervalSince(row.heartbeatAt) > Double(row.heartbeatSeconds * Self.missedBeats) { return true }
        if row.host == host && kill(row.pid, 0) != 0 && errno == ESRCH { return true }
        return false
    }
}

extension Master {
    /// Registers this process as a running incarnation; `serve` does this at start.
    public func beginIncarnation(heartbeat: Duration) async throws(MasterError) {
        let seconds = max(1, Int(heartbeat.components.seconds))
        do {
            try await database.registerIncarnation(
                Incarnation(
                    id: incarnationID,
                    host: Incarnations.hostName,
                    pid: getpid(),
                    heartbeatSeconds: seconds,
                    startedAt: try await database.now()
                )
            )
        } catch { throw .from(error) }
        logger.info("incarnation started", metadata: ["incarnation": "\(incarnationID)"])
    }

    /// Says this process is alive.
    public func heartbeat() async throws(MasterError) {
        do { _ = try await database.heartbeat(incarnationID: incarnationID, at: try await database.now()) } catch { throw .from(error) }
    }

    /// Says this process stopped cleanly: whatever it left mid-saga can be settled at once.
    public func endIncarnation() async {
        do { try await database.stopIncarnation(id: incarnationID, at: try await database.now()) } catch {
            logger.warning("could not record the incarnation's end", metadata: ["error": "\(error)"])
        }
    }
}
