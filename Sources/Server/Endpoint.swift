import Core
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ResallocAPI
import Store

/// Who called: the authenticated user and the token they used.
public struct Caller: Sendable {
    public let user: User
    public let token: String
}

/// One route: method, path, who may call it, and its handler. Handlers of protected routes
/// receive a non-optional `Caller`, so none can forget the check; the table of endpoints is
/// the one place routes are registered (and what the OpenAPI test compares with).
public struct Endpoint: Sendable {
    public enum Access: Sendable { case anyone, user, admin }
    typealias Handler = @Sendable (Request, AppRequestContext, Caller?) async throws -> Response

    public let method: HTTPRequest.Method
    public let path: String
    public let access: Access
    let handler: Handler

    static func open(
        _ method: HTTPRequest.Method,
        _ path: String,
        _ handle: @escaping @Sendable (Request, AppRequestContext) async throws -> Response
    ) -> Endpoint {
        Endpoint(method: method, path: path, access: .anyone) { request, context, _ in try await handle(request, context) }
    }

    static func user(
        _ method: HTTPRequest.Method,
        _ path: String,
        _ handle: @escaping @Sendable (Request, AppRequestContext, Caller) async throws -> Response
    ) -> Endpoint {
        Endpoint(method: method, path: path, access: .user) { request, context, caller in try await handle(request, context, caller!) }
    }

    static func admin(
        _ method: HTTPRequest.Method,
        _ path: String,
        _ handle: @escaping @Sendable (Request, AppRequestContext, Caller) async throws -> Response
    ) -> Endpoint {
        Endpoint(method: method, path: path, access: .admin) { request, context, caller in try await handle(request, context, caller!) }
    }

    /// Authenticates as `access` requires, then runs the handler.
    func respond(_ request: Request, _ context: AppRequestContext, accounts: Accounts) async throws -> Response {
        guard access != .anyone else { return try await handler(request, context, nil) }
        let caller = try await Self.authenticate(request, accounts: accounts)
        if access == .admin && !caller.user.isAdmin { throw MasterError(.forbidden, "only an admin may do this") }
        return try await handler(request, context, caller)
    }

    /// The caller a request's token names, or 401.
    static func authenticate(_ request: Request, accounts: Accounts) async throws -> Caller {
        guard let token = token(in: request) else {
            throw MasterError(.unauthorized, "this needs a login: run resalloc login NAME, then send the token")
        }
        return await Caller(user: try accounts.authenticate(token: token), token: token)
    }

    /// The seed's `token:` header, or `Authorization: Bearer …`.
    static func token(in request: Request) -> String? {
        if let token = request.headers[HTTPField.Name("token")!], !token.isEmpty { return token }
        if let authorization = request.headers[.authorization], authorization.lowercased().hasPrefix("bearer ") {
            return String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }
}

/// Query parameters, parsed strictly: a value that is not what the document says is a 400.
enum Query {
    /// `?NAME=true` or `?NAME=false`; absent is false.
    static func flag(_ request: Request, _ name: String) throws(MasterError) -> Bool {
        let values = request.uri.queryParameters.getAll(name)
        guard let value = values.first else { return false }
        guard values.count == 1, value == "true" || value == "false" else {
            throw MasterError(.invalid, "the query parameter \(name) takes true or false")
        }
        return value == "true"
    }

    /// `?NAME=N` within `range`; nil when absent.
    static func integer(_ request: Request, _ name: String, in range: ClosedRange<Int64>) throws(MasterError) -> Int64? {
        let values = request.uri.queryParameters.getAll(name)
        guard let value = values.first else { return nil }
        guard values.count == 1, let number = Int64(value), range.contains(number) else {
            throw MasterError(.invalid, "the query parameter \(name) takes a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }
}

/// Reading and writing JSON bodies with errors a person can act on.
enum Body {
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, context: AppRequestContext, expecting keys: String) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: context.maxUploadSize)
        } catch {
            throw MasterError(.invalid, "the request body is larger than \(context.maxUploadSize / 1024) KiB")
        }
        do {
            return try context.requestDecoder.decode(T.self, from: Data(buffer: buffer))
        } catch {
            throw MasterError(.invalid, "the request body must be a JSON object with \(keys)", detail: "\(error)")
        }
    }

    /// The non-empty string under one of `keys`, or a 400 that names them.
    static func required(_ value: String?, _ keys: String) throws(MasterError) -> String {
        guard let value, !value.isEmpty else { throw MasterError(.invalid, "the request body must say \(keys)") }
        return value
    }

    static func reply<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try WireCoding.encoder().encode(value)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    static func done(_ message: String, status: HTTPResponse.Status = .ok) throws -> Response {
        try reply(Reply(success: true, message: message), status: status)
    }
}
