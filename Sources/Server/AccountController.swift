import Core
import Hummingbird
import ResallocAPI
import Store

/// `POST /register`, `POST /login`, `POST /logout`, and the admin's user routes.
struct AccountController {
    let accounts: Accounts
    let audit: AuditTrail

    var endpoints: [Endpoint] {
        [
            .open(.post, "/register") { request, context in
                let body = try await Body.decode(Credentials.self, from: request, context: context, expecting: "Name and Password")
                let user = try await accounts.register(name: body.name, password: body.password)
                await audit.record(
                    user.name,
                    "user.registered",
                    user.name,
                    detail: user.isAdmin ? "the first user, an admin" : nil,
                    address: context.address
                )
                let message =
                    user.isAdmin
                    ? "registered \(user.name), the first user, as an admin"
                    : "registered \(user.name); an admin must approve the account before it can log in"
                return try Body.done(message, status: .created)
            },
            .open(.post, "/login") { request, context in
                let body = try await Body.decode(Credentials.self, from: request, context: context, expecting: "Name and Password")
                let (token, user) = try await Self.login(
                    accounts: accounts,
                    audit: audit,
                    name: body.name,
                    password: body.password,
                    address: context.address
                )
                return try Body.reply(LoginReply(message: "logged in as \(user.name)", token: token))
            },
            .user(.post, "/logout") { _, _, caller in
                try await accounts.logout(token: caller.token)
                return try Body.done("logged out")
            },
            .admin(.get, "/user") { _, _, _ in
                try await Body.reply(Payload("Users", try accounts.users().map(Self.info)))
            },
            .admin(.post, "/user/:name/approve") { _, context, caller in
                let user = try await accounts.approve(try context.parameters.require("name"))
                await audit.record(caller.user.name, "user.approved", user.name, address: context.address)
                return try Body.reply(Payload("User", Self.info(user), message: "approved \(user.name)"))
            },
            .admin(.post, "/user/:name/admin") { _, context, caller in
                let user = try await accounts.makeAdmin(try context.parameters.require("name"))
                await audit.record(caller.user.name, "user.made-admin", user.name, address: context.address)
                return try Body.reply(Payload("User", Self.info(user), message: "\(user.name) is an admin"))
            },
        ]
    }

    /// Logs in, and records a refused attempt in the audit trail (the API and the console).
    static func login(
        accounts: Accounts,
        audit: AuditTrail,
        name: String,
        password: String,
        address: String?
    ) async throws(MasterError) -> (token: String, user: User) {
        do { return try await accounts.login(name: name, password: password) } catch {
            if error.kind == .unauthorized || error.kind == .forbidden {
                await audit.record(String(name.prefix(64)), "user.login-failed", String(name.prefix(64)), detail: error.message, address: address)
            }
            throw error
        }
    }

    static func info(_ user: User) -> UserInfo {
        UserInfo(name: user.name, role: user.role.rawValue, status: user.status.rawValue, createdAt: user.createdAt)
    }
}
