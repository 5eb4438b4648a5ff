import Docker
import Foundation
import Logging
import SSH
import Store

/// The master's domain, assembled once: the server and the cron job both start from here.
public struct Master: Sendable {
    public let database: any Store
    public let pool: SSHConnectionPool
    public let masterID: String
    /// This process, as the leases it works on record it (see `Incarnations`).
    public let incarnationID: String
    public var accounts: Accounts
    public let fleet: Fleet
    public let catalog: ResourceCatalog
    public var saga: LeaseSaga
    /// Warm containers per resource; `serve` keeps them filled.
    public let warmPool: WarmPool
    /// Who did what, when, from where.
    public let audit: AuditTrail
    /// Where interactive sessions are recorded (asciinema v2); nil: not recorded.
    public var recordDirectory: String?
    /// Whether recordings also hold what the user typed.
    public var recordInput = false
    /// Where a recording stops growing (`serve --record-max`).
    public var recordMax = SessionRecorder.defaultMaxBytes
    public let logger: Logger
    /// The image that reaches into a lease's namespaces (forwards, ending dropped sessions).
    public let relay: RelayImage?
    /// Per-lease guards that end a dropped session's processes at once.
    public let sessionGuards: SessionGuards
    /// What each container may take of its machine (`serve --lease-memory …`).
    public let limits: LimitPolicy
    /// The sessions this process carries into leases, by user and machine.
    public let sessions: SessionLedger
    /// Jobs (`resalloc run`) and the fair queue they share with waiting leases.
    public let jobs: Jobs

    /// Opens the store `databasePath` names (a SQLite file or a `postgres://` URL), migrating
    /// it to the current schema.
    public init(databasePath: String, keyPath: String, logger: Logger, bcryptCost: UInt8 = 10) async throws {
        let database = try openStore(databasePath, logger: logger)
        let applied = try await database.migrateUp(to: nil)
        if !applied.isEmpty { logger.notice("database migrated", metadata: ["versions": "\(applied)"]) }
        try await self.init(database: database, keyPath: keyPath, logger: logger, bcryptCost: bcryptCost)
    }

    public init(database: any Store, keyPath: String, logger: Logger, bcryptCost: UInt8 = 10) async throws {
        try await database.requireCurrentVersion()
        guard FileManager.default.isReadableFile(atPath: keyPath) else {
            throw MasterError(.internal, "cannot read the master's SSH key \(keyPath); create it with make keys")
        }
        self.database = database
        self.logger = logger
        pool = SSHConnectionPool()
        relay = RelayImage.load()
        sessionGuards = SessionGuards(relay: relay, logger: logger)
        masterID = try await database.masterID()
        incarnationID = UUID().uuidString.lowercased()
        accounts = Accounts(database: database, bcryptCost: bcryptCost)
        fleet = Fleet(database: database, pool: pool, keyPath: keyPath, logger: logger)
        catalog = ResourceCatalog(database: database)
        audit = AuditTrail(database: database, logger: logger)
        limits = LimitPolicy()
        // As the installation's `serve` last set it (cron's cleanup has no flag of its own).
        limits.settings.ownerNetworks = (try? await database.setting(OwnerNetworks.settingKey)) != "off"
        sessions = SessionLedger()
        warmPool = WarmPool(database: database, fleet: fleet, masterID: masterID, incarnationID: incarnationID, logger: logger, limits: limits)
        jobs = Jobs(
            database: database,
            fleet: fleet,
            limits: limits,
            masterID: masterID,
            incarnationID: incarnationID,
            logger: logger,
            warmPool: warmPool
        )
        saga = LeaseSaga(
            database: database,
            fleet: fleet,
            warmPool: warmPool,
            masterID: masterID,
            incarnationID: incarnationID,
            logger: logger,
            limits: limits,
            jobs: jobs
        )
        let (database, incarnationID) = (database, incarnationID)
        fleet.builds.shareAcrossProcesses { tag, endpoint in
            await Self.holdBuild("\(endpoint.host):\(endpoint.port) \(tag)", database: database, incarnationID: incarnationID)
        }
    }

    /// Waits until no other live master builds `key` (a machine and a tag), then holds it: one
    /// build of an image per machine among all the masters on one database. Returns the release.
    /// A database that does not answer does not hold builds up: the build goes ahead.
    static func holdBuild(_ key: String, database: any Store, incarnationID: String) async -> @Sendable () async -> Void {
        while !Task.isCancelled {
            let rows = (try? await database.incarnations()) ?? []
            let known = Incarnations(rows: rows, current: incarnationID, now: await database.clock())
            let gone = rows.map(\.id).filter { known.isGone($0) == true }
            guard let claimed = try? await database.claimBuild(key: key, incarnationID: incarnationID, at: await database.clock(), replacing: gone),
                !claimed
            else { break }
            try? await Task.sleep(for: .seconds(1))
        }
        return { try? await database.releaseBuild(key: key, incarnationID: incarnationID) }
    }

    /// The lease `name` as `caller` may see it: their own; an admin may name another owner.
    public func lease(named name: String, for caller: User, owner: String? = nil) async throws(MasterError) -> LeaseListing {
        do {
            var ownerID = caller.id!
            if let owner, owner != caller.name {
                guard caller.isAdmin, let other = try await database.user(named: owner) else { throw MasterError(.notFound, "no lease \(name)") }
                ownerID = other.id!
            }
            guard let listing = try await database.leaseListing(ownerID: ownerID, name: name) else {
                throw MasterError(.notFound, "no lease \(name)")
            }
            return listing
        } catch { throw .from(error) }
    }

    /// The caller's leases, or everyone's for an admin who asks for all.
    public func leases(for caller: User, all: Bool) async throws(MasterError) -> [LeaseListing] {
        if all && !caller.isAdmin { throw MasterError(.forbidden, "only admins see every lease") }
        do { return try await database.leaseListings(ownerID: all ? nil : caller.id!, name: nil, machineID: nil) } catch { throw .from(error) }
    }

    /// Active lease counts per machine, for listings.
    /// Per machine id: its active leases and warm containers, and the sums of their limits.
    public func machineLoads() async throws(MasterError) -> [Int64: MachineLoad] {
        do { return try await database.machineLoads() } catch { throw .from(error) }
    }

    /// Closes every SSH connection (graceful shutdown).
    public func shutdown() async {
        jobs.stop()
        await sessionGuards.closeAll()
        await pool.closeAll()
        database.close()
    }
}
