import ArgumentParser
import Foundation
import ResallocClient

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Your SSH public keys: with one, ssh -p 2222 LEASE@MASTER opens your lease with stock OpenSSH.",
        subcommands: [List.self, Add.self, Remove.self],
        defaultSubcommand: List.self,
        aliases: ["keys"]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List your keys.", discussion: "Example: resalloc key list")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        func run() async throws {
            try await Resalloc.perform {
                let keys = try await global.client.keys()
                if output.json { return try Output.json(keys) }
                Output.table(["NAME", "TYPE", "FINGERPRINT"], keys.map { [$0.name, $0.algorithm, $0.fingerprint] })
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Register a public key (Ed25519 or ECDSA; RSA cannot log in to the gateway).",
            discussion: """
                The name defaults to the file's, without .pub. Examples:
                  resalloc key add
                  resalloc key add ~/.ssh/work_ed25519.pub --name laptop
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The public key file (default: ~/.ssh/id_ed25519.pub).") var path: String?
        @Option(help: "A name for it (letters, digits, - and _).") var name: String?

        func run() async throws {
            let home = ProcessInfo.processInfo.environment["HOME"] ?? FileManager.default.homeDirectoryForCurrentUser.path
            let path = path ?? (home + "/.ssh/id_ed25519.pub")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw Resalloc.failure("cannot read \(path): make a key with ssh-keygen -t ed25519, or name the .pub file")
            }
            let file = URL(fileURLWithPath: path).lastPathComponent
            let name = name ?? (file.hasSuffix(".pub") ? String(file.dropLast(4)) : file)
            try await Resalloc.perform {
                print(try await global.client.addKey(name, publicKey: text.trimmingCharacters(in: .whitespacesAndNewlines)).message)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove",
            abstract: "Remove one of your keys.",
            discussion: "Example: resalloc key remove laptop"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key's name.") var name: String
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.removeKey(name).message) }
        }
    }
}
