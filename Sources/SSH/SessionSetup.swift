import CLibSSH2
import Foundation

/// The steps from nothing to an authenticated libssh2 session in non-blocking mode: TCP connect
/// with TCP_NODELAY, handshake, host-key check, public-key auth. Runs on the connection's own
/// thread; every wait is a `poll` bounded by the deadline.
struct EstablishedSession {
    let session: OpaquePointer
    let socket: Int32
    let hostKey: HostKey
}

enum SessionSetup {
    static let firstContactHostKeys = "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521"

    static func establish(_ endpoint: SSHEndpoint, deadline: ContinuousClock.Instant) throws(SSHError) -> EstablishedSession {
        LibSSH2.ensureInitialised()
        let socket = try connectSocket(host: endpoint.host, port: endpoint.port, deadline: deadline)
        guard let session = resalloc_session_init() else {
            close(socket)
            throw SSHError(.handshake, "could not create an SSH session (out of memory)")
        }
        do throws(SSHError) {
            libssh2_session_set_blocking(session, 0)
            // Ask for the pinned key's type, or the server may offer another type we never saw.
            // At first contact Ed25519 comes first, as swift-nio-ssh (copies' own connections,
            // `BulkSSH`) asks for it first and can check only a key of the pinned type.
            _ = libssh2_session_method_pref(session, LIBSSH2_METHOD_HOSTKEY, endpoint.expectedHostKey?.type ?? SessionSetup.firstContactHostKeys)
            try retry(session, socket, deadline, what: "the SSH handshake with \(endpoint.host):\(endpoint.port)", kind: .handshake) {
                libssh2_session_handshake(session, libssh2_socket_t(socket))
            }
            let hostKey = try readHostKey(session)
            if let expected = endpoint.expectedHostKey, expected != hostKey {
                throw SSHError(
                    .hostKeyMismatch,
                    "the host key of \(endpoint.host):\(endpoint.port) changed: pinned \(expected), presented \(hostKey); "
                        + "if the machine was reinstalled, delete and re-add it"
                )
            }
            try authenticate(session, socket, endpoint, deadline)
            // No reply asked for: libssh2 1.10 keeps every reply (a REQUEST_FAILURE) queued for the
            // session's lifetime, a leak that every channel read then scans (libssh2 #623). The
            // keepalive's point, sending something so that a dead peer shows, needs no reply.
            libssh2_keepalive_config(session, 0, UInt32(clamping: max(endpoint.keepaliveSeconds, 1)))
            return EstablishedSession(session: session, socket: socket, hostKey: hostKey)
        } catch {
            libssh2_session_set_blocking(session, 1)
            libssh2_session_set_timeout(session, 1000)
            _ = resalloc_session_disconnect(session, "resalloc: giving up")
            libssh2_session_free(session)
            close(socket)
            throw error
        }
    }

    /// Calls `body` until it stops answering EAGAIN, waiting on the socket in between.
    static func retry(
        _ session: OpaquePointer,
        _ socket: Int32,
        _ deadline: ContinuousClock.Instant,
        what: String,
        kind: SSHError.Kind,
        _ body: () -> Int32
    ) throws(SSHError) {
        while true {
            let rc = body()
            if rc == 0 { return }
            if rc != LIBSSH2_ERROR_EAGAIN {
                throw SSHError(kind, "\(what) failed", detail: LibSSH2.lastError(session).text)
            }
            try waitForSocket(session, socket, deadline, what: what)
        }
    }

    static func waitForSocket(_ session: OpaquePointer, _ socket: Int32, _ deadline: ContinuousClock.Instant, what: String) throws(SSHError) {
        let directions = libssh2_session_block_directions(session)
        var events: Int16 = 0
        if directions & LIBSSH2_SESSION_BLOCK_INBOUND != 0 { events |= Int16(POLLIN) }
        if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 { events |= Int16(POLLOUT) }
        if events == 0 { events = Int16(POLLIN) }
        var entry = pollfd(fd: socket, events: events, revents: 0)
        resalloc_quickack(socket)
        let timeout = millisecondsLeft(until: deadline)
        if timeout == 0 { throw SSHError(.timeout, "\(what) timed out") }
        _ = poll(&entry, 1, timeout)
    }

    private static func connectSocket(host: String, port: Int, deadline: ContinuousClock.Instant) throws(SSHError) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw SSHError(.connect, "cannot resolve \(host)", detail: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let address = entry {
            entry = address.pointee.ai_next
            let fd = socket(address.pointee.ai_family, address.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), address.pointee.ai_protocol)
            if fd < 0 { continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var result = Glibc.connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen)
            if result != 0 && errno == EINPROGRESS {
                var pending = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let timeout = millisecondsLeft(until: deadline)
                if timeout > 0, poll(&pending, 1, timeout) == 1 {
                    var error: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
                    result = error == 0 ? 0 : -1
                    errno = error
                } else {
                    close(fd)
                    throw SSHError(.timeout, "connecting to \(host):\(port) timed out")
                }
            }
            if result == 0 {
                resalloc_nodelay(fd)
                return fd
            }
            lastError = String(cString: strerror(errno))
            close(fd)
        }
        throw SSHError(.connect, "cannot connect to \(host):\(port): \(lastError)")
    }

    private static func readHostKey(_ session: OpaquePointer) throws(SSHError) -> HostKey {
        var length = 0
        var type: Int32 = 0
        guard libssh2_session_hostkey(session, &length, &type) != nil,
            let hash = libssh2_hostkey_hash(session, LIBSSH2_HOSTKEY_HASH_SHA256)
        else {
            throw SSHError(.handshake, "the machine presented no host key", detail: LibSSH2.lastError(session).text)
        }
        // 32 raw bytes, not a C string.
        let bytes = hash.withMemoryRebound(to: UInt8.self, capacity: 32) { Array(UnsafeBufferPointer(start: $0, count: 32)) }
        return HostKey(type: LibSSH2.hostKeyTypeName(type), sha256: bytes)
    }

    private static func authenticate(
        _ session: OpaquePointer,
        _ socket: Int32,
        _ endpoint: SSHEndpoint,
        _ deadline: ContinuousClock.Instant
    ) throws(SSHError) {
        guard FileManager.default.isReadableFile(atPath: endpoint.privateKeyPath) else {
            throw SSHError(.auth, "cannot read the private key \(endpoint.privateKeyPath)")
        }
        let user = endpoint.user
        while true {
            let rc = resalloc_userauth_publickey_fromfile(session, user, UInt32(user.utf8.count), endpoint.privateKeyPath, nil)
            if rc == 0 { return }
            if rc == LIBSSH2_ERROR_EAGAIN {
                try waitForSocket(session, socket, deadline, what: "logging in to \(endpoint)")
                continue
            }
            let detail = LibSSH2.lastError(session).text
            if rc == LIBSSH2_ERROR_FILE {
                throw SSHError(
                    .auth,
                    "cannot use the private key \(endpoint.privateKeyPath) (unreadable, encrypted or of an unknown type)",
                    detail: detail
                )
            }
            if PrivateKeyFile.isRSA(path: endpoint.privateKeyPath) {
                throw SSHError(
                    .auth,
                    "\(endpoint) refused the RSA key \(endpoint.privateKeyPath): libssh2 1.10 signs RSA with SHA-1, "
                        + "which OpenSSH 8.8 and later refuse; use an Ed25519 or ECDSA key (make keys)",
                    detail: detail
                )
            }
            throw SSHError(
                .auth,
                "\(endpoint) refused the key \(endpoint.privateKeyPath); is its .pub in ~\(user)/.ssh/authorized_keys (resources/setup.sh)?",
                detail: detail
            )
        }
    }
}

/// Just enough of a private key file to name its type in an error.
enum PrivateKeyFile {
    static func isRSA(path: String) -> Bool {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        if text.contains("BEGIN RSA PRIVATE KEY") { return true }
        guard text.contains("BEGIN OPENSSH PRIVATE KEY") else { return false }
        let body = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let blob = Data(base64Encoded: body) else { return false }
        // openssh-key-v1: magic, cipher, kdf, kdf options, key count, then the public key whose
        // first string is its type; for an unencrypted or encrypted key the type is in clear here.
        return blob.prefix(200).range(of: Data("ssh-rsa".utf8)) != nil
    }
}
