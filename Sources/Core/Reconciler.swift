import Docker
import Foundation
import Logging
import Store

/// What one cleanup pass did (or, dry, would do).
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
        var text = "expired \(expired), orphans removed \(orphansRemoved), lost \(lost), stuck \(stuckFinished), failed purged \(failedPurged), "
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
    /// Each machine's share of the pass.
    public var machineDeadline: Duration = .seconds(20)

    public init(master: Master) { self.master = master }

    public func run(dryRun: Bool, now: Date = Date()) async -> CleanupSummary {
        var summary = CleanupSummary()
        let machines: [Machine]
        let leases: [Lease]
        do {
            machines = try master.database.machines()
            leases = try master.database.leaseListings(ownerID: nil).map(\.lease)
        } catch {
            summary.problems.append("cannot read the database: \(error)")
            return summary
        }
        // Leases that never reached a machine.
        for lease in leases where lease.machineId == nil {
            summary.merge(settleUnplaced(lease, dryRun: dryRun, now: now))
        }
        let byMachine = Dictionary(grouping: leases.filter { $0.machineId != nil }, by: { $0.machineId! })
        await withTaskGroup(of: CleanupSummary.self) { group in
            for machine in machines {
                let mine = byMachine[machine.id!] ?? []
                group.addTask { await self.reconcile(machine, leases: mine, dryRun: dryRun, now: now) }
            }
            for await part in group { summary.merge(part) }
        }
        return summary
    }

    private func settleUnplaced(_ lease: Lease, dryRun: Bool, now: Date) -> CleanupSummary {
        var summary = CleanupSummary()
        let age = now.timeIntervalSince(lease.createdAt)
        let expired = lease.expiresAt <= now
        let stale = (lease.state == .creating && age >= seconds(stuckAfter)) || (lease.state == .failed && age >= seconds(failedKeptFor))
        guard expired || stale || lease.state == .deleting else { return summary }
        summary.actions.append("delete lease \(lease.name) (#\(lease.id!), \(lease.state.rawValue), never placed)")
        if expired { summary.expired += 1 } else if lease.state == .failed { summary.failedPurged += 1 } else { summary.stuckFinished += 1 }
        if !dryRun { try? master.database.deleteLease(id: lease.id!) }
        return summary
    }

    /// One machine under its deadline: a timeout counts it down and leaves its rows alone.
    private func reconcile(_ machine: Machine, leases: [Lease], dryRun: Bool, now: Date) async -> CleanupSummary {
        let deadline = machineDeadline
        return await withTaskGroup(of: CleanupSummary?.self) { group in
            group.addTask { await self.reconcileReachable(machine, leases: leases, dryRun: dryRun, now: now) }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            if let first { return first }
            return markDown(machine, reason: "did not answer within \(TTL.format(deadline))", dryRun: dryRun)
        }
    }

    private func markDown(_ machine: Machine, reason: String, dryRun: Bool) -> CleanupSummary {
        var summary = CleanupSummary()
        summary.machinesDown = [machine.name]
        summary.problems = ["machine \(machine.name) \(reason)"]
        if !dryRun { try? master.database.setMachineHealth(id: machine.id!, healthy: false, error: reason) }
        master.logger.warning("machine down", metadata: ["machine": "\(machine.name)", "reason": "\(reason)"])
        return summary
    }

    private func reconcileReachable(_ machine: Machine, leases: [Lease], dryRun: Bool, now: Date) async -> CleanupSummary {
        let docker = master.fleet.docker(on: machine)
        let containers: [LabelledContainer]
        do {
            containers = try await docker.containers(labelled: "resalloc.master", master.masterID, showing: "resalloc.lease")
        } catch {
            return markDown(machine, reason: MasterError.from(error, machine: machine.name).message, dryRun: dryRun)
        }
        var summary = CleanupSummary()
        summary.machinesOK = [machine.name]
        if !machine.healthy && !dryRun { try? master.database.setMachineHealth(id: machine.id!, healthy: true, error: nil) }
        let present = Dictionary(containers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var explained: Set<String> = []

        func remove(_ name: String, because why: String) async -> Bool {
            summary.actions.append("remove container \(name) on \(machine.name) (\(why))")
            guard !dryRun else { return true }
            do {
                _ = try await docker.remove(name)
                return true
            } catch {
                summary.problems.append("could not remove \(name) on \(machine.name): \(MasterError.from(error, machine: machine.name).message)")
                return false
            }
        }
        func update(_ lease: Lease, to state: Lease.State, _ message: String) {
            summary.actions.append("mark lease \(lease.name) (#\(lease.id!)) \(state.rawValue)")
            guard !dryRun else { return }
            var lease = lease
            lease.state = state
            lease.message = message
            try? master.database.updateLease(lease)
        }
        func delete(_ lease: Lease) {
            summary.actions.append("delete lease \(lease.name) (#\(lease.id!), \(lease.state.rawValue))")
            if !dryRun { try? master.database.deleteLease(id: lease.id!) }
        }

        for lease in leases {
            let name = lease.containerName(masterID: master.masterID)
            let container = present[name]
            let age = now.timeIntervalSince(lease.createdAt)
            if lease.expiresAt <= now || lease.state == .deleting {
                explained.insert(name)  // handled here, not again as an orphan
                var gone = container == nil
                if !gone { gone = await remove(name, because: lease.state == .deleting ? "lease being deleted" : "lease expired") }
                if gone {
                    delete(lease)
                    if lease.expiresAt <= now { summary.expired += 1 } else { summary.stuckFinished += 1 }
                }
                continue
            }
            switch lease.state {
            case .running:
                if container == nil {
                    update(lease, to: .lost, "the container disappeared from \(machine.name)")
                    summary.lost += 1
                } else {
                    explained.insert(name)
                }
            case .lost:
                if container != nil {
                    update(lease, to: .running, "")
                    explained.insert(name)
                }
            case .creating:
                if age < seconds(stuckAfter) {
                    explained.insert(name)  // a saga may be running it right now
                } else if let container, container.state == "running" {
                    update(lease, to: .running, "")
                    explained.insert(name)
                    summary.stuckFinished += 1
                } else {
                    update(lease, to: .failed, "the master stopped while creating it")
                    summary.stuckFinished += 1
                }
            case .failed:
                if age >= seconds(failedKeptFor) {
                    delete(lease)
                    summary.failedPurged += 1
                }
            case .deleting:
                break
            }
        }
        for container in containers where !explained.contains(container.name) {
            if await remove(container.name, because: "no live lease #\(container.label)") { summary.orphansRemoved += 1 }
        }
        return summary
    }

    private func seconds(_ duration: Duration) -> TimeInterval { TimeInterval(duration.components.seconds) }
}

/// An exclusive, non-blocking lock on a file beside the database, so that cleanup passes (cron,
/// or the server's own) never overlap. Released when the process ends, whatever the way.
public final class CleanupLock: Sendable {
    private let descriptor: Int32

    /// Takes the lock, or returns nil when another pass holds it.
    public init?(databasePath: String) throws {
        let path = databasePath + ".cleanup.lock"
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MasterError(.internal, "cannot open the lock file \(path)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        descriptor = fd
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
