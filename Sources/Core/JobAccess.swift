import Foundation
import Store

extension Master {
    /// The job `id` as `caller` may see it: their own, or anyone's for an admin; another user's
    /// job is "not found", as a lease is.
    public func job(_ id: Int64, for caller: User) async throws(MasterError) -> JobListing {
        let found: JobListing?
        do { found = try await database.jobListings(ownerID: caller.isAdmin ? nil : caller.id!, id: id, activeOnly: false).first } catch {
            throw .from(error)
        }
        guard let found else { throw MasterError(.notFound, "no job \(id)") }
        return found
    }

    /// The caller's jobs (those not ended, unless `ended`), or everyone's for an admin who asks
    /// for all.
    public func jobs(for caller: User, all: Bool, ended: Bool) async throws(MasterError) -> [JobListing] {
        if all && !caller.isAdmin { throw MasterError(.forbidden, "only admins see every job") }
        do {
            let listings = try await database.jobListings(ownerID: all ? nil : caller.id!, id: nil, activeOnly: false)
            return ended ? listings : listings.filter { !$0.job.state.ended || $0.job.endedAt.map { Date().timeIntervalSince($0) < 3600 } == true }
        } catch { throw .from(error) }
    }

    /// The job's container as a copy's target: one that waits for its inputs (`in`), or one
    /// kept after its end for results (`out`).
    public func reach(job id: Int64, for caller: User, copyingIn: Bool) async throws(MasterError) -> LeaseTarget {
        let listing = try await job(id, for: caller)
        let job = listing.job
        if copyingIn {
            guard job.state == .starting, job.awaitingInput, job.containerId != nil else {
                throw MasterError(
                    .conflict,
                    "job \(id) is \(job.state.rawValue) and not waiting for inputs (submit it with Inputs, then wait for AwaitingInput)"
                )
            }
        } else {
            guard job.keepsContainer, !job.containerRemoved, job.containerId != nil else {
                throw MasterError(.conflict, "job \(id) keeps no container to copy results from (submit it with Outputs)")
            }
        }
        guard let machineID = job.machineId else { throw MasterError(.conflict, "job \(id) has no machine yet") }
        let machine: Machine
        do {
            guard let found = try await database.machine(id: machineID) else { throw MasterError(.notFound, "the job's machine is gone") }
            machine = found
        } catch { throw .from(error) }
        return LeaseTarget(name: "job-\(id)", machine: machine, container: job.containerName(masterID: masterID), user: caller.name)
    }
}

/// A user's account with what they hold now and the limits that apply to them.
public struct UserStanding: Sendable {
    public let user: User
    public let use: UserUse
    /// Their own limits, else the master's defaults; nil each: no limit.
    public let limits: UserLimits
}

extension Master {
    /// `name`'s standing, for themselves or an admin (anyone else: not found).
    public func standing(of name: String, for caller: User) async throws(MasterError) -> UserStanding {
        guard caller.isAdmin || caller.name == name else { throw MasterError(.notFound, "no user \(name)") }
        do {
            guard let user = try await database.user(named: name) else { throw MasterError(.notFound, "no user \(name)") }
            let use = try await database.userUses()[user.id!] ?? UserUse()
            return UserStanding(user: user, use: use, limits: user.limits.over(jobs.settings.userDefaults))
        } catch { throw .from(error) }
    }

    /// Sets `name`'s own limits (nil each: the master's default) and lets the queue use them.
    public func setLimits(of name: String, to limits: UserLimits) async throws(MasterError) -> User {
        let user: User
        do { user = try await database.setUserLimits(named: name, to: limits) } catch { throw .from(error) }
        jobs.kick()
        return user
    }

    /// Limits as the API and the CLI write them: counts, `16g`, `8` or `1.5` CPUs.
    public static func userLimits(leases: Int?, jobs: Int?, memory: String?, cpus: Double?) throws(MasterError) -> UserLimits {
        var limits = UserLimits(leases: leases, jobs: jobs)
        for (count, what) in [(leases, "Leases"), (jobs, "Jobs")] {
            if let count, !(0...100_000).contains(count) { throw MasterError(.invalid, "\(what) must be a count from 0 to 100000") }
        }
        if let memory {
            guard let bytes = ByteSize.parse(memory), bytes >= 6 << 20, bytes <= 1 << 50 else {
                throw MasterError(.invalid, "Memory \(memory) is not a size such as 512m or 16g")
            }
            limits.memoryBytes = bytes
        }
        if let cpus {
            guard cpus.isFinite, cpus >= 0.01, cpus <= 100_000 else {
                throw MasterError(.invalid, "CPUs \(cpus) is not a number of CPUs such as 8 or 1.5")
            }
            limits.milliCPUs = Int((cpus * 1000).rounded())
        }
        return limits
    }
}
