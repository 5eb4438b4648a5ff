/// `docker version --format '{{json .}}'`, the parts we use.
public struct DockerVersion: Sendable, Decodable, Equatable {
    public struct Component: Sendable, Decodable, Equatable {
        public var version: String
        public var apiVersion: String
        enum CodingKeys: String, CodingKey {
            case version = "Version"
            case apiVersion = "ApiVersion"
        }
    }
    public var client: Component
    public var server: Component?
    enum CodingKeys: String, CodingKey {
        case client = "Client"
        case server = "Server"
    }
}

/// `docker info --format '{{json .}}'`, the parts placement and operators use.
public struct DockerInfo: Sendable, Decodable, Equatable {
    public var id: String
    public var name: String
    public var serverVersion: String
    public var cpus: Int
    public var memoryBytes: Int64
    public var containersRunning: Int
    enum CodingKeys: String, CodingKey {
        case id = "ID"
        case name = "Name"
        case serverVersion = "ServerVersion"
        case cpus = "NCPU"
        case memoryBytes = "MemTotal"
        case containersRunning = "ContainersRunning"
    }
}

/// One line of `docker ps --format '{{json .}}'`.
public struct ContainerSummary: Sendable, Decodable, Equatable {
    public var id: String
    public var names: String
    public var image: String
    public var state: String
    public var status: String
    enum CodingKeys: String, CodingKey {
        case id = "ID"
        case names = "Names"
        case image = "Image"
        case state = "State"
        case status = "Status"
    }
}

/// `docker container inspect`, the parts we use.
public struct ContainerDetails: Sendable, Decodable, Equatable {
    public struct State: Sendable, Decodable, Equatable {
        public var status: String
        public var running: Bool
        public var exitCode: Int
        enum CodingKeys: String, CodingKey {
            case status = "Status"
            case running = "Running"
            case exitCode = "ExitCode"
        }
    }
    public struct Config: Sendable, Decodable, Equatable {
        public var image: String
        public var labels: [String: String]?
        public var cmd: [String]?
        enum CodingKeys: String, CodingKey {
            case image = "Image"
            case labels = "Labels"
            case cmd = "Cmd"
        }
    }
    public struct HostConfig: Sendable, Decodable, Equatable {
        public var initProcess: Bool?
        enum CodingKeys: String, CodingKey { case initProcess = "Init" }
    }
    public var id: String
    /// As Docker reports it, with a leading `/`.
    public var name: String
    public var created: String
    public var state: State
    public var config: Config
    public var hostConfig: HostConfig
    enum CodingKeys: String, CodingKey {
        case id = "Id"
        case name = "Name"
        case created = "Created"
        case state = "State"
        case config = "Config"
        case hostConfig = "HostConfig"
    }

    public var labels: [String: String] { config.labels ?? [:] }
}

/// What `RemoteDocker.run` starts.
public struct ContainerSpec: Sendable, Equatable {
    public var name: String
    public var image: String
    public var labels: [String: String]
    /// The main process; a keep-alive so the container stays up whatever CMD the image has.
    public var command: [String]
    public var limits: ContainerLimits
    /// The network it joins (`--network`); nil: the engine's default.
    public var network: String?

    public init(
        name: String,
        image: String,
        labels: [String: String] = [:],
        command: [String] = ["sleep", "infinity"],
        limits: ContainerLimits = ContainerLimits(),
        network: String? = nil
    ) {
        self.name = name
        self.image = image
        self.labels = labels
        self.command = command
        self.limits = limits
        self.network = network
    }
}

/// What one container may take of its machine. Every container also runs with
/// `no-new-privileges` and without `NET_RAW` (no raw sockets: no spoofed packets, no ARP games
/// on its network).
public struct ContainerLimits: Sendable, Equatable {
    /// Memory, swap included (`--memory` and `--memory-swap` alike); nil: no limit.
    public var memoryBytes: Int64?
    /// CPUs in thousandths (`--cpus 1.5` is 1500); nil: no limit.
    public var milliCPUs: Int?
    /// Processes and threads (`--pids-limit`); nil: no limit.
    public var pids: Int?

    public init(memoryBytes: Int64? = nil, milliCPUs: Int? = nil, pids: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
        self.pids = pids
    }

    /// `docker run`'s options for these limits and the privileges every container drops.
    public var runOptions: [String] {
        var options = ["--security-opt", "no-new-privileges", "--cap-drop", "NET_RAW"]
        if let memoryBytes { options += ["--memory", "\(memoryBytes)b", "--memory-swap", "\(memoryBytes)b"] }
        if let milliCPUs { options += ["--cpus", Self.cpus(milliCPUs)] }
        if let pids { options += ["--pids-limit", String(pids)] }
        return options
    }

    /// Thousandths of a CPU as docker and people write them: 1500 is `1.5`, 2000 is `2`.
    public static func cpus(_ milli: Int) -> String {
        let whole = milli / 1000
        let fraction = milli % 1000
        guard fraction != 0 else { return String(whole) }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 3 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }
}

/// A container as `RemoteDocker.containers(labelled:_:showing:)` lists it.
public struct LabelledContainer: Sendable, Equatable {
    public var name: String
    /// `running`, `exited`, `created`, …
    public var state: String
    /// The value of the label asked for (empty when absent).
    public var label: String
}
