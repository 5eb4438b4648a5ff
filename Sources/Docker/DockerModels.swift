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

    public init(name: String, image: String, labels: [String: String] = [:], command: [String] = ["sleep", "infinity"]) {
        self.name = name
        self.image = image
        self.labels = labels
        self.command = command
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
