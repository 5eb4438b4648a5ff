import Core
import Hummingbird
import ResallocAPI
import Store

/// `POST /register`, `POST /login`, `POST /logout`, and the admin's user routes.
struct AccountController {
    let master: Master
    var accounts: Accounts { master.accounts }
    var audit: AuditTrail { master.audit }
    var sessions: SessionLedger { master.sessions }

    var endpoints: [Endpoint] {
        [
            .open(.post, "/register") { request, context in
                let body = try await Body.decode(Credentials.self, from: request, context: context, expecting: "Name and Password")
                let user: User
                do { user = try await accounts.register(name: body.name, password: body.password, address: context.address) } catch {
                    if (error as? MasterError)?.kind == .tooManyRequests {
                        await audit.record("-", "user.register-throttled", String(body.name.prefix(64)), detail: "\(error)", address: context.address)
                    }
                    throw error
                }
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
            .admin(.put, "/user/:name") { request, context, caller in
                let name = try context.parameters.require("name")
                let body = try await Body.decode(UserStatusRequest.self, from: request, context: context, expecting: "Status")
                let user: User
                switch body.status {
                case "disabled":
                    guard name != caller.user.name else { throw MasterError(.conflict, "you cannot disable your own account") }
                    user = try await accounts.setDisabled(name, true)
                    let ended = sessions.end(user: name)
                    await audit.record(caller.user.name, "user.disabled", name, detail: "\(ended) session(s) ended", address: context.address)
                case "active":
                    _ = try await accounts.setDisabled(name, false)
                    user = try await accounts.approve(name)
                    await audit.record(caller.user.name, "user.enabled", name, address: context.address)
                default:
                    throw MasterError(.invalid, "Status must be disabled or active; got \(body.status)")
                }
                return try Body.reply(Payload("User", Self.info(user), message: "\(user.name) is \(user.statusName)"))
            },
            .user(.get, "/user/:name") { _, context, caller in
                let standing = try await master.standing(of: try context.parameters.require("name"), for: caller.user)
                return try Body.reply(Payload("User", Self.detail(standing)))
            },
            .admin(.put, "/user/:name/limits") { request, context, caller in
                let name = try context.parameters.require("name")
                let body = try await Body.decode(UserLimitsRequest.self, from: request, context: context, expecting: "Leases, Jobs, Memory or CPUs")
                let limits = try Master.userLimits(leases: body.leases, jobs: body.jobs, memory: body.memory, cpus: body.cpus)
                _ = try await master.setLimits(of: name, to: limits)
                await audit.record(caller.user.name, "user.limits", name, detail: Self.describe(limits), address: context.address)
                let standing = try await master.standing(of: name, for: caller.user)
                return try Body.reply(Payload("User", Self.detail(standing), message: "\(name) may hold \(Self.describe(standing.limits))"))
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
        do { return try await accounts.login(name: name, password: password, address: address) } catch {
            if error.kind == .unauthorized || error.kind == .forbidden {
                await audit.record(String(name.prefix(64)), "user.login-failed", String(name.prefix(64)), detail: error.message, address: address)
            } else if error.kind == .tooManyRequests {
                await audit.record(String(name.prefix(64)), "user.login-throttled", String(name.prefix(64)), detail: error.message, address: address)
            }
            throw error
        }
    }

    static func detail(_ standing: UserStanding) -> UserDetail {
        let limits = standing.limits
        return UserDetail(
            user: info(standing.user),
            leases: standing.use.leases,
            jobs: standing.use.jobs,
            memory: ByteSize.format(standing.use.memoryBytes),
            cpus: Double(standing.use.milliCPUs) / 1000,
            limits: UserLimitsRequest(
                leases: limits.leases,
                jobs: limits.jobs,
                memory: limits.memoryBytes.map(ByteSize.format),
                cpus: limits.milliCPUs.map { Double($0) / 1000 }
            )
        )
    }

    /// `2 leases, 4 jobs, 16g, 8 CPUs`, with `any number of` where there is no limit.
    static func describe(_ limits: UserLimits) -> String {
        [
            limits.leases.map { "\($0) leases" } ?? "any number of leases",
            limits.jobs.map { "\($0) jobs" } ?? "any number of jobs",
            limits.memoryBytes.map { "\(ByteSize.format($0)) of memory" } ?? "any memory",
            limits.milliCPUs.map { "\(CPUAmount.format($0)) CPUs" } ?? "any CPUs",
        ].joined(separator: ", ")
    }

    static func info(_ user: User) -> UserInfo {
        UserInfo(name: user.name, role: user.role.rawValue, status: user.statusName, createdAt: user.createdAt)
    }
}
