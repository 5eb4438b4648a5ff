import Foundation

/// Writes a local file or directory tree as a tar stream (POSIX ustar, with pax records for
/// long names), a piece at a time, for `resalloc cp` into a lease. Directories recursively;
/// permission bits and modification times kept; symlinks as links. Owners are not sent (the
/// engine makes the files root's, as `docker cp` does); sockets, FIFOs and devices are left out.
public struct TarWriter: Sendable {
    public static let chunkSize = 256 * 1024

    public init() {}

    /// Streams `path` as the entry `name` (and below it, for a directory) into `emit`, then the
    /// end of the archive. `skipped` hears of entries left out.
    public func write(
        _ path: String,
        as name: String,
        emit: ([UInt8]) async throws -> Void,
        skipped: (String) -> Void = { _ in }
    ) async throws {
        try await entry(path, name: name, emit: emit, skipped: skipped)
        try await emit([UInt8](repeating: 0, count: 1024))
    }

    private func entry(_ path: String, name: String, emit: ([UInt8]) async throws -> Void, skipped: (String) -> Void) async throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw TarError("\(path): \(String(cString: strerror(errno)))") }
        let mode = Int(info.st_mode) & 0o7777
        let mtime = Int(info.st_mtim.tv_sec)
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            try await emit(Self.header(name: name + "/", mode: mode, size: 0, mtime: mtime, type: "5"))
            let children: [String]
            do { children = try FileManager.default.contentsOfDirectory(atPath: path).sorted() } catch {
                throw TarError("\(path): cannot list the directory (permission denied?)")
            }
            for child in children { try await entry("\(path)/\(child)", name: "\(name)/\(child)", emit: emit, skipped: skipped) }
        case S_IFLNK:
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: path)
            try await emit(Self.header(name: name, mode: mode, size: 0, mtime: mtime, type: "2", link: target))
        case S_IFREG:
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw TarError("\(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            let size = Int(info.st_size)
            try await emit(Self.header(name: name, mode: mode, size: size, mtime: mtime, type: "0"))
            var left = size
            var buffer = [UInt8](repeating: 0, count: Self.chunkSize)
            while left > 0 {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, left)) }
                guard n > 0 else { throw TarError("\(path): changed while it was being copied") }
                left -= n
                var chunk = Array(buffer[0..<n])
                if left == 0, size % 512 != 0 { chunk += [UInt8](repeating: 0, count: 512 - size % 512) }
                try await emit(chunk)
            }
        default:
            skipped(path)
        }
    }

    /// One header block, preceded by a pax header when a name does not fit ustar's fields.
    public static func header(name: String, mode: Int, size: Int, mtime: Int, type: Character, link: String = "") -> [UInt8] {
        var records: [(String, String)] = []
        if name.utf8.count > 100 { records.append(("path", name)) }
        if link.utf8.count > 100 { records.append(("linkpath", link)) }
        if size > 0o77777777777 { records.append(("size", String(size))) }
        var out: [UInt8] = []
        if !records.isEmpty {
            var data: [UInt8] = []
            for (key, value) in records {
                // "LEN key=value\n", where LEN counts itself.
                let body = " \(key)=\(value)\n"
                var length = body.utf8.count + 1
                while String(length).count + body.utf8.count != length { length = String(length).count + body.utf8.count }
                data += Array("\(length)\(body)".utf8)
            }
            out += block(name: "PaxHeader", mode: 0o644, size: data.count, mtime: mtime, type: "x", link: "")
            out += data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        }
        out += block(name: name, mode: mode, size: size > 0o77777777777 ? 0 : size, mtime: mtime, type: type, link: link)
        return out
    }

    private static func block(name: String, mode: Int, size: Int, mtime: Int, type: Character, link: String) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { block[offset + index] = byte }
        }
        func octal(_ value: Int, at offset: Int, width: Int) {
            put(String(String(value, radix: 8).suffix(width - 1)).leftPadded(to: width - 1), at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(mode, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(max(mtime, 0), at: 136, width: 12)
        put(String(type), at: 156, width: 1)
        put(link, at: 157, width: 100)
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        for index in 148..<156 { block[index] = 0x20 }
        let sum = block.reduce(0) { $0 + Int($1) }
        put(String(String(sum, radix: 8)).leftPadded(to: 6), at: 148, width: 6)
        block[154] = 0
        block[155] = 0x20
        return block
    }
}

public struct TarError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
