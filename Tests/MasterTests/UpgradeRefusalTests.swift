import Foundation
import NIOPosix
import ResallocAPI
import Testbed
import Testing

@testable import ResallocClient

/// The master refuses a WebSocket (`ssh`, `cp`, `forward`) with a bare 400: the CLI finds out why
/// with a plain GET of the lease instead of saying that the master cannot be reached.
@Suite("A refused WebSocket upgrade is told as its reason", .timeLimit(.minutes(3)))
struct UpgradeRefusalTests {
    @Test(
        "Refused: the shell's connection throws with the master's status; the reason is a GET's sentence, or a word on proxies when the GET finds nothing wrong"
    )
    func refused() async throws {
        try await withLeasedBox { api, cli, _, _ in
            let token = try await api.login("admin", password: "admin-password", register: false)
            let client = ResallocClient(server: cli.server, token: token)

            // A lease that is not there: the master answers the upgrade with plain HTTP.
            let address = try ShellAddress(server: cli.server, path: "/lease/gone/shell")
            let error = await #expect(throws: UpgradeRefused.self) {
                _ = try await ShellWire.connect(
                    address,
                    token: token,
                    eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                    outcome: Outcome()
                ) { _, _ in }
            }
            #expect(error?.status == 400)

            // Why, in the words a GET gets.
            #expect(await client.refusal(of: "shell", lease: "gone", status: 400).description == "no lease gone")
            // A running lease refused all the same: not the master's doing.
            let proxied = await client.refusal(of: "copy", lease: "box", status: 404).description
            #expect(proxied.hasPrefix("the master answered the copy's WebSocket request with HTTP 404, not an upgrade"), "\(proxied)")
            #expect(proxied.contains("proxy"))
        }
    }
}
