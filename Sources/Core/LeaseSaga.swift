import Docker
import Foundation
import Logging
import Store

/// Creating and deleting leases so that a failure at any step leaves nothing behind: the row is
/// written first (`creating`), the container carries labels that name its lease, owner and
/// master, and every failure removes what was started and marks the lease `failed`.
public struct LeaseSaga: Sendable {
    let database: any Store
    let fleet: Fleet
    let warmPool: WarmPool
    let masterID: String
    let incarnationID: String
    let logger: Logger
    /// The limits each container runs with, and how placement counts them.
    let limits: LimitPolicy
    /// The fair queue a lease waits in with `wait`, and each user's limits.
    let jobs: Jobs?
    public var defaultTTL: Duration
    public var maxTTL: Duration

    public init(
        database: any Store,
        fleet: Fleet,
        warmPool: WarmPool,
        masterID: String,
        incarnationID: String,
        logger: Logger,
        limits: LimitPolicy = LimitPolicy(),
        jobs: Jobs? = nil,
        defaultTTL: Duration = .seconds(86400),
        maxTTL: Duration = .seconds(7 * 86400)
    ) {
        self.database = database
        self.fleet = fleet
        self.warmPool = warmPool
        self.masterID = masterID
        self.incarnationID = incarnationID
        self.logger = logger
        self.limits = limits
        self.jobs = jobs
        self.defaultTTL = defaultTTL
        self.maxTTL = maxTTL
    }

    /// Leases `resourceName` as `leaseName` for `owner`. `onBuildLine` receives the image
    /// build's output when the chosen machine has to build it.
    public func create(
        owner: User,
        resourceName: String,
        leaseName: String,
        ttl: Duration? = nil,
        wait: Duration? = nil,
        idle: Duration? = nil,
        onQueued: (@Sendable (Int) -> Void)? = nil,
        onBuildLine: (@Sendable (String) -> Void)? = nil
    ) async throws(MasterError) -> LeaseListing {
        let resource = try await check(resourceName: resourceName, leaseName: leaseName)
        let ttl = try lifetime(ttl ?? defaultTTL)
        let started = ContinuousClock.now
        let containerLimits = limits.limits(for: resource)
        let waitUntil = await wait.asyncMap { await database.clock() + TimeInterval($0.components.seconds) }
        // The owner's own limits: refused at once, or waited out in the queue.
        var atLimit = false
        if let jobs {
            let userLimits = owner.limits.over(jobs.settings.userDefaults)
            let use: UserUse
            do { use = try await database.userUses()[owner.id!] ?? UserUse() } catch { throw .from(error) }
            if let refusal = use.refusal(
                adding: "lease",
                memoryBytes: containerLimits.placementMemory,
                milliCPUs: containerLimits.placementCPUs,
                limits: userLimits
            ) {
                guard waitUntil != nil else {
                    throw MasterError(.forbidden, "\(refusal); delete one, wait with --wait, or ask an admin to raise your limit")
                }
                atLimit = true
            }
        }
        var lease: Lease
        do {
            let now = await database.clock()
            var new = Lease(
                name: leaseName,
                ownerId: owner.id!,
                resourceId: resource.id!,
                image: ResourceCatalog.imageTag(for: resource),
                createdAt: now,
                expiresAt: now + TimeInterval(ttl.components.seconds),
                incarnationId: incarnationID
            )
            new.memoryBytes = containerLimits.placementMemory
            new.milliCPUs = containerLimits.placementCPUs
            new.idleSeconds = idle.map { Int($0.components.seconds) } ?? resource.idleSeconds
            new.activeAt = now
            if atLimit { new.queuedUntil = waitUntil }
            lease = try await database.createLease(new)
        } catch { throw .from(error) }

        if !atLimit, resource.poolSize > 0, let machine = await warmPool.take(&lease, resource: resource) {
            do { try await markRunning(&lease, docker: fleet.docker(on: machine)) } catch { throw await fail(&lease, error) }
            logger.info("lease handed out from the pool", metadata: ["lease": "\(lease.name)", "machine": "\(machine.name)"])
            MasterMetrics.leaseCreated(served: .pool, since: started)
            return LeaseListing(lease: lease, owner: owner.name, resource: resource.name, machine: machine.name)
        }

        // Place, start, and on an unreachable machine give the place back and try the next.
        var unreachable: [String] = []
        var tried: Set<Int64> = []
        var evicted = false
        while true {
            var machine: Machine?
            let machines: [Machine]
            let loads: [Int64: MachineLoad]
            let overcommit = limits.cpuOvercommit
            do {
                machines = try await database.machines()
                loads = try await database.machineLoads()
                let order = Placement.candidates(
                    machines,
                    loads: loads,
                    memoryBytes: lease.memoryBytes,
                    milliCPUs: lease.milliCPUs,
                    cpuOvercommit: overcommit
                ).filter { !tried.contains($0.id!) }.preferring(lease.image, fleet: fleet)
                machine = lease.queuedUntil != nil ? nil : try await database.placeLease(lease, on: order.map { $0.id! }, cpuOvercommit: overcommit)
            } catch { throw await fail(&lease, .from(error)) }
            if machine == nil, let waitUntil, unreachable.isEmpty {
                machine = try await queue(&lease, until: waitUntil, onQueued: onQueued)
            }
            guard let machine else {
                // Warm containers give way to a lease that has nowhere else to go.
                if !evicted && unreachable.isEmpty, await warmPool.evictOne() {
                    evicted = true
                    continue
                }
                if unreachable.isEmpty {
                    let shortage = Placement.shortage(
                        machines,
                        loads: loads,
                        memoryBytes: lease.memoryBytes,
                        milliCPUs: lease.milliCPUs,
                        cpuOvercommit: overcommit
                    )
                    throw await fail(
                        &lease,
                        MasterError(.noCapacity, "no machine has room for a lease now: \(shortage); try again later or ask an admin to add one")
                    )
                }
                throw await fail(&lease, MasterError(.unreachable, "no machine could start the lease (\(unreachable.joined(separator: "; ")))"))
            }
            lease.machineId = machine.id
            do {
                let built = try await start(&lease, resource: resource, owner: owner, on: machine, onBuildLine: onBuildLine)
                MasterMetrics.leaseCreated(served: built ? .build : .cold, since: started)
                return LeaseListing(lease: lease, owner: owner.name, resource: resource.name, machine: machine.name)
            } catch  where error.kind == .unreachable || error.kind == .timeout {
                logger.warning("lease placement: machine failed, trying the next", metadata: ["machine": "\(machine.name)", "error": "\(error)"])
                unreachable.append("\(machine.name): \(error.message)")
                tried.insert(machine.id!)
                lease.machineId = nil
                do { try await database.updateLease(lease) } catch { throw await fail(&lease, Self.deletedWhileCreated(lease, error)) }
            } catch {
                throw await fail(&lease, error)
            }
        }
    }

    /// Waits in the fair queue until the queue gives the lease a place (the machine), or fails
    /// it when `deadline` passes first.
    private func queue(_ lease: inout Lease, until deadline: Date, onQueued: (@Sendable (Int) -> Void)?) async throws(MasterError) -> Machine {
        guard let jobs else { throw await fail(&lease, MasterError(.noCapacity, "this master has no queue")) }
        if lease.queuedUntil == nil {
            lease.queuedUntil = deadline
            do { try await database.updateLease(lease) } catch { throw await fail(&lease, Self.deletedWhileCreated(lease, error)) }
        }
        jobs.kick()
        var told = 0
        while true {
            let generation = jobs.changes.generation
            let current: Lease?
            do { current = try await database.lease(id: lease.id!) } catch { throw .from(error) }
            guard let current, current.state == .creating else {
                throw MasterError(.conflict, "lease \(lease.name) was \(current?.state.rawValue ?? "deleted") while it waited for a place")
            }
            if let machineID = current.machineId {
                lease = current
                do {
                    guard let machine = try await database.machine(id: machineID) else { throw MasterError(.notFound, "the lease's machine is gone") }
                    return machine
                } catch { throw await fail(&lease, .from(error)) }
            }
            if await database.clock() >= deadline || Task.isCancelled {
                let message = "no place for the lease came free while it waited; try again later or ask an admin to add a machine"
                let abandoned: Bool
                do { abandoned = try await database.abandonQueuedLease(id: lease.id!, message: message) } catch { throw .from(error) }
                if abandoned {
                    logger.notice("lease failed", metadata: ["lease": "\(lease.name)", "error": "\(message)"])
                    throw MasterError(.noCapacity, message)
                }
                continue  // the queue gave it a place just now
            }
            if let onQueued, let place = await jobs.places().leases[lease.id!], place != told {
                told = place
                onQueued(place)
            }
            await jobs.changes.wait(after: generation, atMost: .milliseconds(500))
        }
    }

    /// Builds the image if `machine` lacks it, runs the container, and marks the lease running;
    /// returns whether it built. On failure, removes the container if it may have been created.
    private func start(
        _ lease: inout Lease,
        resource: Resource,
        owner: User,
        on machine: Machine,
        onBuildLine: (@Sendable (String) -> Void)?
    ) async throws(MasterError) -> Bool {
        let docker = fleet.docker(on: machine)
        let network = limits.ownerNetworks ? OwnerNetworks.owner(owner.id!, masterID: masterID) : nil
        let spec = ContainerSpec(
            name: lease.containerName(masterID: masterID),
            image: lease.image,
            labels: ["resalloc.lease": String(lease.id!), "resalloc.owner": owner.name, "resalloc.master": masterID],
            limits: limits.limits(for: resource),
            network: network?.name
        )
        var built = false
        while true {
            // An image this process remembers is not asked for: if `docker run` then fails, the
            // image may have gone behind its back (an operator's prune), so it is forgotten and
            // the machine asked, once, before the lease fails.
            let remembered =
                fleet.images.has(lease.image, on: docker.endpoint) || (network.map { fleet.networks.has($0.name, on: docker.endpoint) } ?? false)
            do {
                if let network { try await docker.ensureNetwork(network, cache: fleet.networks) }
                built = try await docker.ensureImage(
                    lease.image,
                    dockerfile: Array(resource.dockerfile),
                    labels: ["resalloc.master": masterID],
                    cache: fleet.images,
                    builds: fleet.builds,
                    onLine: onBuildLine
                )
                if built { logger.info("built image", metadata: ["image": "\(lease.image)", "machine": "\(machine.name)"]) }
            } catch {
                await takeOutIfSilent(error, machine)
                throw .from(error, machine: machine.name)
            }
            do {
                lease.containerId = try await docker.run(spec)
                break
            } catch {
                fleet.images.forget(lease.image, on: docker.endpoint)
                fleet.networks.forget(on: docker.endpoint)
                // The container may exist although run failed (timeout, broken connection). An
                // engine that does not answer removes it when it answers again (or the pass
                // does); the lease does not wait for that.
                let name = lease.containerName(masterID: masterID)
                if await takeOutIfSilent(error, machine) {
                    Task { _ = try? await docker.remove(name) }
                    throw .from(error, machine: machine.name)
                }
                _ = try? await docker.remove(name)
                guard remembered else { throw .from(error, machine: machine.name) }
                logger.notice(
                    "docker run failed with an image this master remembered; asking the machine for it again",
                    metadata: ["image": "\(lease.image)", "machine": "\(machine.name)", "error": "\(error)"]
                )
            }
        }
        try await markRunning(&lease, docker: docker)
        return built
    }

    /// The one end of a creation that makes a lease `running`, only if it is still `creating`.
    /// A lease deleted meanwhile keeps nothing: its container goes, and the creator is told.
    private func markRunning(_ lease: inout Lease, docker: RemoteDocker) async throws(MasterError) {
        let finished: Bool
        do { finished = try await database.finishCreation(id: lease.id!, running: true, containerID: lease.containerId, message: nil) } catch {
            _ = try? await docker.remove(lease.containerName(masterID: masterID))
            throw .from(error)
        }
        guard finished else {
            _ = try? await docker.remove(lease.containerName(masterID: masterID))
            throw Self.deletedWhileCreated(lease)
        }
        lease.state = .running
        lease.message = nil
    }

    /// A machine whose engine stopped answering (its sshd still does) takes no lease from now
    /// on, here or in any master, until a pass finds its engine answering again. True if so.
    @discardableResult
    private func takeOutIfSilent(_ error: any Error, _ machine: Machine) async -> Bool {
        guard let error = error as? DockerError, case .engineNotAnswering = error else { return false }
        logger.warning("machine taken out of placement: its engine does not answer", metadata: ["machine": "\(machine.name)", "error": "\(error)"])
        try? await database.setMachineHealth(id: machine.id!, healthy: false, error: error.description, at: await database.clock())
        return true
    }

    /// What the creator of a lease deleted meanwhile is told (`error`: the store's, when its row
    /// was found gone; any other store error is said as it is).
    static func deletedWhileCreated(_ lease: Lease, _ error: (any Error)? = nil) -> MasterError {
        if let error {
            guard let store = error as? StoreError, case .notFound = store else { return .from(error) }
        }
        return MasterError(.conflict, "lease \(lease.name) was deleted while it was being created; nothing of it is left")
    }

    /// Marks the lease failed with the error's sentence and returns the error to throw.
    private func fail(_ lease: inout Lease, _ error: MasterError) async -> MasterError {
        lease.state = .failed
        lease.message = error.message
        // Only a lease still being created: one deleted meanwhile stays deleted.
        do { _ = try await database.finishCreation(id: lease.id!, running: false, containerID: lease.containerId, message: error.message) } catch {
            logger.error("could not mark a lease failed", metadata: ["lease": "\(lease.id ?? 0)", "error": "\(error)"])
        }
        logger.notice("lease failed", metadata: ["lease": "\(lease.name)", "error": "\(error)"])
        return error
    }

    /// Removes the lease's container, then its row. If the machine cannot be reached the lease
    /// stays `deleting` and the error says so; cleanup finishes it later.
    public func delete(_ listing: LeaseListing) async throws(MasterError) {
        var lease = listing.lease
        if let machineID = lease.machineId, lease.state != .failed || lease.containerId != nil {
            let machine: Machine?
            do {
                machine = try await database.machine(id: machineID)
                lease.state = .deleting
                lease.incarnationId = incarnationID
                try await database.updateLease(lease)
            } catch { throw .from(error) }
            if let machine {
                do { _ = try await fleet.docker(on: machine).remove(lease.containerName(masterID: masterID)) } catch {
                    throw .from(error, machine: machine.name)
                }
            }
        }
        do { try await database.deleteLease(id: lease.id!) } catch { throw .from(error) }
        jobs?.kick()  // its place may be what a queued job or lease waits for
    }

    /// Extends a lease to end `ttl` from now, capped at the maximum.
    /// Only a running lease is extended, and only its expiry is written: a lease a pass or its
    /// owner is deleting meanwhile stays deleted (409).
    public func extend(_ listing: LeaseListing, by ttl: Duration) async throws(MasterError) -> LeaseListing {
        let ttl = try lifetime(ttl)
        var listing = listing
        listing.lease.expiresAt = await database.clock() + TimeInterval(ttl.components.seconds)
        let extended: Bool
        do { extended = try await database.extendLease(id: listing.lease.id!, to: listing.lease.expiresAt) } catch { throw .from(error) }
        guard extended else {
            let state = (try? await database.lease(id: listing.lease.id!))?.state.rawValue ?? "gone"
            throw MasterError(.conflict, "lease \(listing.lease.name) is \(state), not running: only a running lease can be extended")
        }
        return listing
    }
}

extension LeaseSaga {
    /// Refuses what `create` would refuse before doing anything: bad names, an unknown resource.
    /// The streamed `POST /lease` asks this first, so that bad input is an ordinary error reply.
    @discardableResult
    public func check(resourceName: String, leaseName: String) async throws(MasterError) -> Resource {
        try InputRules.validateName(leaseName, "lease")
        try InputRules.validateName(resourceName, "resource")
        do {
            guard let found = try await database.resource(named: resourceName) else { throw MasterError(.notFound, "no resource \(resourceName)") }
            return found
        } catch { throw .from(error) }
    }

    /// A lifetime longer than the maximum is capped at it rather than refused: the longest lease
    /// the master allows is what such a request wants (the reply's message says so).
    func lifetime(_ ttl: Duration) throws(MasterError) -> Duration {
        guard ttl > .zero else { throw MasterError(.invalid, "a lease's lifetime must be positive") }
        return min(ttl, maxTTL)
    }

    /// What a reply adds when `requested` was more than the maximum.
    public func capNote(_ requested: Duration?) -> String {
        guard let requested, requested > maxTTL else { return "" }
        return " (\(TTL.format(requested)) asked; \(TTL.format(maxTTL)) is the longest this master allows)"
    }
}

/// Lease lifetimes as people write them: `90s`, `15m`, `2h`, `1d`.
public enum TTL {
    public static func parse(_ text: String) -> Duration? {
        guard let unit = text.last, let value = Int(text.dropLast()), value > 0, value < 1_000_000 else { return nil }
        switch unit {
        case "s": return .seconds(value)
        case "m": return .seconds(value * 60)
        case "h": return .seconds(value * 3600)
        case "d": return .seconds(value * 86400)
        default: return nil
        }
    }

    public static func format(_ duration: Duration) -> String {
        let seconds = duration.components.seconds
        if seconds % 86400 == 0 { return "\(seconds / 86400)d" }
        if seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }
}
