import Core
import Hummingbird
import Logging
import ResallocAPI

/// Turns every failure into the seed's `{"Success": false, "Message": "…"}` with the right
/// status. Technical detail (SQLite, libssh2, docker) goes to the log, never to the client.
/// A known path asked with a method it does not serve is a 405 with `Allow`, as HTTP says.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    init(routes: RouteTable = RouteTable([])) { self.routes = routes }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let allowed = routes.methods(for: request.uri.path)
            guard !allowed.isEmpty else {
                return try Body.reply(Reply(success: false, message: "no such route: \(request.method) \(request.uri.path)"), status: .notFound)
            }
            var response = try Body.reply(
                Reply(success: false, message: "\(request.method) is not allowed on \(request.uri.path); use \(allowed.joined(separator: ", "))"),
                status: .methodNotAllowed
            )
            response.headers[.allow] = allowed.joined(separator: ", ")
            return response
        } catch let error as MasterError {
            error.log(to: context.logger)
            var response = try Body.reply(Reply(success: false, message: error.message), status: error.httpStatus)
            if let retryAfter = error.retryAfter { response.headers[.retryAfter] = String(retryAfter) }
            return response
        } catch let error as HTTPError {
            let message: String
            switch error.status {
            case .methodNotAllowed: message = "\(request.method) is not allowed on \(request.uri.path)"
            case .contentTooLarge: message = "the request body is too large"
            default: message = error.body ?? error.status.reasonPhrase
            }
            return try Body.reply(Reply(success: false, message: message), status: error.status)
        } catch {
            context.logger.error("request failed unexpectedly", metadata: ["error": "\(error)"])
            return try Body.reply(Reply(success: false, message: "something went wrong on the server"), status: .internalServerError)
        }
    }
}

/// The paths the router serves and the methods of each, for 405's `Allow`.
struct RouteTable: Sendable {
    let routes: [(segments: [Substring], method: String)]

    init(_ endpoints: [Endpoint]) {
        routes = endpoints.map { ($0.path.split(separator: "/"), $0.method.rawValue) }
    }

    /// The methods served at `path` (HEAD with GET, as the router answers it), sorted.
    func methods(for path: String) -> [String] {
        let segments = path.split(separator: "/")
        var methods: Set<String> = []
        for route in routes where route.segments.count == segments.count {
            if zip(route.segments, segments).allSatisfy({ $0.hasPrefix(":") || $0 == $1 }) {
                methods.insert(route.method)
                if route.method == "GET" { methods.insert("HEAD") }
            }
        }
        return methods.sorted()
    }
}

extension MasterError {
    /// The status a client gets for this failure.
    var httpStatus: HTTPResponse.Status {
        switch kind {
        case .invalid: return .badRequest
        case .unauthorized: return .unauthorized
        case .forbidden: return .forbidden
        case .notFound: return .notFound
        case .conflict: return .conflict
        case .buildFailed, .unprocessable: return .unprocessableContent
        case .unreachable: return .badGateway
        case .noCapacity, .unavailable: return .serviceUnavailable
        case .timeout: return .gatewayTimeout
        case .tooManyRequests: return .tooManyRequests
        case .internal: return .internalServerError
        }
    }

    /// Logs the failure with the detail the client is not told.
    func log(to logger: Logger) {
        let status = httpStatus
        logger.log(
            level: status.code >= 500 ? .error : .info,
            "request failed",
            metadata: ["status": "\(status.code)", "message": "\(message)", "detail": "\(detail ?? "")"]
        )
    }
}
