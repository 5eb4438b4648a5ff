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

    enum CodingKeys: String, CodingKey { case id, name, passwordHash, role, status, createdAt, disabled }

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
    }

    public var isAdmin: Bool { role == .admin }

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
