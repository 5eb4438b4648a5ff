import SSH
import Synchronization

extension RemoteDocker {
    /// Renames the warm container `from` (engine id `id`) to `to`, and says whether it was
    /// there and runs. The rename is atomic on the host (of two claims of one container, one
    /// fails); the check runs beside it, by id, so the claim costs one docker command's time
    /// in one round trip.
    ///
    /// `joining`: the network the container moves to (its lease owner's), leaving `leaving` (the
    /// pool's); both in the same round trip, after the rename succeeded.
    public func claim(_ from: String, id: String, as to: String, joining: String? = nil, leaving: String? = nil) async throws(DockerError) -> Bool {
        try DockerNames.validateContainer(from)
        try DockerNames.validateContainer(to)
        guard id.wholeMatch(of: /[0-9a-f]{64}/) != nil else { throw .invalidArgument("'\(id)' is not a container id") }
        // The warm container's FIFO stays (its main process waits on it for good, as a lease's):
        // its directory is the source of a bind mount, without which `docker cp` fails.
        var command =
            "docker " + ShellQuote.join(["rename", from, to]) + " & renamed=$!; docker "
            + ShellQuote.join(["inspect", "--format", "{{.State.Running}}", id]) + " 2>/dev/null; wait $renamed"
        if let joining {
            try DockerNames.validateContainer(joining)
            command += " && docker " + ShellQuote.join(["network", "connect", joining, id])
        }
        if let leaving {
            try DockerNames.validateContainer(leaving)
            command += " && docker " + ShellQuote.join(["network", "disconnect", "--force", leaving, id])
        }
        let result: ExecResult
        do { result = try await pool.execute(on: endpoint, command, stdin: nil, timeout: commandTimeout, onOutput: nil) } catch {
            throw .transport(error)
        }
        guard result.succeeded else {
            if result.stderrText.contains("No such container") { return false }
            throw .commandFailed(command: "rename", status: result.exitStatus, stderr: result.stderrText)
        }
        return result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "true"
    }
}

/// The images each machine is known to hold, so that a lease skips `docker image inspect` for
/// an image it saw there before. Forgotten for a machine when a run there fails.
public final class ImageCache: Sendable {
    private let known = Mutex([SSHEndpoint: Set<String>]())

    public init() {}

    public func has(_ image: String, on endpoint: SSHEndpoint) -> Bool { known.withLock { $0[endpoint]?.contains(image) ?? false } }
    public func remember(_ image: String, on endpoint: SSHEndpoint) { known.withLock { _ = $0[endpoint, default: []].insert(image) } }
    public func forget(_ image: String, on endpoint: SSHEndpoint) { known.withLock { _ = $0[endpoint]?.remove(image) } }
}

/// The image builds running now, one per machine and tag: whoever asks for an image that is
/// being built waits for that build (and sees its output from then on) instead of starting
/// another. A failed build fails every waiter, and is not remembered: the next ask builds again.
public final class ImageBuilds: Sendable {
    private struct Key: Hashable {
        let endpoint: SSHEndpoint
        let tag: String
    }
    private struct Flight {
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var listeners: [@Sendable (String) -> Void] = []
        /// The output so far (its last 2 000 lines), for one who joins late.
        var lines: [String] = []
    }
    private let flights = Mutex([Key: Flight]())

    /// Waits until no other process builds `tag` on `endpoint`, then holds that build for this
    /// one; returns what lets go of it. Set by the master when several share a database.
    public typealias Gate = @Sendable (_ tag: String, _ endpoint: SSHEndpoint) async -> @Sendable () async -> Void
    private let gate = Mutex<Gate?>(nil)

    public init() {}

    public func shareAcrossProcesses(_ gate: @escaping Gate) { self.gate.withLock { $0 = gate } }

    /// `body` while this process holds the build of `tag` on `endpoint` among all that share
    /// the gate (at once without one).
    func holding<T>(_ tag: String, on endpoint: SSHEndpoint, _ body: () async throws(DockerError) -> T) async throws(DockerError) -> T {
        guard let gate = gate.withLock({ $0 }) else { return try await body() }
        let release = await gate(tag, endpoint)
        do {
            let result = try await body()
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }

    /// Runs `build` for `tag` on `endpoint` unless one runs already, and then waits for that one
    /// (its output so far first, then the rest as it comes). Returns whether this call built.
    func once(
        _ tag: String,
        on endpoint: SSHEndpoint,
        onLine: (@Sendable (String) -> Void)?,
        _ build: @Sendable (_ onLine: @escaping @Sendable (String) -> Void) async throws(DockerError) -> Void
    ) async throws(DockerError) -> Bool {
        let key = Key(endpoint: endpoint, tag: tag)
        let (leads, earlier) = flights.withLock { flights -> (Bool, [String]) in
            if flights[key] != nil {
                if let onLine { flights[key]!.listeners.append(onLine) }
                return (false, flights[key]!.lines)
            }
            flights[key] = Flight(listeners: onLine.map { [$0] } ?? [])
            return (true, [])
        }
        // Lines that come meanwhile may come before these: a late joiner's first lines may
        // interleave with the next few (`ImageBuilds` keeps no order across listeners).
        if let onLine { for line in earlier { onLine(line) } }
        guard leads else {
            // Registered above only if still in flight: join it unless it ended meanwhile.
            do {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let joined = flights.withLock { flights in
                        guard flights[key] != nil else { return false }
                        flights[key]!.waiters.append(continuation)
                        return true
                    }
                    if !joined { continuation.resume() }  // it ended: the caller asks the machine again
                }
            } catch let error as DockerError {
                throw error
            } catch {
                throw .invalidArgument("\(error)")
            }
            return false
        }
        let fanOut: @Sendable (String) -> Void = { [self] line in
            let listeners = self.flights.withLock { flights -> [@Sendable (String) -> Void] in
                flights[key]?.lines.append(line)
                if let count = flights[key]?.lines.count, count > 2000 { flights[key]?.lines.removeFirst(count - 2000) }
                return flights[key]?.listeners ?? []
            }
            for listener in listeners { listener(line) }
        }
        var failure: DockerError?
        do { try await build(fanOut) } catch { failure = error }
        let waiters = flights.withLock { $0.removeValue(forKey: key)?.waiters ?? [] }
        for waiter in waiters {
            if let failure { waiter.resume(throwing: failure) } else { waiter.resume() }
        }
        if let failure { throw failure }
        return true
    }
}

extension RemoteDocker {
    /// Builds `tag` from `dockerfile` unless the machine has it (asked once, then remembered);
    /// returns whether this ask waited for a build. With `builds`, one build at a time per
    /// machine and tag in this process: a second ask waits for the first's build.
    public func ensureImage(
        _ tag: String,
        dockerfile: [UInt8],
        labels: [String: String],
        cache: ImageCache,
        builds: ImageBuilds? = nil,
        onLine: (@Sendable (String) -> Void)? = nil
    ) async throws(DockerError) -> Bool {
        if cache.has(tag, on: endpoint) { return false }
        if try await imageExists(tag) {
            cache.remember(tag, on: endpoint)
            return false
        }
        if let builds {
            let led = try await builds.once(tag, on: endpoint, onLine: onLine) { lines throws(DockerError) in
                // Another master may build it on this machine: one at a time, and none again.
                try await builds.holding(tag, on: endpoint) { () throws(DockerError) in
                    if try await imageExists(tag) { return }
                    try await build(tag: tag, dockerfile: dockerfile, labels: labels, onLine: lines)
                }
            }
            // Waited for another's build: the machine says whether it made the image.
            if !led, try await !imageExists(tag) {
                throw .buildFailed(tag: tag, logTail: "the build of \(tag) that this waited for failed")
            }
        } else {
            try await build(tag: tag, dockerfile: dockerfile, labels: labels, onLine: onLine)
        }
        cache.remember(tag, on: endpoint)
        return true  // built for this ask, by it or by another it waited for
    }
}
