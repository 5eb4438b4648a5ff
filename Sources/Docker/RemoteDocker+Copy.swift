import SSH

/// What a path in a container is.
public enum PathKind: String, Sendable, Codable {
    case directory, file, symlink
}

/// Files in and out of a container through the engine's own tar streams (`docker cp`), so
/// that they work on any image, even one with no shell or tools in it.
extension RemoteDocker {
    /// What `path` is in `container`, or nil when nothing is there. Reads only the first blocks
    /// of `docker cp C:PATH -` (the engine's stat is not in its CLI).
    public func pathKind(_ container: String, _ path: String) async throws(DockerError) -> PathKind? {
        try Self.validateCopy(container, path)
        let source = ShellQuote.quote("\(container):\(path)")
        let result = try await shell("{ docker cp \(source) - 2>&3 | head -c 8192; } 3>&2", timeout: commandTimeout)
        guard let kind = TarHeader.firstEntryKind(result.stdout) else {
            if let missing = Self.copyFailure(result.stderrText, container: container) { throw missing }
            return nil
        }
        if kind == .symlink, let target = try await pathKind(container, path.hasSuffix("/") ? path + "." : path + "/."), target == .directory {
            return .directory
        }
        return kind
    }

    /// Starts `docker cp C:PATH -`: its output is a tar stream of `path` (a directory
    /// recursively; modes, times and symlinks kept). Flow-controlled: acknowledge what you
    /// handled with `RemoteProcess.consumed`.
    public func copyOut(_ container: String, _ path: String) async throws(DockerError) -> RemoteProcess {
        try Self.validateCopy(container, path)
        do {
            return try await pool.start(on: endpoint, "docker cp \(ShellQuote.quote("\(container):\(path)")) -", flowControlled: true)
        } catch {
            throw .transport(error)
        }
    }

    /// Extracts a tar stream into the existing directory `directory` of `container`. `write`
    /// sends the stream to the process it is given and returns the count of bytes it sent, or
    /// nil when the stream was cut short. The stream is staged in a file on the machine first,
    /// and only a complete one reaches the container: a copy that breaks off leaves nothing
    /// half-written there.
    public func copyIn(
        _ container: String,
        directory: String,
        write: (RemoteProcess) async throws -> Int?
    ) async throws(DockerError) {
        try Self.validateCopy(container, directory)
        let made = try await shell(#"umask 077 && mktemp "${TMPDIR:-/var/tmp}/resalloc-copy.XXXXXX""#, timeout: commandTimeout)
        let staging = made.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard made.succeeded, staging.hasPrefix("/"), !staging.contains("\n") else {
            throw .commandFailed(command: "mktemp", status: made.exitStatus, stderr: made.stderrText)
        }
        let file = ShellQuote.quote(staging)
        let sent: Int?
        do {
            let process = try await pool.start(on: endpoint, "cat > \(file)")
            sent = try? await write(process)
            if sent == nil { process.close() } else { process.closeInput() }
            let status = try? await process.exitStatus()
            if sent != nil && status != 0 {
                _ = try? await shell("rm -f \(file)", timeout: commandTimeout)
                throw DockerError.commandFailed(command: "cat", status: status ?? -1, stderr: "the machine could not stage the copy (disk full?)")
            }
        } catch let error as SSHError {
            _ = try? await shell("rm -f \(file)", timeout: commandTimeout)
            throw .transport(error)
        } catch {
            throw error as? DockerError ?? .invalidArgument("\(error)")
        }
        guard let sent else {
            _ = try await shell("rm -f \(file)", timeout: commandTimeout)
            throw .invalidArgument("the copy was cut short; nothing was written in the lease")
        }
        let target = ShellQuote.quote("\(container):\(directory)")
        let result = try await shell(
            """
            size=$(wc -c < \(file)); if [ "$size" != \(sent) ]; then rm -f \(file); echo "staged $size of \(sent) bytes" >&2; exit 99; fi
            docker cp - \(target) < \(file); status=$?; rm -f \(file); exit $status
            """,
            timeout: .seconds(3600)
        )
        guard result.succeeded else {
            throw Self.copyFailure(result.stderrText, container: container)
                ?? .commandFailed(command: "cp", status: result.exitStatus, stderr: result.stderrText)
        }
    }

    /// A failed `docker cp` as a typed error: the container missing, or a sentence about the path.
    static func copyFailure(_ stderr: String, container: String) -> DockerError? {
        let line = stderr.split(separator: "\n").first.map(String.init) ?? ""
        guard !line.isEmpty else { return nil }
        if line.contains("No such container") { return .noSuchContainer(container) }
        if line.contains("Could not find the file") { return nil }
        let message = line.replacingOccurrences(of: "Error response from daemon: ", with: "").replacingOccurrences(of: "Error: ", with: "")
        return .invalidArgument(message)
    }

    static func validateCopy(_ container: String, _ path: String) throws(DockerError) {
        try DockerNames.validateContainer(container)
        guard !path.isEmpty, path.unicodeScalars.count <= 4096, !path.utf8.contains(0) else {
            throw .invalidArgument("'\(path.prefix(80))' is not a path resalloc copies (empty, over 4096 characters, or with a NUL)")
        }
    }

    /// Runs a shell command line on the machine; a non-zero exit is returned, not thrown.
    func shell(_ command: String, timeout: Duration) async throws(DockerError) -> ExecResult {
        do { return try await pool.execute(on: endpoint, command, timeout: timeout) } catch { throw .transport(error) }
    }
}

/// Just enough of the tar format to say what an archive's first entry is.
enum TarHeader {
    static func firstEntryKind(_ bytes: [UInt8]) -> PathKind? {
        var offset = 0
        while offset + 512 <= bytes.count {
            let block = bytes[offset..<(offset + 512)]
            guard block.contains(where: { $0 != 0 }) else { return nil }
            let type = block[block.startIndex + 156]
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
                // An extended header: its data blocks, then the entry's own header.
                let sizeField = block[(block.startIndex + 124)..<(block.startIndex + 136)]
                let text = String(decoding: sizeField.filter { $0 != 0 && $0 != 32 }, as: UTF8.self)
                guard let size = Int(text, radix: 8) else { return nil }
                offset += 512 + (size + 511) / 512 * 512
            case UInt8(ascii: "5"): return .directory
            case UInt8(ascii: "2"): return .symlink
            default: return .file
            }
        }
        return nil
    }
}
