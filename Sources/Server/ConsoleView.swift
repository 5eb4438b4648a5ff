import Core
import Foundation
import Store

/// What the console's templates show, as plain strings: every value is escaped by the template.
struct ConsoleView {
    struct LeaseRow {
        let name: String
        let resource: String
        let state: String
        let message: String?
        let machine: String
        let timeLeft: String
        /// How long it has had no session, against its idle limit: `3 min of 30 min`; `–` without one.
        let idle: String
        let running: Bool
    }

    /// A job with its place in the queue while it waits, and a link to its output.
    struct JobRow {
        let id: Int64
        let resource: String
        let command: String
        let state: String
        let place: String
        let machine: String
        let time: String
        let status: String
        let message: String?
    }

    struct MachineRow {
        let name: String
        let address: String
        let healthy: Bool
        let lastError: String
        let leases: Int
        let capacity: Int
        /// CPU and memory limits placed there against what the machine has: `1.5 / 2`, `3g / 16g`.
        let cpus: String
        let memory: String
        let lastContact: String
    }

    /// A resource with its warm pool and the limits its containers run with.
    struct PoolRow {
        let resource: String
        let pool: String
        let memory: String
        let cpus: String
        let pids: String
    }

    struct UserRow {
        let name: String
        let registered: String
    }

    struct FailureRow {
        let at: String
        let what: String
        let subject: String
        let why: String
    }

    /// What only an admin sees. (Mustache reads stored properties only, hence the flags.)
    struct AdminPart {
        let machines: [MachineRow]
        let pools: [PoolRow]
        let pending: [UserRow]
        let failures: [FailureRow]
        let hasMachines: Bool
        let hasPools: Bool
        let hasPending: Bool
        let hasFailures: Bool

        init(machines: [MachineRow], pools: [PoolRow], pending: [UserRow], failures: [FailureRow]) {
            self.machines = machines
            self.pools = pools
            self.pending = pending
            self.failures = failures
            hasMachines = !machines.isEmpty
            hasPools = !pools.isEmpty
            hasPending = !pending.isEmpty
            hasFailures = !failures.isEmpty
        }
    }

    let user: String
    let isAdmin: Bool
    /// The token every form of this page carries.
    let csrf: String
    let leases: [LeaseRow]
    let jobs: [JobRow]
    let admin: AdminPart?
    let asOf: String
    let hasLeases: Bool
    let hasJobs: Bool
    var notice: String?
    var error: String?

    /// The page for `user` now: their leases, and for an admin the fleet.
    static func build(_ master: Master, for user: User, formToken: String, now: Date = Date()) async throws -> ConsoleView {
        let inUse = Set(master.sessions.leasesInUse)
        let leases = try await master.leases(for: user, all: false).map { listing in
            LeaseRow(
                name: listing.lease.name,
                resource: listing.resource,
                state: listing.lease.state.rawValue,
                message: listing.lease.message.map(brief),
                machine: listing.machine ?? "–",
                timeLeft: listing.lease.state == .running ? timeLeft(until: listing.lease.expiresAt, now: now) : "–",
                idle: idle(listing.lease, inUse: inUse, now: now),
                running: listing.lease.state == .running
            )
        }
        let places = await master.jobs.places().jobs
        let jobs = try await master.jobs(for: user, all: false, ended: false).reversed().map { listing in
            let job = listing.job
            let started = job.startedAt ?? job.createdAt
            return JobRow(
                id: job.id!,
                resource: listing.resource,
                command: job.arguments.joined(separator: " ").count > 60
                    ? String(job.arguments.joined(separator: " ").prefix(57)) + "..." : job.arguments.joined(separator: " "),
                state: job.state.rawValue,
                place: places[job.id!].map(String.init) ?? "–",
                machine: listing.machine ?? "–",
                time: span(Int((job.endedAt ?? now).timeIntervalSince(job.state == .queued ? job.createdAt : started))),
                status: job.exitStatus.map(String.init) ?? "–",
                message: job.message.map(brief)
            )
        }
        return await ConsoleView(
            user: user.name,
            isAdmin: user.isAdmin,
            csrf: formToken,
            leases: leases,
            jobs: Array(jobs),
            admin: user.isAdmin ? try adminPart(master, admin: user, now: now) : nil,
            asOf: clock(now),
            hasLeases: !leases.isEmpty,
            hasJobs: !jobs.isEmpty,
            notice: nil,
            error: nil
        )
    }

    private static func adminPart(_ master: Master, admin: User, now: Date) async throws -> AdminPart {
        let loads = try await master.machineLoads()
        let machines = try await master.fleet.machines().map { machine in
            let load = loads[machine.id ?? -1, default: MachineLoad()]
            return MachineRow(
                name: machine.name,
                address: "\(machine.login)@\(machine.host)\(machine.port == 22 ? "" : ":\(machine.port)")",
                healthy: machine.healthy,
                lastError: machine.lastError ?? "",
                leases: load.containers,
                capacity: machine.capacity,
                cpus: "\(CPUAmount.format(load.milliCPUs)) / \(machine.cpus)",
                memory: "\(ByteSize.format(load.memoryBytes)) / \(ByteSize.format(machine.memoryBytes))",
                lastContact: machine.lastContactAt.map { ago($0, now: now) } ?? "never"
            )
        }
        let pools = try await master.catalog.resourcesWithReadyPools().map { entry in
            let limits = master.limits.limits(for: entry.resource)
            return PoolRow(
                resource: entry.resource.name,
                pool: entry.resource.poolSize == 0 ? "–" : "\(entry.ready) / \(entry.resource.poolSize)",
                memory: limits.memoryBytes.map(ByteSize.format) ?? "–",
                cpus: limits.milliCPUs.map(CPUAmount.format) ?? "–",
                pids: limits.pids.map(String.init) ?? "–"
            )
        }
        let pending = try await master.accounts.users().filter { $0.status == .pending }.map {
            UserRow(name: $0.name, registered: ago($0.createdAt, now: now))
        }
        let failures = try await master.leases(for: admin, all: true)
            .filter { $0.lease.state == .failed || $0.lease.state == .lost }
            .sorted { $0.lease.createdAt > $1.lease.createdAt }
            .prefix(10)
            .map { listing in
                FailureRow(
                    at: ago(listing.lease.createdAt, now: now),
                    what: "lease \(listing.lease.state.rawValue)",
                    subject: "\(listing.owner)/\(listing.lease.name) (\(listing.resource))",
                    why: brief(listing.lease.message ?? "")
                )
            }
        return AdminPart(machines: machines, pools: pools, pending: pending, failures: failures)
    }

    /// `3 min of 30 min` without a session; `in use` while one is open here; `–` without a limit.
    static func idle(_ lease: Lease, inUse: Set<Int64>, now: Date) -> String {
        guard let limit = lease.idleSeconds, lease.state == .running else { return "–" }
        if inUse.contains(lease.id!) { return "in use" }
        return "\(span(max(0, Int(now.timeIntervalSince(lease.activeAt ?? lease.createdAt))))) of \(span(limit))"
    }

    /// The end of a long message (a failed build's is its whole output): what went wrong is last.
    static func brief(_ message: String) -> String {
        message.count > 240 ? "…" + message.suffix(240) : message
    }

    /// "2 h 5 min", "45 s", or "expired".
    static func timeLeft(until end: Date, now: Date) -> String {
        let seconds = Int(end.timeIntervalSince(now))
        return seconds <= 0 ? "expired" : span(seconds)
    }

    /// "3 min ago", "just now".
    static func ago(_ date: Date, now: Date) -> String {
        let seconds = Int(now.timeIntervalSince(date))
        return seconds < 5 ? "just now" : "\(span(seconds)) ago"
    }

    static func span(_ seconds: Int) -> String {
        switch seconds {
        case ..<60: return "\(seconds) s"
        case ..<3600: return "\(seconds / 60) min"
        case ..<86400: return "\(seconds / 3600) h \(seconds % 3600 / 60) min"
        default: return "\(seconds / 86400) d \(seconds % 86400 / 3600) h"
        }
    }

    static func clock(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullTime, .withColonSeparatorInTime, .withTimeZone]
        return formatter.string(from: date)
    }
}
