import ArgumentParser
import Foundation
import ResallocClient

struct SSHConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh-config",
        abstract: "Print an OpenSSH Host block for each of your leases, for the master's SSH gateway.",
        discussion: """
            After resalloc ssh-config >> ~/.ssh/config, stock tools reach a lease by its name: ssh mylease,
            scp file mylease:, sftp mylease, rsync, an editor's remote mode. HostKeyAlias pins the gateway's one host
            key for all leases; its fingerprint is printed so that you can check it on first contact. Register your
            public key first: resalloc key add.
            Example: resalloc ssh-config >> ~/.ssh/config && ssh mylease
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The gateway's host name as this machine reaches it (default: the master URL's host).") var hostName: String?

    func run() async throws {
        let client = global.client
        try await Resalloc.perform {
            let gateway = try await client.gateway()
            let leases = try await client.leases(all: false).filter { $0.state == "running" }
            let host = hostName ?? URLComponents(string: client.server)?.host ?? "127.0.0.1"
            let alias = "resalloc-gateway-\(host)-\(gateway.port)"
            var text = "# resalloc leases through the SSH gateway at \(host):\(gateway.port); its host key is \(gateway.fingerprint)\n"
            for lease in leases {
                text += """
                    Host \(lease.name)
                        HostName \(host)
                        Port \(gateway.port)
                        User \(lease.name)
                        HostKeyAlias \(alias)

                    """
            }
            print(text, terminator: "")
        }
    }
}
