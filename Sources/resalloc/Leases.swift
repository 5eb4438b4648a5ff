import ArgumentParser
import Foundation
import ResallocAPI
import ResallocClient

struct Leases: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease",
        abstract: "Your containers.",
        subcommands: [List.self, Create.self, Delete.self, Extend.self],
        defaultSubcommand: List.self,
        aliases: ["leases"]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List your leases (admins: --all).",
            discussion: "Example: resalloc lease list --json"
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        @Flag(help: "Everyone's leases (admins).") var all = false
        func run() async throws {
            try await Resalloc.perform {
                let leases = try await global.client.leases(all: all)
                if output.json { return try Output.json(leases) }
                let now = Date()
                Output.table(
                    (all ? ["OWNER"] : []) + ["NAME", "RESOURCE", "MACHINE", "STATE", "AGE", "LEFT", "IDLE"],
                    leases.map { lease -> [String] in
                        var idle = "-"
                        if let limit = lease.idle { idle = "\(Output.duration(now.timeIntervalSince(lease.activeAt ?? now))) of \(limit)" }
                        let row: [String] = [
                            lease.name, lease.resourceName, lease.machine ?? "-", lease.state,
                            Output.duration(now.timeIntervalSince(lease.createdAt)), Output.duration(lease.expiresAt.timeIntervalSince(now)), idle,
                        ]
                        return (all ? [lease.owner] : []) + row
                    }
                )
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Lease a resource: a machine is picked, the image built there if needed, a container started.",
            discussion: """
                When the machine has to build the image first, the build's output is shown on stderr as it \
                happens; the lease is printed on stdout.
                With --wait, a lease that finds no machine with room (or you at one of your limits) waits in the \
                master's fair queue, its place shown on stderr, instead of being refused. With --idle, the lease \
                ends once it has had no shell, copy, forward or gateway session for that long.
                Example: resalloc lease create busybox mylease --ttl 2h --wait 10m --idle 30m
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The resource to lease.") var resource: String
        @Argument(help: "Your name for the lease.") var name: String
        @Option(help: "How long it lasts: 90s, 15m, 2h, 1d (default: the master's).") var ttl: String?
        @Option(help: "How long to wait in the queue for a place: 90s, 10m, … (default: refuse at once).") var wait: String?
        @Option(help: "End it after this long without a session: 5s, 30m, … (default: the resource's, else never).") var idle: String?
        @Flag(name: .shortAndLong, help: "Do not show the image build's output.") var quiet = false

        /// A line of the image build, on stderr as it arrives.
        @Sendable static func show(_ line: String) { FileHandle.standardError.write(Data("  | \(line)\n".utf8)) }
        @Sendable static func queued(_ place: Int) {
            FileHandle.standardError.write(Data("resalloc: waiting for a place, place \(place) in the queue\n".utf8))
        }
        func run() async throws {
            try await Resalloc.perform {
                let reply = try await global.client.createLease(
                    resource,
                    name: name,
                    ttl: ttl,
                    wait: wait,
                    idle: idle,
                    onBuildLine: quiet ? { _ in } : Self.show,
                    onQueued: Self.queued
                )
                print(
                    "\(reply.message); it ends in \(Output.duration(reply.value.expiresAt.timeIntervalSinceNow)). Open a shell: resalloc ssh \(name)"
                )
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete",
            abstract: "Delete a lease and its container.",
            discussion: "Example: resalloc lease delete mylease"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The lease's name.") var name: String
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.deleteLease(name).message) }
        }
    }

    struct Extend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "extend",
            abstract: "Let a lease end TTL from now.",
            discussion: "Example: resalloc lease extend mylease --ttl 1h"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The lease's name.") var name: String
        @Option(help: "90s, 15m, 2h or 1d.") var ttl: String
        func run() async throws {
            try await Resalloc.perform {
                let reply = try await global.client.extendLease(name, ttl: ttl)
                print("lease \(name) now ends in \(Output.duration(reply.value.expiresAt.timeIntervalSinceNow))")
            }
        }
    }
}
