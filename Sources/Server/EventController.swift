import Core
import Foundation
import Hummingbird
import ResallocAPI
import Store

/// `GET /event`: the audit trail, oldest first, for admins; paged with `after` (the last `Id`
/// seen) and `limit`, filtered with `since` (a lifetime such as `1h`) and `user`.
struct EventController {
    let audit: AuditTrail

    var endpoints: [Endpoint] {
        [
            .admin(.get, "/event") { request, _, _ in
                let query = request.uri.queryParameters
                let since = try query["since"].map { text throws(MasterError) -> Date in
                    Date() - TimeInterval(try InputRules.ttl(String(text)).components.seconds)
                }
                let after = try Query.integer(request, "after", in: 0...Int64.max)
                let limit = Int(try Query.integer(request, "limit", in: 1...1000) ?? 100)
                let events = try await audit.events(since: since, actor: query["user"].map(String.init), after: after, limit: limit)
                return try Body.reply(Payload("Events", events.map(Self.info)))
            }
        ]
    }

    static func info(_ event: Event) -> EventInfo {
        EventInfo(
            id: event.id ?? 0,
            at: event.at,
            actor: event.actor,
            action: event.action,
            subject: event.subject,
            detail: event.detail,
            address: event.address
        )
    }
}
