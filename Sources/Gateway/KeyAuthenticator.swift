import Core
import Foundation
import Logging
import NIOCore
import NIOSSH
import Store

/// Who logged in on one connection, and into which lease: set by the authenticator, read by
/// the connection's channels.
final class ConnectionState: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (user: User, target: LeaseTarget)?
    private var failures = 0

    var login: (user: User, target: LeaseTarget)? { lock.withLock { stored } }
    func set(_ user: User, _ target: LeaseTarget) { lock.withLock { stored = (user, target) } }
    var refusals: Int { lock.withLock { failures } }
    /// Counts a refused attempt; returns the count so far.
    func refused() -> Int {
        lock.withLock {
            failures += 1
            return failures
        }
    }
}

/// Public keys only: the SSH user name is the lease's name, and the key says whose lease it
/// must be. An unknown key, another user's lease, an unknown or deleted lease and a lease not
/// running get the same refusal, so names cannot be probed; nothing opens on any machine.
final class KeyAuthenticator: NIOSSHServerUserAuthenticationDelegate, @unchecked Sendable {
    static let maxAttempts = 6

    let master: Master
    let state: ConnectionState
    let logger: Logger
    let channel: any Channel

    init(master: Master, state: ConnectionState, logger: Logger, channel: any Channel) {
        self.master = master
        self.state = state
        self.logger = logger
        self.channel = channel
    }

    var supportedAuthenticationMethods: NIOSSHAvailableUserAuthenticationMethods { .publicKey }

    func requestReceived(request: NIOSSHUserAuthenticationRequest, responsePromise: EventLoopPromise<NIOSSHUserAuthenticationOutcome>) {
        guard case .publicKey(let offered) = request.request else {
            refuse(responsePromise)
            return
        }
        let lease = request.username
        let line = String(openSSHPublicKey: offered.publicKey)
        let blob = line.split(separator: " ").dropFirst().first.map(String.init) ?? ""
        let master = self.master
        let state = self.state
        let address = channel.remoteAddress?.ipAddress
        // An address with too many failed connections lately is refused before its key is looked at.
        if let wait = master.accounts.throttle.refusal(name: nil, address: address) {
            responsePromise.succeed(.failure)
            logger.notice("gateway login throttled", metadata: ["address": "\(address ?? "?")", "retryAfter": "\(wait)"])
            Task { await master.audit.record("-", "gateway.login-throttled", lease, detail: "try again in \(wait) s", address: address) }
            channel.close(promise: nil)
            return
        }
        // Asking the store is asynchronous work: answered later through the promise, so the
        // handshake's event loop is not held while it runs.
        responsePromise.completeWithTask {
            guard let user = try? await master.accounts.user(withKeyBlob: blob), let target = try? await master.reach(lease, for: user) else {
                return .failure
            }
            state.set(user, target)
            return .success
        }
        responsePromise.futureResult.whenSuccess { [self] outcome in
            if case .success = outcome {
                logger.info("gateway login", metadata: ["lease": "\(lease)", "user": "\(state.login?.user.name ?? "?")"])
            } else {
                noteRefusal(lease: lease)
            }
        }
    }

    private func refuse(_ promise: EventLoopPromise<NIOSSHUserAuthenticationOutcome>) {
        promise.succeed(.failure)
        noteRefusal(lease: nil)
    }

    /// After `maxAttempts` refusals the connection is closed.
    private func noteRefusal(lease: String?) {
        let count = state.refused()
        logger.info("gateway login refused", metadata: ["lease": "\(lease ?? "?")", "attempt": "\(count)"])
        if count >= Self.maxAttempts { channel.close(promise: nil) }
    }
}
