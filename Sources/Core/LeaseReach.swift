import Docker
import SSH
import Store

/// A running lease as a front door reaches it: its machine and its container.
public struct LeaseTarget: Sendable {
    public let name: String
    public let machine: Machine
    public let container: String
}

/// Reaching into a lease: shells, file copies and port tunnels. Every front door (the
/// WebSocket bridges, the console, the SSH gateway) comes through `reach(_:for:)`, the one
/// check that the lease is the caller's and running; another user's lease is "not found".
extension Master {
    public func reach(_ name: String, for caller: User) throws(MasterError) -> LeaseTarget {
        let listing = try lease(named: name, for: caller)
        guard listing.lease.state == .running, let machineID = listing.lease.machineId else {
            throw MasterError(.conflict, "lease \(listing.lease.name) is \(listing.lease.state.rawValue), not running")
        }
        let machine: Machine
        do {
            guard let found = try database.machine(id: machineID) else { throw MasterError(.notFound, "the lease's machine is gone") }
            machine = found
        } catch { throw .from(error) }
        return LeaseTarget(name: listing.lease.name, machine: machine, container: listing.lease.containerName(masterID: masterID))
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
        do { return try await docker(target).copyOut(target.container, path) } catch { throw .from(error, machine: target.machine.name) }
    }

    /// Extracts the tar stream that `write` sends into the lease's directory `directory`.
    public func copyIn(_ target: LeaseTarget, directory: String, write: (RemoteProcess) async throws -> Int?) async throws(MasterError) {
        do {
            try await docker(target).copyIn(target.container, directory: directory, write: write)
        } catch .invalidArgument(let message) {
            throw MasterError(.invalid, "\(directory) in lease \(target.name): \(message)")
        } catch { throw .from(error, machine: target.machine.name) }
    }

    /// A connection to `port` on the lease's own loopback: its bytes are the process's input
    /// and output (flow-controlled), through a relay in the container's network namespace.
    public func forward(_ target: LeaseTarget, port: Int) async throws(MasterError) -> RemoteProcess {
        guard let relay else { throw MasterError(.internal, "the master has no static busybox for port forwards (install busybox-static)") }
        do { return try await docker(target).forward(target.container, port: port, relay: relay) } catch {
            throw .from(error, machine: target.machine.name)
        }
    }

    /// Ends what a session marked `marker` left running in the lease (its client went away).
    public func endSession(_ target: LeaseTarget, marker: String) async {
        guard let relay else { return }
        do { try await docker(target).endSession(target.container, marker: marker, relay: relay) } catch {
            logger.warning("could not end a dropped session's processes", metadata: ["lease": "\(target.name)", "error": "\(error)"])
        }
    }
}
