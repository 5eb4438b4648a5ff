import Core
import Foundation
import HTTPTypes
import Hummingbird
import Mustache
import Store

/// The web console under `/ui`: pages rendered on the server from the templates in
/// `Console/`, a session in an HttpOnly, SameSite=Strict cookie that holds a login token (the
/// same hashed-token table as `resalloc login`), and a form token on every form.
struct ConsoleController {
    let master: Master
    let templates: MustacheLibrary

    static let sessionCookie = "resalloc_session"
    /// The sign-in form's token: it has no session to derive one from yet.
    static let signInCookie = "resalloc_signin"

    /// Loads the templates shipped in the Server target's `Console` resources.
    static func loadTemplates() throws -> MustacheLibrary {
        var library = MustacheLibrary()
        for name in ["login", "console", "panel"] {
            guard let url = Bundle.module.url(forResource: name, withExtension: "mustache", subdirectory: "Console") else {
                throw MasterError(.internal, "the console template \(name).mustache is missing from the build")
            }
            try library.register(String(contentsOf: url, encoding: .utf8), named: name)
        }
        return library
    }

    func add(to router: Router<AppRequestContext>) {
        router.get("/") { _, _ in Self.redirect("/ui") }
        router.get("/ui") { request, context in
            guard let session = try? await session(request) else { return Self.redirect("/ui/login") }
            return await page(try? view(session, request: request))
        }
        router.get("/ui/panel") { request, _ in
            guard let session = try? await session(request) else { return Self.html("", status: .unauthorized) }
            let view: ConsoleView
            do { view = try await self.view(session, request: request) } catch { return Self.html("", status: .internalServerError) }
            return Self.html(templates.render(view, withTemplate: "panel") ?? "")
        }
        router.get("/ui/login") { request, _ in
            if await (try? session(request)) != nil { return Self.redirect("/ui") }
            return signInPage(request, notice: request.uri.queryParameters["signed-out"] != nil ? "Signed out." : nil)
        }
        router.post("/ui/login") { request, context in try await signIn(request, context) }
        router.post("/ui/logout") { request, context in
            try await form(request, context) { session, _ in
                try await master.accounts.logout(token: session.token)
                var response = Self.redirect("/ui/login?signed-out")
                response.setCookie(Self.cookie(Self.sessionCookie, "", maxAge: 0, request))
                return response
            }
        }
        router.post("/ui/lease/:name/extend") { request, context in
            try await form(request, context) { session, fields in
                let ttl = try InputRules.ttl(fields["ttl"] ?? "")
                let name = try context.parameters.require("name")
                let listing = try await master.saga.extend(try master.lease(named: name, for: session.user), by: ttl)
                await master.audit.record(
                    session.user.name,
                    "lease.extended",
                    "\(listing.owner)/\(listing.lease.name)",
                    detail: "until \(listing.lease.expiresAt)",
                    address: context.address
                )
                return Self.redirect("/ui?extended=\(listing.lease.name)")
            }
        }
        router.post("/ui/lease/:name/delete") { request, context in
            try await form(request, context) { session, _ in
                let listing = try await master.lease(named: try context.parameters.require("name"), for: session.user)
                try await master.saga.delete(listing)
                await master.audit.record(session.user.name, "lease.deleted", "\(listing.owner)/\(listing.lease.name)", address: context.address)
                return Self.redirect("/ui?deleted=\(listing.lease.name)")
            }
        }
        router.post("/ui/user/:name/approve") { request, context in
            try await form(request, context) { session, _ in
                guard session.user.isAdmin else { throw MasterError(.forbidden, "only an admin may approve accounts") }
                let user = try await master.accounts.approve(try context.parameters.require("name"))
                await master.audit.record(session.user.name, "user.approved", user.name, address: context.address)
                return Self.redirect("/ui?approved=\(user.name)")
            }
        }
        router.get("/ui/job/:id/log") { request, context in
            guard let session = try? await session(request) else { return Self.redirect("/ui/login") }
            guard let id = Int64(try context.parameters.require("id")),
                let listing = try? await master.job(id, for: session.user)
            else { return Self.html("no such job", status: .notFound) }
            // The last 256 KiB of its output, as text: the whole of it is GET /job/{id}/log.
            var output = Data()
            var cursor: Int64 = 0
            while true {
                let chunks = try await master.database.jobLog(jobID: listing.job.id!, after: cursor, limit: 256)
                for chunk in chunks { output.append(chunk.data) }
                if output.count > 512 * 1024 { output = output.suffix(256 * 1024) }
                guard let last = chunks.last?.id, chunks.count == 256 else { break }
                cursor = last
            }
            let text = String(decoding: output.suffix(256 * 1024), as: UTF8.self)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; charset=utf-8", .contentSecurityPolicy: "default-src 'none'"],
                body: .init(byteBuffer: ByteBuffer(string: text))
            )
        }
        router.get("/ui/console.css") { _, _ in Self.asset("console", "css", type: "text/css; charset=utf-8") }
        router.get("/ui/console.js") { _, _ in Self.asset("console", "js", type: "text/javascript; charset=utf-8") }
    }

    // MARK: Sessions and forms

    /// The signed-in user behind the request's session cookie.
    private func session(_ request: Request) async throws(MasterError) -> Caller {
        guard let token = request.cookies[Self.sessionCookie]?.value, !token.isEmpty else {
            throw MasterError(.unauthorized, "not signed in")
        }
        return await Caller(user: try master.accounts.authenticate(token: token), token: token)
    }

    /// Runs a signed-in form's action once its form token checks out; failures become the
    /// console page with the error, and no change.
    private func form(
        _ request: Request,
        _ context: AppRequestContext,
        _ action: (Caller, [String: String]) async throws -> Response
    ) async throws -> Response {
        guard let session = try? await session(request) else { return Self.redirect("/ui/login") }
        let fields = await Self.fields(request, context)
        guard let sent = fields["csrf"], Accounts.sameToken(sent, Accounts.formToken(forSession: session.token)) else {
            return await page(try? view(session, request: request), error: Self.staleForm, status: .forbidden)
        }
        do {
            return try await action(session, fields)
        } catch {
            let failure = MasterError.from(error)
            failure.log(to: context.logger)
            return await page(try? view(session, request: request), error: failure.message, status: failure.httpStatus)
        }
    }

    static let staleForm = "This form is out of date or came from another site; nothing was changed. Reload the page and try again."

    private func signIn(_ request: Request, _ context: AppRequestContext) async throws -> Response {
        let fields = await Self.fields(request, context)
        guard let sent = fields["csrf"], let expected = request.cookies[Self.signInCookie]?.value, Accounts.sameToken(sent, expected) else {
            return signInPage(request, error: Self.staleForm, status: .forbidden)
        }
        let name = fields["name"] ?? ""
        do {
            let (token, _) = try await AccountController.login(
                accounts: master.accounts,
                audit: master.audit,
                name: name,
                password: fields["password"] ?? "",
                address: context.address
            )
            var response = Self.redirect("/ui")
            response.setCookie(Self.cookie(Self.sessionCookie, token, maxAge: Int(master.accounts.tokenLifetime.components.seconds), request))
            response.setCookie(Self.cookie(Self.signInCookie, "", maxAge: 0, request))
            return response
        } catch {
            return signInPage(request, error: error.message, status: error.httpStatus, name: name)
        }
    }

    private func signInPage(
        _ request: Request,
        notice: String? = nil,
        error: String? = nil,
        status: HTTPResponse.Status = .ok,
        name: String = ""
    ) -> Response {
        let token = request.cookies[Self.signInCookie]?.value ?? Accounts.newFormToken()
        let view = SignInView(csrf: token, notice: notice, error: error, name: String(name.prefix(64)))
        var response = Self.html(templates.render(view, withTemplate: "login") ?? "", status: status)
        response.setCookie(Self.cookie(Self.signInCookie, token, maxAge: 3600, request))
        return response
    }

    private func page(_ view: ConsoleView?, error: String? = nil, status: HTTPResponse.Status = .ok) -> Response {
        guard var view else {
            return Self.html("resalloc: the console could not read the database; see the master's log", status: .internalServerError)
        }
        if let error {
            view.error = error
            view.notice = nil
        }
        return Self.html(templates.render(view, withTemplate: "console") ?? "", status: status)
    }

    private func view(_ session: Caller, request: Request) async throws -> ConsoleView {
        var view = try await ConsoleView.build(master, for: session.user, formToken: Accounts.formToken(forSession: session.token))
        view.notice = Self.notice(request)
        return view
    }

    /// The sentence for what a form just did, from the redirect's query (names only, checked).
    static func notice(_ request: Request) -> String? {
        let query = request.uri.queryParameters
        for (key, sentence) in [("deleted", "Lease %@ deleted."), ("extended", "Lease %@ extended."), ("approved", "%@ approved.")] {
            if let name = query[Substring(key)].map(String.init), (try? InputRules.validateName(name, "name")) != nil {
                return sentence.replacingOccurrences(of: "%@", with: name)
            }
        }
        return nil
    }

    // MARK: HTTP pieces

    /// A form's fields (application/x-www-form-urlencoded), empty when the body is not one.
    static func fields(_ request: Request, _ context: AppRequestContext) async -> [String: String] {
        guard let buffer = try? await request.body.collect(upTo: 64 * 1024) else { return [:] }
        return (try? URLEncodedFormDecoder().decode([String: String].self, from: String(buffer: buffer))) ?? [:]
    }

    static func cookie(_ name: String, _ value: String, maxAge: Int, _ request: Request) -> Cookie {
        // Behind a TLS proxy the cookie is sent over HTTPS only.
        let secure = request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased() == "https"
        return Cookie(name: name, value: value, maxAge: maxAge, path: "/", secure: secure, httpOnly: true, sameSite: .strict)
    }

    static let securityHeaders: HTTPFields = [
        .contentSecurityPolicy:
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        .cacheControl: "no-store",
    ]

    static func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = securityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// 303 See Other: after a form, the browser asks for the page anew with GET.
    static func redirect(_ location: String) -> Response {
        var headers = securityHeaders
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    static func asset(_ name: String, _ ext: String, type: String) -> Response {
        guard let url = Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Console"), let data = try? Data(contentsOf: url)
        else {
            return Response(status: .notFound)
        }
        var headers = securityHeaders
        headers[.contentType] = type
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// What the sign-in template shows.
struct SignInView {
    let csrf: String
    let notice: String?
    let error: String?
    let name: String
}
