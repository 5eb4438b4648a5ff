import Foundation
import Logging

/// What resalloc keeps, as named operations: users and their tokens and keys, resources,
/// machines, leases, warm slots, incarnations and the audit trail. Two engines implement it with
/// the same schema versions and the same answers: `AppDatabase` (GRDB on a SQLite file, the
/// embedded default) and `PostgresStore` (postgres-nio, for several masters on one database).
/// Failures a person can act on are `StoreError`s, whichever the engine.
public protocol Store: Sendable {
    // Users and tokens
    func createUser(name: String, passwordHash: String) async throws -> User
    func user(named name: String) async throws -> User?
    func users() async throws -> [User]
    func updateUser(named name: String, status: User.Status?, role: User.Role?) async throws -> User
    func setUserDisabled(named name: String, _ disabled: Bool) async throws -> User
    func purgeTokens(expiredBefore date: Date) async throws -> Int
    func createToken(userID: Int64, hash: String, expiresAt: Date) async throws
    func user(forTokenHash hash: String, at now: Date) async throws -> User?
    func deleteToken(hash: String) async throws -> Bool

    // Resources
    func createResource(name: String, dockerfile: Data) async throws -> Resource
    func resources() async throws -> [Resource]
    func resource(named name: String) async throws -> Resource?
    func setPoolSize(resourceNamed name: String, to size: Int) async throws -> Resource
    func setLimits(resourceNamed name: String, to limits: ResourceLimits) async throws -> Resource
    func updateDockerfile(resourceNamed name: String, to dockerfile: Data) async throws -> Resource
    /// How long the resource's leases may go without a session (nil: never).
    func setIdle(resourceNamed name: String, to seconds: Int?) async throws -> Resource
    func deleteResource(named name: String) async throws

    // Machines
    func createMachine(_ machine: Machine) async throws -> Machine
    func machines() async throws -> [Machine]
    func machine(named name: String) async throws -> Machine?
    func machine(id: Int64) async throws -> Machine?
    func setMachineHealth(id: Int64, healthy: Bool, error: String?, at now: Date) async throws
    func deleteMachine(id: Int64) async throws
    /// Active leases and warm containers per machine id, with the sums of their limits.
    func machineLoads() async throws -> [Int64: MachineLoad]

    // Leases
    func createLease(_ lease: Lease) async throws -> Lease
    func updateLease(_ lease: Lease) async throws
    /// Sets a `running` lease's expiry; false, changing nothing, when it is not running (being
    /// deleted, failed, gone): an extension never puts a lease back from `deleting`.
    func extendLease(id: Int64, to expiresAt: Date) async throws -> Bool
    /// Ends a lease's creation, `running` on `containerID` or `failed` with `message`, only if it
    /// is still `creating`: a lease deleted meanwhile (or claimed by a pass) is left as it is.
    /// True if written; both engines answer a missing row with false.
    func finishCreation(id: Int64, running: Bool, containerID: String?, message: String?) async throws -> Bool
    /// Moves a lease from `expected` to `state` with `message`, and nothing else of its row: one
    /// that changed state meanwhile (or is gone) is left as it is. True if written.
    func setLeaseState(id: Int64, expecting expected: Lease.State, to state: Lease.State, message: String?) async throws -> Bool
    /// Marks a lease `deleting` by `incarnationID` if it is still expired at `now` (not extended
    /// meanwhile) and not being deleted already; false, changing nothing, otherwise.
    func claimExpiredLease(id: Int64, at now: Date, incarnationID: String?) async throws -> Bool
    func deleteLease(id: Int64) async throws
    func lease(id: Int64) async throws -> Lease?
    func leaseListings(ownerID: Int64?, name: String?, machineID: Int64?) async throws -> [LeaseListing]
    func leaseListing(ownerID: Int64, name: String) async throws -> LeaseListing?
    /// Puts the lease on the first of `machineIDs`, in that order, that is healthy and has room
    /// (`MachineLoad.refusal`: below its capacity, its memory and its CPUs × `cpuOvercommit`),
    /// deciding and writing at once, so that placements racing on any number of masters never
    /// fill a machine past its room; nil when none has room.
    func placeLease(_ lease: Lease, on machineIDs: [Int64], cpuOvercommit: Double) async throws -> Machine?

    /// Leases waiting in the fair queue for a place, oldest first.
    func queuedLeases() async throws -> [Lease]
    /// Fails a lease whose wait ended, unless the queue gave it a place meanwhile (then false).
    func abandonQueuedLease(id: Int64, message: String) async throws -> Bool
    /// Records that the leases had a session open at `now` (for `idleSeconds`).
    func touchLeases(ids: [Int64], at now: Date) async throws

    // Jobs
    func createJob(_ job: Job) async throws -> Job
    func job(id: Int64) async throws -> Job?
    func jobListings(ownerID: Int64?, id: Int64?, activeOnly: Bool) async throws -> [JobListing]
    /// Puts a `queued` job on the first of `machineIDs` with room, as `placeLease` does, and
    /// marks it `starting` by `incarnationID`; nil when it is no longer queued or none has room.
    func placeJob(id: Int64, on machineIDs: [Int64], cpuOvercommit: Double, incarnationID: String, at now: Date) async throws -> Machine?
    /// Claims the oldest ready warm container of `image` with the job's limits, on a healthy
    /// machine, for a `queued` job, and marks the job `starting` there, in one transaction.
    func claimPoolSlot(forJob id: Int64, image: String, resourceID: Int64, incarnationID: String, at now: Date) async throws -> PoolSlot?
    /// Writes `job` (all but its log's size) if its row is still in one of `states`; false,
    /// changing nothing, otherwise (cancelled meanwhile, or gone).
    func updateJob(_ job: Job, expecting states: [Job.State]) async throws -> Bool
    /// Makes `incarnationID` the one collecting a started job, if `previous` still is.
    func takeOverJob(id: Int64, from previous: String?, to incarnationID: String) async throws -> Bool
    /// Appends output and adds its size to each job's `logBytes`, in one transaction.
    func appendJobLog(_ chunks: [JobLogChunk]) async throws
    func jobLog(jobID: Int64, after: Int64, limit: Int) async throws -> [JobLogChunk]
    func clearJobLog(jobID: Int64) async throws
    /// Deletes jobs (and their logs) that ended before `date` and hold no container.
    func purgeJobs(endedBefore date: Date) async throws -> Int

    // Users' limits
    func setUserLimits(named name: String, to limits: UserLimits) async throws -> User
    /// Per owner id: active leases (not waiting in the queue) and started jobs, with their limits' sums.
    func userUses() async throws -> [Int64: UserUse]

    // Users' SSH keys
    func createUserKey(_ key: UserKey) async throws -> UserKey
    func userKeys(userId: Int64) async throws -> [UserKey]
    func deleteUserKey(userId: Int64, name: String) async throws
    func user(withKeyBlob blob: String) async throws -> User?

    /// The database's clock: PostgreSQL's `statement_timestamp()`, so that masters on hosts
    /// whose clocks disagree judge heartbeats and expiries alike; for SQLite, which one host's
    /// processes share, this process's clock.
    func now() async throws -> Date

    // Builds shared by the masters
    /// Takes the build named `key` (a machine and an image tag) for `incarnationID` unless
    /// another incarnation holds it; a hold of one in `gone` (or of `incarnationID` itself,
    /// left by a release that failed) is taken over. True if taken.
    func claimBuild(key: String, incarnationID: String, at now: Date, replacing gone: [String]) async throws -> Bool
    func releaseBuild(key: String, incarnationID: String) async throws

    // Incarnations
    func registerIncarnation(_ incarnation: Incarnation) async throws
    func heartbeat(incarnationID: String, at now: Date) async throws -> Bool
    func stopIncarnation(id: String, at now: Date) async throws
    func incarnations() async throws -> [Incarnation]
    func purgeIncarnations(before date: Date) async throws -> Int

    // Warm pools
    func poolSlots(machineID: Int64?) async throws -> [PoolSlot]
    func addPoolSlot(_ slot: PoolSlot, cpuOvercommit: Double) async throws -> PoolSlot?
    func markPoolSlotReady(id: Int64, containerID: String) async throws -> Bool
    /// The oldest ready slot of `image` whose limits are the lease's, on a healthy machine.
    func claimPoolSlot(image: String, resourceID: Int64, lease: Lease, incarnationID: String) async throws -> PoolSlot?
    func deletePoolSlot(id: Int64) async throws

    // Audit trail
    func appendEvent(_ event: Event) async throws
    func events(since: Date?, actor: String?, after: Int64?, limit: Int) async throws -> [Event]
    func purgeEvents(before date: Date) async throws -> Int

    // Schema and identity
    func schemaVersion() async throws -> Int
    func migrationStatus() async throws -> [MigrationStatus]
    func migrateUp(to target: Int?) async throws -> [Int]
    func migrateDown(to target: Int?) async throws -> [Int]
    func masterID() async throws -> String
    /// An installation-wide setting (`serve` writes its own, `cleanup` reads them), or nil.
    func setting(_ key: String) async throws -> String?
    func setSetting(_ key: String, to value: String) async throws

    /// Runs `body` as the only cleanup pass over this database, whichever master or cron job
    /// asks, and returns true; false, without running it, while another pass holds the lock.
    func exclusivePass(_ body: @Sendable () async -> Void) async throws -> Bool

    /// Lets go of the database's connections (graceful shutdown).
    func close()
}

extension Store {
    /// Active leases and warm containers per machine id: what counts against `Capacity`.
    public func activeLeaseCounts() async throws -> [Int64: Int] { try await machineLoads().mapValues(\.containers) }

    /// Throws unless the schema is the one this program was built for.
    public func requireCurrentVersion() async throws {
        let version = try await schemaVersion()
        guard version == Schema.latestVersion else { throw StoreError.schemaOutdated(current: version, needed: Schema.latestVersion) }
    }
}

/// Where files that go "beside the database" live (recordings, the gateway's host key): the
/// SQLite file's directory; for a PostgreSQL URL, the working directory.
public func directoryBeside(_ location: String) -> String {
    PostgresStore.isURL(location) ? FileManager.default.currentDirectoryPath : URL(fileURLWithPath: location).deletingLastPathComponent().path
}

/// Opens what `--db` names: a `postgres://` URL selects PostgreSQL, anything else is the path
/// of a SQLite file (created when missing).
public func openStore(_ location: String, logger: Logger) throws -> any Store {
    if PostgresStore.isURL(location) { return try PostgresStore(url: location, logger: logger) }
    return try AppDatabase(path: location)
}

extension AppDatabase: Store {}

extension Store {
    /// The database's clock, or this process's if the database does not answer.
    public func clock() async -> Date { (try? await now()) ?? ProcessClock.now }
}

/// This process's clock. `RESALLOC_TEST_CLOCK_SKEW` (seconds; for tests only, never for an
/// operator) sets it ahead or behind, as on a host whose clock is off.
public enum ProcessClock {
    public static let skew: TimeInterval = ProcessInfo.processInfo.environment["RESALLOC_TEST_CLOCK_SKEW"].flatMap(TimeInterval.init) ?? 0
    public static var now: Date { Date() + skew }
}
