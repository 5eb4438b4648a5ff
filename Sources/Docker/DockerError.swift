import SSH

/// A remote Docker operation that did not work, with a sentence for a person.
public enum DockerError: Error, Sendable, CustomStringConvertible {
    /// The machine could not be reached or the connection broke.
    case transport(SSHError)
    /// An argument failed validation before anything was sent; nothing ran.
    case invalidArgument(String)
    /// `docker` ran and failed; `stderr` is its own message, for the log.
    case commandFailed(command: String, status: Int32, stderr: String)
    /// The image build failed; `logTail` is the end of its output, for the person who wrote the Dockerfile.
    case buildFailed(tag: String, logTail: String)
    /// The container does not exist.
    case noSuchContainer(String)
    /// `docker` printed something we could not parse.
    case unparsable(command: String, output: String)
    /// The login cannot use a Docker engine on the machine; `reason` says why and what to do.
    case engineUnavailable(reason: String, stderr: String)
    /// The machine's sshd ran `docker command`, but the engine stopped answering: `docker version`
    /// got no answer within the probe's deadline while the command waited.
    case engineNotAnswering(command: String, waited: Duration)

    public var description: String {
        switch self {
        case .transport(let error): return error.message
        case .invalidArgument(let message): return message
        case .commandFailed(let command, let status, let stderr):
            let firstLine = stderr.split(separator: "\n").first.map(String.init) ?? ""
            return "docker \(command) failed with status \(status): \(firstLine)"
        case .buildFailed(let tag, let logTail): return "building \(tag) failed:\n\(logTail)"
        case .noSuchContainer(let name): return "no container \(name)"
        case .unparsable(let command, _): return "could not read the output of docker \(command)"
        case .engineUnavailable(let reason, let stderr):
            let firstLine = stderr.split(separator: "\n").first.map(String.init) ?? ""
            return firstLine.isEmpty ? reason : "\(reason) (\(firstLine))"
        case .engineNotAnswering(let command, let waited):
            return "the Docker engine does not answer (its sshd does): docker \(command) waited \(waited.components.seconds) s"
        }
    }
}
