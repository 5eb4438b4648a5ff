import Foundation
import GRDB

/// A person who uses resalloc. The first one to register is an active admin; later ones wait
/// for an admin's approval.
public struct User: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public enum Role: String, Codable, Sendable { case admin, user }
    public enum Status: String, Codable, Sendable { case pending, active }

    public var id: Int64?
    public var name: String
    public var passwordHash: String
    public var role: Role
    public var status: Status
    public var createdAt: Date
    /// Switched off by an admin: no token or key of theirs works, their sessions are ended;
    /// their leases run on until deleted or expired. Kept apart from `status` so that enabling
    /// the user again gives back what they were (pending or active).
    public var disabled = false
    /// What the user may hold at once (nil: the master's default; see `UserLimits`).
    public var leaseLimit: Int?
    public var jobLimit: Int?
    public var memoryLimit: Int64?
    public var milliCPULimit: Int?

    public static let databaseTableName = "user"
    public enum Columns {
        public static let name = Column(CodingKeys.name)
        public static let role = Column(CodingKeys.role)
        public static let status = Column(CodingKeys.status)
    }

    public init(name: String, passwordHash: String, role: Role, status: Status, createdAt: Date = Date()) {
        self.name = name
        self.passwordHash = passwordHash
        self.role = role
        self.status = status
        self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, name, passwordHash, role, status, createdAt, disabled, leaseLimit, jobLimit, memoryLimit, milliCPULimit
    }

    /// Reads a row of any schema version since the first (`disabled` came in version 9), so a
    /// database taken down a version still lists its users.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decodeIfPresent(Int64.self, forKey: .id)
        name = try container.decode(String.self, forKey: .name)
        passwordHash = try container.decode(String.self, forKey: .passwordHash)
        role = try container.decode(Role.self, forKey: .role)
        status = try container.decode(Status.self, forKey: .status)
        createdAt = try container.decode(Date.self, forKey: .createdAt)
        disabled = try container.decodeIfPresent(Bool.self, forKey: .disabled) ?? false
        leaseLimit = try container.decodeIfPresent(Int.self, forKey: .leaseLimit)
        jobLimit = try container.decodeIfPresent(Int.self, forKey: .jobLimit)
        memoryLimit = try container.decodeIfPresent(Int64.self, forKey: .memoryLimit)
        milliCPULimit = try container.decodeIfPresent(Int.self, forKey: .milliCPULimit)
    }

    public var isAdmin: Bool { role == .admin }

    /// The limits an admin set for this user (nil each where the master's default applies).
    public var limits: UserLimits {
        get { UserLimits(leases: leaseLimit, jobs: jobLimit, memoryBytes: memoryLimit, milliCPUs: milliCPULimit) }
        set {
            leaseLimit = newValue.leases
            jobLimit = newValue.jobs
            memoryLimit = newValue.memoryBytes
            milliCPULimit = newValue.milliCPUs
        }
    }

    /// What the API and listings call the account's state: `disabled` over `pending`/`active`.
    public var statusName: String { disabled ? "disabled" : status.rawValue }

    /// Whether the user may act now: approved and not switched off.
    public var mayAct: Bool { status == .active && !disabled }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A login token, kept only as the SHA-256 of the secret the user holds.
public struct Token: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public var id: Int64?
    public var userId: Int64
    public var hash: String
    public var createdAt: Date
    public var expiresAt: Date

    public static let databaseTableName = "token"
    public enum Columns {
        public static let hash = Column(CodingKeys.hash)
        public static let expiresAt = Column(CodingKeys.expiresAt)
    }

    public init(userId: Int64, hash: String, createdAt: Date, expiresAt: Date) {
        self.userId = userId
        self.hash = hash
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A Dockerfile users can lease, stored byte for byte.
public struct Resource: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public var id: Int64?
    public var name: String
    public var dockerfile: Data
    public var createdAt: Date
    /// Containers of it the master keeps started, ready to hand out.
    public var poolSize: Int
    /// Limits of each container of it; nil: the master's default (`serve --lease-memory …`).
    public var memoryBytes: Int64?
    public var milliCPUs: Int?
    public var pids: Int?
    /// How long its leases may go without a session before they end (nil: never).
    public var idleSeconds: Int?

    public static let databaseTableName = "resource"
    public enum Columns { public static let name = Column(CodingKeys.name) }

    public init(name: String, dockerfile: Data, poolSize: Int = 0, limits: ResourceLimits = ResourceLimits(), createdAt: Date = Date()) {
        self.name = name
        self.dockerfile = dockerfile
        self.poolSize = poolSize
        self.createdAt = createdAt
        self.limits = limits
    }

    /// The limits the resource sets itself (each nil where the master's default applies).
    public var limits: ResourceLimits {
        get { ResourceLimits(memoryBytes: memoryBytes, milliCPUs: milliCPUs, pids: pids) }
        set {
            memoryBytes = newValue.memoryBytes
            milliCPUs = newValue.milliCPUs
            pids = newValue.pids
        }
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A Docker host the master reaches over SSH, with its host key pinned on creation.
public struct Machine: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public var id: Int64?
    public var name: String
    public var login: String
    public var host: String
    public var port: Int
    public var hostKeyType: String
    public var hostKeyFingerprint: String
    public var cpus: Int
    public var memoryBytes: Int64
    /// Leases placement puts here at most.
    public var capacity: Int
    public var healthy: Bool
    public var lastError: String?
    public var createdAt: Date
    /// When the master last reached it over SSH (added, or a cleanup pass found it up).
    public var lastContactAt: Date?

    public static let databaseTableName = "machine"
    public enum Columns {
        public static let name = Column(CodingKeys.name)
        public static let healthy = Column(CodingKeys.healthy)
    }

    public init(
        name: String,
        login: String,
        host: String,
        port: Int,
        hostKeyType: String,
        hostKeyFingerprint: String,
        cpus: Int,
        memoryBytes: Int64,
        capacity: Int,
        healthy: Bool = true,
        lastError: String? = nil,
        createdAt: Date = Date()
    ) {
        self.name = name
        self.login = login
        self.host = host
        self.port = port
        self.hostKeyType = hostKeyType
        self.hostKeyFingerprint = hostKeyFingerprint
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.capacity = capacity
        self.healthy = healthy
        self.lastError = lastError
        self.createdAt = createdAt
        lastContactAt = createdAt
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A container leased by a user: written first as `creating`, then `running`, or `failed`.
public struct Lease: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public enum State: String, Codable, Sendable, CaseIterable {
        case creating, running, deleting, failed, lost
    }

    public var id: Int64?
    public var name: String
    public var ownerId: Int64
    public var resourceId: Int64
    public var machineId: Int64?
    public var image: String
    public var containerId: String?
    public var state: State
    public var message: String?
    public var createdAt: Date
    public var expiresAt: Date
    /// The master process working on it while it is `creating` or `deleting`.
    public var incarnationId: String?
    /// The memory and CPU limits its container runs with (0: none), which placement adds up.
    public var memoryBytes: Int64 = 0
    public var milliCPUs: Int = 0
    /// How long it may go without a shell, gateway session, copy or forward before it ends
    /// (nil: never), and when it last had one (or was made).
    public var idleSeconds: Int?
    public var activeAt: Date?
    /// Set while the lease waits in the fair queue for a place (`creating`, no machine yet):
    /// when it stops waiting and fails.
    public var queuedUntil: Date?

    public static let databaseTableName = "lease"
    public enum Columns {
        public static let name = Column(CodingKeys.name)
        public static let ownerId = Column(CodingKeys.ownerId)
        public static let machineId = Column(CodingKeys.machineId)
        public static let state = Column(CodingKeys.state)
    }

    public init(name: String, ownerId: Int64, resourceId: Int64, image: String, createdAt: Date, expiresAt: Date, incarnationId: String? = nil) {
        self.name = name
        self.incarnationId = incarnationId
        self.ownerId = ownerId
        self.resourceId = resourceId
        self.image = image
        self.state = .creating
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    /// The container's name on its machine: `resalloc-<master>-<lease id>`. The master's id
    /// (first 8 hex) keeps two masters that share a machine from ever colliding.
    public func containerName(masterID: String) -> String { "resalloc-\(masterID.prefix(8))-\(id ?? 0)" }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A lease with the names people know it by, for listings.
public struct LeaseListing: Decodable, Sendable, Equatable, FetchableRecord {
    public var lease: Lease
    public var owner: String
    public var resource: String
    public var machine: String?

    public init(lease: Lease, owner: String, resource: String, machine: String?) {
        self.lease = lease
        self.owner = owner
        self.resource = resource
        self.machine = machine
    }
}

/// A user's SSH public key for the gateway: `blob` is its base64 wire form, as in
/// `authorized_keys`; `fingerprint` is `SHA256:…`, as `ssh-keygen -l` prints it.
public struct UserKey: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public var id: Int64?
    public var userId: Int64
    public var name: String
    public var algorithm: String
    public var blob: String
    public var fingerprint: String
    public var createdAt: Date

    public static let databaseTableName = "userKey"
    public enum Columns {
        public static let userId = Column(CodingKeys.userId)
        public static let name = Column(CodingKeys.name)
        public static let blob = Column(CodingKeys.blob)
    }

    public init(userId: Int64, name: String, algorithm: String, blob: String, fingerprint: String, createdAt: Date = Date()) {
        self.userId = userId
        self.name = name
        self.algorithm = algorithm
        self.blob = blob
        self.fingerprint = fingerprint
        self.createdAt = createdAt
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One running `resalloc-master serve` process. It writes `heartbeatAt` every
/// `heartbeatSeconds`, and `stoppedAt` when it stops cleanly.
public struct Incarnation: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public var id: String
    public var host: String
    public var pid: Int32
    public var heartbeatSeconds: Int
    public var startedAt: Date
    public var heartbeatAt: Date
    public var stoppedAt: Date?

    public static let databaseTableName = "incarnation"

    public init(id: String, host: String, pid: Int32, heartbeatSeconds: Int, startedAt: Date = Date()) {
        self.id = id
        self.host = host
        self.pid = pid
        self.heartbeatSeconds = heartbeatSeconds
        self.startedAt = startedAt
        self.heartbeatAt = startedAt
    }
}

/// A warm container of a resource's pool on a machine (see migration 6).
public struct PoolSlot: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public enum State: String, Codable, Sendable { case starting, ready, claimed }

    public var id: Int64?
    public var resourceId: Int64
    public var machineId: Int64
    public var image: String
    public var state: State
    /// The engine's id of its container, once started.
    public var containerId: String?
    /// The lease that claimed it, while `claimed`.
    public var leaseId: Int64?
    /// The master process starting or handing it out.
    public var incarnationId: String?
    public var createdAt: Date
    /// The memory and CPU limits its container runs with (0: none), which placement adds up.
    public var memoryBytes: Int64 = 0
    public var milliCPUs: Int = 0

    public static let databaseTableName = "poolSlot"

    public init(resourceId: Int64, machineId: Int64, image: String, incarnationId: String, createdAt: Date = Date()) {
        self.resourceId = resourceId
        self.machineId = machineId
        self.image = image
        self.state = .starting
        self.incarnationId = incarnationId
        self.createdAt = createdAt
    }

    /// `resalloc-<master>-pool-<id>`; a handout renames it to the lease's container name.
    public func containerName(masterID: String) -> String { "resalloc-\(masterID.prefix(8))-pool-\(id ?? 0)" }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One entry of the audit trail: `actor` (a user's name, or `cleanup`/`reconcile`) did
/// `action` (`lease.created`, `user.login-failed`, …) on `subject`, from `address`.
public struct Event: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public var id: Int64?
    public var at: Date
    public var actor: String
    public var action: String
    public var subject: String
    public var detail: String?
    public var address: String?

    public static let databaseTableName = "event"

    public init(at: Date = Date(), actor: String, action: String, subject: String, detail: String? = nil, address: String? = nil) {
        self.at = at
        self.actor = actor
        self.action = action
        self.subject = subject
        self.detail = detail
        self.address = address
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A command run once in a new container of a resource (`resalloc run`): written `queued`,
/// placed by the fair queue (`starting`), `running` while its command runs, then one of the
/// ended states. Its output is kept as `JobLogChunk`s.
public struct Job: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public enum State: String, Codable, Sendable, CaseIterable {
        case queued, starting, running, succeeded, failed, cancelled
        case timedOut = "timed-out"
        case lost

        /// Whether the job is over (its container stopped or gone, its status known or never).
        public var ended: Bool { ![.queued, .starting, .running].contains(self) }
    }

    public var id: Int64?
    /// A label its owner chose, not unique.
    public var name: String?
    public var ownerId: Int64
    public var resourceId: Int64
    public var image: String
    /// The command's arguments as a JSON array (the container's own process).
    public var command: String
    public var state: State
    public var machineId: Int64?
    public var containerId: String?
    public var memoryBytes: Int64 = 0
    public var milliCPUs: Int = 0
    /// How long it may run once started; past it the job is `timed-out`.
    public var ttlSeconds: Int
    public var createdAt: Date
    public var startedAt: Date?
    public var endedAt: Date?
    public var exitStatus: Int?
    /// Why it failed, was cancelled or lost, as a sentence.
    public var message: String?
    /// The master process starting it or collecting its output.
    public var incarnationId: String?
    /// Its container waits for files the client copies in before the command starts.
    public var awaitingInput = false
    /// Its container is kept after the end for the client to copy results out.
    public var keepsContainer = false
    /// The container is gone (removed after the end, or never made).
    public var containerRemoved = false
    /// Bytes of output kept; past the master's `--job-log-max` the rest is dropped.
    public var logBytes: Int64 = 0

    public static let databaseTableName = "job"

    public init(ownerId: Int64, resourceId: Int64, image: String, command: [String], ttlSeconds: Int, name: String? = nil, createdAt: Date = Date()) {
        self.ownerId = ownerId
        self.resourceId = resourceId
        self.image = image
        self.command = String(decoding: (try? JSONEncoder().encode(command)) ?? Data("[]".utf8), as: UTF8.self)
        self.ttlSeconds = ttlSeconds
        self.name = name
        self.state = .queued
        self.createdAt = createdAt
    }

    /// The command as its arguments.
    public var arguments: [String] { (try? JSONDecoder().decode([String].self, from: Data(command.utf8))) ?? [] }

    /// `resalloc-<master>-job-<id>`.
    public func containerName(masterID: String) -> String { "resalloc-\(masterID.prefix(8))-job-\(id ?? 0)" }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A piece of a job's output, in the order it came: `stream` 1 is stdout, 2 stderr.
public struct JobLogChunk: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public var id: Int64?
    public var jobId: Int64
    public var stream: Int
    public var data: Data

    public static let databaseTableName = "jobLog"

    public init(jobId: Int64, stream: Int, data: Data) {
        self.jobId = jobId
        self.stream = stream
        self.data = data
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A job with the names people know it by, and its place in the queue while queued.
public struct JobListing: Sendable, Equatable {
    public var job: Job
    public var owner: String
    public var resource: String
    public var machine: String?

    public init(job: Job, owner: String, resource: String, machine: String?) {
        self.job = job
        self.owner = owner
        self.resource = resource
        self.machine = machine
    }
}

/// What an admin allows one user at once (nil: no limit).
public struct UserLimits: Sendable, Equatable, Codable {
    public var leases: Int?
    public var jobs: Int?
    public var memoryBytes: Int64?
    public var milliCPUs: Int?

    public init(leases: Int? = nil, jobs: Int? = nil, memoryBytes: Int64? = nil, milliCPUs: Int? = nil) {
        self.leases = leases
        self.jobs = jobs
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
    }

    /// Each of `self`'s limits, or `defaults`' where `self` sets none.
    public func over(_ defaults: UserLimits) -> UserLimits {
        UserLimits(
            leases: leases ?? defaults.leases,
            jobs: jobs ?? defaults.jobs,
            memoryBytes: memoryBytes ?? defaults.memoryBytes,
            milliCPUs: milliCPUs ?? defaults.milliCPUs
        )
    }
}

/// What one user holds now: active leases, started jobs, and the sums of their limits.
public struct UserUse: Sendable, Equatable {
    public var leases = 0
    public var jobs = 0
    public var memoryBytes: Int64 = 0
    public var milliCPUs = 0

    public init(leases: Int = 0, jobs: Int = 0, memoryBytes: Int64 = 0, milliCPUs: Int = 0) {
        self.leases = leases
        self.jobs = jobs
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
    }

    /// Which of `limits` one more lease (or job) of `memoryBytes` and `milliCPUs` would pass, as
    /// a sentence naming it; nil when it fits.
    public func refusal(adding kind: String, memoryBytes: Int64, milliCPUs: Int, limits: UserLimits) -> String? {
        if kind == "lease", let most = limits.leases, leases + 1 > most { return "you have \(leases) of the \(most) leases you may hold at once" }
        if kind == "job", let most = limits.jobs, jobs + 1 > most { return "you have \(jobs) of the \(most) jobs you may run at once" }
        if let most = limits.memoryBytes, memoryBytes > 0, self.memoryBytes + memoryBytes > most {
            return "your containers would use \(self.memoryBytes + memoryBytes) bytes of memory, more than the \(most) you may use at once"
        }
        if let most = limits.milliCPUs, milliCPUs > 0, self.milliCPUs + milliCPUs > most {
            return
                "your containers would use \(Double(self.milliCPUs + milliCPUs) / 1000) CPUs, more than the \(Double(most) / 1000) you may use at once"
        }
        return nil
    }
}
