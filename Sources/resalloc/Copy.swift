import ArgumentParser
import Foundation
import NIOCore
import ResallocAPI
import ResallocClient

struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp",
        abstract: "Copy files and directories into or out of one of your leases.",
        discussion: """
            One side is LEASE:PATH, as docker cp and kubectl cp write it. Directories go recursively, with
            their files' modes and modification times; symlinks stay links. Copying to a directory puts the
            source inside it; to a path that does not exist yet, the source is created under that name.
            - on the local side is a tar stream on stdin (into a directory of the lease) or stdout.
            Works on any image, even one with no shell: the engine's own tar streams carry the files.
            A copy into a lease that breaks off leaves nothing half-written there.
            Examples:
              resalloc cp ./app mylease:/work
              resalloc cp mylease:/etc/os-release .
              tar -cf - src | resalloc cp - mylease:/work
              resalloc cp mylease:/var/log - | tar -tvf -
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "What to copy: a local path, -, or LEASE:PATH.") var source: String
    @Argument(help: "Where to: a local path, -, or LEASE:PATH.") var destination: String
    @Flag(name: .shortAndLong, help: "Do not show the progress line.") var quiet = false

    /// `LEASE:PATH` when `text` names a lease: a name, then a colon (`./a:b` is a local path).
    static func remote(_ text: String) -> (lease: String, path: String)? {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let lease = text[..<colon]
        guard !lease.isEmpty, lease.wholeMatch(of: /[A-Za-z0-9][A-Za-z0-9_-]{0,62}/) != nil else { return nil }
        let path = String(text[text.index(after: colon)...])
        return (String(lease), path.isEmpty ? "/" : path)
    }

    func validate() throws {
        switch (Self.remote(source), Self.remote(destination)) {
        case (nil, nil): throw ValidationError("one side must be LEASE:PATH, such as mylease:/work")
        case (.some, .some): throw ValidationError("one side only may be LEASE:PATH; copy through this machine in two steps")
        default: break
        }
    }

    func run() async throws {
        // A local tar that fails, or a closed stdout, is an error to report, not a signal to die of.
        signal(SIGPIPE, SIG_IGN)
        let progress = Progress(enabled: !quiet && isatty(STDERR_FILENO) == 1)
        let session = CopySession(client: global.client)
        try await Resalloc.perform {
            if let (lease, path) = Self.remote(destination) {
                try await Self.upload(source, session, into: .lease(lease), path: path, progress: progress)
            } else if let (lease, path) = Self.remote(source) {
                try await Self.download(session, from: .lease(lease), path: path, to: destination, progress: progress)
            }
        }
        progress.finish()
    }

    /// Where a copy goes or comes from: a lease, or a job's container.
    enum Place {
        case lease(String)
        case job(Int64)

        var name: String {
            switch self {
            case .lease(let name): return name
            case .job(let id): return "job \(id)"
            }
        }

        func kind(_ client: ResallocClient, _ path: String) async throws -> String {
            switch self {
            case .lease(let lease): return try await client.pathKind(lease: lease, path: path)
            case .job(let id): return try await client.pathKind(job: id, path: path)
            }
        }

        func upload(
            _ session: CopySession,
            _ directory: String,
            _ produce: @escaping @Sendable (_ send: @Sendable ([UInt8]) async throws -> Void) async throws -> Void
        ) async throws -> Int {
            switch self {
            case .lease(let lease): return try await session.upload(lease: lease, directory: directory, produce: produce)
            case .job(let id): return try await session.upload(job: id, directory: directory, produce: produce)
            }
        }

        func download(_ session: CopySession, _ path: String, _ receive: @escaping @Sendable (ByteBuffer) async throws -> Void) async throws -> Int {
            switch self {
            case .lease(let lease): return try await session.download(lease: lease, path: path, receive: receive)
            case .job(let id): return try await session.download(job: id, path: path, receive: receive)
            }
        }
    }

    static func upload(_ source: String, _ session: CopySession, into place: Place, path: String, progress: Progress) async throws {
        let client = session.client
        let lease = place.name
        if source == "-" {
            _ = try await place.upload(session, path) { send in
                var buffer = [UInt8](repeating: 0, count: TarWriter.chunkSize)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                    guard n > 0 else { break }
                    try await send(Array(buffer[0..<n]))
                    progress.add(n)
                }
            }
            return
        }
        var info = stat()
        guard lstat(source, &info) == 0 else { throw ClientError.local("\(source): \(String(cString: strerror(errno)))") }
        let sourceIsDirectory = info.st_mode & S_IFMT == S_IFDIR
        // Into an existing directory under the source's name; else as the destination's name.
        let (directory, name): (String, String)
        switch try await Self.kind(client, place, path: path) {
        case "directory"?: (directory, name) = (path, Self.lastComponent(source))
        case "file"?, "symlink"?:
            guard !sourceIsDirectory else { throw ClientError.local("\(lease):\(path) is a file; a directory cannot be copied onto it") }
            (directory, name) = (Self.parent(path), Self.lastComponent(path))
        default: (directory, name) = (Self.parent(path), Self.lastComponent(path))
        }
        _ = try await place.upload(session, directory) { send in
            try await TarWriter().write(source, as: name) { bytes in
                try await send(bytes)
                progress.add(bytes.count)
            } skipped: { path in
                FileHandle.standardError.write(Data("resalloc: left out \(path): not a file, directory or symlink\n".utf8))
            }
        }
    }

    static func download(_ session: CopySession, from place: Place, path: String, to destination: String, progress: Progress) async throws {
        // A plain request first: an unknown lease or path comes back as a sentence.
        _ = try await place.kind(session.client, path)
        let lease = place.name
        if destination == "-" {
            _ = try await place.download(session, path) { buffer in
                try FileHandle.standardOutput.write(contentsOf: Data(buffer.readableBytesView))
                progress.add(buffer.readableBytes)
            }
            return
        }
        var info = stat()
        let exists = stat(destination, &info) == 0
        let intoDirectory = exists && info.st_mode & S_IFMT == S_IFDIR
        let parent = intoDirectory ? destination : Self.parent(destination)
        let entry = Self.lastComponent(path)
        let final = intoDirectory ? "\(destination)/\(entry)" : destination
        // Unpacked beside its place first, and moved there only when all of it arrived.
        let staging = "\(parent)/.resalloc-cp-\(UUID().uuidString.prefix(8))"
        guard mkdir(staging, 0o700) == 0 else { throw ClientError.local("\(parent): \(String(cString: strerror(errno)))") }
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let tar = LocalTar(extractingInto: staging)
        do {
            _ = try await place.download(session, path) { buffer in
                try tar.write(buffer)
                progress.add(buffer.readableBytes)
            }
        } catch {
            _ = tar.finish()
            throw error
        }
        let status = tar.finish()
        guard status == 0 else { throw ClientError.local("tar could not unpack what came from \(lease):\(path) (status \(status))") }
        if rename("\(staging)/\(entry)", final) != 0 {
            throw ClientError.local("\(final): \(String(cString: strerror(errno)))")
        }
    }

    private static func kind(_ client: ResallocClient, _ place: Place, path: String) async throws -> String? {
        do {
            return try await place.kind(client, path)
        } catch ClientError.server(let status, let message) where status == 404 && message.hasPrefix("no such path") {
            return nil
        }
    }

    static func lastComponent(_ path: String) -> String {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        return trimmed.split(separator: "/").last.map(String.init) ?? trimmed
    }

    static func parent(_ path: String) -> String {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }
}

/// The bytes and rate so far, on one line of stderr that rewrites itself.
final class Progress: @unchecked Sendable {
    private let enabled: Bool
    private let lock = NSLock()
    private var bytes = 0
    private let started = Date()
    private var shown = Date.distantPast

    init(enabled: Bool) { self.enabled = enabled }

    func add(_ count: Int) {
        guard enabled else { return }
        lock.withLock {
            bytes += count
            if Date().timeIntervalSince(shown) > 0.2 { show() }
        }
    }

    func finish() {
        guard enabled else { return }
        lock.withLock { show() }
        FileHandle.standardError.write(Data("\n".utf8))
    }

    private func show() {
        shown = Date()
        let seconds = max(Date().timeIntervalSince(started), 0.001)
        let line = String(format: "\r%10.1f MB  %7.1f MB/s", Double(bytes) / 1e6, Double(bytes) / 1e6 / seconds)
        FileHandle.standardError.write(Data(line.utf8))
    }
}
