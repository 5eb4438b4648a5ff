import Docker
import Foundation
import Logging
import Store
import Synchronization

/// Warm pools: containers of a resource kept started on the fleet, so that a lease is a rename
/// away. Ownership lives in the database (`PoolSlot`); the containers carry this master's id and
/// a `resalloc.pool` label, so cleanup tells a slot from an orphan by its row.
///
/// A handout claims the oldest ready slot in one transaction, renames its container to the
/// lease's name and checks that it runs, in one round trip; anything else falls back to a cold
/// start. A refill (in the background, woken by every handout) retires slots of an old image or
/// beyond the size, and starts what is missing on the least loaded healthy machines.
public final class WarmPool: Sendable {
    let database: any Store
    let fleet: Fleet
    let masterID: String
    let incarnationID: String
    let logger: Logger
    let limits: LimitPolicy
    let wakeup = Wakeup()
    /// A resource whose refill failed is not tried again before this has passed.
    private let backoff = Mutex([Int64: ContinuousClock.Instant]())
    /// When a warm container last gave way to a lease: for `evictionHold` after, refills start
    /// nothing, so the place it freed goes to that lease and not back to the pool.
    private let lastEviction = Mutex<ContinuousClock.Instant?>(nil)
    static let evictionHold: Duration = .seconds(10)
    public static let retryAfter: Duration = .seconds(30)
    /// Containers started at once by one refill.
    static let parallelStarts = 4

    init(database: any Store, fleet: Fleet, masterID: String, incarnationID: String, logger: Logger, limits: LimitPolicy) {
        self.limits = limits
        self.database = database
        self.fleet = fleet
        self.masterID = masterID
        self.incarnationID = incarnationID
        self.logger = logger
    }

    /// Asks the background refill to run now.
    public func wake() { wakeup.signal() }

    /// How long the refill waits after a warm container was handed to a job. Its `docker run`
    /// on the same engine would otherwise run beside the job's first moments (`make bench
    /// BENCH=jobs`: a pooled job 0.55× `docker run --rm` with the refill at once, 0.47× with
    /// it held).
    static let jobHandoutHold: Duration = .milliseconds(500)

    /// Asks the refill to run once a job's handout has had `jobHandoutHold` to itself.
    func wakeAfterJobHandout() {
        Task {
            try? await Task.sleep(for: Self.jobHandoutHold)
            wake()
        }
    }

    // MARK: - Handout

    /// Gives `lease` a ready container of its image, if the pool has one that runs: the lease
    /// is then `running` on that container's machine. False when the lease must start cold.
    func take(_ lease: inout Lease, resource: Resource) async -> Machine? {
        defer { wake() }
        for _ in 0..<3 {
            let slot: PoolSlot
            let machine: Machine
            do {
                guard
                    let claimed = try await database.claimPoolSlot(
                        image: lease.image,
                        resourceID: resource.id!,
                        lease: lease,
                        incarnationID: incarnationID
                    ),
                    let found = try await database.machine(id: claimed.machineId)
                else { return nil }
                slot = claimed
                machine = found
            } catch {
                logger.warning("pool handout: the database failed", metadata: ["error": "\(error)"])
                return nil
            }
            let docker = fleet.docker(on: machine)
            let name = lease.containerName(masterID: masterID)
            do {
                // The warm container leaves the pool's network for its owner's, in the rename's round trip.
                var joining: String?
                var leaving: String?
                if limits.ownerNetworks {
                    let network = OwnerNetworks.owner(lease.ownerId, masterID: masterID)
                    try await docker.ensureNetwork(network, cache: fleet.networks)
                    (joining, leaving) = (network.name, OwnerNetworks.pool(masterID: masterID).name)
                }
                if let containerID = slot.containerId,
                    try await docker.claim(slot.containerName(masterID: masterID), id: containerID, as: name, joining: joining, leaving: leaving)
                {
                    try? await database.deletePoolSlot(id: slot.id!)
                    lease.machineId = machine.id
                    lease.containerId = containerID
                    return machine
                }
                logger.notice("pool handout: a warm container was gone or stopped; discarded", metadata: ["machine": "\(machine.name)"])
            } catch {
                fleet.networks.forget(on: docker.endpoint)
                logger.warning("pool handout failed; trying another", metadata: ["machine": "\(machine.name)", "error": "\(error)"])
            }
            // Whatever is left of it, under either name, goes; the slot is refilled.
            _ = try? await docker.remove([slot.containerName(masterID: masterID), name])
            try? await database.deletePoolSlot(id: slot.id!)
            lease.machineId = nil
            try? await database.updateLease(lease)
        }
        return nil
    }

    /// Retires the oldest ready slot on a healthy machine, to make room for a cold lease; the
    /// refill puts it back when there is room again.
    func evictOne() async -> Bool {
        guard let machines = try? await database.machines(), let slots = try? await database.poolSlots(machineID: nil) else { return false }
        let healthy = Dictionary(uniqueKeysWithValues: machines.filter(\.healthy).map { ($0.id!, $0) })
        guard let oldest = slots.filter({ $0.state == .ready && healthy[$0.machineId] != nil }).min(by: { $0.createdAt < $1.createdAt }) else {
            return false
        }
        logger.info("pool: a warm container gives way to a lease", metadata: ["slot": "\(oldest.id!)"])
        lastEviction.withLock { $0 = .now }
        return await retire([oldest], machines: healthy) > 0
    }

    // MARK: - Refill

    /// What one refill did.
    public struct RefillSummary: Sendable, Equatable {
        public var started = 0
        public var retired = 0
        public var failures: [String] = []
    }

    /// Brings every pool to its size: retires what is stale, excess or on a machine that is
    /// down, and starts what is missing, within the machines' capacity.
    @discardableResult
    public func refill() async -> RefillSummary {
        var summary = RefillSummary()
        let resources: [Resource]
        let slots: [PoolSlot]
        let machines: [Int64: Machine]
        do {
            resources = try await database.resources()
            slots = try await database.poolSlots(machineID: nil)
            machines = Dictionary(uniqueKeysWithValues: try await database.machines().map { ($0.id!, $0) })
        } catch {
            summary.failures.append("cannot read the database: \(error)")
            return summary
        }
        // What to retire: the row goes first, so no handout takes it; then the container.
        var retire: [PoolSlot] = []
        var missing: [(Resource, Int)] = []
        for resource in resources {
            let image = ResourceCatalog.imageTag(for: resource)
            let wanted = limits.limits(for: resource)
            let own = slots.filter { $0.resourceId == resource.id && $0.state != .claimed }
            // A slot of an old image or of other limits (its resource or the defaults changed) is
            // replaced: a lease gets what its resource says now.
            let stale = own.filter {
                $0.image != image || $0.memoryBytes != wanted.placementMemory || $0.milliCPUs != wanted.placementCPUs
                    || !(machines[$0.machineId]?.healthy ?? false)
            }
            let current = own.filter { slot in !stale.contains { $0.id == slot.id } }
            let excess = max(0, current.count - resource.poolSize)
            // Starting ones go before ready ones, newest first.
            let surplus = current.sorted { ($0.state == .starting ? 0 : 1, -$0.id!) < ($1.state == .starting ? 0 : 1, -$1.id!) }.prefix(excess)
            retire += stale + surplus
            if current.count < resource.poolSize, !backingOff(resource.id!) { missing.append((resource, resource.poolSize - current.count)) }
        }
        summary.retired = await self.retire(retire, machines: machines)
        guard !missing.isEmpty else { return summary }
        if let evicted = lastEviction.withLock({ $0 }), ContinuousClock.now - evicted < Self.evictionHold { return summary }

        // Place what is missing, slot by slot on the least loaded machine with room.
        var plans: [(Resource, Machine, [PoolSlot])] = []
        for (resource, count) in missing {
            var placed: [Int64: [PoolSlot]] = [:]
            let wanted = limits.limits(for: resource)
            let overcommit = limits.cpuOvercommit
            for _ in 0..<count {
                guard let loads = try? await database.machineLoads() else { break }
                let candidates = Placement.candidates(
                    Array(machines.values),
                    loads: loads,
                    memoryBytes: wanted.placementMemory,
                    milliCPUs: wanted.placementCPUs,
                    cpuOvercommit: overcommit
                )
                var added: PoolSlot?
                for machine in candidates {
                    var slot = PoolSlot(
                        resourceId: resource.id!,
                        machineId: machine.id!,
                        image: ResourceCatalog.imageTag(for: resource),
                        incarnationId: incarnationID,
                        createdAt: await database.clock()
                    )
                    slot.memoryBytes = wanted.placementMemory
                    slot.milliCPUs = wanted.placementCPUs
                    if let slot = try? await database.addPoolSlot(slot, cpuOvercommit: overcommit) {
                        added = slot
                        break
                    }
                }
                guard let added else { break }  // the fleet is full: leases come first
                placed[added.machineId, default: []].append(added)
            }
            for (machineID, slots) in placed { plans.append((resource, machines[machineID]!, slots)) }
        }
        await withTaskGroup(of: RefillSummary.self) { group in
            for (resource, machine, slots) in plans {
                group.addTask { await self.start(slots, of: resource, on: machine) }
            }
            for await part in group {
                summary.started += part.started
                summary.failures += part.failures
            }
        }
        return summary
    }

    /// Builds the image if the machine lacks it, then starts the slots' containers, a few at a
    /// time. A failure drops the slot and holds the resource's refill back for `retryAfter`.
    private func start(_ slots: [PoolSlot], of resource: Resource, on machine: Machine) async -> RefillSummary {
        var summary = RefillSummary()
        let docker = fleet.docker(on: machine)
        let image = slots[0].image
        let network = limits.ownerNetworks ? OwnerNetworks.pool(masterID: masterID) : nil
        do {
            if let network { try await docker.ensureNetwork(network, cache: fleet.networks) }
            _ = try await docker.ensureImage(
                image,
                dockerfile: Array(resource.dockerfile),
                labels: ["resalloc.master": masterID],
                cache: fleet.images,
                builds: fleet.builds
            )
        } catch {
            for slot in slots { try? await database.deletePoolSlot(id: slot.id!) }
            return failed(resource, MasterError.from(error, machine: machine.name).message)
        }
        var remaining = slots[...]
        while !remaining.isEmpty {
            let batch = remaining.prefix(Self.parallelStarts)
            remaining = remaining.dropFirst(Self.parallelStarts)
            await withTaskGroup(of: String?.self) { group in
                for slot in batch {
                    group.addTask {
                        let name = slot.containerName(masterID: self.masterID)
                        let spec = ContainerSpec(
                            name: name,
                            image: image,
                            labels: ["resalloc.master": self.masterID, "resalloc.pool": resource.name],
                            limits: self.limits.limits(for: resource),
                            network: network?.name
                        )
                        let containerID: String
                        do {
                            containerID = try await docker.runWarm(spec)
                        } catch {
                            self.fleet.images.forget(image, on: docker.endpoint)
                            self.fleet.networks.forget(on: docker.endpoint)
                            try? await self.database.deletePoolSlot(id: slot.id!)
                            _ = try? await docker.remove(name)
                            return MasterError.from(error, machine: machine.name).message
                        }
                        if await (try? self.database.markPoolSlotReady(id: slot.id!, containerID: containerID)) != true {
                            _ = try? await docker.remove(name)  // retired while it started
                        }
                        return nil
                    }
                }
                for await failure in group {
                    if let failure { summary.failures.append(failure) } else { summary.started += 1 }
                }
            }
        }
        if let first = summary.failures.first { summary.failures = failed(resource, first).failures + summary.failures.dropFirst() }
        return summary
    }

    private func failed(_ resource: Resource, _ message: String) -> RefillSummary {
        backoff.withLock { $0[resource.id!] = .now + Self.retryAfter }
        logger.warning("pool refill failed; retrying later", metadata: ["resource": "\(resource.name)", "error": "\(message)"])
        var summary = RefillSummary()
        summary.failures = ["pool \(resource.name): \(message)"]
        return summary
    }

    private func backingOff(_ resourceID: Int64) -> Bool {
        backoff.withLock { until in
            guard let instant = until[resourceID] else { return false }
            if instant <= .now { until[resourceID] = nil }
            return instant > .now
        }
    }

    /// The slots of a resource, so that its deletion can remove their containers after the
    /// rows are gone with it.
    public func slots(ofResourceNamed name: String) async -> [PoolSlot] {
        guard let resource = try? await database.resource(named: name), let slots = try? await database.poolSlots(machineID: nil) else { return [] }
        return slots.filter { $0.resourceId == resource.id }
    }

    /// Removes the containers of slots whose rows are gone (or go now).
    public func remove(_ slots: [PoolSlot]) async {
        guard let machines = try? await database.machines() else { return }
        _ = await retire(slots, machines: Dictionary(uniqueKeysWithValues: machines.map { ($0.id!, $0) }))
    }

    /// Deletes the slots' rows, then removes their containers machine by machine (a machine
    /// that is down keeps them until cleanup finds them there without a row).
    private func retire(_ slots: [PoolSlot], machines: [Int64: Machine]) async -> Int {
        guard !slots.isEmpty else { return 0 }
        for slot in slots { try? await database.deletePoolSlot(id: slot.id!) }
        for (machineID, group) in Dictionary(grouping: slots, by: \.machineId) {
            guard let machine = machines[machineID], machine.healthy else { continue }
            _ = try? await fleet.docker(on: machine).remove(group.map { $0.containerName(masterID: masterID) })
        }
        return slots.count
    }

    /// Refills whenever woken, and every `every` regardless, until cancelled.
    public func run(every: Duration) async {
        while !Task.isCancelled {
            let summary = await refill()
            if summary.started + summary.retired > 0 || !summary.failures.isEmpty {
                logger.info(
                    "pool refill",
                    metadata: ["started": "\(summary.started)", "retired": "\(summary.retired)", "failures": "\(summary.failures)"]
                )
            }
            await wakeup.wait(upTo: every)
        }
    }
}

/// A one-slot signal: `signal` wakes the one waiter, or the next wait when none waits.
final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns when signalled, after `timeout`, or when the task is cancelled.
    func wait(upTo timeout: Duration) async {
        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { signal() }
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            signal()
        }
    }
}
