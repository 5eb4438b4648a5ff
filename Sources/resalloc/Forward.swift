import ArgumentParser
import Foundation
import ResallocClient

struct Forward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Reach ports of one of your leases from this machine, until Ctrl-C.",
        discussion: """
            Each [LOCAL:]PORT listens on 127.0.0.1:LOCAL here (LOCAL defaults to PORT; 0 picks a free port and
            prints it) and carries every connection to PORT on the lease's own loopback: 127.0.0.1 there is the
            container's localhost, so a server that listens only on localhost inside the lease is reachable.
            Several connections at once; one refused inside the lease is closed and said, and the forward goes on.
            Examples:
              resalloc forward mylease 8000
              resalloc forward mylease 0:8000 5432:5432
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The lease's name.") var name: String
    @Argument(help: "[LOCAL:]PORT, one or more.") var ports: [String]

    static func parse(_ text: String) -> (local: Int, remote: Int)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let remote = Int(parts.last!), (1...65535).contains(remote) else { return nil }
        guard parts.count == 2 else { return (remote, remote) }
        guard let local = Int(parts[0]), (0...65535).contains(local) else { return nil }
        return (local, remote)
    }

    func validate() throws {
        for port in ports where Self.parse(port) == nil {
            throw ValidationError("'\(port)' is not [LOCAL:]PORT: ports are 1 to 65535 (LOCAL may be 0 for any free one)")
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let client = global.client
        try await Resalloc.perform {
            let lease = try await client.lease(name)
            guard lease.state == "running" else { throw ClientError.server(status: 409, message: "lease \(name) is \(lease.state), not running") }
            let forwarder = PortForwarder(client: client, lease: name)
            var servers: [@Sendable () async throws -> Void] = []
            for text in ports {
                let (local, remote) = Self.parse(text)!
                let listening: (port: Int, serve: @Sendable () async throws -> Void)
                do {
                    listening = try await forwarder.listen(local: local, remote: remote) { problem in
                        FileHandle.standardError.write(Data("resalloc: \(problem)\n".utf8))
                    }
                } catch {
                    throw ClientError.local("cannot listen on 127.0.0.1:\(local): \(error)")
                }
                // Unbuffered: a script waiting for the port reads it at once.
                FileHandle.standardOutput.write(Data("forwarding 127.0.0.1:\(listening.port) -> \(name):\(remote)\n".utf8))
                servers.append(listening.serve)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for serve in servers { group.addTask { try await serve() } }
                try await group.waitForAll()
            }
        }
    }
}
