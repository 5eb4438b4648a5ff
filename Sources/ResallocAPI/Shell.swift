/// The `resalloc ssh` protocol on the WebSocket `GET /lease/{name}/shell`.
///
/// The client's first frame is a text `ShellStart`. Then binary frames carry bytes: from the
/// client, the command's input; from the master, output whose first byte says the stream
/// (`ShellStream`). Text frames carry `ShellControl` (client → master: resize, end of input) and
/// `ShellEvent` (master → client: the exit status, or an error), after which the master closes.
public struct ShellStart: Codable, Sendable {
    /// A terminal (`docker exec -it`) or plain pipes (`docker exec -i`).
    public var tty: Bool
    public var term: String
    public var columns: Int
    public var rows: Int
    /// The command; the image's shell (bash, else sh) when nil.
    public var command: [String]?

    public init(tty: Bool, term: String, columns: Int, rows: Int, command: [String]?) {
        self.tty = tty
        self.term = term
        self.columns = columns
        self.rows = rows
        self.command = command
    }
}

public struct ShellControl: Codable, Sendable {
    public enum Kind: String, Codable, Sendable { case resize, eof }
    public var type: Kind
    public var columns: Int?
    public var rows: Int?

    public init(type: Kind, columns: Int? = nil, rows: Int? = nil) {
        self.type = type
        self.columns = columns
        self.rows = rows
    }
}

public struct ShellEvent: Codable, Sendable {
    public enum Kind: String, Codable, Sendable { case exit, error }
    public var type: Kind
    public var status: Int32?
    public var message: String?

    public init(type: Kind, status: Int32? = nil, message: String? = nil) {
        self.type = type
        self.status = status
        self.message = message
    }
}

/// The first byte of every binary frame from the master.
public enum ShellStream: UInt8, Sendable {
    case stdout = 1
    case stderr = 2
}
