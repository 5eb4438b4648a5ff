import ArgumentParser
import Foundation
import NIOCore
import ResallocAPI
import ResallocClient

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command once in a new container of a resource, and exit with its status.",
        discussion: """
            As docker run --rm would: its stdout and stderr come here as they happen, and its container is \
            removed at the end. When no machine has room (or you are at one of your limits), the job waits in \
            the master's fair queue instead of being refused; its place is shown on stderr. Ctrl-C cancels it.

            --in copies a local file or directory into the container before the command starts; --out copies \
            a path out of it after the command ended, whatever its status. -f copies a script in and runs it \
            with sh. --detach prints the job's id and returns at once: the job runs to its end without you \
            (follow it with resalloc job logs ID -f, get its status with resalloc job wait ID).

            Exit status: the command's; 125 when it could not start, 124 past its --ttl, 130 cancelled, \
            255 lost with its machine.

            Examples:
              resalloc run busybox -- sh -c 'echo hello; exit 3'
              resalloc run builder --in ./src:/src --out /out:./out -- make -C /src
              resalloc run busybox -f ./test.sh -- arg1 arg2
              resalloc run busybox --detach --ttl 2h -- ./long-task
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The resource whose container runs it.") var resource: String
    @Option(help: "A name for the job, shown in listings.") var name: String?
    @Option(help: "How long it may run: 90s, 15m, 2h, 1d (default: the master's, 1h).") var ttl: String?
    @Flag(name: .shortAndLong, help: "Print the job's id and return; the job runs on without you.") var detach = false
    @Option(name: .customLong("in"), help: "LOCAL:PATH — copy a local file or directory to PATH in the container first.") var inputs: [String] = []
    @Option(name: .customLong("out"), help: "PATH:LOCAL — copy PATH out of the container to LOCAL after the end.") var outputs: [String] = []
    @Option(name: .customShort("f"), help: "A local script to copy in and run with sh (the arguments after -- are its own).") var script: String?
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    /// `LOCAL:PATH` for --in (split at the last colon) and `PATH:LOCAL` for --out (at the first).
    static func split(_ text: String, remoteFirst: Bool) -> (local: String, remote: String)? {
        guard let colon = remoteFirst ? text.firstIndex(of: ":") : text.lastIndex(of: ":") else { return nil }
        let (left, right) = (String(text[..<colon]), String(text[text.index(after: colon)...]))
        let (local, remote) = remoteFirst ? (right, left) : (left, right)
        guard !local.isEmpty, remote.hasPrefix("/") else { return nil }
        return (local, remote)
    }

    func validate() throws {
        if script == nil && command.isEmpty { throw ValidationError("say what to run after --, such as: resalloc run busybox -- echo hello") }
        for input in inputs where Self.split(input, remoteFirst: false) == nil {
            throw ValidationError("--in takes LOCAL:PATH with an absolute PATH, such as ./src:/work/src; got \(input)")
        }
        for output in outputs where Self.split(output, remoteFirst: true) == nil {
            throw ValidationError("--out takes PATH:LOCAL with an absolute PATH, such as /work/out:./out; got \(output)")
        }
        if detach && !outputs.isEmpty { throw ValidationError("--out needs resalloc to wait for the end; leave out --detach") }
        if let script, !FileManager.default.isReadableFile(atPath: script) { throw ValidationError("cannot read the script \(script)") }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        var ins = inputs.compactMap { Self.split($0, remoteFirst: false) }
        var argv = command
        if let script {
            let name = Copy.lastComponent(script)
            ins.append((script, "/tmp/resalloc-\(name)"))
            argv = ["sh", "/tmp/resalloc-\(name)"] + command
        }
        let outs = outputs.compactMap { Self.split($0, remoteFirst: true) }
        let client = global.client
        var status: Int32 = 0
        try await Resalloc.perform {
            let request = JobRequest(
                resource: resource,
                command: argv,
                name: name,
                ttl: ttl,
                inputs: ins.isEmpty ? nil : true,
                outputs: outs.isEmpty ? nil : true
            )
            var job = try await client.submitJob(request).value
            let cancel = JobCanceller(client: client, id: job.id)
            cancel.install()
            defer { cancel.uninstall() }
            do {
                // Detached without inputs: nothing to wait for here.
                if !(detach && ins.isEmpty) { job = try await prepare(job, client, inputs: ins) }
            } catch {
                _ = try? await client.cancelJob(job.id)  // nothing of it stays behind
                throw error
            }
            if detach {
                print(job.id)
                cancel.uninstall()
                return
            }
            job = try await JobWatch.follow(job, client)
            cancel.uninstall()
            if job.containerKept {
                let session = CopySession(client: client)
                var failure: (any Error)?
                for (local, remote) in outs {
                    do { try await Copy.download(session, from: .job(job.id), path: remote, to: local, progress: Progress(enabled: false)) } catch {
                        FileHandle.standardError.write(Data("resalloc: --out \(remote): \(error)\n".utf8))
                        failure = failure ?? error
                    }
                }
                _ = try? await client.cancelJob(job.id)  // its results are taken: the container goes
                if let failure, job.state == "succeeded" { throw failure }
            }
            status = JobWatch.exitStatus(of: job)
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// Waits for the job's place, then copies its inputs in and starts it.
    private func prepare(_ job: JobInfo, _ client: ResallocClient, inputs ins: [(local: String, remote: String)]) async throws -> JobInfo {
        var job = try await JobWatch.untilPlaced(job, client, needsInputs: !ins.isEmpty)
        if !ins.isEmpty && !job.ended {
            let session = CopySession(client: client)
            // Each goes in as PATH itself (not into it), its parent directories made as needed.
            for (local, remote) in ins {
                let name = String(remote.drop(while: { $0 == "/" }))
                _ = try await session.upload(job: job.id, directory: "/") { send in
                    try await TarWriter().write(local, as: name) {
                        try await send($0)
                    } skipped: { path in
                        FileHandle.standardError.write(Data("resalloc: left out \(path): not a file, directory or symlink\n".utf8))
                    }
                }
            }
            job = try await client.startJob(job.id).value
        }
        return job
    }
}

/// Cancels the job on Ctrl-C (and exits 130), until uninstalled.
final class JobCanceller: @unchecked Sendable {
    let client: ResallocClient
    let id: Int64
    private var source: DispatchSourceSignal?

    init(client: ResallocClient, id: Int64) {
        self.client = client
        self.id = id
    }

    func install() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        let (client, id) = (client, id)
        source.setEventHandler {
            FileHandle.standardError.write(Data("\nresalloc: cancelling job \(id)\n".utf8))
            Task {
                _ = try? await client.cancelJob(id)
                Foundation.exit(130)
            }
        }
        source.resume()
        self.source = source
    }

    func uninstall() {
        source?.cancel()
        source = nil
        signal(SIGINT, SIG_DFL)
    }
}

/// Waiting for a job's state to change, and following its output.
enum JobWatch {
    /// Returns once the job has a place (running, or waiting for its inputs) or has ended;
    /// says its place in the queue on stderr while it waits.
    static func untilPlaced(_ job: JobInfo, _ client: ResallocClient, needsInputs: Bool) async throws -> JobInfo {
        var job = job
        var told: Int?
        var looks = 0
        while job.state == "queued" || (needsInputs && job.state == "starting" && !job.awaitingInput) {
            looks += 1
            // Said once it is really waiting: a job placed within a moment says nothing.
            if job.state == "queued", looks > 1, let place = job.place, place != told {
                FileHandle.standardError.write(Data("resalloc: job \(job.id) is queued, place \(place)\n".utf8))
                told = place
            }
            try await Task.sleep(for: .milliseconds(job.state == "queued" && looks > 1 ? 500 : 50))
            job = try await client.job(job.id)
        }
        return job
    }

    /// Copies the job's stdout and stderr here as they come, until it has ended; returns it then.
    /// A master that stops (a restart, an upgrade) lets its followers go while the job runs on:
    /// the rest is asked for again, from the byte where it broke off, once a master answers.
    static func follow(_ job: JobInfo, _ client: ResallocClient) async throws -> JobInfo {
        let received = Received()
        var broken = 0
        while true {
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await client.jobLog(job.id, stream: "stdout", follow: true, skip: received.stdout) {
                            try FileHandle.standardOutput.write(contentsOf: Data($0.readableBytesView))
                            received.add(stdout: $0.readableBytes)
                        }
                    }
                    group.addTask {
                        try await client.jobLog(job.id, stream: "stderr", follow: true, skip: received.stderr) {
                            try FileHandle.standardError.write(contentsOf: Data($0.readableBytesView))
                            received.add(stderr: $0.readableBytes)
                        }
                    }
                    try await group.waitForAll()
                }
                let ended = try await client.job(job.id)
                if ended.ended { return ended }
            } catch let error as ClientError {
                guard case .unreachable = error, broken < 60 else { throw error }
                broken += 1
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    /// Bytes of each stream written here so far.
    final class Received: @unchecked Sendable {
        private let lock = NSLock()
        private var counts: (Int64, Int64) = (0, 0)
        var stdout: Int64 { lock.withLock { counts.0 } }
        var stderr: Int64 { lock.withLock { counts.1 } }
        func add(stdout: Int = 0, stderr: Int = 0) { lock.withLock { counts = (counts.0 + Int64(stdout), counts.1 + Int64(stderr)) } }
    }

    /// The status `resalloc run` and `job wait` exit with, saying on stderr why when it is not
    /// the command's own.
    static func exitStatus(of job: JobInfo) -> Int32 {
        func say(_ text: String) { FileHandle.standardError.write(Data("resalloc: job \(job.id) \(text)\n".utf8)) }
        switch job.state {
        case "succeeded": return 0
        case "failed":
            if let status = job.exitStatus, job.message?.hasPrefix("could not start") != true {
                if let message = job.message, message.hasPrefix("killed") { say(message) }
                return Int32(truncatingIfNeeded: status)
            }
            say("failed: \(job.message ?? "it could not start")")
            return 125
        case "timed-out":
            say("timed out: \(job.message ?? "past its lifetime")")
            return 124
        case "cancelled":
            say("was cancelled")
            return 130
        default:
            say("is \(job.state): \(job.message ?? "")")
            return 255
        }
    }
}

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "List, follow, wait for and cancel your jobs (resalloc run).",
        subcommands: [List.self, Show.self, Logs.self, Wait.self, Cancel.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List your jobs: those queued or running, and those that ended in the last hour.",
            discussion: "Example: resalloc job list --all"
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        @Flag(help: "Everyone's jobs (admins only).") var all = false
        @Flag(help: "Also jobs that ended longer ago (kept for the master's --keep-jobs).") var ended = false
        func run() async throws {
            try await Resalloc.perform {
                let jobs = try await global.client.jobs(all: all, ended: ended)
                if output.json { return try Output.json(jobs) }
                Output.table(
                    ["ID", "NAME", "OWNER", "RESOURCE", "STATE", "PLACE", "MACHINE", "STATUS", "TIME", "COMMAND"],
                    jobs.map { job in
                        [
                            String(job.id), job.name ?? "-", job.owner, job.resource, job.state, job.place.map(String.init) ?? "-",
                            job.machine ?? "-",
                            job.exitStatus.map(String.init) ?? "-", JobText.time(job), JobText.command(job.command),
                        ]
                    }
                )
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one job.", discussion: "Example: resalloc job show 12")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "The job's id.") var id: Int64
        func run() async throws {
            try await Resalloc.perform {
                let job = try await global.client.job(id)
                if output.json { return try Output.json(job) }
                let lines: [(String, String?)] = [
                    ("id", String(job.id)), ("name", job.name), ("owner", job.owner), ("resource", job.resource),
                    ("command", JobText.command(job.command)), ("state", job.state), ("place in queue", job.place.map(String.init)),
                    ("machine", job.machine), ("exit status", job.exitStatus.map(String.init)), ("message", job.message),
                    ("created", "\(job.createdAt)"), ("started", job.startedAt.map { "\($0)" }), ("ended", job.endedAt.map { "\($0)" }),
                    ("time", JobText.time(job)), ("lifetime", job.ttl), ("output kept", "\(job.logBytes) bytes"),
                ]
                for (key, value) in lines { if let value { print("\(key):".padding(toLength: 16, withPad: " ", startingAt: 0) + value) } }
            }
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "logs",
            abstract: "Print a job's output (stdout and stderr, in the order it came).",
            discussion: "Example: resalloc job logs 12 -f"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The job's id.") var id: Int64
        @Flag(name: .shortAndLong, help: "Keep printing as it comes, until the job has ended.") var follow = false
        func run() async throws {
            signal(SIGPIPE, SIG_IGN)
            try await Resalloc.perform {
                try await global.client.jobLog(id, follow: follow) { try FileHandle.standardOutput.write(contentsOf: Data($0.readableBytesView)) }
            }
        }
    }

    struct Wait: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wait",
            abstract: "Wait for a job to end, and exit with its status (as resalloc run does).",
            discussion: "Example: resalloc job wait 12 && echo it passed"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The job's id.") var id: Int64
        func run() async throws {
            var status: Int32 = 0
            try await Resalloc.perform {
                var job = try await global.client.job(id)
                while !job.ended {
                    try await Task.sleep(for: .milliseconds(200))
                    job = try await global.client.job(id)
                }
                status = JobWatch.exitStatus(of: job)
            }
            if status != 0 { throw ExitCode(status) }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel",
            abstract: "Cancel a job: out of the queue, or stopped and its container removed at once.",
            discussion: "Example: resalloc job cancel 12"
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The job's id.") var id: Int64
        func run() async throws {
            try await Resalloc.perform { print(try await global.client.cancelJob(id).message) }
        }
    }
}

enum JobText {
    /// The command as a shell would read it back, cut at 60 characters.
    static func command(_ argv: [String]) -> String {
        let text = argv.map { $0.contains(where: { " '\"$\\".contains($0) }) ? "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" : $0 }
            .joined(separator: " ")
        return text.count > 60 ? String(text.prefix(57)) + "..." : text
    }

    /// How long it waited (queued) or has run (or ran).
    static func time(_ job: JobInfo) -> String {
        guard let started = job.startedAt else { return Output.duration(Date().timeIntervalSince(job.createdAt)) }
        return Output.duration((job.endedAt ?? Date()).timeIntervalSince(started))
    }
}

struct WhoAmI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoami",
        abstract: "Show who you are logged in as, what you hold now and your limits.",
        discussion: "Example: resalloc whoami"
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: OutputOptions
    func run() async throws {
        try await Resalloc.perform {
            guard let name = global.config.user else { throw ClientError.notLoggedIn }
            let detail = try await global.client.user(name)
            if output.json { return try Output.json(detail) }
            let limits = detail.limits
            func of(_ limit: String?) -> String { limit.map { " of \($0)" } ?? "" }
            print("\(detail.user.name) (\(detail.user.role), \(detail.user.status)) on \(global.serverURL)")
            print("leases:  \(detail.leases)\(of(limits.leases.map(String.init)))")
            print("jobs:    \(detail.jobs) running\(of(limits.jobs.map(String.init)))")
            print("memory:  \(detail.memory)\(of(limits.memory))")
            print("CPUs:    \(Self.number(detail.cpus))\(of(limits.cpus.map(Self.number)))")
        }
    }

    static func number(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(value) }
}
