import Core
import Foundation
import Hummingbird
import ResallocAPI

/// `GET /session` and `GET /session/{id}`: recorded interactive sessions, for admins.
struct SessionController {
    let master: Master

    var endpoints: [Endpoint] {
        [
            .admin(.get, "/session") { request, _, _ in
                let query = request.uri.queryParameters
                let entries =
                    master.recordDirectory.map {
                        SessionRecordings.list($0, lease: query["lease"].map(String.init), user: query["user"].map(String.init))
                    } ?? []
                return try Body.reply(
                    Payload("Sessions", entries.map { SessionInfo(id: $0.id, lease: $0.lease, user: $0.user, started: $0.started, bytes: $0.bytes) })
                )
            },
            .admin(.get, "/session/:id") { _, context, _ in
                let id = try context.parameters.require("id")
                guard let directory = master.recordDirectory, let path = SessionRecordings.path(directory, id: id) else {
                    throw MasterError(.notFound, "no recording \(id)")
                }
                // Streamed from the file in pieces: a recording may be as large as --record-max.
                let body = try await FileIO(threadPool: .singleton).loadFile(path: path, context: context)
                return Response(status: .ok, headers: [.contentType: "application/x-asciicast"], body: body)
            },
        ]
    }
}
