import ArgumentParser
import Foundation
import ResallocAPI
import ResallocClient

@main
struct Resalloc: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resalloc",
        abstract: "Lease Docker containers from a resalloc master and open shells in them.",
        discussion: """
            The master is --server, else RESALLOC_URL, else the one you logged in to, else http://127.0.0.1:8080.
            An https:// master's certificate is checked against the system's CAs and those in RESALLOC_CA_FILE (PEM).
            Example session:
              resalloc login alice
              resalloc lease create busybox mylease
              resalloc ssh mylease
            """,
        subcommands: [
            Register.self, Login.self, Logout.self, Resources.self, Machines.self, Leases.self, SSH.self, Copy.self, Forward.self, Keys.self,
            SSHConfig.self, Users.self, Run.self, Jobs.self, WhoAmI.self,
        ]
    )

    /// A local problem (no terminal, an unreadable file): one line on stderr, exit status 2.
    static func failure(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("resalloc: \(message)\n".utf8))
        return ExitCode(2)
    }

    /// Runs a command body; prints a failure as one line on stderr and exits non-zero.
    static func perform(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as ClientError {
            FileHandle.standardError.write(Data("resalloc: \(error)\n".utf8))
            throw ExitCode(error.exitCode)
        }
    }
}

extension ClientError {
    var exitCode: Int32 {
        switch self {
        case .notLoggedIn: return 2
        case .unreachable, .untrusted: return 3
        case .server(let status, _): return status == 401 || status == 403 ? 2 : 1
        case .protocolError, .local: return 1
        }
    }
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(help: "The master's URL (env RESALLOC_URL; default: the one you logged in to, else http://127.0.0.1:8080).")
    var server: String?

    var config: ClientConfig { ClientConfig.load() }

    var serverURL: String {
        server ?? ProcessInfo.processInfo.environment["RESALLOC_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? config.server ?? "http://127.0.0.1:8080"
    }

    /// A client with the saved token.
    var client: ResallocClient { ResallocClient(server: serverURL, token: config.token) }
}

/// `--json` for listings.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON for scripts instead of a table.")
    var json = false
}

struct Register: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register",
        abstract: "Create an account (the first one is the admin; later ones wait for approval).",
        discussion: """
            The password (8 characters at least) is asked for twice, without echo.
            Examples: resalloc register alice
                      printf '%s\\n' "$PASSWORD" | resalloc register alice --password-stdin
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Your user name.") var name: String
    @OptionGroup var password: PasswordOptions

    func run() async throws {
        let password = try password.read(confirm: true)
        try await Resalloc.perform {
            print(try await global.client.register(name, password: password).message)
        }
    }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Log in and keep the token in ~/.config/resalloc/config.json (mode 0600).",
        discussion: """
            The password is asked for without echo.
            Examples: resalloc login alice
                      printf '%s\\n' "$PASSWORD" | resalloc login alice --password-stdin
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Your user name.") var name: String
    @OptionGroup var password: PasswordOptions

    func run() async throws {
        let password = try password.read(confirm: false)
        try await Resalloc.perform {
            let reply = try await global.client.login(name, password: password)
            try ClientConfig(server: global.serverURL, token: reply.token, user: name).save()
            print(reply.message)
        }
    }
}

struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logout",
        abstract: "Revoke your token on the master and forget it here.",
        discussion: "Example: resalloc logout"
    )
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await Resalloc.perform {
            var config = global.config
            guard config.token != nil else { throw ClientError.notLoggedIn }
            do {
                _ = try await global.client.logout()
            } catch ClientError.server(let status, _) where status == 401 {
                // Already expired or revoked: forgetting it is all that is left.
            }
            config.token = nil
            try config.save()
            print("logged out")
        }
    }
}
