import Core
import Foundation
import Hummingbird
import Logging
import NIOCore
import ResallocAPI
import Store

/// `POST|GET /job`, one job, its log (followed as it grows), cancelling it, and starting one
/// whose inputs were copied in. A user sees only their own jobs; an admin may see all.
struct JobController {
    let master: Master

    var endpoints: [Endpoint] {
        [
            .user(.post, "/job") { request, context, caller in
                let body = try await Body.decode(JobRequest.self, from: request, context: context, expecting: "Resource and Command")
                let ttl = try body.ttl.map(InputRules.ttl)
                let listing = try await master.jobs.submit(
                    owner: caller.user,
                    resourceName: body.resource,
                    command: body.command,
                    name: body.name,
                    ttl: ttl,
                    inputs: body.inputs ?? false,
                    outputs: body.outputs ?? false
                )
                await master.audit.record(
                    caller.user.name,
                    "job.submitted",
                    "#\(listing.job.id!)",
                    detail: "\(listing.resource): \(listing.job.arguments.joined(separator: " ").prefix(200))",
                    address: context.address
                )
                let info = await info(listing)
                let message = info.place.map { "job \(info.id) is queued, place \($0)" } ?? "job \(info.id) is \(info.state)"
                return try Body.reply(Payload("Job", info, message: message), status: .created)
            },
            .user(.get, "/job") { request, _, caller in
                let all = try Query.flag(request, "all")
                let ended = try Query.flag(request, "ended")
                let listings = try await master.jobs(for: caller.user, all: all, ended: ended)
                let places = await master.jobs.places().jobs
                return try Body.reply(Payload("Jobs", listings.map { info($0, place: places[$0.job.id!]) }))
            },
            .user(.get, "/job/:id") { _, context, caller in
                let listing = try await master.job(try id(context), for: caller.user)
                return try Body.reply(Payload("Job", await info(listing)))
            },
            .user(.delete, "/job/:id") { _, context, caller in
                let listing = try await master.jobs.cancel(try await master.job(try id(context), for: caller.user), by: caller.user)
                await master.audit.record(caller.user.name, "job.cancelled", "#\(listing.job.id!)", address: context.address)
                return try Body.reply(Payload("Job", await info(listing), message: "job \(listing.job.id!) is \(listing.job.state.rawValue)"))
            },
            .user(.post, "/job/:id/start") { _, context, caller in
                let listing = try await master.jobs.go(try await master.job(try id(context), for: caller.user))
                return try Body.reply(Payload("Job", await info(listing), message: "job \(listing.job.id!) runs"))
            },
            .user(.get, "/job/:id/path") { request, context, caller in
                guard let path = request.uri.queryParameters["path"].map(String.init), !path.isEmpty else {
                    throw MasterError(.invalid, "say which path, as ?path=/some/where")
                }
                let listing = try await master.job(try id(context), for: caller.user)
                let target = try await master.reach(job: listing.job.id!, for: caller.user, copyingIn: !listing.job.state.ended)
                return try Body.reply(PathInfo(path: path, kind: try await master.pathKind(target, path).rawValue))
            },
            .user(.get, "/job/:id/log") { request, context, caller in
                let listing = try await master.job(try id(context), for: caller.user)
                let follow = try Query.flag(request, "follow")
                let streams: Set<Int>
                switch request.uri.queryParameters["stream"].map(String.init) {
                case nil, "all": streams = [1, 2]
                case "stdout": streams = [1]
                case "stderr": streams = [2]
                default: throw MasterError(.invalid, "the query parameter stream takes stdout, stderr or all")
                }
                let skip = try Query.integer(request, "skip", in: 0...(1 << 50)) ?? 0
                return log(of: listing.job.id!, streams: streams, follow: follow, skip: skip)
            },
        ]
    }

    private func id(_ context: AppRequestContext) throws -> Int64 {
        let text = try context.parameters.require("id")
        guard let id = Int64(text), id > 0 else { throw MasterError(.notFound, "no job \(text)") }
        return id
    }

    /// The job's output as it was written, as plain bytes, but its first `skip` bytes (a
    /// follower that lost its connection asks for the rest); with `follow`, kept open and fed
    /// until the job has ended and all of it was sent, or the server stops.
    private func log(of id: Int64, streams: Set<Int>, follow: Bool, skip: Int64) -> Response {
        let database = master.database
        let jobs = master.jobs
        let changes = jobs.changes
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody { writer in
                var cursor: Int64 = 0
                var skipping = skip
                while true {
                    let generation = changes.generation
                    // Whether it had ended is read before its last output, which was written first.
                    let ended = (try await database.job(id: id))?.state.ended ?? true
                    let chunks = try await database.jobLog(jobID: id, after: cursor, limit: 256)
                    for chunk in chunks where streams.contains(chunk.stream) {
                        let skipped = Int(min(skipping, Int64(chunk.data.count)))
                        skipping -= Int64(skipped)
                        if skipped < chunk.data.count { try await writer.write(ByteBuffer(bytes: chunk.data.dropFirst(skipped))) }
                    }
                    cursor = chunks.last?.id ?? cursor
                    if chunks.count == 256 { continue }
                    if !follow || ended || jobs.isStopping { break }
                    await changes.wait(after: generation, atMost: .milliseconds(500))
                    if Task.isCancelled { break }
                }
                try await writer.finish(nil)
            }
        )
    }

    func info(_ listing: JobListing) async -> JobInfo {
        let place = listing.job.state == .queued ? await master.jobs.places().jobs[listing.job.id!] : nil
        return info(listing, place: place)
    }

    func info(_ listing: JobListing, place: Int?) -> JobInfo {
        let job = listing.job
        return JobInfo(
            id: job.id!,
            name: job.name,
            owner: listing.owner,
            resource: listing.resource,
            command: job.arguments,
            state: job.state.rawValue,
            place: place,
            machine: listing.machine,
            exitStatus: job.exitStatus,
            message: job.message,
            createdAt: job.createdAt,
            startedAt: job.startedAt,
            endedAt: job.endedAt,
            ttl: TTL.format(.seconds(job.ttlSeconds)),
            logBytes: job.logBytes,
            awaitingInput: job.state == .starting && job.awaitingInput && job.containerId != nil,
            containerKept: job.keepsContainer && !job.containerRemoved && job.containerId != nil
        )
    }
}
