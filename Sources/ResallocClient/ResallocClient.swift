import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ResallocAPI

/// The master's HTTP API as Swift calls. One source of truth for the wire: `ResallocAPI`.
public struct ResallocClient: Sendable {
    public let server: String
    public var token: String?
    public var timeout: TimeAmount = .minutes(35)

    public init(server: String, token: String?) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.token = token
    }

    public func register(_ name: String, password: String) async throws -> Reply {
        try await call(.POST, "/register", body: Credentials(name: name, password: password), authenticated: false)
    }

    public func login(_ name: String, password: String) async throws -> LoginReply {
        try await call(.POST, "/login", body: Credentials(name: name, password: password), authenticated: false)
    }

    public func logout() async throws -> Reply { try await call(.POST, "/logout") }

    public func resources() async throws -> [ResourceInfo] { try await payload(.GET, "/resource") }

    public func createResource(
        _ name: String,
        dockerfile: String,
        pool: Int? = nil,
        limits: LimitsRequest = LimitsRequest()
    ) async throws -> Payload<ResourceInfo> {
        try await call(.POST, "/resource", body: ResourceRequest(name: name, file: dockerfile, pool: pool, limits: limits))
    }

    public func editResource(_ name: String, dockerfile: String?, limits: LimitsRequest = LimitsRequest()) async throws -> Payload<ResourceInfo> {
        try await call(.PUT, "/resource/\(escape(name))", body: DockerfileRequest(file: dockerfile, limits: limits))
    }

    public func setPool(_ name: String, size: Int) async throws -> Payload<ResourceInfo> {
        try await call(.PUT, "/resource/\(escape(name))/pool", body: PoolRequest(size: size))
    }

    public func deleteResource(_ name: String) async throws -> Reply { try await call(.DELETE, "/resource/\(escape(name))") }

    public func machines() async throws -> [MachineInfo] { try await payload(.GET, "/machine") }

    public func createMachine(_ name: String, login: String, address: String, capacity: Int?) async throws -> Payload<MachineInfo> {
        try await call(.POST, "/machine", body: MachineRequest(name: name, username: login, ip: address, capacity: capacity))
    }

    public func deleteMachine(_ name: String, force: Bool) async throws -> Reply {
        try await call(.DELETE, "/machine/\(escape(name))\(force ? "?force=true" : "")")
    }

    public func leases(all: Bool) async throws -> [LeaseInfo] { try await payload(.GET, all ? "/lease?all=true" : "/lease") }

    public func lease(_ name: String) async throws -> LeaseInfo { try await payload(.GET, "/lease/\(escape(name))") }

    /// Creates a lease. With `onBuildLine`, the master streams the image build's output, a line
    /// at a time as it happens, while the lease is made.
    public func createLease(
        _ resource: String,
        name: String,
        ttl: String?,
        wait: String? = nil,
        idle: String? = nil,
        onBuildLine: (@Sendable (String) -> Void)? = nil,
        onQueued: (@Sendable (Int) -> Void)? = nil
    ) async throws -> Payload<LeaseInfo> {
        let body = LeaseRequest(resourceName: resource, leaseName: name, ttl: ttl, wait: wait, idle: idle)
        guard let onBuildLine else { return try await call(.POST, "/lease", body: body) }
        let response = try await send(.POST, "/lease", body: body, accept: LeaseProgress.mediaType)
        guard response.headers.first(name: "Content-Type")?.hasPrefix(LeaseProgress.mediaType) == true else {
            // Refused before anything started (bad input, not logged in), or a master that
            // does not stream: a plain reply.
            return try await decode(response)
        }
        let decoder = WireCoding.decoder()
        var pending: [UInt8] = []
        do {
            for try await chunk in response.body {
                pending += chunk.readableBytesView
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Data(pending[..<newline])
                    pending.removeSubrange(...newline)
                    let progress: LeaseProgress
                    do { progress = try decoder.decode(LeaseProgress.self, from: line) } catch { throw ClientError.protocolError("\(error)") }
                    if let build = progress.build { onBuildLine(build) }
                    if let place = progress.place { onQueued?(place) }
                    guard let success = progress.success else { continue }
                    if success, let lease = progress.lease { return Payload("Lease", lease, message: progress.message ?? "") }
                    throw ClientError.server(status: progress.status ?? 500, message: progress.message ?? "the lease could not be made")
                }
            }
        } catch let error as ClientError {
            throw error
        } catch {
            throw ClientError.unreachable(
                url: server,
                detail: "the connection broke while the lease was being made; resalloc leases shows whether it was: \(error)"
            )
        }
        throw ClientError.unreachable(url: server, detail: "the reply ended while the lease was being made; resalloc leases shows whether it was")
    }

    public func deleteLease(_ name: String) async throws -> Reply { try await call(.DELETE, "/lease/\(escape(name))") }

    public func extendLease(_ name: String, ttl: String) async throws -> Payload<LeaseInfo> {
        try await call(.POST, "/lease/\(escape(name))/extend", body: NameRequest(name: name, ttl: ttl))
    }

    public func users() async throws -> [UserInfo] { try await payload(.GET, "/user") }

    public func approve(_ name: String) async throws -> Payload<UserInfo> { try await call(.POST, "/user/\(escape(name))/approve") }

    public func keys() async throws -> [KeyInfo] { try await payload(.GET, "/key") }

    public func gateway() async throws -> GatewayInfo { try await call(.GET, "/gateway") }

    public func addKey(_ name: String, publicKey: String) async throws -> Payload<KeyInfo> {
        try await call(.POST, "/key", body: KeyRequest(name: name, publicKey: publicKey))
    }

    public func removeKey(_ name: String) async throws -> Reply { try await call(.DELETE, "/key/\(escape(name))") }

    /// What `path` is in the lease: `directory`, `file` or `symlink` (404 when nothing is there).
    public func pathKind(lease: String, path: String) async throws -> String {
        let query = queryValue(path)
        let info: PathInfo = try await call(.GET, "/lease/\(escape(lease))/path?path=\(query)")
        return info.kind
    }

    /// `PUT /lease/{name}/files?path=DIR` (`job` set: `/job/{id}/files`): the tar stream that
    /// `produce` writes, as the request's streamed body, unpacked by the master into the
    /// directory; returns the bytes sent once it is there. A failure of `produce` breaks the
    /// request off, so nothing of a stream cut short is written.
    public func upload(
        lease: String? = nil,
        job: Int64? = nil,
        directory: String,
        produce: @escaping @Sendable (_ send: @Sendable ([UInt8]) async throws -> Void) async throws -> Void
    ) async throws -> Int {
        guard let token else { throw ClientError.notLoggedIn }
        let query = queryValue(directory)
        let place = job.map { "/job/\($0)" } ?? "/lease/\(escape(lease ?? ""))"
        var request = HTTPClientRequest(url: server + place + "/files?path=" + query)
        request.method = .PUT
        request.headers.add(name: "Content-Type", value: "application/octet-stream")
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let pipe = BodyPipe()
        request.body = .stream(pipe, length: .unknown)
        try ClientTLS.check(server)
        let exchange = Task { () -> Result<HTTPClientResponse, any Error> in
            // Once the master has answered, nothing more of the body is wanted.
            defer { pipe.abandon() }
            do { return .success(try await Self.http.execute(request, deadline: .distantFuture)) } catch { return .failure(error) }
        }
        var localFailure: (any Error)?
        do {
            try await produce { bytes in try await pipe.send(ByteBuffer(bytes: bytes)) }
            pipe.finish()
        } catch {
            pipe.fail(error)
            if !(error is BodyPipe.Abandoned) { localFailure = error }
        }
        let response: HTTPClientResponse
        switch await exchange.value {
        case .success(let answered): response = answered
        case .failure(let error):
            if let localFailure { throw localFailure }
            throw ClientError.connecting(to: server, failedWith: error)
        }
        let copied: Copied = try await decode(response)
        if let localFailure { throw localFailure }
        return copied.bytes
    }

    // MARK: - Jobs

    public func submitJob(_ request: JobRequest) async throws -> Payload<JobInfo> { try await call(.POST, "/job", body: request) }

    public func jobs(all: Bool, ended: Bool) async throws -> [JobInfo] {
        try await payload(.GET, "/job?all=\(all)&ended=\(ended)")
    }

    public func job(_ id: Int64) async throws -> JobInfo { try await payload(.GET, "/job/\(id)") }

    public func cancelJob(_ id: Int64) async throws -> Payload<JobInfo> { try await call(.DELETE, "/job/\(id)") }

    public func startJob(_ id: Int64) async throws -> Payload<JobInfo> { try await call(.POST, "/job/\(id)/start") }

    /// What `path` is in the job's container (waiting for inputs, or kept for results).
    public func pathKind(job: Int64, path: String) async throws -> String {
        let query = queryValue(path)
        let info: PathInfo = try await call(.GET, "/job/\(job)/path?path=\(query)")
        return info.kind
    }

    /// The job's output (`stream`: stdout, stderr or all) into `receive` as it comes; with
    /// `follow`, until the job has ended.
    public func jobLog(
        _ id: Int64,
        stream: String = "all",
        follow: Bool,
        skip: Int64 = 0,
        receive: @Sendable (ByteBuffer) async throws -> Void
    ) async throws {
        var client = self
        client.timeout = .hours(24 * 8)
        let response = try await client.send(.GET, "/job/\(id)/log?follow=\(follow)&stream=\(stream)&skip=\(skip)", body: Optional<Reply>.none)
        guard (200..<300).contains(response.status.code) else {
            let _: Reply = try await decode(response)
            return
        }
        do {
            for try await chunk in response.body { try await receive(chunk) }
        } catch let error as ClientError {
            throw error
        } catch {
            throw ClientError.unreachable(url: server, detail: "the connection broke while the job's output came: \(error)")
        }
    }

    // MARK: - Users

    public func user(_ name: String) async throws -> UserDetail { try await payload(.GET, "/user/\(escape(name))") }

    public func setLimits(_ name: String, _ limits: UserLimitsRequest) async throws -> Payload<UserDetail> {
        try await call(.PUT, "/user/\(escape(name))/limits", body: limits)
    }

    // MARK: - Plumbing

    private func payload<T: Codable & Sendable>(_ method: HTTPMethod, _ path: String) async throws -> T {
        let reply: Payload<T> = try await call(method, path)
        return reply.value
    }

    private func call<R: Decodable>(_ method: HTTPMethod, _ path: String, authenticated: Bool = true) async throws -> R {
        try await call(method, path, body: Optional<Reply>.none, authenticated: authenticated)
    }

    private func call<B: Encodable, R: Decodable>(_ method: HTTPMethod, _ path: String, body: B?, authenticated: Bool = true) async throws -> R {
        try await decode(try await send(method, path, body: body, authenticated: authenticated))
    }

    /// Sends a request; the response's body is still to be read.
    private func send<B: Encodable>(
        _ method: HTTPMethod,
        _ path: String,
        body: B?,
        authenticated: Bool = true,
        accept: String? = nil
    ) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: server + path)
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        if let accept { request.headers.add(name: "Accept", value: accept) }
        if authenticated {
            guard let token else { throw ClientError.notLoggedIn }
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        if let body { request.body = .bytes(ByteBuffer(bytes: try WireCoding.encoder().encode(body))) }
        try ClientTLS.check(server)
        do {
            return try await Self.http.execute(request, timeout: timeout)
        } catch {
            throw ClientError.connecting(to: server, failedWith: error)
        }
    }

    /// Reads a whole JSON reply: the value on success, `ClientError.server` with the master's
    /// sentence otherwise.
    private func decode<R: Decodable>(_ response: HTTPClientResponse) async throws -> R {
        let bytes: ByteBuffer
        do {
            bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        } catch {
            throw ClientError.unreachable(url: server, detail: "\(error)")
        }
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            let message = (try? JSONDecoder().decode(Reply.self, from: data))?.message ?? "HTTP \(response.status.code)"
            throw ClientError.server(status: Int(response.status.code), message: message)
        }
        do {
            return try WireCoding.decoder().decode(R.self, from: data)
        } catch {
            throw ClientError.protocolError("\(error)")
        }
    }

    /// Fails at once when nothing listens (the shared client retries until its deadline), and
    /// gives a master 5 s to accept the connection; trusts `RESALLOC_CA_FILE` too (`ClientTLS`).
    /// Lives as long as the process.
    private static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration(tlsConfiguration: ClientTLS.configuration)
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// A path in a container as a query parameter's value (`/` kept).
    private func queryValue(_ path: String) -> String {
        path.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_./"))) ?? path
    }

    private func escape(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_"))) ?? segment
    }
}
