import Foundation

// The wire types of the master's HTTP API, shared by server and client. Keys are the seed's
// capitalised ones (`Name`, `Password`, `File`, `Username`, `IP`, `ResourceName`, `LeaseName`,
// `Success`, `Message`, `Token`, …), so the old client keeps working.

/// `POST /register`, `POST /login`.
public struct Credentials: Codable, Sendable {
    public var name: String
    public var password: String
    public init(name: String, password: String) {
        self.name = name
        self.password = password
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case password = "Password"
    }
}

/// `POST /resource`.
public struct ResourceRequest: Codable, Sendable {
    public var name: String
    /// The Dockerfile, byte for byte.
    public var file: String
    /// Warm containers to keep ready (default 0).
    public var pool: Int?
    /// Each container's limits; absent: the master's defaults.
    public var limits: LimitsRequest
    public init(name: String, file: String, pool: Int? = nil, limits: LimitsRequest = LimitsRequest()) {
        self.name = name
        self.file = file
        self.pool = pool
        self.limits = limits
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case file = "File"
        case pool = "Pool"
    }
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        file = try container.decode(String.self, forKey: .file)
        pool = try container.decodeIfPresent(Int.self, forKey: .pool)
        limits = try LimitsRequest(from: decoder)
    }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(file, forKey: .file)
        try container.encodeIfPresent(pool, forKey: .pool)
        try limits.encode(to: encoder)
    }
}

/// A resource's container limits as a request gives them: `"Memory": "2g"`, `"CPUs": 1.5`,
/// `"Pids": 1024`; each absent one is left as it is (or the master's default, for a new one).
public struct LimitsRequest: Codable, Sendable, Equatable {
    public var memory: String?
    public var cpus: Double?
    public var pids: Int?
    /// How long its leases may go without a session (`30m`), their default for `Idle`.
    public var idle: String?
    public init(memory: String? = nil, cpus: Double? = nil, pids: Int? = nil, idle: String? = nil) {
        self.memory = memory
        self.cpus = cpus
        self.pids = pids
        self.idle = idle
    }
    public var isEmpty: Bool { memory == nil && cpus == nil && pids == nil && idle == nil }
    enum CodingKeys: String, CodingKey {
        case memory = "Memory"
        case cpus = "CPUs"
        case pids = "Pids"
        case idle = "Idle"
    }
}

/// `PUT /resource/{name}/pool`.
public struct PoolRequest: Codable, Sendable {
    public var size: Int
    public init(size: Int) { self.size = size }
    enum CodingKeys: String, CodingKey { case size = "Size" }
}

/// `PUT /resource/{name}`: a new Dockerfile, new limits, or both.
public struct DockerfileRequest: Codable, Sendable {
    public var file: String?
    public var limits: LimitsRequest
    public init(file: String?, limits: LimitsRequest = LimitsRequest()) {
        self.file = file
        self.limits = limits
    }
    enum CodingKeys: String, CodingKey { case file = "File" }
    public init(from decoder: any Decoder) throws {
        file = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(String.self, forKey: .file)
        limits = try LimitsRequest(from: decoder)
    }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(file, forKey: .file)
        try limits.encode(to: encoder)
    }
}

/// `POST /machine`. `IP` may carry `:port`.
public struct MachineRequest: Codable, Sendable {
    public var name: String
    public var username: String
    public var ip: String
    public var capacity: Int?
    public init(name: String, username: String, ip: String, capacity: Int? = nil) {
        self.name = name
        self.username = username
        self.ip = ip
        self.capacity = capacity
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case username = "Username"
        case ip = "IP"
        case capacity = "Capacity"
    }
}

/// `POST /lease`. `TTL` is `90s`, `15m`, `2h` or `1d`.
public struct LeaseRequest: Codable, Sendable {
    public var resourceName: String
    public var leaseName: String
    public var ttl: String?
    /// How long to wait in the fair queue for a place, when none is free now (or a limit of
    /// the owner's is reached); absent: refuse at once.
    public var wait: String?
    /// How long the lease may go without a session before it ends; absent: the resource's.
    public var idle: String?
    public init(resourceName: String, leaseName: String, ttl: String? = nil, wait: String? = nil, idle: String? = nil) {
        self.resourceName = resourceName
        self.leaseName = leaseName
        self.ttl = ttl
        self.wait = wait
        self.idle = idle
    }
    enum CodingKeys: String, CodingKey {
        case resourceName = "ResourceName"
        case leaseName = "LeaseName"
        case ttl = "TTL"
        case wait = "Wait"
        case idle = "Idle"
    }
}

/// `POST /lease` with `Accept: application/x-ndjson`: the reply streams one JSON object a line
/// while the lease is made. Lines with `Build` carry the image build's output as it happens;
/// the last line has `Success` and `Message`, and `Lease` on success or `Status` (the HTTP
/// status the plain request would have had) on failure.
public struct LeaseProgress: Codable, Sendable, Equatable {
    public static let mediaType = "application/x-ndjson"

    public var build: String?
    /// The lease's place in the fair queue while it waits (1: next).
    public var place: Int?
    public var success: Bool?
    public var message: String?
    public var status: Int?
    public var lease: LeaseInfo?

    public static func buildLine(_ line: String) -> LeaseProgress { LeaseProgress(build: line) }

    public static func queued(_ place: Int) -> LeaseProgress {
        var progress = LeaseProgress()
        progress.place = place
        return progress
    }

    public static func created(_ lease: LeaseInfo, message: String) -> LeaseProgress {
        LeaseProgress(success: true, message: message, lease: lease)
    }

    public static func failed(_ message: String, status: Int) -> LeaseProgress { LeaseProgress(success: false, message: message, status: status) }

    public init(build: String? = nil, success: Bool? = nil, message: String? = nil, status: Int? = nil, lease: LeaseInfo? = nil) {
        self.build = build
        self.success = success
        self.message = message
        self.status = status
        self.lease = lease
    }

    enum CodingKeys: String, CodingKey {
        case build = "Build"
        case place = "Place"
        case success = "Success"
        case message = "Message"
        case status = "Status"
        case lease = "Lease"
    }
}

/// `POST /lease`'s plain reply: the `Lease`, and the old Go master's top-level `Name`,
/// `Machine` (the machine's name) and `Username` (the owner), which scripts written for it read.
public struct LeaseCreated: Codable, Sendable {
    public var success: Bool
    public var message: String
    public var lease: LeaseInfo
    public var name: String
    public var machine: String?
    public var username: String
    public init(message: String, lease: LeaseInfo) {
        self.success = true
        self.message = message
        self.lease = lease
        self.name = lease.name
        self.machine = lease.machine
        self.username = lease.owner
    }
    enum CodingKeys: String, CodingKey {
        case success = "Success"
        case message = "Message"
        case lease = "Lease"
        case name = "Name"
        case machine = "Machine"
        case username = "Username"
    }
}

/// Bodies that name one thing: `DELETE /lease`, `/resource`, `/machine`. The seed's
/// `LeaseName` is accepted for leases too.
public struct NameRequest: Codable, Sendable {
    public var name: String?
    public var leaseName: String?
    public var force: Bool?
    public var ttl: String?
    public init(name: String, force: Bool? = nil, ttl: String? = nil) {
        self.name = name
        self.force = force
        self.ttl = ttl
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case leaseName = "LeaseName"
        case force = "Force"
        case ttl = "TTL"
    }
}

/// Every reply has these two; failures have only these two.
public struct Reply: Codable, Sendable {
    public var success: Bool
    public var message: String
    public init(success: Bool, message: String) {
        self.success = success
        self.message = message
    }
    enum CodingKeys: String, CodingKey {
        case success = "Success"
        case message = "Message"
    }
}

public struct LoginReply: Codable, Sendable {
    public var success: Bool
    public var message: String
    public var token: String
    public init(message: String, token: String) {
        self.success = true
        self.message = message
        self.token = token
    }
    enum CodingKeys: String, CodingKey {
        case success = "Success"
        case message = "Message"
        case token = "Token"
    }
}

public struct ResourceInfo: Codable, Sendable, Equatable {
    public var name: String
    public var file: String
    public var image: String
    /// Warm containers the master keeps, and how many of them are ready now.
    public var pool: Int
    public var poolReady: Int
    /// The limits its containers run with (its own, else the master's defaults): memory as
    /// `2g`, CPUs (absent: no limit), processes.
    public var memory: String?
    public var cpus: Double?
    public var pids: Int?
    /// Its leases' idle limit (`30m`); absent: none.
    public var idle: String?
    /// On how many healthy machines its image is known to be built, of how many.
    public var imageOn: Int?
    public var machines: Int?
    public init(
        name: String,
        file: String,
        image: String,
        pool: Int = 0,
        poolReady: Int = 0,
        memory: String? = nil,
        cpus: Double? = nil,
        pids: Int? = nil,
        idle: String? = nil
    ) {
        self.idle = idle
        self.name = name
        self.file = file
        self.image = image
        self.pool = pool
        self.poolReady = poolReady
        self.memory = memory
        self.cpus = cpus
        self.pids = pids
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case file = "File"
        case image = "Image"
        case pool = "Pool"
        case poolReady = "PoolReady"
        case memory = "Memory"
        case cpus = "CPUs"
        case pids = "Pids"
        case idle = "Idle"
        case imageOn = "ImageOn"
        case machines = "Machines"
    }
}

public struct MachineInfo: Codable, Sendable, Equatable {
    public var name: String
    public var username: String
    public var ip: String
    public var hostKey: String
    public var cpus: Int
    public var memoryBytes: Int64
    public var capacity: Int
    public var activeLeases: Int
    public var healthy: Bool
    public var lastError: String?
    /// When the master last reached it.
    public var lastContact: Date?
    /// The sums of the memory and CPU limits of what runs there.
    public var memoryUsedBytes: Int64?
    public var cpusUsed: Double?
    public init(
        name: String,
        username: String,
        ip: String,
        hostKey: String,
        cpus: Int,
        memoryBytes: Int64,
        capacity: Int,
        activeLeases: Int,
        healthy: Bool,
        lastError: String?,
        lastContact: Date? = nil
    ) {
        self.name = name
        self.username = username
        self.ip = ip
        self.hostKey = hostKey
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.capacity = capacity
        self.activeLeases = activeLeases
        self.healthy = healthy
        self.lastError = lastError
        self.lastContact = lastContact
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case username = "Username"
        case ip = "IP"
        case hostKey = "HostKey"
        case cpus = "CPUs"
        case memoryBytes = "MemoryBytes"
        case capacity = "Capacity"
        case activeLeases = "ActiveLeases"
        case healthy = "Healthy"
        case lastError = "LastError"
        case lastContact = "LastContact"
        case memoryUsedBytes = "MemoryUsedBytes"
        case cpusUsed = "CPUsUsed"
    }
}

public struct LeaseInfo: Codable, Sendable, Equatable {
    public var name: String
    public var owner: String
    public var resourceName: String
    public var machine: String?
    public var state: String
    public var message: String?
    public var container: String?
    public var createdAt: Date
    public var expiresAt: Date
    /// Its idle limit (`30m`) and since when it has had no session; absent: no limit.
    public var idle: String?
    public var activeAt: Date?
    public init(
        name: String,
        owner: String,
        resourceName: String,
        machine: String?,
        state: String,
        message: String?,
        container: String?,
        createdAt: Date,
        expiresAt: Date,
        idle: String? = nil,
        activeAt: Date? = nil
    ) {
        self.idle = idle
        self.activeAt = activeAt
        self.name = name
        self.owner = owner
        self.resourceName = resourceName
        self.machine = machine
        self.state = state
        self.message = message
        self.container = container
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case owner = "Owner"
        case resourceName = "ResourceName"
        case machine = "Machine"
        case state = "State"
        case message = "Message"
        case container = "Container"
        case createdAt = "CreatedAt"
        case expiresAt = "ExpiresAt"
        case idle = "Idle"
        case activeAt = "ActiveAt"
    }
}

/// `PUT /user/{name}`: `disabled` switches a user off (tokens and keys stop working, sessions
/// end; leases keep running), `active` on again (and approves a pending user).
public struct UserStatusRequest: Codable, Sendable {
    public var status: String
    public init(status: String) { self.status = status }
    enum CodingKeys: String, CodingKey { case status = "Status" }
}

public struct UserInfo: Codable, Sendable, Equatable {
    public var name: String
    public var role: String
    public var status: String
    public var createdAt: Date
    public init(name: String, role: String, status: String, createdAt: Date) {
        self.name = name
        self.role = role
        self.status = status
        self.createdAt = createdAt
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case role = "Role"
        case status = "Status"
        case createdAt = "CreatedAt"
    }
}

/// A reply carrying one payload under a seed-style key (`Resources`, `Leases`, `Machine`, …).
public struct Payload<Value: Codable & Sendable>: Codable, Sendable {
    public var success: Bool
    public var message: String
    public var value: Value
    let key: String

    public init(_ key: String, _ value: Value, message: String = "") {
        self.success = true
        self.message = message
        self.value = value
        self.key = key
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(success, forKey: Key(stringValue: "Success"))
        try container.encode(message, forKey: Key(stringValue: "Message"))
        try container.encode(value, forKey: Key(stringValue: key))
    }

    /// Decodes the payload: the first key, in sorted order, besides `Success` and `Message`
    /// whose value is a `Value` (a reply may carry other top-level keys, such as the seed's
    /// `Name` beside `Lease`).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        success = try container.decode(Bool.self, forKey: Key(stringValue: "Success"))
        message = try container.decodeIfPresent(String.self, forKey: Key(stringValue: "Message")) ?? ""
        let candidates = container.allKeys.filter { $0.stringValue != "Success" && $0.stringValue != "Message" }
        for candidate in candidates.sorted(by: { $0.stringValue < $1.stringValue }) {
            if let value = try? container.decode(Value.self, forKey: candidate) {
                self.key = candidate.stringValue
                self.value = value
                return
            }
        }
        throw DecodingError.keyNotFound(Key(stringValue: "payload"), .init(codingPath: [], debugDescription: "no payload key"))
    }
}

/// The JSON coders both sides use: ISO 8601 dates.
public enum WireCoding {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// `POST /key`: an OpenSSH public key line (the contents of a `.pub` file) under a name.
public struct KeyRequest: Codable, Sendable {
    public var name: String
    public var publicKey: String
    public init(name: String, publicKey: String) {
        self.name = name
        self.publicKey = publicKey
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case publicKey = "PublicKey"
    }
}

public struct KeyInfo: Codable, Sendable, Equatable {
    public var name: String
    public var algorithm: String
    public var fingerprint: String
    public var createdAt: Date
    public init(name: String, algorithm: String, fingerprint: String, createdAt: Date) {
        self.name = name
        self.algorithm = algorithm
        self.fingerprint = fingerprint
        self.createdAt = createdAt
    }
    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case algorithm = "Algorithm"
        case fingerprint = "Fingerprint"
        case createdAt = "CreatedAt"
    }
}

/// `GET /gateway`: where the SSH gateway listens (on the master's host) and its host key.
public struct GatewayInfo: Codable, Sendable {
    public var success: Bool
    public var message: String
    public var port: Int
    /// `ssh-ed25519 AAAA…`
    public var hostKey: String
    public var fingerprint: String
    public init(success: Bool, message: String, port: Int, hostKey: String, fingerprint: String) {
        self.success = success
        self.message = message
        self.port = port
        self.hostKey = hostKey
        self.fingerprint = fingerprint
    }
    enum CodingKeys: String, CodingKey {
        case success = "Success"
        case message = "Message"
        case port = "Port"
        case hostKey = "HostKey"
        case fingerprint = "Fingerprint"
    }
}

/// `GET /event`: one entry of the audit trail.
public struct EventInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var at: Date
    public var actor: String
    public var action: String
    public var subject: String
    public var detail: String?
    public var address: String?
    public init(id: Int64, at: Date, actor: String, action: String, subject: String, detail: String?, address: String?) {
        self.id = id
        self.at = at
        self.actor = actor
        self.action = action
        self.subject = subject
        self.detail = detail
        self.address = address
    }
    enum CodingKeys: String, CodingKey {
        case id = "Id"
        case at = "At"
        case actor = "Actor"
        case action = "Action"
        case subject = "Subject"
        case detail = "Detail"
        case address = "Address"
    }
}

/// `GET /session`: one recorded interactive session.
public struct SessionInfo: Codable, Sendable, Equatable {
    public var id: String
    public var lease: String
    public var user: String
    public var started: Date
    public var bytes: Int
    public init(id: String, lease: String, user: String, started: Date, bytes: Int) {
        self.id = id
        self.lease = lease
        self.user = user
        self.started = started
        self.bytes = bytes
    }
    enum CodingKeys: String, CodingKey {
        case id = "Id"
        case lease = "Lease"
        case user = "User"
        case started = "Started"
        case bytes = "Bytes"
    }
}

/// `POST /job`: run `Command` once in a new container of `Resource`.
public struct JobRequest: Codable, Sendable {
    public var resource: String
    public var command: [String]
    public var name: String?
    /// How long it may run once started (`90s`, `15m`, `2h`, `1d`); absent: the master's default.
    public var ttl: String?
    /// Its container waits for files copied in (`/job/{id}/copy`) and `POST /job/{id}/start`.
    public var inputs: Bool?
    /// Its container is kept after the end for results to be copied out, until `DELETE`.
    public var outputs: Bool?
    public init(resource: String, command: [String], name: String? = nil, ttl: String? = nil, inputs: Bool? = nil, outputs: Bool? = nil) {
        self.resource = resource
        self.command = command
        self.name = name
        self.ttl = ttl
        self.inputs = inputs
        self.outputs = outputs
    }
    enum CodingKeys: String, CodingKey {
        case resource = "Resource"
        case command = "Command"
        case name = "Name"
        case ttl = "TTL"
        case inputs = "Inputs"
        case outputs = "Outputs"
    }
}

/// A job as the API shows it.
public struct JobInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String?
    public var owner: String
    public var resource: String
    public var command: [String]
    /// `queued`, `starting`, `running`, `succeeded`, `failed`, `cancelled`, `timed-out`, `lost`.
    public var state: String
    /// Its place in the queue while queued (1: next).
    public var place: Int?
    public var machine: String?
    public var exitStatus: Int?
    public var message: String?
    public var createdAt: Date
    public var startedAt: Date?
    public var endedAt: Date?
    public var ttl: String
    /// Bytes of output kept.
    public var logBytes: Int64
    /// Its container is up and waits for the inputs to be copied in.
    public var awaitingInput: Bool
    /// Its container is kept for results to be copied out.
    public var containerKept: Bool
    public init(
        id: Int64,
        name: String?,
        owner: String,
        resource: String,
        command: [String],
        state: String,
        place: Int?,
        machine: String?,
        exitStatus: Int?,
        message: String?,
        createdAt: Date,
        startedAt: Date?,
        endedAt: Date?,
        ttl: String,
        logBytes: Int64,
        awaitingInput: Bool,
        containerKept: Bool
    ) {
        self.id = id
        self.name = name
        self.owner = owner
        self.resource = resource
        self.command = command
        self.state = state
        self.place = place
        self.machine = machine
        self.exitStatus = exitStatus
        self.message = message
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.ttl = ttl
        self.logBytes = logBytes
        self.awaitingInput = awaitingInput
        self.containerKept = containerKept
    }
    /// Whether it is over.
    public var ended: Bool { !["queued", "starting", "running"].contains(state) }
    enum CodingKeys: String, CodingKey {
        case id = "ID"
        case name = "Name"
        case owner = "Owner"
        case resource = "Resource"
        case command = "Command"
        case state = "State"
        case place = "Place"
        case machine = "Machine"
        case exitStatus = "ExitStatus"
        case message = "Message"
        case createdAt = "CreatedAt"
        case startedAt = "StartedAt"
        case endedAt = "EndedAt"
        case ttl = "TTL"
        case logBytes = "LogBytes"
        case awaitingInput = "AwaitingInput"
        case containerKept = "ContainerKept"
    }
}

/// `PUT /user/{name}/limits`: what the user may hold at once. Each absent or null: the master's
/// default (`serve --user-leases …`).
public struct UserLimitsRequest: Codable, Sendable, Equatable {
    public var leases: Int?
    public var jobs: Int?
    public var memory: String?
    public var cpus: Double?
    public init(leases: Int? = nil, jobs: Int? = nil, memory: String? = nil, cpus: Double? = nil) {
        self.leases = leases
        self.jobs = jobs
        self.memory = memory
        self.cpus = cpus
    }
    enum CodingKeys: String, CodingKey {
        case leases = "Leases"
        case jobs = "Jobs"
        case memory = "Memory"
        case cpus = "CPUs"
    }
}

/// `GET /user/{name}`: the account, what it holds now and its limits (absent: no limit).
public struct UserDetail: Codable, Sendable, Equatable {
    public var user: UserInfo
    public var leases: Int
    public var jobs: Int
    public var memory: String
    public var cpus: Double
    public var limits: UserLimitsRequest
    public init(user: UserInfo, leases: Int, jobs: Int, memory: String, cpus: Double, limits: UserLimitsRequest) {
        self.user = user
        self.leases = leases
        self.jobs = jobs
        self.memory = memory
        self.cpus = cpus
        self.limits = limits
    }
    enum CodingKeys: String, CodingKey {
        case user = "User"
        case leases = "Leases"
        case jobs = "Jobs"
        case memory = "Memory"
        case cpus = "CPUs"
        case limits = "Limits"
    }
}
