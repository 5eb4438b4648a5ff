import ArgumentParser
import Foundation
import ResallocClient

struct Machines: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machine",
        abstract: "Docker hosts the master reaches over SSH (admins).",
        subcommands: [List.self, Create.self, Delete.self],
        defaultSubcommand: List.self,
        aliases: ["machines"]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List machines.", discussion: "Example: resalloc machine list")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        func run() async throws {
            try await Resalloc.perform {
                let machines = try await global.client.machines()
                if output.json { return try Output.json(machines) }
                Output.table(
                    ["NAME", "LOGIN", "ADDRESS", "CPUS USED", "MEMORY USED", "LEASES", "HEALTH"],
                    machines.map {
                        [
                            $0.name, $0.username, $0.ip, "\(LimitOptions.format($0.cpusUsed ?? 0))/\($0.cpus)",
                            "\(Output.bytes($0.memoryUsedBytes ?? 0))/\(Output.bytes($0.memoryBytes))", "\($0.activeLeases)/\($0.capacity)",
                            $0.healthy ? "ok" : "down: \($0.lastError ?? "")",
                        ]
                    }
                )
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Add a machine: the master connects, checks docker and pins its host key.",
            discussion: "The machine must have run resources/setup.sh. Example: resalloc machine create m1 resalloc 203.0.113.7:22"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The machine's name.") var name: String
        @Argument(help: "The login user on the machine.") var login: String
        @Argument(help: "IP or IP:PORT.") var address: String
        @Option(help: "Leases placed there at most (default: 4 per CPU).") var capacity: Int?
        func run() async throws {
            try await Resalloc.perform {
                let reply = try await global.client.createMachine(name, login: login, address: address, capacity: capacity)
                print("\(reply.message) (host key \(reply.value.hostKey), \(reply.value.cpus) CPUs, capacity \(reply.value.capacity))")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete",
            abstract: "Delete a machine.",
            discussion: "Example: resalloc machine delete m1 --force"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The machine's name.") var name: String
        @Flag(help: "Also delete its leases and their containers.") var force = false
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.deleteMachine(name, force: force).message) }
        }
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Users and their approval (admins).",
        subcommands: [List.self, Approve.self],
        defaultSubcommand: List.self,
        aliases: ["users"]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List users.", discussion: "Example: resalloc user list")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        func run() async throws {
            try await Resalloc.perform {
                let users = try await global.client.users()
                if output.json { return try Output.json(users) }
                Output.table(["NAME", "ROLE", "STATUS"], users.map { [$0.name, $0.role, $0.status] })
            }
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve",
            abstract: "Let a pending user log in.",
            discussion: "Example: resalloc user approve bob"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's name.") var name: String
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.approve(name).message) }
        }
    }
}
