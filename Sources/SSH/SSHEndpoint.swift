/// Where a machine is and how we log in to it.
public struct SSHEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    /// Path of the private key file (Ed25519 or ECDSA; see `SSHError` for RSA).
    public var privateKeyPath: String
    /// When set, a connection presenting another host key is refused with `.hostKeyMismatch`.
    public var expectedHostKey: HostKey?
    /// An idle connection sends an SSH keepalive this often, so that NAT and firewalls on the way
    /// keep it and a peer that went away is noticed.
    public var keepaliveSeconds: Int

    public init(host: String, port: Int = 22, user: String, privateKeyPath: String, expectedHostKey: HostKey? = nil, keepaliveSeconds: Int = 15) {
        self.host = host
        self.port = port
        self.user = user
        self.privateKeyPath = privateKeyPath
        self.expectedHostKey = expectedHostKey
        self.keepaliveSeconds = keepaliveSeconds
    }

    /// Parses `IP` or `IP:PORT` (and `[v6]:PORT`), as typed in `machine create`.
    public static func parseAddress(_ text: String) -> (host: String, port: Int)? {
        var host = Substring(text)
        var port = 22
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()) else { return nil }
                port = value
            }
        } else if host.filter({ $0 == ":" }).count == 1, let colon = host.firstIndex(of: ":") {
            guard let value = Int(host[host.index(after: colon)...]) else { return nil }
            port = value
            host = host[..<colon]
        }
        guard (1...65535).contains(port), !host.isEmpty, host.count <= 253,
            host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-:".contains($0)) })
        else { return nil }
        return (String(host), port)
    }

    public var description: String { "\(user)@\(host):\(port)" }
}

/// What a finished remote command left behind. Output is kept as bytes; decode it whole.
public struct ExecResult: Sendable, Equatable {
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var exitStatus: Int32
    /// The signal name (`TERM`, `KILL`) when the process was killed by one.
    public var exitSignal: String?

    public init(stdout: [UInt8], stderr: [UInt8], exitStatus: Int32, exitSignal: String? = nil) {
        self.stdout = stdout
        self.stderr = stderr
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
    }

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    public var succeeded: Bool { exitStatus == 0 && exitSignal == nil }
}

/// A piece of a running command's output, in the order it arrived.
public enum OutputChunk: Sendable, Equatable {
    case stdout([UInt8])
    case stderr([UInt8])
}

/// A PTY's requested terminal.
public struct TerminalSize: Sendable, Equatable {
    public var columns: Int
    public var rows: Int
    public init(columns: Int, rows: Int) {
        self.columns = columns
        self.rows = rows
    }
}
