import Foundation
import SSH
import Synchronization

/// Every session this master process carries into leases — shells, commands, SFTP, copies,
/// forward connections, from either front door — by user and machine: so that one user holds
/// at most `maxPerUser` of a machine's SSH channels at once (the rest of the machine's channels
/// stay for other users and for the master's own work), and so that a user switched off loses
/// every open session at once. Per master process: several masters on one database each keep
/// their own count.
public final class SessionLedger: Sendable {
    private struct Entry {
        let user: String
        let machineID: Int64
        let leaseID: Int64?
        var process: RemoteProcess?
    }
    private struct State {
        var entries: [Int: Entry] = [:]
        var nextID = 0
        var maxPerUser: Int
    }
    private let state: Mutex<State>

    public init(maxPerUser: Int = 8) { state = Mutex(State(maxPerUser: max(1, maxPerUser))) }

    /// How many sessions one user may hold on one machine at once.
    public var maxPerUser: Int {
        get { state.withLock { $0.maxPerUser } }
        set { state.withLock { $0.maxPerUser = max(1, newValue) } }
    }

    /// A place for one more session of `user` on the target's machine, or a 429 that says the
    /// user holds as many as they may.
    func admit(_ target: LeaseTarget) throws(MasterError) -> SessionTicket {
        let machineID = target.machine.id ?? 0
        let admitted: Int? = state.withLock { state in
            let held = state.entries.values.count { $0.user == target.user && $0.machineID == machineID }
            guard held < state.maxPerUser else { return nil }
            state.nextID += 1
            state.entries[state.nextID] = Entry(user: target.user, machineID: machineID, leaseID: target.leaseID)
            return state.nextID
        }
        guard let admitted else {
            throw MasterError(
                .tooManyRequests,
                "you have \(maxPerUser) sessions open on machine \(target.machine.name) (shells, copies and forwards count), "
                    + "as many as one user may; end one and try again",
                retryAfter: 5
            )
        }
        return SessionTicket(id: admitted, ledger: self)
    }

    /// The process the ticket's session runs, so that `end(user:)` can stop it.
    func attach(_ ticket: SessionTicket, _ process: RemoteProcess) {
        let gone = state.withLock { state -> Bool in
            guard state.entries[ticket.id] != nil else { return true }
            state.entries[ticket.id]?.process = process
            return false
        }
        if gone { process.close() }
    }

    func release(_ ticket: SessionTicket) {
        _ = state.withLock { $0.entries.removeValue(forKey: ticket.id) }
    }

    /// Ends every session of `user` now; returns how many.
    @discardableResult
    public func end(user: String) -> Int {
        let ended = state.withLock { state -> [RemoteProcess?] in
            let ids = state.entries.filter { $0.value.user == user }.map(\.key)
            return ids.map { state.entries.removeValue(forKey: $0)?.process }
        }
        for process in ended { process?.close() }
        return ended.count
    }

    /// The users with sessions open now.
    /// The leases with a session open now (they are not idle).
    public var leasesInUse: [Int64] { state.withLock { Array(Set($0.entries.values.compactMap(\.leaseID))) } }

    public var users: Set<String> { state.withLock { Set($0.entries.values.map(\.user)) } }
}

/// One admitted session's place in the ledger; released when the session ends.
struct SessionTicket: Sendable {
    let id: Int
    let ledger: SessionLedger

    func attach(_ process: RemoteProcess) { ledger.attach(self, process) }

    /// Releases the place once `process` has ended, however it ends.
    func release(after process: RemoteProcess) {
        attach(process)
        Task {
            _ = try? await process.exitStatus()
            ledger.release(self)
        }
    }

    func release() { ledger.release(self) }
}

extension Master {
    /// Records that the leases with a session open here are in use (see `Lease.idleSeconds`).
    public func touchLeasesInUse() async {
        let leases = sessions.leasesInUse
        guard !leases.isEmpty else { return }
        do { try await database.touchLeases(ids: leases, at: await database.clock()) } catch {
            logger.warning("could not record the leases in use", metadata: ["error": "\(error)"])
        }
    }

    /// Ends the sessions of every user with sessions open here who is now disabled (or gone).
    public func endSessionsOfDisabledUsers() async {
        for name in sessions.users {
            guard let user = try? await database.user(named: name) else { continue }
            if user.disabled {
                let ended = sessions.end(user: name)
                logger.notice("ended the sessions of a disabled user", metadata: ["user": "\(name)", "sessions": "\(ended)"])
            }
        }
    }
}
