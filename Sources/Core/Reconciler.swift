import Docker
import Foundation
import Logging
import Store
import Synchronization

/// What one cleanup pass did (or, dry, would do).
/// What a pass run under `Store.exclusivePass` found, handed out of its closure.
public final class PassOutcome: Sendable {
    private let summary = Mutex<CleanupSummary?>(nil)
    public init() {}
    public func set(_ value: CleanupSummary) { summary.withLock { $0 = value } }
    public var value: CleanupSummary? { summary.withLock { $0 } }
}

public struct CleanupSummary: Sendable, Equatable {
    public var expired = 0
    public var orphansRemoved = 0
    public var lost = 0
    public var stuckFinished = 0
    public var failedPurged = 0
    public var machinesOK: [String] = []
    public var machinesDown: [String] = []
    /// Things that could not be done, one sentence each; non-empty means a non-zero exit.
    public var problems: [String] = []
    /// What was done or would be done, one line each.
    public var actions: [String] = []

    public init() {}

    /// `expired 2, orphans removed 1, lost 0, stuck 0, failed purged 0, machines 3 ok / 1 down (m4)`
    public var line: String {
        var text =
            "expired \(expired), orphans removed \(orphansRemoved), lost \(lost), stuck \(stuckFinished), failed purged \(failedPurged), "
            + "machines \(machinesOK.count) ok / \(machinesDown.count) down"
        if !machinesDown.isEmpty { text += " (\(machinesDown.sorted().joined(separator: ", ")))" }
        return text
    }

    mutating func merge(_ other: CleanupSummary) {
        expired += other.expired
        orphansRemoved += other.orphansRemoved
        lost += other.lost
        stuckFinished += other.stuckFinished
        failedPurged += other.failedPurged
        machinesOK += other.machinesOK
        machinesDown += other.machinesDown
        problems += other.problems
        actions += other.actions
    }
}

/// Makes the fleet and the database agree: expires leases, removes containers this master
/// labelled that no live lease explains, marks leases whose container vanished `lost`, finishes
/// or fails leases stuck mid-saga, purges old failed rows, and records machine health. Every
/// machine is handled in parallel under its own deadline; containers of other masters (another
/// `resalloc.master` label) are never listed, so never touched.
public struct Reconciler: Sendable {
    public let master: Master
    /// A lease still `creating` or `deleting` after this is finished or failed.
    public var stuckAfter: Duration = .seconds(600)
    /// Failed leases are kept this long so their owner can read why.
    public var failedKeptFor: Duration = .seconds(3600)
    /// How long a machine has to list its containers before it is counted down.
    public var machineDeadline: Duration = .seconds(20)
    /// How long removing containers on one machine may take in one pass.
    public var workDeadline: Duration = .seconds(300)
    /// Containers removed by one `docker rm --force`.
    public var batchSize = 50
    /// Who the audit trail says acted: `cleanup` (cron) or `reconcile` (the server's own pass).
    public var actor = "cleanup"
    /// Whether a machine found back up has the images it lacks built now, in the background: only
    /// in a serving master. Cron's `cleanup` exits after its pass, and a build it started would
    /// be cut off then, or run on beside the serving master's own build of the same tag.
    public var buildsAhead = false
    /// Events older than this are purged.
    public var keepEvents: Duration = .seconds(90 * 86400)
    /// Recordings last written longer ago than this are removed by the pass (the server's own:
    /// cron's `cleanup` does not know where they are).
    public var keepRecordings: Duration = .seconds(30 * 86400)

    public init(master: Master) { self.master = master }

    /// One pass; `now` defaults to the database's clock, the one heartbeats and expiries are
    /// written with.
    public func run(dryRun: Bool, now given: Date? = nil) async -> CleanupSummary {
        var summary = CleanupSummary()
        let now: Date
        if let given { now = given } else { now = await master.database.clock() }
        let machines: [Machine]
        let leases: [Lease]
        let incarnations: Incarnations
        do {
            machines = try await master.database.machines()
            leases = try await master.database.leaseListings(ownerID: nil, name: nil, machineID: nil).map(\.lease)
            incarnations = Incarnations(rows: try await master.database.incarnations(), current: master.incarnationID, now: now)
        } catch {
            summary.problems.append("cannot read the database: \(error)")
            return summary
        }
        // Leases that never reached a machine.
        for lease in leases where lease.machineId == nil {
            await summary.merge(settleUnplaced(lease, incarnations, dryRun: dryRun, now: now))
        }
        await withTaskGroup(of: CleanupSummary.self) { group in
            for machine in machines {
                group.addTask { await self.reconcile(machine, incarnations, dryRun: dryRun, now: now) }
            }
            for await part in group { summary.merge(part) }
        }
        if !dryRun {
            _ = try? await master.database.purgeIncarnations(before: now - 86400)
            _ = try? await master.database.purgeEvents(before: now - TimeInterval(keepEvents.components.seconds))
            _ = try? await master.database.purgeTokens(expiredBefore: now)
            if let directory = master.recordDirectory {
                // Files carry this host's times, not the database's.
                SessionRecordings.purge(directory, before: Date() - TimeInterval(keepRecordings.components.seconds))
            }
        }
        return summary
    }

    /// Whether no process works on a lease or a warm slot any more: the incarnation it names is
    /// gone, or, when that is unknown, it is older than `stuckAfter`.
    private func abandoned(_ incarnationID: String?, since createdAt: Date, _ incarnations: Incarnations, now: Date) -> Bool {
        incarnations.isGone(incarnationID) ?? (now.timeIntervalSince(createdAt) >= seconds(stuckAfter))
    }

    private func settleUnplaced(_ lease: Lease, _ incarnations: Incarnations, dryRun: Bool, now: Date) async -> CleanupSummary {
        var summary = CleanupSummary()
        let age = now.timeIntervalSince(lease.createdAt)
        let expired = lease.expiresAt <= now
        let stale =
            (lease.state == .creating && abandoned(lease.incarnationId, since: lease.createdAt, incarnations, now: now))
            || (lease.state == .failed && age >= seconds(failedKeptFor))
        guard expired || stale || lease.state == .deleting else { return summary }
        if lease.state == .creating && !expired {
            // Its master died before it reached a machine: failed, as a placed one is, so that its
            // owner sees what happened; it goes with the other failed leases later.
            let message = "the master stopped while creating it"
            summary.actions.append("mark lease \(lease.name) (#\(lease.id!)) failed (never placed)")
            summary.stuckFinished += 1
            guard !dryRun, (try? await master.database.setLeaseState(id: lease.id!, expecting: .creating, to: .failed, message: message)) == true
            else { return summary }
            await master.audit.record(actor, "lease.settled-failed", "#\(lease.id!) \(lease.name)", detail: message)
            return summary
        }
        summary.actions.append("delete lease \(lease.name) (#\(lease.id!), \(lease.state.rawValue), never placed)")
        if expired { summary.expired += 1 } else if lease.state == .failed { summary.failedPurged += 1 } else { summary.stuckFinished += 1 }
        if !dryRun { try? await master.database.deleteLease(id: lease.id!) }
        return summary
    }

    /// One machine: it must list its containers within `machineDeadline`, else it is counted
    /// down and its rows are left alone. The work that follows (removals, row updates) has its
    /// own budget, `workDeadline`: a long backlog is not a machine that does not answer.
    ///
    /// The rows are read after the containers are listed: a container is made only after the
    /// row that explains it, so none is ever taken for an orphan because it is newer than the
    /// rows.
    private func reconcile(_ machine: Machine, _ incarnations: Incarnations, dryRun: Bool, now: Date) async -> CleanupSummary {
        let docker = master.fleet.docker(on: machine)
        let masterID = master.masterID
        let listing = await race(machineDeadline) { try await docker.containers(labelled: "resalloc.master", masterID, showing: "resalloc.lease") }
        switch listing {
        case nil:
            return await markDown(machine, reason: "did not answer within \(TTL.format(machineDeadline))", dryRun: dryRun)
        case .failure(let error):
            return await markDown(machine, reason: MasterError.from(error, machine: machine.name).message, dryRun: dryRun)
        case .success(let containers):
            var leases: [Lease]
            let slots: [PoolSlot]
            let jobContainers: Set<String>
            do {
                leases = try await master.database.leaseListings(ownerID: nil, name: nil, machineID: machine.id).map(\.lease)
                slots = try await master.database.poolSlots(machineID: machine.id)
                jobContainers = try await master.jobs.containersInUse(on: machine.id!)
            } catch {
                var summary = CleanupSummary()
                summary.problems = ["cannot read the database: \(error)"]
                return summary
            }
            if !dryRun { leases = await claimExpired(leases, now: now) }
            var summary = await settle(
                machine,
                docker,
                containers: containers.filter { !jobContainers.contains($0.name) },  // jobs look after their own
                leases: leases,
                slots: slots,
                incarnations,
                dryRun: dryRun,
                now: now
            )
            // A machine that lost its firewall is settled as any other, but takes no new lease
            // until it has the rules again.
            if master.limits.ownerNetworks, case .success(nil) = await race(machineDeadline, { try await docker.firewallState() }) {
                let down = await markDown(machine, reason: "has no resalloc firewall: run resources/setup.sh on it as root", dryRun: dryRun)
                summary.machinesOK.removeAll { $0 == machine.name }
                summary.merge(down)
            }
            // Networks of owners with nothing left on the machine go (in use ones stay: docker
            // refuses them; new ones stay: a lease may be about to join).
            if master.limits.ownerNetworks && !dryRun {
                _ = await race(machineDeadline) { try await docker.pruneNetworks(labelled: ["resalloc.master": masterID]) }
            }
            if !dryRun { _ = await race(machineDeadline) { try await docker.pruneHandoffDirectories() } }
            if !dryRun { summary.actions += await removeStaleImages(machine, docker) }
            // Back up: the images it lacks are built now, not at the next lease's asking.
            if !dryRun, buildsAhead, !machine.healthy, summary.machinesOK.contains(machine.name),
                let resources = try? await master.database.resources()
            {
                var up = machine
                up.healthy = true
                master.buildAhead(resources, on: [up])
            }
            return summary
        }
    }

    /// Removes this installation's images on `machine` that nothing uses any more: tags of
    /// resources edited or deleted since, that no lease, warm container or unfinished job names.
    /// The database is read after the listing, so a tag made current meanwhile is either not
    /// listed or known to be in use; an image a container still runs stays (no force).
    private func removeStaleImages(_ machine: Machine, _ docker: RemoteDocker) async -> [String] {
        guard case .success(let tags)? = await race(machineDeadline, { try await docker.images(labelled: "resalloc.master", master.masterID) }),
            !tags.isEmpty,
            let resources = try? await master.database.resources(),
            let leases = try? await master.database.leaseListings(ownerID: nil, name: nil, machineID: nil),
            let slots = try? await master.database.poolSlots(machineID: nil),
            let jobs = try? await master.database.jobListings(ownerID: nil, id: nil, activeOnly: true)
        else { return [] }
        var used = Set(resources.map(ResourceCatalog.imageTag(for:)))
        used.formUnion(leases.map(\.lease.image))
        used.formUnion(slots.map(\.image))
        used.formUnion(jobs.map(\.job.image))
        let stale = tags.filter { !used.contains($0) }
        guard !stale.isEmpty, case .success(let gone)? = await race(machineDeadline, { try await docker.removeImages(stale) }) else { return [] }
        for tag in gone { master.fleet.images.forget(tag, on: docker.endpoint) }
        return gone.sorted().map { "remove image \($0) on \(machine.name) (no resource, lease, warm container or job uses it)" }
    }

    /// Marks each expired lease `deleting`, if it is still expired: one its owner extended since
    /// the pass read it is read again, and keeps its container.
    private func claimExpired(_ leases: [Lease], now: Date) async -> [Lease] {
        var settled: [Lease] = []
        let inUse = Set(master.sessions.leasesInUse)
        for var lease in leases {
            // A lease idle past its `idleSeconds` ends as at the end of its lifetime.
            if lease.state == .running, let idle = lease.idleSeconds, !inUse.contains(lease.id!), lease.expiresAt > now,
                now.timeIntervalSince(lease.activeAt ?? lease.createdAt) > Double(idle),
                (try? await master.database.extendLease(id: lease.id!, to: now)) == true
            {
                lease.expiresAt = now
                await master.audit.record(
                    actor,
                    "lease.idle",
                    "#\(lease.id!) \(lease.name)",
                    detail: "no session for \(TTL.format(.seconds(idle))); ended as expired"
                )
            }
            if lease.expiresAt <= now && lease.state != .deleting {
                let claimed = (try? await master.database.claimExpiredLease(id: lease.id!, at: now, incarnationID: master.incarnationID)) ?? false
                if claimed {
                    lease.state = .deleting
                } else if let fresh = try? await master.database.lease(id: lease.id!) {
                    lease = fresh
                }
            }
            settled.append(lease)
        }
        return settled
    }

    /// `body`'s result, or nil once `deadline` has passed (`body` is then cancelled).
    private func race<T: Sendable>(_ deadline: Duration, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, any Error>? {
        await withTaskGroup(of: Result<T, any Error>?.self) { group in
            group.addTask {
                do { return .success(try await body()) } catch { return .failure(error) }
            }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }

    private func markDown(_ machine: Machine, reason: String, dryRun: Bool) async -> CleanupSummary {
        var summary = CleanupSummary()
        summary.machinesDown = [machine.name]
        summary.problems = ["machine \(machine.name) \(reason)"]
        if !dryRun { try? await master.database.setMachineHealth(id: machine.id!, healthy: false, error: reason, at: await master.database.clock()) }
        master.logger.warning("machine down", metadata: ["machine": "\(machine.name)", "reason": "\(reason)"])
        return summary
    }

    /// Compares what runs on a machine that answered with its leases, and acts.
    private func settle(
        _ machine: Machine,
        _ docker: RemoteDocker,
        containers: [LabelledContainer],
        leases: [Lease],
        slots: [PoolSlot],
        _ incarnations: Incarnations,
        dryRun: Bool,
        now: Date
    ) async -> CleanupSummary {
        var summary = CleanupSummary()
        summary.machinesOK = [machine.name]
        if !dryRun { try? await master.database.setMachineHealth(id: machine.id!, healthy: true, error: nil, at: now) }
        let present = Dictionary(containers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var explained: Set<String> = []
        /// Containers to remove, in order, and the lease row to delete once each is gone.
        var removals: [(name: String, lease: Lease?)] = []

        /// Only from the state the pass read: a lease its owner deleted or extended meanwhile,
        /// or another pass settled, is left as it is, expiry and all.
        func update(_ lease: Lease, to state: Lease.State, _ message: String) async {
            summary.actions.append("mark lease \(lease.name) (#\(lease.id!)) \(state.rawValue)")
            guard !dryRun,
                (try? await master.database.setLeaseState(id: lease.id!, expecting: lease.state, to: state, message: message.isEmpty ? nil : message))
                    == true
            else { return }
            await master.audit.record(
                actor,
                "lease.\(state == .lost ? "lost" : state == .running ? "settled-running" : "settled-failed")",
                "#\(lease.id!) \(lease.name)",
                detail: message
            )
        }
        func delete(_ lease: Lease) async {
            summary.actions.append("delete lease \(lease.name) (#\(lease.id!), \(lease.state.rawValue))")
            if !dryRun {
                try? await master.database.deleteLease(id: lease.id!)
                await master.audit.record(actor, lease.expiresAt <= now ? "lease.expired" : "lease.removed", "#\(lease.id!) \(lease.name)")
            }
            if lease.expiresAt <= now { summary.expired += 1 } else { summary.stuckFinished += 1 }
        }

        for lease in leases {
            let name = lease.containerName(masterID: master.masterID)
            let container = present[name]
            let age = now.timeIntervalSince(lease.createdAt)
            if lease.expiresAt <= now || lease.state == .deleting {
                explained.insert(name)  // handled here, not again as an orphan
                if container == nil {
                    await delete(lease)
                } else {
                    summary.actions.append(
                        "remove container \(name) on \(machine.name) (\(lease.state == .deleting ? "lease being deleted" : "lease expired"))"
                    )
                    removals.append((name, lease))
                }
                continue
            }
            switch lease.state {
            case .running:
                if container == nil {
                    await update(lease, to: .lost, "the container disappeared from \(machine.name)")
                    summary.lost += 1
                } else {
                    explained.insert(name)
                }
            case .lost:
                if container != nil {
                    await update(lease, to: .running, "")
                    explained.insert(name)
                }
            case .creating:
                if !abandoned(lease.incarnationId, since: lease.createdAt, incarnations, now: now) {
                    explained.insert(name)  // a saga may be running it right now
                } else if let container, container.state == "running" {
                    await update(lease, to: .running, "")
                    explained.insert(name)
                    summary.stuckFinished += 1
                } else {
                    await update(lease, to: .failed, "the master stopped while creating it")
                    summary.stuckFinished += 1
                }
            case .failed:
                if age >= seconds(failedKeptFor) {
                    summary.actions.append("delete lease \(lease.name) (#\(lease.id!), failed)")
                    if !dryRun { try? await master.database.deleteLease(id: lease.id!) }
                    summary.failedPurged += 1
                }
            case .deleting:
                break
            }
        }
        // Warm containers: a slot is explained while its container runs, or while a live
        // incarnation starts or hands it out; otherwise its row goes and its container with it.
        for slot in slots {
            let name = slot.containerName(masterID: master.masterID)
            let keep =
                slot.state == .ready
                ? present[name]?.state == "running"
                : !abandoned(slot.incarnationId, since: slot.createdAt, incarnations, now: now)
            if keep {
                explained.insert(name)
                continue
            }
            summary.actions.append("drop warm container \(name) on \(machine.name) (\(slot.state == .ready ? "not running" : "its master is gone"))")
            if !dryRun { try? await master.database.deletePoolSlot(id: slot.id!) }
        }
        for container in containers where !explained.contains(container.name) {
            summary.actions.append("remove container \(container.name) on \(machine.name) (no live lease #\(container.label))")
            removals.append((container.name, nil))
        }

        let gone = dryRun ? Set(removals.map(\.name)) : await removeInBatches(removals.map(\.name), on: machine, docker, summary: &summary)
        for removal in removals where gone.contains(removal.name) {
            if let lease = removal.lease { await delete(lease) } else { summary.orphansRemoved += 1 }
        }
        return summary
    }

    /// Removes containers `batchSize` at a time until done or `workDeadline` has passed;
    /// returns the names that are gone. What is left waits for the next pass, said as a problem.
    private func removeInBatches(_ names: [String], on machine: Machine, _ docker: RemoteDocker, summary: inout CleanupSummary) async -> Set<String> {
        let deadline = ContinuousClock.now + workDeadline
        var gone: Set<String> = []
        var failures: [String] = []
        var remaining = names[...]
        while !remaining.isEmpty && ContinuousClock.now < deadline {
            let batch = Array(remaining.prefix(batchSize))
            remaining = remaining.dropFirst(batchSize)
            do {
                gone.formUnion(try await docker.remove(batch))
            } catch {
                failures.append(MasterError.from(error, machine: machine.name).message)
            }
        }
        let left = names.count - gone.count
        if left > 0 {
            let why = failures.first.map { ": \($0)" } ?? (remaining.isEmpty ? "" : ": the pass ran out of time (\(TTL.format(workDeadline)))")
            summary.problems.append("\(left) of \(names.count) containers on \(machine.name) could not be removed\(why); the next pass tries again")
        }
        return gone
    }

    private func seconds(_ duration: Duration) -> TimeInterval { TimeInterval(duration.components.seconds) }
}
