import Foundation

/// What `resalloc login` remembers: the server and the token, in
/// `~/.config/resalloc/config.json` (directory 0700, file 0600).
public struct ClientConfig: Codable, Sendable, Equatable {
    public var server: String?
    public var token: String?
    public var user: String?

    public init(server: String? = nil, token: String? = nil, user: String? = nil) {
        self.server = server
        self.token = token
        self.user = user
    }

    /// `$XDG_CONFIG_HOME/resalloc/config.json`, else `~/.config/resalloc/config.json`.
    public static var path: String {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(environment["HOME"] ?? NSHomeDirectory())/.config"
        return "\(base)/resalloc/config.json"
    }

    public static func load() -> ClientConfig {
        guard let data = FileManager.default.contents(atPath: path), let config = try? JSONDecoder().decode(ClientConfig.self, from: data) else {
            return ClientConfig()
        }
        return config
    }

    /// Writes the file with mode 0600 in a 0700 directory, replacing it atomically.
    public func save() throws {
        let directory = (Self.path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let temporary = "\(Self.path).\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: try encoder.encode(self), attributes: [.posixPermissions: 0o600]) else {
            throw ClientError.protocolError("cannot write \(temporary)")
        }
        guard rename(temporary, Self.path) == 0 else { throw ClientError.protocolError("cannot write \(Self.path)") }
    }
}
