import ArgumentParser
import Foundation
import ResallocAPI
import ResallocClient

struct Resources: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resources",
        abstract: "Dockerfiles that can be leased.",
        subcommands: [List.self, Create.self, Edit.self, Pool.self, Delete.self],
        defaultSubcommand: List.self,
        aliases: ["resource"]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List resources.",
            discussion: "Example: resalloc resources list --json"
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        func run() async throws {
            try await Resalloc.perform {
                let resources = try await global.client.resources()
                if output.json { return try Output.json(resources) }
                Output.table(
                    ["NAME", "IMAGE", "BUILT ON", "POOL", "MEMORY", "CPUS", "PIDS", "FIRST LINE"],
                    resources.map { resource -> [String] in
                        var builtOn = "-"
                        if let on = resource.imageOn { builtOn = "\(on)/\(resource.machines ?? on)" }
                        return [
                            resource.name, resource.image, builtOn,
                            resource.pool == 0 ? "-" : "\(resource.poolReady)/\(resource.pool)", resource.memory ?? "-",
                            resource.cpus.map(LimitOptions.format) ?? "-", resource.pids.map(String.init) ?? "-",
                            String(resource.file.split(separator: "\n").first ?? ""),
                        ]
                    }
                )
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Create a resource from a Dockerfile (admins).",
            discussion: """
                The Dockerfile is an argument in the seed's form, where a literal \\n is a line break, or a file:
                  resalloc resources create busybox "FROM busybox \\nRUN echo hi > /hi"
                  resalloc resources create web -f Dockerfile
                  cat Dockerfile | resalloc resources create web -f -
                  resalloc resources create build -f Dockerfile --memory 2g --cpus 1.5 --pids 1024
                Without --memory, --cpus or --pids a container gets the master's defaults (serve --lease-memory …).
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The resource's name.") var name: String
        @OptionGroup var source: DockerfileSource
        @Option(help: "Keep this many containers of it started, ready to hand out (0 to 100).") var pool: Int?
        @OptionGroup var limits: LimitOptions

        func validate() throws { try source.validate() }

        func run() async throws {
            let text = try source.text()
            try await Resalloc.perform {
                print(try await global.client.createResource(name, dockerfile: text, pool: pool, limits: limits.request).message)
            }
        }
    }

    struct Edit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "edit",
            abstract: "Replace a resource's Dockerfile, or its containers' limits (admins).",
            discussion: """
                New leases and warm containers use the new image and limits; leases already running keep theirs.
                  resalloc resources edit web -f Dockerfile
                  resalloc resources edit web --memory 4g --cpus 2
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The resource's name.") var name: String
        @OptionGroup var source: DockerfileSource
        @OptionGroup var limits: LimitOptions

        func validate() throws {
            if source.dockerfile == nil && source.file == nil {
                guard !limits.request.isEmpty else { throw ValidationError("give a Dockerfile (or -f PATH), --memory, --cpus or --pids") }
            } else {
                try source.validate()
            }
        }

        func run() async throws {
            let text = source.dockerfile == nil && source.file == nil ? nil : try source.text()
            try await Resalloc.perform { print(try await global.client.editResource(name, dockerfile: text, limits: limits.request).message) }
        }
    }

    struct Pool: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pool",
            abstract: "Keep N containers of a resource started, so that a lease is handed out at once (admins).",
            discussion: """
                The master starts them in the background on machines with room; each counts against its machine's
                capacity, and gives way to a lease that has nowhere else to go. 0 removes them.
                  resalloc resources pool busybox 3
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The resource's name.") var name: String
        @Argument(help: "How many warm containers to keep (0 to 100).") var size: Int
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.setPool(name, size: size).message) }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete",
            abstract: "Delete a resource no lease uses (admins).",
            discussion: "Example: resalloc resources delete busybox"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The resource's name.") var name: String
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.deleteResource(name).message) }
        }
    }
}

/// A Dockerfile given as an argument in the seed's form (a literal \\n is a line break) or with
/// `-f PATH` (`-` for stdin), sent byte for byte.
struct DockerfileSource: ParsableArguments {
    @Argument(help: "The Dockerfile, with \\n for line breaks.") var dockerfile: String?
    @Option(name: .shortAndLong, help: "Read the Dockerfile from this file, or - for stdin; bytes are sent unchanged.") var file: String?

    func validate() throws {
        guard (dockerfile == nil) != (file == nil) else {
            throw ValidationError("give the Dockerfile as an argument or with -f PATH, not both or neither")
        }
        // A Dockerfile's text has a FROM line; a path where the text should be is a slip.
        if let dockerfile, !dockerfile.localizedCaseInsensitiveContains("FROM"), FileManager.default.fileExists(atPath: dockerfile) {
            throw ValidationError("\(dockerfile) is a file, and the argument is the Dockerfile's text: give the file with -f \(dockerfile)")
        }
    }

    func text() throws -> String {
        guard let file else { return dockerfile!.replacingOccurrences(of: "\\n", with: "\n") }
        let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
        guard let data else { throw ValidationError("cannot read \(file)") }
        guard let decoded = String(data: data, encoding: .utf8) else { throw ValidationError("\(file) is not UTF-8 text") }
        return decoded
    }
}

/// `--memory 2g --cpus 1.5 --pids 1024`: what each container of a resource may take of its
/// machine; the master checks the values.
struct LimitOptions: ParsableArguments {
    @Option(help: "Memory of each container, swap included: 512m, 2g, …") var memory: String?
    @Option(help: "CPUs of each container: 0.5, 1.5, 2, …") var cpus: Double?
    @Option(help: "Processes (and threads) each container may run at once.") var pids: Int?
    @Option(help: "End its leases after this long without a session: 30m, 2h, … (their default for lease create --idle).") var idle: String?

    var request: LimitsRequest { LimitsRequest(memory: memory, cpus: cpus, pids: pids, idle: idle) }

    /// `1.5`, `2`: CPUs without a trailing `.0`.
    static func format(_ cpus: Double) -> String {
        cpus == cpus.rounded() ? String(Int(cpus)) : String(cpus)
    }
}
