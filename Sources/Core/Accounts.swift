import Crypto
import Foundation
import HummingbirdBcrypt
import NIOPosix
import Store

/// Registration, approval, login and tokens. Passwords are bcrypt-hashed; tokens are 256 random
/// bits that the user holds and the database keeps only as SHA-256.
public struct Accounts: Sendable {
    let database: any Store
    public var tokenLifetime: Duration
    public var bcryptCost: UInt8
    /// Failed logins and registrations, by name and by address (this process's own count).
    public let throttle: LoginThrottle

    public init(
        database: any Store,
        tokenLifetime: Duration = .seconds(30 * 86400),
        bcryptCost: UInt8 = 10,
        throttle: LoginThrottle = LoginThrottle()
    ) {
        self.database = database
        self.tokenLifetime = tokenLifetime
        self.bcryptCost = bcryptCost
        self.throttle = throttle
    }

    /// Registers `name`; the first user becomes an active admin, later ones are pending. A name
    /// found taken counts against the address, as a failed login does.
    public func register(name: String, password: String, address: String? = nil) async throws(MasterError) -> User {
        try refuseWhileThrottled(name: nil, address: address)
        do throws(MasterError) {
            try InputRules.validateName(name, "user")
            try InputRules.validatePassword(password)
            let cost = bcryptCost
            let hash = await Self.offload { Bcrypt.hash(password, cost: cost) }
            do { return try await database.createUser(name: name, passwordHash: hash) } catch { throw MasterError.from(error) }
        } catch {
            // A name found taken is what enumerating names looks like; a malformed request is not.
            if error.kind == .conflict { throttle.failed(name: nil, address: address) }
            throw error
        }
    }

    /// A 429 while `throttle` holds attempts for the name or the address back.
    func refuseWhileThrottled(name: String?, address: String?) throws(MasterError) {
        guard let wait = throttle.refusal(name: name, address: address) else { return }
        throw MasterError(
            .tooManyRequests,
            "too many failed attempts\(name.map { " for \($0)" } ?? "")\(address.map { " from \($0)" } ?? ""); try again in \(wait) s",
            retryAfter: wait
        )
    }

    /// Checks the password and returns a new token for an active user. After too many failures
    /// for the name or from the address, refuses (429) before looking at the password.
    public func login(name: String, password: String, address: String? = nil) async throws(MasterError) -> (token: String, user: User) {
        try refuseWhileThrottled(name: name, address: address)
        let user: User?
        do { user = try await database.user(named: name) } catch { throw .from(error) }
        // Verify against a fixed hash for unknown names too, so timing does not tell who exists.
        let hash = user?.passwordHash
        let matches = await Self.offload { Bcrypt.verify(password, hash: hash ?? Self.unknownUserHash) }
        guard let user, matches else {
            throttle.failed(name: name, address: address)
            throw MasterError(.unauthorized, "wrong user name or password")
        }
        guard !user.disabled else { throw MasterError(.forbidden, "your account is disabled; ask an admin") }
        guard user.status == .active else {
            throw MasterError(.forbidden, "your account waits for an admin's approval (resalloc user approve \(user.name))")
        }
        let token = Self.randomToken()
        do {
            try await database.createToken(
                userID: user.id!,
                hash: Self.digest(token),
                expiresAt: Date() + TimeInterval(tokenLifetime.components.seconds)
            )
        } catch { throw .from(error) }
        return (token, user)
    }

    /// The user holding `token`, if it is valid and unexpired.
    public func authenticate(token: String) async throws(MasterError) -> User {
        let user: User?
        do { user = try await database.user(forTokenHash: Self.digest(token), at: Date()) } catch { throw .from(error) }
        guard let user, user.status == .active else {
            throw MasterError(.unauthorized, "your token is invalid or has expired: run resalloc login")
        }
        guard !user.disabled else { throw MasterError(.unauthorized, "your account is disabled; ask an admin") }
        return user
    }

    /// Revokes `token`.
    public func logout(token: String) async throws(MasterError) {
        do { _ = try await database.deleteToken(hash: Self.digest(token)) } catch { throw .from(error) }
    }

    public func users() async throws(MasterError) -> [User] {
        do { return try await database.users() } catch { throw .from(error) }
    }

    public func approve(_ name: String) async throws(MasterError) -> User {
        do { return try await database.updateUser(named: name, status: .active, role: nil) } catch { throw .from(error) }
    }

    /// Switches a user off (their tokens and keys stop working, their sessions end) or on again.
    public func setDisabled(_ name: String, _ disabled: Bool) async throws(MasterError) -> User {
        do { return try await database.setUserDisabled(named: name, disabled) } catch { throw .from(error) }
    }

    public func makeAdmin(_ name: String) async throws(MasterError) -> User {
        do { return try await database.updateUser(named: name, status: .active, role: .admin) } catch { throw .from(error) }
    }

    /// The token a signed-in console's forms carry: derived from the session's token, which
    /// only the browser holds (in an HttpOnly cookie), so another site cannot know it.
    public static func formToken(forSession token: String) -> String {
        digest("resalloc console form\u{0}" + token)
    }

    /// Compares two tokens in time that does not depend on where they differ.
    public static func sameToken(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count, !x.isEmpty else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// A new random token for a form that has no session behind it yet (the sign-in form).
    public static func newFormToken() -> String { randomToken() }

    private static let unknownUserHash = Bcrypt.hash("resalloc: no such user", cost: 10)

    static func digest(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Bcrypt takes tens of milliseconds by design: it runs on NIO's thread pool, not on Swift's
    /// executor, so that a burst of logins does not hold the threads every request needs. (Not
    /// `DispatchQueue.global()`: on Linux its threads are the executor's.)
    static func offload<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        (try? await NIOThreadPool.singleton.runIfActive(work)) ?? work()
    }
}
