import Docker
import Foundation
import Logging
import Metrics
import SSH
import Store
import Synchronization

/// Commands run once in a new container of a resource (`resalloc run`), through the fair queue.
///
/// A job's command is its container's own process, so the job does not depend on the master
/// that started it: its output waits in the engine's log and its status in the container until
/// a master collects them (`docker logs --follow`, then `docker inspect`). A master killed
/// mid-job leaves the job `running` under a dead incarnation; a live master takes it over,
/// reads the log again from its start, and ends it as if nothing had happened.
///
/// The queue is the database: `queued` jobs and leases waiting with `--wait` (`queuedUntil`),
/// granted a place by whichever master dispatches (each grant is a conditional write, so no
/// job starts twice). A freed place goes to the waiting owner who holds the fewest containers,
/// oldest first within an owner.
public final class Jobs: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Output kept per job (`serve --job-log-max`); the rest is dropped with a note.
        public var logMax: Int64 = 16 << 20
        /// How long ended jobs stay listed (`serve --keep-jobs`).
        public var keep: Duration = .seconds(7 * 86400)
        public var defaultTTL: Duration = .seconds(3600)
        public var maxTTL: Duration = .seconds(7 * 86400)
        /// How long a job's container waits for the files its client copies in.
        public var inputWait: Duration = .seconds(120)
        /// How long an ended job's container is kept for its results to be copied out.
        public var keptFor: Duration = .seconds(600)
        /// Each user's limits where an admin set none (`serve --user-leases …`).
        public var userDefaults = UserLimits()
        /// Jobs one user may have waiting in the queue at once: the queue is rows in the
        /// database, and one user must not grow it without bound.
        public var maxQueuedPerUser = 1000

        public init() {}
    }

    let database: any Store
    let fleet: Fleet
    let limits: LimitPolicy
    let masterID: String
    let incarnationID: String
    let logger: Logger
    /// Fired on every change this process makes to a job or the queue.
    public let changes = ChangeSignal()
    private let state: Mutex<Settings>
    private let dispatching = Mutex((running: false, again: false))
    /// Jobs whose output this process is collecting now.
    private let collecting = Mutex(Set<Int64>())
    private let stopped = Mutex(false)
    /// Jobs a warm container did not take: the queue starts them cold from then on.
    private let coldOnly = Mutex(Set<Int64>())

    /// Whether the server is shutting down: followers of a log let go (their jobs go on).
    public var isStopping: Bool { stopped.withLock { $0 } }

    /// Lets followers of logs go, so that the server can drain (graceful shutdown).
    public func stop() {
        stopped.withLock { $0 = true }
        changes.fire()
    }

    /// The file whose appearance starts the command of a job that waits for its inputs.
    static let goFile = "/tmp/.resalloc-go"
    static let launcher = "while [ ! -e \(goFile) ]; do sleep 0.05; done; rm -f \(goFile); exec \"$@\""

    /// Refills the warm pools after a job took a warm container.
    let warmPool: WarmPool?

    init(database: any Store, fleet: Fleet, limits: LimitPolicy, masterID: String, incarnationID: String, logger: Logger, warmPool: WarmPool? = nil) {
        self.warmPool = warmPool
        self.database = database
        self.fleet = fleet
        self.limits = limits
        self.masterID = masterID
        self.incarnationID = incarnationID
        self.logger = logger
        state = Mutex(Settings())
    }

    public var settings: Settings {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }

    // MARK: - Submitting

    /// Queues `command` in a new container of `resourceName` for `owner` and asks the queue to
    /// place it. `inputs`: its container waits for files (`go`) before the command starts;
    /// `outputs`: its container is kept after the end for results to be copied out.
    public func submit(
        owner: User,
        resourceName: String,
        command: [String],
        name: String?,
        ttl: Duration?,
        inputs: Bool,
        outputs: Bool
    ) async throws(MasterError) -> JobListing {
        try InputRules.validateName(resourceName, "resource")
        if let name { try InputRules.validateName(name, "job") }
        guard !command.isEmpty, !command[0].isEmpty else { throw MasterError(.invalid, "say what to run: a command and its arguments") }
        guard command.allSatisfy({ !$0.utf8.contains(0) }) else { throw MasterError(.invalid, "an argument of the command contains a NUL byte") }
        guard command.reduce(0, { $0 + $1.utf8.count + 1 }) <= 128 * 1024 else {
            throw MasterError(.invalid, "the command is longer than 128 KiB; copy a script in with resalloc run -f instead")
        }
        let settings = settings
        let ttl = ttl ?? settings.defaultTTL
        guard ttl > .zero else { throw MasterError(.invalid, "a job's lifetime must be positive") }
        let resource: Resource
        do {
            guard let found = try await database.resource(named: resourceName) else { throw MasterError(.notFound, "no resource \(resourceName)") }
            resource = found
        } catch { throw .from(error) }
        let containerLimits = limits.limits(for: resource)
        var job = Job(
            ownerId: owner.id!,
            resourceId: resource.id!,
            image: ResourceCatalog.imageTag(for: resource),
            command: command,
            ttlSeconds: Int(min(ttl, settings.maxTTL).components.seconds),
            name: name,
            createdAt: await database.clock()
        )
        job.memoryBytes = containerLimits.placementMemory
        job.milliCPUs = containerLimits.placementCPUs
        job.awaitingInput = inputs
        job.keepsContainer = outputs
        let userLimits = owner.limits.over(settings.userDefaults)
        if let refusal = UserUse().refusal(adding: "job", memoryBytes: job.memoryBytes, milliCPUs: job.milliCPUs, limits: userLimits) {
            throw MasterError(.forbidden, "this job could never start: \(refusal)")
        }
        do {
            let waiting = try await database.jobListings(ownerID: owner.id!, id: nil, activeOnly: true).count { $0.job.state == .queued }
            guard waiting < settings.maxQueuedPerUser else {
                throw MasterError(
                    .tooManyRequests,
                    "you have \(waiting) jobs waiting in the queue, as many as one user may; cancel some or wait for them to start",
                    retryAfter: 30
                )
            }
            job = try await database.createJob(job)
        } catch { throw .from(error) }
        Counter(label: "resalloc_jobs_submitted_total").increment()
        changes.fire()
        await dispatch()  // placed at once when there is room: the reply says so
        do {
            return try await database.jobListings(ownerID: nil, id: job.id!, activeOnly: false).first
                ?? JobListing(job: job, owner: owner.name, resource: resource.name, machine: nil)
        } catch {
            throw .from(error)
        }
    }

    /// Runs the queue in the background.
    public func kick() { Task { await self.dispatch() } }

    // MARK: - The fair queue

    /// Gives free places to waiting jobs and leases, fairly, until none fits. One run at a
    /// time per process; a call during a run makes it run once more.
    public func dispatch() async {
        let first = dispatching.withLock { state in
            if state.running {
                state.again = true
                return false
            }
            state = (true, false)
            return true
        }
        guard first else { return }
        while true {
            await dispatchOnce()
            let again = dispatching.withLock { state in
                if state.again {
                    state.again = false
                    return true
                }
                state.running = false
                return false
            }
            guard again else { return }
        }
    }

    /// A job or a lease waiting for a place.
    struct Waiting: Sendable {
        enum Kind: Sendable {
            case job(Job)
            case lease(Lease)
        }
        var kind: Kind
        var ownerID: Int64
        var createdAt: Date
        var id: Int64
        var memoryBytes: Int64
        var milliCPUs: Int

        var image: String {
            switch kind {
            case .job(let job): return job.image
            case .lease(let lease): return lease.image
            }
        }

        var what: String {
            if case .lease = kind { return "lease" }
            return "job"
        }
    }

    /// The queue in the order it is served: the owner holding the fewest containers first
    /// (counting each grant as it is made), oldest first within an owner.
    static func order(_ waiting: [Waiting], uses: [Int64: UserUse]) -> [Waiting] {
        var byOwner = Dictionary(grouping: waiting.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }, by: \.ownerID)
        var held = uses.mapValues { $0.jobs + $0.leases }
        var ordered: [Waiting] = []
        while let owner = byOwner.keys.min(by: { a, b in
            let (heldA, heldB) = (held[a, default: 0], held[b, default: 0])
            if heldA != heldB { return heldA < heldB }
            let (firstA, firstB) = (byOwner[a]![0], byOwner[b]![0])
            return (firstA.createdAt, firstA.id) < (firstB.createdAt, firstB.id)
        }) {
            ordered.append(byOwner[owner]!.removeFirst())
            if byOwner[owner]!.isEmpty { byOwner[owner] = nil }
            held[owner, default: 0] += 1
        }
        return ordered
    }

    /// Each waiting one's place in the queue (1 is next), by job id and by lease id.
    public func places() async -> (jobs: [Int64: Int], leases: [Int64: Int]) {
        guard let (waiting, uses, _) = try? await snapshot() else { return ([:], [:]) }
        var places: (jobs: [Int64: Int], leases: [Int64: Int]) = ([:], [:])
        for (index, item) in Self.order(waiting, uses: uses).enumerated() {
            switch item.kind {
            case .job(let job): places.jobs[job.id!] = index + 1
            case .lease(let lease): places.leases[lease.id!] = index + 1
            }
        }
        return places
    }

    private func snapshot() async throws -> ([Waiting], [Int64: UserUse], [Int64: User]) {
        let jobs = try await database.jobListings(ownerID: nil, id: nil, activeOnly: true).map(\.job).filter { $0.state == .queued }
        let leases = try await database.queuedLeases()
        guard !jobs.isEmpty || !leases.isEmpty else { return ([], [:], [:]) }
        let waiting =
            jobs.map {
                Waiting(
                    kind: .job($0),
                    ownerID: $0.ownerId,
                    createdAt: $0.createdAt,
                    id: $0.id!,
                    memoryBytes: $0.memoryBytes,
                    milliCPUs: $0.milliCPUs
                )
            }
            + leases.map {
                Waiting(
                    kind: .lease($0),
                    ownerID: $0.ownerId,
                    createdAt: $0.createdAt,
                    id: $0.id!,
                    memoryBytes: $0.memoryBytes,
                    milliCPUs: $0.milliCPUs
                )
            }
        let users = Dictionary(try await database.users().map { ($0.id!, $0) }, uniquingKeysWith: { a, _ in a })
        return (waiting, try await database.userUses(), users)
    }

    private func dispatchOnce() async {
        do {
            let (waiting, startUses, users) = try await snapshot()
            guard !waiting.isEmpty else { return }
            var uses = startUses
            let machines = try await database.machines()
            let pooled = Set(try await database.resources().filter { $0.poolSize > 0 }.map { $0.id! })
            var loads = try await database.machineLoads()
            let overcommit = limits.cpuOvercommit
            let defaults = settings.userDefaults
            var atLimit: Set<Int64> = []
            for item in Self.order(waiting, uses: startUses) where !atLimit.contains(item.ownerID) {
                let userLimits = (users[item.ownerID]?.limits ?? UserLimits()).over(defaults)
                if uses[item.ownerID, default: UserUse()].refusal(
                    adding: item.what,
                    memoryBytes: item.memoryBytes,
                    milliCPUs: item.milliCPUs,
                    limits: userLimits
                ) != nil {
                    atLimit.insert(item.ownerID)  // the owner's later ones wait behind it
                    continue
                }
                // A warm container of its resource first: it holds its place already.
                if case .job(let job) = item.kind, pooled.contains(job.resourceId), !job.awaitingInput,
                    !coldOnly.withLock({ $0.contains(job.id!) }),
                    let slot = try await database.claimPoolSlot(
                        forJob: job.id!,
                        image: job.image,
                        resourceID: job.resourceId,
                        incarnationID: incarnationID,
                        at: await database.clock()
                    ),
                    let machine = machines.first(where: { $0.id == slot.machineId })
                {
                    Timer(label: "resalloc_job_queue_wait_seconds").recordSeconds(Date().timeIntervalSince(job.createdAt))
                    Task { await self.start(job.id!, on: machine, slot: slot) }
                    uses[item.ownerID, default: UserUse()].jobs += 1
                    uses[item.ownerID]!.memoryBytes += item.memoryBytes
                    uses[item.ownerID]!.milliCPUs += item.milliCPUs
                    changes.fire()
                    continue
                }
                let order = Placement.candidates(
                    machines,
                    loads: loads,
                    memoryBytes: item.memoryBytes,
                    milliCPUs: item.milliCPUs,
                    cpuOvercommit: overcommit
                )
                .preferring(item.image, fleet: fleet)
                guard !order.isEmpty else { continue }
                let placed: Machine?
                switch item.kind {
                case .job(let job):
                    placed = try await database.placeJob(
                        id: job.id!,
                        on: order.map { $0.id! },
                        cpuOvercommit: overcommit,
                        incarnationID: incarnationID,
                        at: await database.clock()
                    )
                    if let placed {
                        Timer(label: "resalloc_job_queue_wait_seconds").recordSeconds(Date().timeIntervalSince(job.createdAt))
                        Task { await self.start(job.id!, on: placed) }
                    }
                case .lease(let lease):
                    placed = try await database.placeLease(lease, on: order.map { $0.id! }, cpuOvercommit: overcommit)
                }
                guard placed != nil else { continue }
                if case .lease = item.kind {
                    uses[item.ownerID, default: UserUse()].leases += 1
                } else {
                    uses[item.ownerID, default: UserUse()].jobs += 1
                }
                uses[item.ownerID]!.memoryBytes += item.memoryBytes
                uses[item.ownerID]!.milliCPUs += item.milliCPUs
                loads = try await database.machineLoads()
                changes.fire()
            }
        } catch {
            logger.warning("the job queue could not be served", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Starting and collecting

    /// Starts a job the queue placed on `machine`: the image and the owner's network, then the
    /// container with the command as its process; then collects it, unless it waits for inputs.
    func start(_ id: Int64, on machine: Machine, slot: PoolSlot? = nil) async {
        guard var job = try? await database.job(id: id), job.state == .starting else { return }
        let docker = fleet.docker(on: machine)
        let name = job.containerName(masterID: masterID)
        var attached: RemoteProcess?
        var fromWarm = false
        if let slot {
            defer { warmPool?.wakeAfterJobHandout() }
            guard let process = await startInWarm(&job, slot: slot, on: machine) else { return }
            attached = process
            fromWarm = true
        } else {
            do {
                attached = try await startCold(&job, on: machine)
            } catch {
                await end(&job, .failed, message: "could not start: \(MasterError.from(error).message)", removing: nil)
                return
            }
        }
        if !job.awaitingInput { job.state = .running }
        guard (try? await database.updateJob(job, expecting: [.starting])) == true else {
            attached?.close()
            _ = try? await docker.remove(name)  // cancelled meanwhile
            return
        }
        changes.fire()
        if job.state == .running { await collect(job, on: machine, attached: attached, fromWarm: fromWarm) }
    }

    /// Hands the job a warm container: its command written to the container's waiting main
    /// process, the container renamed to the job's and moved to its owner's network, in one
    /// round trip that then carries the command's output and status. Nil when that could not be
    /// started: the container is discarded and the job is back in the queue (unless it was
    /// cancelled meanwhile).
    private func startInWarm(_ job: inout Job, slot: PoolSlot, on machine: Machine) async -> RemoteProcess? {
        let docker = fleet.docker(on: machine)
        let name = job.containerName(masterID: masterID)
        do {
            var joining: String?
            var leaving: String?
            if limits.ownerNetworks {
                let network = OwnerNetworks.owner(job.ownerId, masterID: masterID)
                try await docker.ensureNetwork(network, cache: fleet.networks)
                (joining, leaving) = (network.name, OwnerNetworks.pool(masterID: masterID).name)
            }
            if let containerID = slot.containerId {
                let process = try await docker.handOff(
                    slot.containerName(masterID: masterID),
                    id: containerID,
                    as: name,
                    command: job.arguments,
                    marker: JobEndMarker(jobID: job.id!),
                    joining: joining,
                    leaving: leaving
                )
                try? await database.deletePoolSlot(id: slot.id!)
                job.containerId = containerID
                return process
            }
        } catch {
            fleet.networks.forget(on: docker.endpoint)
            logger.warning("job from the pool: the handout failed", metadata: ["machine": "\(machine.name)", "error": "\(error)"])
        }
        _ = try? await docker.remove([slot.containerName(masterID: masterID), name])
        try? await database.deletePoolSlot(id: slot.id!)
        coldOnly.withLock { _ = $0.insert(job.id!) }
        await requeue(&job)
        return nil
    }

    /// Puts a job that could not start where it was given back in the queue.
    private func requeue(_ job: inout Job) async {
        let expected = job.state
        job.state = .queued
        job.machineId = nil
        job.containerId = nil
        job.incarnationId = nil
        job.startedAt = nil
        _ = try? await database.updateJob(job, expecting: [expected])
        kick()
    }

    /// Builds the image if the machine lacks it and starts a container with the command as its
    /// own process (behind the launcher that waits for the inputs, if it has any).
    /// Returns the attached `docker run` of a job that waits for nothing (its output comes
    /// through it); nil for one that waits for its inputs (started detached).
    private func startCold(_ job: inout Job, on machine: Machine) async throws -> RemoteProcess? {
        let docker = fleet.docker(on: machine)
        let name = job.containerName(masterID: masterID)
        guard let resource = try await database.resources().first(where: { $0.id == job.resourceId }) else {
            throw MasterError(.notFound, "its resource was deleted")
        }
        let network = limits.ownerNetworks ? OwnerNetworks.owner(job.ownerId, masterID: masterID) : nil
        do {
            if let network { try await docker.ensureNetwork(network, cache: fleet.networks) }
            _ = try await docker.ensureImage(
                job.image,
                dockerfile: Array(resource.dockerfile),
                labels: ["resalloc.master": masterID],
                cache: fleet.images,
                builds: fleet.builds
            )
        } catch { throw MasterError.from(error, machine: machine.name) }
        let spec = ContainerSpec(
            name: name,
            image: job.image,
            labels: ["resalloc.job": String(job.id!), "resalloc.master": masterID],
            command: job.awaitingInput ? ["sh", "-c", Self.launcher, "resalloc-job"] + job.arguments : job.arguments,
            limits: limits.limits(for: resource),
            network: network?.name
        )
        do {
            if job.awaitingInput {
                job.containerId = try await docker.run(spec)
                return nil
            }
            let process = try await docker.runAttached(spec)
            job.containerId = name  // its engine id is not asked for: the name is what is used
            return process
        } catch {
            fleet.images.forget(job.image, on: docker.endpoint)
            _ = try? await docker.remove(name)
            throw MasterError.from(error, machine: machine.name)
        }
    }

    /// Starts the command of a job whose container waited for its inputs.
    public func go(_ listing: JobListing) async throws(MasterError) -> JobListing {
        var job = listing.job
        guard job.state == .starting, job.awaitingInput, job.containerId != nil, let machineID = job.machineId else {
            throw MasterError(.conflict, "job \(job.id!) is \(job.state.rawValue) and not waiting for its inputs")
        }
        let machine: Machine
        do {
            guard let found = try await database.machine(id: machineID) else { throw MasterError(.notFound, "the job's machine is gone") }
            machine = found
        } catch { throw .from(error) }
        let docker = fleet.docker(on: machine)
        do {
            let result = try await docker.exec(job.containerName(masterID: masterID), ["touch", Self.goFile])
            guard result.succeeded else { throw MasterError(.unprocessable, "the job's container could not be told to start: \(result.stderrText)") }
        } catch { throw .from(error, machine: machine.name) }
        job.awaitingInput = false
        job.state = .running
        job.incarnationId = incarnationID
        do {
            guard try await database.updateJob(job, expecting: [.starting]) else {
                throw MasterError(.conflict, "job \(job.id!) ended while its inputs were copied")
            }
        } catch { throw .from(error) }
        changes.fire()
        Task { await self.collect(job, on: machine) }
        var started = listing
        started.job = job
        return started
    }

    /// Follows the job's output into its log until its container stops, then ends the job
    /// with its status. Keeps at most `logMax` of output.
    /// `attached`: the `docker run` that started it, whose output comes first (its docker
    /// client's warnings left out).
    /// `fromWarm`: that process is a warm container's handout (`RemoteDocker.handOff`).
    func collect(_ job: Job, on machine: Machine, attached: RemoteProcess? = nil, fromWarm: Bool = false) async {
        let id = job.id!
        guard collecting.withLock({ $0.insert(id).inserted }) else {
            attached?.close()
            return
        }
        defer { _ = collecting.withLock { $0.remove(id) } }
        let docker = fleet.docker(on: machine)
        let name = job.containerName(masterID: masterID)
        var job = job
        var attempts = 0
        var attached = attached
        while true {
            let process: RemoteProcess
            let fromRun = attached != nil
            if let first = attached {
                process = first
                attached = nil
            } else {
                do { process = try await docker.followLogs(name) } catch {
                    // Every channel busy, or the machine away for a moment: the container runs on.
                    attempts += 1
                    if attempts < 30, (try? await database.job(id: id))?.state == .running {
                        try? await Task.sleep(for: .seconds(1))
                        continue
                    }
                    logger.warning("could not follow a job's output", metadata: ["job": "\(id)", "error": "\(error)"])
                    return  // the passes try again
                }
            }
            if let said = await record(process, of: id, skippingDockerWarnings: fromRun && !fromWarm) {
                // Its command said how it ended, after all its output (a warm container's job),
                // and its container waits: stopped when kept, else removed, as a cold job's would
                // be (a success said first, the container removed just after), without waiting
                // for the engine to see an exit.
                process.close()
                if said == 0 {
                    await self.end(&job, .succeeded, status: 0, message: nil, removing: docker, stopping: true)
                } else {
                    // Killed (137): the engine tells whether its memory limit did it only once
                    // the container has exited.
                    let container = job.containerId ?? name
                    var outOfMemory = false
                    if said == 137 {
                        _ = try? await docker.run(["kill", container])
                        _ = try? await docker.run(["wait", container])
                        outOfMemory = (try? await docker.end(of: container))?.oomKilled == true
                    }
                    let message = Self.failure(said, outOfMemory: outOfMemory, of: job)
                    await self.end(&job, .failed, status: said, message: message, removing: docker, stopping: job.keepsContainer)
                }
                return
            }
            let exited = try? await process.exitStatus()
            if fromRun, fromWarm, exited == 254, (try? await database.job(id: id))?.logBytes == 0 {
                // The warm container did not take the command (it had stopped): a cold start.
                coldOnly.withLock { _ = $0.insert(id) }
                logger.notice("job from the pool: the warm container did not take its command", metadata: ["machine": "\(machine.name)"])
                _ = try? await docker.remove(name)
                await requeue(&job)
                return
            }
            if fromRun, !fromWarm, exited == 0, !job.keepsContainer {
                // It exited 0: said at once, its container removed just after (as docker run --rm).
                await self.end(&job, .succeeded, status: 0, message: nil, removing: docker, stopping: true)
                return
            }
            let end: ContainerEnd?
            do { end = try await docker.end(of: name) } catch {
                logger.warning("could not read how a job ended", metadata: ["job": "\(id)", "error": "\(error)"])
                return  // the passes try again
            }
            guard let end else {
                if fromRun, exited == 125 {
                    // docker run could not make it (the image gone behind the master's back?).
                    fleet.images.forget(job.image, on: docker.endpoint)
                    await self.end(&job, .failed, message: "could not start: docker run failed on \(machine.name) (see its output)", removing: nil)
                    return
                }
                await self.end(&job, .lost, message: "its container disappeared from \(machine.name)", removing: nil)
                return
            }
            if end.status == "running" || end.status == "created" || end.status == "paused" || end.status == "restarting" {
                // The stream broke, not the job: read the log again from its start.
                guard (try? await database.job(id: id))?.state == .running else { return }
                try? await database.clearJobLog(jobID: id)
                attempts += 1
                if attempts >= 30 { return }
                continue
            }
            if end.exitCode == 0 && !end.oomKilled {
                await self.end(&job, .succeeded, status: 0, message: nil, removing: docker)
            } else {
                let message = !end.error.isEmpty ? "could not start: \(end.error)" : Self.failure(end.exitCode, outOfMemory: end.oomKilled, of: job)
                await self.end(&job, .failed, status: end.exitCode, message: message, removing: docker)
            }
            return
        }
    }

    /// Why a job failed, as its state's message.
    static func failure(_ status: Int, outOfMemory: Bool, of job: Job) -> String {
        guard outOfMemory else { return "exited with status \(status)" }
        return "killed: it ran out of memory" + (job.memoryBytes > 0 ? " (its limit is \(ByteSize.format(job.memoryBytes)))" : "")
    }

    /// Writes the process's output to the job's log, a batch at least every 100 ms, until it
    /// ends, or until both its streams have said the command's status with a `JobEndMarker`
    /// (taken off the log): then returns that status, without waiting for the process's end.
    private func record(_ process: RemoteProcess, of id: Int64, skippingDockerWarnings: Bool = false) async -> Int? {
        var scanners = [JobEndScanner(JobEndMarker(jobID: id)), JobEndScanner(JobEndMarker(jobID: id))]
        var warnings = skippingDockerWarnings ? [UInt8]() : nil  // stderr held while it may be docker's warnings
        enum Event: Sendable {
            case output(OutputChunk)
            case tick
        }
        let (events, sink) = AsyncStream.makeStream(of: Event.self)
        let reader = Task {
            for await chunk in process.output { sink.yield(.output(chunk)) }
            sink.finish()
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                sink.yield(.tick)
            }
        }
        defer {
            reader.cancel()
            ticker.cancel()
        }
        let logMax = settings.logMax
        var kept = (try? await database.job(id: id))?.logBytes ?? 0
        var pending: [JobLogChunk] = []
        var pendingBytes = 0
        var cut = false
        func flush() async {
            guard !pending.isEmpty else { return }
            do { try await database.appendJobLog(pending) } catch {
                logger.warning("could not write a job's output", metadata: ["job": "\(id)", "error": "\(error)"])
            }
            process.consumed(pendingBytes)
            pending = []
            pendingBytes = 0
            changes.fire()
        }
        var said: Int? {
            guard let out = scanners[0].status, scanners[1].status != nil else { return nil }
            return out
        }
        func keep(_ stream: Int, _ given: [UInt8]) {
            var bytes = given
            guard !bytes.isEmpty else { return }
            // `docker run` prints its warnings (`WARNING: …` lines) on stderr before any of
            // the container's output: whole such lines at the start are left out.
            if var held = warnings {
                if stream == 2 {
                    held += bytes
                    let rest = Self.dropDockerWarnings(&held)
                    guard !rest.isEmpty else {
                        warnings = held  // warnings dropped, or not yet known to be one
                        return
                    }
                    warnings = nil
                    bytes = rest
                } else {
                    // The container's stdout: what stderr held was its own.
                    warnings = nil
                    if !held.isEmpty { pending.append(JobLogChunk(jobId: id, stream: 2, data: Data(held))) }
                }
            }
            guard !cut else { return }
            let room = Int(max(0, logMax - kept))
            let taken = bytes.prefix(room)
            if !taken.isEmpty {
                if let last = pending.last, last.stream == stream, last.data.count < 64 * 1024 {
                    pending[pending.count - 1].data.append(contentsOf: taken)
                } else {
                    pending.append(JobLogChunk(jobId: id, stream: stream, data: Data(taken)))
                }
                kept += Int64(taken.count)
            }
            if taken.count < bytes.count {
                cut = true
                let note = "\n[resalloc: the output was cut at \(ByteSize.format(logMax)) (serve --job-log-max); the rest is not kept]\n"
                pending.append(JobLogChunk(jobId: id, stream: 2, data: Data(note.utf8)))
            }
        }
        for await event in events {
            switch event {
            case .tick:
                await flush()
            case .output(let chunk):
                let (stream, bytes): (Int, [UInt8]) =
                    switch chunk {
                    case .stdout(let bytes): (1, bytes)
                    case .stderr(let bytes): (2, bytes)
                    }
                pendingBytes += bytes.count
                keep(stream, scanners[stream - 1].feed(bytes))
                if let said {
                    await flush()
                    return said
                }
                if pendingBytes >= 256 * 1024 { await flush() }
            }
        }
        keep(1, scanners[0].finish())
        keep(2, scanners[1].finish())
        await flush()
        return said
    }

    /// Takes whole `WARNING: ` lines off the front of `held` and returns what follows them once
    /// something else has come (then `held` is emptied); returns nothing while `held` may still be
    /// (the start of) such a line.
    static func dropDockerWarnings(_ held: inout [UInt8]) -> [UInt8] {
        let prefix = Array("WARNING: ".utf8)
        while true {
            if held.isEmpty { return [] }
            let start = Array(held.prefix(prefix.count))
            guard start == Array(prefix.prefix(start.count)) else { break }
            if start.count < prefix.count { return [] }  // too short to tell yet
            guard let newline = held.firstIndex(of: UInt8(ascii: "\n")) else { return [] }
            held.removeSubrange(...newline)
        }
        defer { held = [] }
        return held
    }

    /// Ends a job in `state` (if it is still starting or running) and removes its container
    /// with `docker`, unless it is kept for its results.
    /// `stopping`: its container may still run (past its lifetime): a kept one is killed, and one
    /// that is not kept is removed after the job's end is written, not before.
    private func end(
        _ job: inout Job,
        _ state: Job.State,
        status: Int? = nil,
        message: String?,
        removing docker: RemoteDocker?,
        stopping: Bool = false
    ) async {
        let id = job.id!
        if let current = try? await database.job(id: id) { job.containerId = current.containerId }
        job.state = state
        job.exitStatus = status
        job.message = message
        job.endedAt = await database.clock()
        job.awaitingInput = false
        let keep = job.keepsContainer && state != .lost && docker != nil
        if docker == nil { job.containerRemoved = true }
        // By its engine id when known: a warm container's rename to the job's name may still be
        // under way when a short command has ended.
        let name = job.containerId ?? job.containerName(masterID: masterID)
        // A job that ended by itself is over for its client once its container is gone too, as
        // with docker run --rm; one stopped from outside is marked first, so that its collector,
        // seeing the container go, does not end it otherwise.
        if let docker, !keep, !stopping, (try? await docker.remove(name)) != nil { job.containerRemoved = true }
        guard (try? await database.updateJob(job, expecting: [.starting, .running])) == true else { return }
        Counter(label: "resalloc_jobs_ended_total", dimensions: [("state", state.rawValue)]).increment()
        logger.info("job ended", metadata: ["job": "\(id)", "state": "\(state.rawValue)", "status": "\(status.map(String.init) ?? "-")"])
        changes.fire()
        kick()
        if let docker, keep, stopping {
            _ = try? await docker.run(["kill", name])
        } else if let docker, !keep, !job.containerRemoved {
            if (try? await docker.remove(name)) != nil {
                job.containerRemoved = true
                _ = try? await database.updateJob(job, expecting: [state])
            }
        }
    }

    // MARK: - Cancelling

    /// Cancels a job that has not ended, removing its container at once; for one that ended
    /// with its container kept for results, removes that container (the results were taken).
    public func cancel(_ listing: JobListing, by caller: User) async throws(MasterError) -> JobListing {
        var job = listing.job
        let machine: Machine?
        do { machine = try await job.machineId.asyncMap { try await database.machine(id: $0) } ?? nil } catch { throw .from(error) }
        if !job.state.ended {
            let previous = job.state
            job.state = .cancelled
            job.endedAt = await database.clock()
            job.message = "cancelled by \(caller.name)"
            job.awaitingInput = false
            do {
                guard try await database.updateJob(job, expecting: [.queued, .starting, .running]) else {
                    return try await fresh(listing)  // it ended meanwhile
                }
            } catch { throw .from(error) }
            Counter(label: "resalloc_jobs_ended_total", dimensions: [("state", "cancelled")]).increment()
            changes.fire()
            kick()
            if previous == .queued { return try await fresh(listing) }
        }
        if let machine, !job.containerRemoved {
            let docker = fleet.docker(on: machine)
            let name = job.containerName(masterID: masterID)
            do {
                // A job is running once its attached `docker run` is under way, and a loaded
                // engine may make the container only after this first remove found none: while
                // this master still follows that run, remove again until it has ended.
                var removed = try await docker.remove(name)
                let deadline = ContinuousClock.now + .seconds(30)
                while !removed, collecting.withLock({ $0.contains(job.id!) }), ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(200))
                    removed = try await docker.remove(name)
                }
            } catch {
                throw .from(error, machine: machine.name)
            }
            job.containerRemoved = true
            do { _ = try await database.updateJob(job, expecting: [job.state]) } catch { throw .from(error) }
        }
        return try await fresh(listing)
    }

    private func fresh(_ listing: JobListing) async throws(MasterError) -> JobListing {
        do {
            return try await database.jobListings(ownerID: nil, id: listing.job.id!, activeOnly: false).first ?? listing
        } catch { throw .from(error) }
    }

    // MARK: - Looking after jobs

    /// What `serve` does every few seconds: takes over jobs whose master died, ends jobs past
    /// their lifetime or whose inputs never came, removes containers kept too long for their
    /// results, and forgets jobs ended longer ago than `keep`.
    /// `now`: the database's clock.
    public func tend(now: Date) async {
        let settings = settings
        guard let listings = try? await database.jobListings(ownerID: nil, id: nil, activeOnly: false),
            let machines = try? await database.machines()
        else { return }
        let active = listings.filter { !$0.job.state.ended || (!$0.job.containerRemoved && $0.job.containerId != nil) }
        let byID = Dictionary(machines.map { ($0.id!, $0) }, uniquingKeysWith: { a, _ in a })
        let incarnations = Incarnations(rows: (try? await database.incarnations()) ?? [], current: incarnationID, now: now)
        for listing in active {
            var job = listing.job
            guard let machineID = job.machineId, let machine = byID[machineID] else { continue }
            let docker = fleet.docker(on: machine)
            if job.state == .running || job.state == .starting {
                if let started = job.startedAt, now.timeIntervalSince(started) > Double(job.ttlSeconds) {
                    let lifetime = TTL.format(.seconds(job.ttlSeconds))
                    await end(&job, .timedOut, message: "still running after its lifetime of \(lifetime)", removing: docker, stopping: true)
                    continue
                }
                if job.state == .starting, job.awaitingInput, job.containerId != nil, let started = job.startedAt,
                    now.timeIntervalSince(started) > Double(settings.inputWait.components.seconds)
                {
                    job.keepsContainer = false
                    await end(&job, .failed, message: "its inputs were not copied in within \(TTL.format(settings.inputWait))", removing: docker)
                    continue
                }
                let mine = job.incarnationId == incarnationID
                let orphaned = !mine && incarnations.isGone(job.incarnationId) == true
                let uncollected = mine && !collecting.withLock { $0.contains(job.id!) }
                if job.state == .running, uncollected || orphaned {
                    if orphaned {
                        let taken = (try? await database.takeOverJob(id: job.id!, from: job.incarnationId, to: incarnationID)) == true
                        guard taken else { continue }
                    }
                    logger.notice("collecting a job another master left", metadata: ["job": "\(job.id!)"])
                    try? await database.clearJobLog(jobID: job.id!)
                    job.incarnationId = incarnationID
                    Task { await self.collect(job, on: machine) }
                } else if job.state == .starting, orphaned, !job.awaitingInput || job.containerId == nil {
                    job.keepsContainer = false
                    await end(&job, .failed, message: "the master stopped while starting it", removing: docker)
                }
            } else if !job.containerRemoved, job.containerId != nil, let ended = job.endedAt,
                now.timeIntervalSince(ended) > (job.keepsContainer ? Double(settings.keptFor.components.seconds) : 5)
            {
                if (try? await docker.remove(job.containerId ?? job.containerName(masterID: masterID))) != nil {
                    job.containerRemoved = true
                    _ = try? await database.updateJob(job, expecting: [job.state])
                }
            }
        }
        _ = try? await database.purgeJobs(endedBefore: now - TimeInterval(settings.keep.components.seconds))
        let queued = active.filter { $0.job.state == .queued }.count
        Gauge(label: "resalloc_job_queue_length").record(queued)
        for state in Job.State.allCases where !state.ended {
            Gauge(label: "resalloc_jobs", dimensions: [("state", state.rawValue)]).record(active.filter { $0.job.state == state }.count)
        }
    }

    /// The container names of jobs on `machineID` that must stay (not yet ended, or kept for
    /// their results), for the passes' orphan check.
    public func containersInUse(on machineID: Int64) async throws -> Set<String> {
        let jobs = try await database.jobListings(ownerID: nil, id: nil, activeOnly: false).map(\.job)
        return Set(
            jobs.filter { $0.machineId == machineID && (!$0.state.ended || ($0.keepsContainer && !$0.containerRemoved)) }.map {
                $0.containerName(masterID: masterID)
            }
        )
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
