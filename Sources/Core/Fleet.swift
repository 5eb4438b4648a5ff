import Docker
import Foundation
import Logging
import SSH
import Store

/// The machines: adding one (connect, pin its host key, ask its engine), listing, deleting,
/// and reaching one through the shared SSH pool.
public struct Fleet: Sendable {
    let database: any Store
    let pool: SSHConnectionPool
    let keyPath: String
    let logger: Logger
    /// Which images each machine holds, as far as this process has seen.
    public let images = ImageCache()
    /// The image builds running now, one per machine and tag.
    public let builds = ImageBuilds()
    /// The owner and pool networks each machine is known to hold.
    public let networks = NetworkCache()

    public init(database: any Store, pool: SSHConnectionPool, keyPath: String, logger: Logger) {
        self.database = database
        self.pool = pool
        self.keyPath = keyPath
        self.logger = logger
    }

    /// Connects to `address` (`IP` or `IP:PORT`), checks `docker version`, reads its CPUs and
    /// memory, pins its host key, and only then stores the machine.
    ///
    /// `requireFirewall`: a machine without resalloc-firewall's rules (resources/setup.sh) is
    /// refused, with a sentence that says so.
    public func add(
        name: String,
        login: String,
        address: String,
        capacity: Int? = nil,
        requireFirewall: Bool = false
    ) async throws(MasterError)
        -> Machine
    {
        try InputRules.validateName(name, "machine")
        try InputRules.validateLogin(login)
        let (host, port) = try InputRules.parseAddress(address)
        if let capacity, !InputRules.capacity.contains(capacity) { throw MasterError(.invalid, "capacity must be 1 to 10000") }
        do {
            if try await database.machine(named: name) != nil { throw MasterError(.conflict, "a machine named \(name) exists already") }
        } catch { throw .from(error) }
        let endpoint = SSHEndpoint(host: host, port: port, user: login, privateKeyPath: keyPath)
        let docker = RemoteDocker(endpoint: endpoint, pool: pool, commandTimeout: .seconds(20))
        let hostKey: HostKey
        let info: DockerInfo
        let firewall: String?
        do {
            hostKey = try await pool.connection(to: endpoint).hostKey
            _ = try await docker.version()
            info = try await docker.info()
            firewall = requireFirewall ? try await docker.firewallState() : nil
        } catch {
            await pool.disconnect(endpoint)
            logger.warning("machine create failed", metadata: ["machine": "\(name)", "address": "\(address)", "error": "\(error)"])
            throw .from(error, machine: "\(name) (\(address))")
        }
        // The pool keys connections by endpoint, pinned key included: hand over to the pinned one.
        await pool.disconnect(endpoint)
        if requireFirewall && firewall == nil { throw MasterError(.unprocessable, OwnerNetworks.missingFirewall(name)) }
        let machine = Machine(
            name: name,
            login: login,
            host: host,
            port: port,
            hostKeyType: hostKey.type,
            hostKeyFingerprint: hostKey.fingerprint,
            cpus: info.cpus,
            memoryBytes: info.memoryBytes,
            capacity: capacity ?? max(4, info.cpus * 4)
        )
        do { return try await database.createMachine(machine) } catch { throw .from(error) }
    }

    public func machines() async throws(MasterError) -> [Machine] {
        do { return try await database.machines() } catch { throw .from(error) }
    }

    /// Deletes a machine. With live leases this is refused unless `force`, which removes their
    /// containers (best effort) and their rows first.
    public func delete(name: String, force: Bool, masterID: String) async throws(MasterError) {
        let machine: Machine
        let leases: [LeaseListing]
        do {
            guard let found = try await database.machine(named: name) else { throw MasterError(.notFound, "no machine \(name)") }
            machine = found
            leases = try await database.leaseListings(ownerID: nil, name: nil, machineID: found.id)
        } catch { throw .from(error) }
        let live = leases.filter { $0.lease.state != .failed }
        if !live.isEmpty && !force {
            throw MasterError(.conflict, "machine \(name) has \(live.count) live lease(s); delete them first or force the deletion")
        }
        let docker = self.docker(on: machine)
        let slots: [PoolSlot]
        do { slots = try await database.poolSlots(machineID: machine.id) } catch { throw .from(error) }
        if !slots.isEmpty {
            do { _ = try await docker.remove(slots.map { $0.containerName(masterID: masterID) }) } catch {
                logger.warning("could not remove the warm containers of a deleted machine", metadata: ["machine": "\(name)", "error": "\(error)"])
            }
        }
        for listing in leases {
            do { _ = try await docker.remove(listing.lease.containerName(masterID: masterID)) } catch {
                logger.warning("could not remove a container of a deleted machine", metadata: ["machine": "\(name)", "error": "\(error)"])
            }
            do { try await database.deleteLease(id: listing.lease.id!) } catch { throw .from(error) }
        }
        do { try await database.deleteMachine(id: machine.id!) } catch { throw .from(error) }
        await pool.disconnect(endpoint(for: machine))
    }

    /// How the master logs in to `machine`, with its pinned host key.
    public func endpoint(for machine: Machine) -> SSHEndpoint {
        SSHEndpoint(
            host: machine.host,
            port: machine.port,
            user: machine.login,
            privateKeyPath: keyPath,
            expectedHostKey: HostKey(type: machine.hostKeyType, fingerprint: machine.hostKeyFingerprint)
        )
    }

    public func docker(on machine: Machine) -> RemoteDocker {
        var docker = RemoteDocker(endpoint: endpoint(for: machine), pool: pool)
        docker.machineName = machine.name
        return docker
    }
}
