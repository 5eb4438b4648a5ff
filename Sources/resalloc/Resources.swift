import ArgumentParser
import Foundation
import ResallocClient

struct Resources: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resources",
        abstract: "Dockerfiles that can be leased.",
        subcommands: [List.self, Create.self, Delete.self],
        defaultSubcommand: List.self,
        aliases: ["resource"]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List resources.", discussion: "Example: resalloc resources list --json")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        func run() async throws {
            try await Resalloc.perform {
                let resources = try await global.client.resources()
                if output.json { return try Output.json(resources) }
                Output.table(
                    ["NAME", "IMAGE", "FIRST LINE"],
                    resources.map { [$0.name, $0.image, String($0.file.split(separator: "\n").first ?? "")] }
                )
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a resource from a Dockerfile (admins).",
            discussion: """
                The Dockerfile is an argument in the seed's form, where a literal \\n is a line break, or a file:
                  resalloc resources create busybox "FROM busybox \\nRUN echo hi > /hi"
                  resalloc resources create web -f Dockerfile
                  cat Dockerfile | resalloc resources create web -f -
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The resource's name.") var name: String
        @Argument(help: "The Dockerfile, with \\n for line breaks.") var dockerfile: String?
        @Option(name: .shortAndLong, help: "Read the Dockerfile from this file, or - for stdin; bytes are sent unchanged.") var file: String?

        func validate() throws {
            guard (dockerfile == nil) != (file == nil) else {
                throw ValidationError("give the Dockerfile as an argument or with -f PATH, not both or neither")
            }
        }

        func run() async throws {
            let text: String
            if let file {
                let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
                guard let data else { throw ValidationError("cannot read \(file)") }
                guard let decoded = String(data: data, encoding: .utf8) else { throw ValidationError("\(file) is not UTF-8 text") }
                text = decoded
            } else {
                text = dockerfile!.replacingOccurrences(of: "\\n", with: "\n")
            }
            try await Resalloc.perform {
                print(try await global.client.createResource(name, dockerfile: text).message)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
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
