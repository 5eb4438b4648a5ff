/// The `resalloc cp` protocol out of a lease, on the WebSocket `GET /lease/{name}/copy`: the
/// client's first frame is a text `CopyStart` (direction `out`); the master sends the tar stream
/// of `Path` in binary frames, then a `CopyEvent`.
///
/// Files go in as the streamed body of `PUT /lease/{name}/files?path=DIR`, answered with
/// `Copied`, not over the WebSocket: a client must mask every frame it sends, byte by byte.
public struct CopyStart: Codable, Sendable {
    public enum Direction: String, Codable, Sendable { case `in`, out }
    public var direction: Direction
    public var path: String

    public init(direction: Direction, path: String) {
        self.direction = direction
        self.path = path
    }
    enum CodingKeys: String, CodingKey {
        case direction = "Direction"
        case path = "Path"
    }
}

public struct CopyEvent: Codable, Sendable {
    public enum Kind: String, Codable, Sendable { case eof, done, error }
    public var type: Kind
    /// Bytes of tar stream moved (with `done`).
    public var bytes: Int?
    public var message: String?
    /// The HTTP status the failure would have (with `error`).
    public var status: Int?

    public init(type: Kind, bytes: Int? = nil, message: String? = nil, status: Int? = nil) {
        self.type = type
        self.bytes = bytes
        self.message = message
        self.status = status
    }
    enum CodingKeys: String, CodingKey {
        case type = "Type"
        case bytes = "Bytes"
        case message = "Message"
        case status = "Status"
    }
}

/// The answer to `PUT /lease/{name}/files?path=DIR` (and `/job/{id}/files`): the tar stream of the
/// request's body is unpacked in the directory.
public struct Copied: Codable, Sendable {
    public var success: Bool
    public var message: String
    /// Bytes of tar stream received.
    public var bytes: Int

    public init(message: String, bytes: Int) {
        self.success = true
        self.message = message
        self.bytes = bytes
    }
    enum CodingKeys: String, CodingKey {
        case success = "Success"
        case message = "Message"
        case bytes = "Bytes"
    }
}

/// `GET /lease/{name}/path?path=P`: what P is in the lease.
public struct PathInfo: Codable, Sendable {
    public var success: Bool
    public var message: String
    public var path: String
    /// `directory`, `file` or `symlink`.
    public var kind: String

    public init(path: String, kind: String) {
        self.success = true
        self.message = ""
        self.path = path
        self.kind = kind
    }
    enum CodingKeys: String, CodingKey {
        case success = "Success"
        case message = "Message"
        case path = "Path"
        case kind = "Kind"
    }
}

/// The `resalloc forward` protocol on the WebSocket `GET /lease/{name}/forward?port=N`: one
/// WebSocket for each TCP connection. Binary frames carry the connection's bytes both ways;
/// the master ends with a text `ForwardEvent` and closes.
public struct ForwardEvent: Codable, Sendable {
    public enum Kind: String, Codable, Sendable { case closed, error }
    public var type: Kind
    public var message: String?

    public init(type: Kind, message: String? = nil) {
        self.type = type
        self.message = message
    }
    enum CodingKeys: String, CodingKey {
        case type = "Type"
        case message = "Message"
    }
}
