import ArgumentParser
import Foundation
import ResallocClient

struct SSHConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssh-config",
        abstract: "Print an OpenSSH Host block for each of your leases, for the master's SSH gateway.",
        discussion: """
            After resalloc ssh-config >> ~/.ssh/config, stock tools reach a lease by its name: ssh mylease,
            scp file mylease:, sftp mylease, rsync, an editor's remote mode. The gateway's host key, as the master
            serves it over the API you logged in to, is written to a known_hosts file of resalloc's own (beside
            config.json) that the blocks name, with strict checking: the first ssh asks nothing, and a gateway with
            another key is refused. Run it again after the master's gateway key changed. Register your public key
            first: resalloc key add.
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
            let knownHosts = try Self.pin(gateway.hostKey, as: alias)
            var text = "# resalloc leases through the SSH gateway at \(host):\(gateway.port); its host key is \(gateway.fingerprint)\n"
            for lease in leases {
                text += """
                    Host \(lease.name)
                        HostName \(host)
                        Port \(gateway.port)
                        User \(lease.name)
                        HostKeyAlias \(alias)
                        UserKnownHostsFile \(knownHosts)
                        StrictHostKeyChecking yes

                    """
            }
            print(text, terminator: "")
        }
    }

    /// Writes `key` (`TYPE BASE64 [comment]`) as the one key of `alias` in resalloc's own
    /// known_hosts (mode 0600, beside config.json), keeping other aliases' lines; returns its
    /// absolute path.
    static func pin(_ key: String, as alias: String) throws -> String {
        let fields = key.split(separator: " ")
        guard fields.count >= 2 else { throw ValidationError("the master's gateway key is not an OpenSSH public key: \(key)") }
        let directory = (ClientConfig.path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = URL(fileURLWithPath: directory).appendingPathComponent("known_hosts").standardizedFileURL.path
        let kept = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").filter {
            !$0.hasPrefix(alias + " ")
        }
        let text = (kept + ["\(alias) \(fields[0]) \(fields[1])"]).joined(separator: "\n") + "\n"
        guard FileManager.default.createFile(atPath: path + ".tmp", contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]),
            rename(path + ".tmp", path) == 0
        else { throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))") }
        return path
    }
}
