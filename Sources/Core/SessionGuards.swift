import Docker
import Foundation
import Logging
import SSH

/// Ends what a session started in its lease within moments of its client going away.
///
/// `docker exec` leaves a command running when its client is cut off. Starting a relay container
/// to end it then costs a second or more (several on a loaded machine), so a session that has run
/// for `after` gets a guard: one relay per lease, started in the container's PID namespace and
/// shared by its sessions, that ends a session's processes the moment it is told to — or all of
/// them if the master dies and the guard's input closes. A guard with no sessions left is closed
/// after `idle`. Sessions shorter than `after` (a quick `ssh lease true`) never start one; if
/// their client goes away, the relay is started then.
public actor SessionGuards {
    private struct Guard {
        let starting: Task<RemoteProcess?, Never>
        var sessions: Set<String> = []
        var closing: Task<Void, Never>?
    }

    private var guards: [String: Guard] = [:]
    private let relay: RelayImage?
    private let logger: Logger
    let after: Duration
    let idle: Duration

    init(relay: RelayImage?, logger: Logger, after: Duration = .seconds(1), idle: Duration = .seconds(30)) {
        self.relay = relay
        self.logger = logger
        self.after = after
        self.idle = idle
    }

    /// Tracks `marker`'s session in its lease's guard, starting the guard if the lease has none;
    /// false if no guard could be had.
    func track(_ marker: String, in target: LeaseTarget, docker: RemoteDocker) async -> Bool {
        let key = Self.key(target)
        let starting: Task<RemoteProcess?, Never>
        if let existing = guards[key] {
            starting = existing.starting
        } else {
            guard let relay else { return false }
            let container = target.container
            let (logger, name) = (logger, target.name)
            starting = Task {
                do { return try await docker.startSessionGuard(container, relay: relay) } catch {
                    logger.warning("could not start a session guard", metadata: ["lease": "\(name)", "error": "\(error)"])
                    return nil
                }
            }
            guards[key] = Guard(starting: starting)
            Task { await self.watch(key, starting) }
        }
        guards[key]?.closing?.cancel()
        guards[key]?.closing = nil
        guard let process = await starting.value, guards[key]?.starting == starting else { return false }
        process.write(Array("+\(marker)\n".utf8))
        guards[key]?.sessions.insert(marker)
        return true
    }

    /// The session ended by itself: the guard forgets it.
    func release(_ marker: String, in target: LeaseTarget) async {
        _ = await send("-", marker, target)
    }

    /// The session's client went away: its processes are ended now. False if no guard tracks it.
    func end(_ marker: String, in target: LeaseTarget) async -> Bool {
        await send("!", marker, target)
    }

    private func send(_ command: String, _ marker: String, _ target: LeaseTarget) async -> Bool {
        let key = Self.key(target)
        guard guards[key]?.sessions.remove(marker) != nil, let process = await guards[key]?.starting.value else { return false }
        process.write(Array("\(command)\(marker)\n".utf8))
        if guards[key]?.sessions.isEmpty == true {
            let idle = idle
            guards[key]?.closing = Task {
                try? await Task.sleep(for: idle)
                if !Task.isCancelled { await self.close(key) }
            }
        }
        return true
    }

    /// Closes the guard's input: with no sessions tracked it just exits.
    private func close(_ key: String) async {
        guard let found = guards[key], found.sessions.isEmpty else { return }
        guards[key] = nil
        await found.starting.value?.closeInput()
    }

    /// Forgets a guard once it has ended (or never started): the next session starts another.
    private func watch(_ key: String, _ starting: Task<RemoteProcess?, Never>) async {
        if let process = await starting.value { _ = try? await process.exitStatus() }
        if guards[key]?.starting == starting { guards[key] = nil }
    }

    /// Closes every guard (graceful shutdown): each ends the sessions it still tracks.
    func closeAll() async {
        let all = guards.values
        guards = [:]
        for found in all { await found.starting.value?.closeInput() }
    }

    private static func key(_ target: LeaseTarget) -> String { "\(target.machine.id ?? 0)/\(target.container)" }
}

/// A session opened in a lease: its process, and what ends it properly. Every front door calls
/// `close(clientLeft:)` once the session is over.
public final class OpenedSession: Sendable {
    public let process: RemoteProcess
    /// `RESALLOC_SESSION` in the environment of everything the session starts.
    public let marker: String
    let target: LeaseTarget
    let master: Master
    private let tracking: Task<Bool, Never>

    init(process: RemoteProcess, marker: String, target: LeaseTarget, master: Master) {
        self.process = process
        self.marker = marker
        self.target = target
        self.master = master
        let guards = master.sessionGuards
        let docker = master.docker(target)
        tracking = Task {
            do { try await Task.sleep(for: guards.after) } catch { return false }
            return await guards.track(marker, in: target, docker: docker)
        }
    }

    /// `clientLeft`: the client went away before the session's command ended, so what the
    /// session started is ended now (through the lease's guard, or a relay started for it).
    public func close(clientLeft: Bool) async {
        tracking.cancel()
        let tracked = await tracking.value
        if clientLeft {
            if tracked, await master.sessionGuards.end(marker, in: target) { return }
            await master.endSession(target, marker: marker)
        } else if tracked {
            await master.sessionGuards.release(marker, in: target)
        }
    }
}
