import Docker
import Foundation
import SSH
import Store

/// A running lease as a front door reaches it: its machine and its container.
public struct LeaseTarget: Sendable {
    public let name: String
    public let machine: Machine
    public let container: String
    /// Who reached it (for the audit trail).
    public var user: String = ""
    /// The lease's id (its sessions keep it from going idle).
    public var leaseID: Int64?
}

/// Reaching into a lease: shells, file copies and port tunnels. Every front door (the
/// WebSocket bridges, the console, the SSH gateway) comes through `reach(_:for:)`, the one
/// check that the lease is the caller's and running; another user's lease is "not found".
extension Master {
    public func reach(_ name: String, for caller: User) async throws(MasterError) -> LeaseTarget {
        let listing = try await lease(named: name, for: caller)
        guard listing.lease.state == .running, let machineID = listing.lease.machineId else {
            throw MasterError(.conflict, "lease \(listing.lease.name) is \(listing.lease.state.rawValue), not running")
        }
        let machine: Machine
        do {
            guard let found = try await database.machine(id: machineID) else { throw MasterError(.notFound, "the lease's machine is gone") }
            machine = found
        } catch { throw .from(error) }
        return LeaseTarget(
            name: listing.lease.name,
            machine: machine,
            container: listing.lease.containerName(masterID: masterID),
            user: caller.name,
            leaseID: listing.lease.id
        )
    }

    public func docker(_ target: LeaseTarget) -> RemoteDocker { fleet.docker(on: target.machine) }

    /// What `path` is in the lease; a 404 that names it when nothing is there.
    public func pathKind(_ target: LeaseTarget, _ path: String) async throws(MasterError) -> PathKind {
        do {
            guard let kind = try await docker(target).pathKind(target.container, path) else {
                throw MasterError(.notFound, "no such path in lease \(target.name): \(path)")
            }
            return kind
        } catch { throw .from(error, machine: target.machine.name) }
    }

    /// A tar stream of `path`, read as it comes (acknowledge with `RemoteProcess.consumed`).
    public func copyOut(_ target: LeaseTarget, _ path: String) async throws(MasterError) -> RemoteProcess {
        let ticket = try sessions.admit(target)
        do {
            let process = try await docker(target).copyOut(target.container, path)
            ticket.release(after: process)
            return process
        } catch {
            ticket.release()
            throw .from(error, machine: target.machine.name)
        }
    }

    /// Extracts the tar stream that `write` sends into the lease's directory `directory`.
    public func copyIn(_ target: LeaseTarget, directory: String, write: (RemoteProcess) async throws -> Int?) async throws(MasterError) {
        let ticket = try sessions.admit(target)
        defer { ticket.release() }
        do {
            try await docker(target).copyIn(target.container, directory: directory, relay: relay) { process in
                ticket.attach(process)
                return try await write(process)
            }
        } catch .invalidArgument(let message) {
            switch message {
            case RemoteDocker.noSuchDirectory: throw MasterError(.notFound, "no such path in lease \(target.name): \(directory)")
            case RemoteDocker.notADirectory: throw MasterError(.invalid, "\(directory) in lease \(target.name) is not a directory")
            default: throw MasterError(.invalid, "\(directory) in lease \(target.name): \(message)")
            }
        } catch { throw .from(error, machine: target.machine.name) }
    }

    /// A connection to `port` on the lease's own loopback: its bytes are the process's input
    /// and output (flow-controlled), through a relay in the container's network namespace.
    /// The caller ends it with `end(_:)` when its client has gone.
    public func forward(_ target: LeaseTarget, port: Int) async throws(MasterError) -> ForwardRelay {
        guard let relay else { throw MasterError(.internal, "the master has no static busybox for port forwards (install busybox-static)") }
        let ticket = try sessions.admit(target)
        let name = "resalloc-\(masterID.prefix(8))-forward-\(UUID().uuidString.prefix(8).lowercased())"
        do {
            let process = try await docker(target).forward(target.container, port: port, relay: relay, name: name)
            ticket.release(after: process)
            return ForwardRelay(process: process, container: name, target: target)
        } catch {
            ticket.release()
            throw .from(error, machine: target.machine.name)
        }
    }

    /// Ends a forward whose client has gone: its channel, and its relay container, which would
    /// otherwise live on while the lease's server keeps the connection open.
    public func end(_ forward: ForwardRelay) async {
        forward.process.close()
        let (docker, logger) = (docker(forward.target), logger)
        // Not cancelled with its caller (whose wait ends as the channel closes): a relay left
        // behind would hold its connection to the lease's server.
        await Task {
            do { try await docker.remove(forward.container) } catch {
                logger.warning("could not remove a forward's relay", metadata: ["container": "\(forward.container)", "error": "\(error)"])
            }
        }.value
    }

    /// Ends what a session marked `marker` left running in the lease (its client went away), with
    /// a relay started for it: what `OpenedSession.close` does when no guard tracks the session.
    func endSession(_ target: LeaseTarget, marker: String) async {
        guard let relay else { return }
        do { try await docker(target).endSession(target.container, marker: marker, relay: relay) } catch {
            logger.warning("could not end a dropped session's processes", metadata: ["lease": "\(target.name)", "error": "\(error)"])
        }
    }

    /// Starts a shell, a command or an SFTP server in the lease: the one place both front doors
    /// (`resalloc ssh` over the WebSocket, and the SSH gateway) open sessions. The caller closes
    /// the session when it is over, saying whether its client went away first. Its output is
    /// flow-controlled: the caller says what it has passed on (`RemoteProcess.consumed`), so a
    /// client slower than the program holds the program back instead of filling the master.
    public func openSession(_ target: LeaseTarget, _ spec: SessionSpec) async throws(MasterError) -> OpenedSession {
        let marker = UUID().uuidString
        var environment = spec.environment.filter { $0.key == "LANG" || $0.key.hasPrefix("LC_") }
        environment["RESALLOC_SESSION"] = marker
        let docker = docker(target)
        let ticket = try sessions.admit(target)
        let process: RemoteProcess
        do {
            switch spec.command {
            case .shell:
                guard let terminal = spec.terminal else {
                    process = try await docker.start(target.container, ["sh"], environment: environment, flowControlled: true)
                    break
                }
                process = try await docker.openShell(
                    target.container,
                    term: terminal.term,
                    size: terminal.size,
                    environment: environment,
                    flowControlled: true
                )
            case .argv(let argv):
                process = try await docker.start(target.container, argv, pty: spec.terminal, environment: environment, flowControlled: true)
            case .line(let line):
                process = try await docker.start(
                    target.container,
                    ["sh", "-c", line],
                    pty: spec.terminal,
                    environment: environment,
                    flowControlled: true
                )
            case .sftp:
                process = try await docker.start(target.container, ["sh", "-c", Self.sftpLauncher], environment: environment, flowControlled: true)
            }
        } catch {
            ticket.release()
            throw .from(error, machine: target.machine.name)
        }
        ticket.release(after: process)
        return OpenedSession(process: process, marker: marker, target: target, master: self)
    }

    /// The image's own sftp-server, wherever its distribution puts it.
    static let sftpLauncher = """
        for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server; do
          [ -x "$p" ] && exec "$p"
        done
        echo "resalloc: this image has no sftp-server: add openssh-sftp-server (Debian, Ubuntu) or openssh (Alpine, Fedora) to its Dockerfile" >&2
        exit 127
        """
}

/// What a session runs in a lease.
public enum SessionCommand: Sendable, Equatable {
    /// The image's shell: bash when it has it, else sh.
    case shell
    /// A command as an argument vector (`resalloc ssh NAME -- CMD…`).
    case argv([String])
    /// A command line, run by the image's sh (`ssh LEASE@MASTER 'CMD'`, as sshd runs it).
    case line(String)
    /// The image's sftp-server (the `sftp` subsystem: sftp, scp, rsync's editors).
    case sftp
}

public struct SessionSpec: Sendable {
    /// A PTY of this terminal type and size, or plain pipes with stderr apart.
    public var terminal: (term: String, size: TerminalSize)?
    public var command: SessionCommand
    /// The client's environment; only `LANG` and `LC_*` are passed in.
    public var environment: [String: String]

    public init(terminal: (term: String, size: TerminalSize)?, command: SessionCommand, environment: [String: String] = [:]) {
        self.terminal = terminal
        self.command = command
        self.environment = environment
    }
}

/// One forwarded connection: the relay's process, and its container on the lease's machine.
public struct ForwardRelay: Sendable {
    public let process: RemoteProcess
    public let container: String
    let target: LeaseTarget
}
