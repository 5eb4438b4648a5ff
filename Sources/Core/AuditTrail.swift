import Foundation
import Logging
import Store

/// The audit trail: every change, who made it and from where, appended to the database. A
/// failure to record is logged, never a failure of what was done.
public struct AuditTrail: Sendable {
    let database: any Store
    let logger: Logger

    public init(database: any Store, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    public func record(_ actor: String, _ action: String, _ subject: String, detail: String? = nil, address: String? = nil) async {
        do {
            try await database.appendEvent(Event(actor: actor, action: action, subject: subject, detail: detail, address: address))
        } catch {
            logger.error("could not record an event", metadata: ["action": "\(action)", "subject": "\(subject)", "error": "\(error)"])
        }
    }

    /// Events for `GET /event` and `resalloc-master events`.
    public func events(since: Date? = nil, actor: String? = nil, after: Int64? = nil, limit: Int = 1000) async throws(MasterError) -> [Event] {
        do { return try await database.events(since: since, actor: actor, after: after, limit: limit) } catch { throw .from(error) }
    }
}
