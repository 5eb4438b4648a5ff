/// The master answered a WebSocket request with plain HTTP instead of upgrading it; `status` is
/// that answer's, when the client saw it.
struct UpgradeRefused: Error {
    let status: Int?
}

extension ResallocClient {
    /// Why the master refused `what`'s WebSocket to `lease`, as a sentence. Before it upgrades, the
    /// master checks what a plain GET of the lease checks (token, owner, running), but it can only
    /// answer a refusal with a bare 400 (Hummingbird's): so ask again with a GET, which says why
    /// (the lease was deleted or stopped a moment ago, the token was revoked). When the GET finds
    /// nothing wrong, the upgrade was lost on the way, most likely by a proxy.
    func refusal(of what: String, lease: String, status: Int?) async -> ClientError {
        do {
            let info = try await self.lease(lease)
            guard info.state == "running" else { return .server(status: 409, message: "lease \(lease) is \(info.state), not running") }
        } catch let error as ClientError {
            return error
        } catch {
            return .unreachable(url: server, detail: "\(error)")
        }
        let answer = status.map { " with HTTP \($0)" } ?? ""
        return .server(
            status: status ?? 400,
            message: "the master answered the \(what)'s WebSocket request\(answer), not an upgrade; "
                + "a proxy in front of the master must pass WebSocket upgrades (the Upgrade and Connection headers)"
        )
    }
}
