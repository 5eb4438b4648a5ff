import Foundation
import Logging
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
            return try await pool.startBulk(on: endpoint, "docker cp \(ShellQuote.quote("\(container):\(path)")) -")
        } catch {
            throw .transport(error)
        }
    }

    /// Extracts a tar stream into the existing directory `directory` of `container`. `write`
    /// sends the stream to the process it is given and returns the count of bytes it sent, or
    /// nil when the stream was cut short. Only a complete stream reaches its place: a copy that
    /// breaks off leaves nothing half-written there.
    ///
    /// With `relay` (the master's static busybox), the stream is unpacked as it arrives into a
    /// hidden directory beside its place (`.resalloc-cp-*`, same filesystem), and its entries
    /// are renamed into place once all of it is there, by that busybox run in the container;
    /// transfer and unpacking overlap. Without it, or where that busybox cannot run (another
    /// architecture, a noexec mount), the stream is staged in a file on the machine and unpacked
    /// after.
    public func copyIn(
        _ container: String,
        directory: String,
        relay: RelayImage? = nil,
        write: (RemoteProcess) async throws -> Int?
    ) async throws(DockerError) {
        try Self.validateCopy(container, directory)
        if let relay, relay.runs(on: endpoint), let staging = try await prepareStreamedCopy(container, directory: directory, relay: relay) {
            try await streamedCopyIn(container, directory: directory, staging: staging, write: write)
        } else {
            try await requireDirectory(container, directory)
            try await stagedCopyIn(container, directory: directory, write: write)
        }
    }

    /// What `copyIn` throws (as `.invalidArgument`) when its directory is missing, or is not one.
    public static let noSuchDirectory = "no such directory"
    public static let notADirectory = "not a directory"

    /// Throws `noSuchDirectory` or `notADirectory` unless `directory` is a directory in the container.
    private func requireDirectory(_ container: String, _ directory: String) async throws(DockerError) {
        switch try await pathKind(container, directory) {
        case .directory?: return
        case nil: throw .invalidArgument(Self.noSuchDirectory)
        case _?: throw .invalidArgument(Self.notADirectory)
        }
    }

    /// Makes `DIRECTORY/.resalloc-cp-<random>/` holding `busybox` and an empty `data/` (one
    /// `docker cp`, which is also the check that DIRECTORY is one), and checks that the busybox
    /// runs there (once per container and directory); returns that directory, or nil when it
    /// does not run. Nothing can remove the directory then: it stays (its path is in the log),
    /// and this machine's copies are staged from then on.
    private func prepareStreamedCopy(_ container: String, directory: String, relay: RelayImage) async throws(DockerError) -> String? {
        let name = ".resalloc-cp-" + String(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF, radix: 16)
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let staging = "\(base)/\(name)"
        guard let tool = TarHeader.moving(relay.archive, under: name + "/") else { return nil }
        do {
            try await extract(container, into: directory, TarHeader.directory(name + "/") + TarHeader.directory(name + "/data/") + tool)
        } catch {
            // The directory missing or not one: that sentence rather than docker's.
            if case .noSuchContainer = error { throw error }
            try await requireDirectory(container, directory)
            throw error
        }
        let place = "\(endpoint) \(container) \(directory)"
        if relay.ran(at: place) { return staging }
        let probe = try await run(["exec", "--user", "0", container, "\(staging)/busybox", "true"], timeout: commandTimeout)
        if probe.succeeded { relay.remember(ranAt: place) }
        guard probe.succeeded else {
            relay.markUnrunnable(on: endpoint)
            Logger(label: "resalloc.docker").warning(
                "the master's busybox does not run in this container (another architecture, or a noexec mount?): copies in are staged on this machine; the empty helper directory stays behind",
                metadata: ["container": "\(container)", "path": "\(staging)", "error": "\(probe.stderrText)"]
            )
            return nil
        }
        return staging
    }

    /// Unpacks the stream into `staging/data` as it arrives, then moves what it held into place.
    private func streamedCopyIn(
        _ container: String,
        directory: String,
        staging: String,
        write: (RemoteProcess) async throws -> Int?
    ) async throws(DockerError) {
        let tool = "\(staging)/busybox"
        var sent: Int?
        var status: Int32?
        var errors = ""
        do {
            let process = try await pool.startBulk(on: endpoint, "docker cp - \(ShellQuote.quote("\(container):\(staging)/data"))")
            let stderr = Task {
                var text: [UInt8] = []
                for await chunk in process.output {
                    switch chunk {
                    case .stderr(let bytes):
                        text += bytes.prefix(4096 - text.count)
                        process.consumed(bytes.count)
                    case .stdout(let bytes):
                        process.consumed(bytes.count)
                    }
                }
                return String(decoding: text, as: UTF8.self)
            }
            sent = try? await write(process)
            if sent == nil { process.close() } else { process.closeInput() }
            status = try? await process.exitStatus()
            errors = await stderr.value
        } catch {
            _ = try? await run(["exec", "--user", "0", container, tool, "rm", "-rf", staging], timeout: commandTimeout)
            throw .transport(error)
        }
        guard sent != nil, status == 0 else {
            _ = try? await run(["exec", "--user", "0", container, tool, "rm", "-rf", staging], timeout: commandTimeout)
            if sent == nil { throw .invalidArgument("the copy was cut short; nothing was written in the lease") }
            throw Self.copyFailure(errors, container: container) ?? .commandFailed(command: "cp", status: status ?? -1, stderr: errors)
        }
        let moved = try await run(
            ["exec", "--user", "0", container, tool, "sh", "-c", Self.mergeScript, "sh", "\(staging)/data", directory, staging],
            timeout: .seconds(600)
        )
        guard moved.succeeded else {
            _ = try? await run(["exec", "--user", "0", container, tool, "rm", "-rf", staging], timeout: commandTimeout)
            throw .invalidArgument(moved.stderrText.split(separator: "\n").first.map(String.init) ?? "could not move the copy into place")
        }
    }

    /// `sh -c SCRIPT sh FROM TO STAGING`, run by the copy's busybox: each entry of FROM is renamed
    /// into TO (a file or a link replaces its namesake atomically); a directory that TO already
    /// has is merged into, and anything else of the same name is removed first, as `docker cp`
    /// does. A symlink in TO is replaced, never followed. STAGING goes last.
    static let mergeScript = """
        b="$3/busybox"; staging="$3"; k=0
        isdir() { [ -d "$1" ] && [ ! -L "$1" ]; }
        merge() {
          local e n stamp
          for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
            [ -e "$e" ] || [ -L "$e" ] || continue
            n=${e##*/}
            if isdir "$e" && isdir "$2/$n"; then
              # The directory's times as the copy had them, before moving its entries changes them.
              k=$((k + 1)); stamp="$staging/.stamp$k"
              "$b" touch -r "$e" "$stamp"
              merge "$e" "$2/$n" || return 1
              "$b" chmod "$("$b" stat -c %a "$e")" "$2/$n"; "$b" touch -r "$stamp" "$2/$n"
              continue
            fi
            if isdir "$2/$n"; then "$b" rm -rf "$2/$n" || return 1
            elif isdir "$e" && { [ -e "$2/$n" ] || [ -L "$2/$n" ]; }; then "$b" rm -f "$2/$n" || return 1
            fi
            "$b" mv -f -T "$e" "$2/$n" || return 1
          done
        }
        merge "$1" "$2"; status=$?
        "$b" rm -rf "$3"
        exit $status
        """

    /// Unpacks a small tar (bytes in hand) into `directory` of `container`.
    private func extract(_ container: String, into directory: String, _ archive: [UInt8]) async throws(DockerError) {
        let result = try await run(["cp", "-", "\(container):\(directory)"], stdin: archive, timeout: commandTimeout)
        guard result.succeeded else {
            throw Self.copyFailure(result.stderrText, container: container)
                ?? .commandFailed(command: "cp", status: result.exitStatus, stderr: result.stderrText)
        }
    }

    /// The stream staged in a file on the machine, unpacked once all of it has arrived.
    private func stagedCopyIn(_ container: String, directory: String, write: (RemoteProcess) async throws -> Int?) async throws(DockerError) {
        let made = try await shell(#"umask 077 && mktemp "${TMPDIR:-/var/tmp}/resalloc-copy.XXXXXX""#, timeout: commandTimeout)
        let staging = made.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard made.succeeded, staging.hasPrefix("/"), !staging.contains("\n") else {
            throw .commandFailed(command: "mktemp", status: made.exitStatus, stderr: made.stderrText)
        }
        let file = ShellQuote.quote(staging)
        let sent: Int?
        do {
            let process = try await pool.startBulk(on: endpoint, "cat > \(file)")
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
    /// A ustar header for a directory entry `name` (ending in `/`, under 100 bytes), mode 0700.
    static func directory(_ name: String) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) { for (index, byte) in text.utf8.enumerated() { block[offset + index] = byte } }
        put(name, at: 0)
        put("0000700", at: 100)
        put("0000000", at: 108)
        put("0000000", at: 116)
        put("00000000000", at: 124)
        put(String(format: "%011o", Int(Date().timeIntervalSince1970)), at: 136)
        put("        ", at: 148)
        block[156] = UInt8(ascii: "5")
        put("ustar\u{0}00", at: 257)
        let sum = block.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o", sum) + "\u{0} ", at: 148)
        return block
    }

    /// `archive`, a tar whose first entry has a plain header, with that entry renamed to
    /// `directory` + its name (`directory` ending in `/`); nil when that would not fit.
    static func moving(_ archive: [UInt8], under directory: String) -> [UInt8]? {
        guard archive.count >= 512 else { return nil }
        var block = Array(archive[0..<512])
        let name = Array(directory.utf8) + block[0..<100].prefix(while: { $0 != 0 })
        guard name.count < 100, block[156] == UInt8(ascii: "0") || block[156] == 0 else { return nil }
        block.replaceSubrange(0..<100, with: name + [UInt8](repeating: 0, count: 100 - name.count))
        block.replaceSubrange(148..<156, with: Array("        ".utf8))
        let sum = block.reduce(0) { $0 + Int($1) }
        block.replaceSubrange(148..<156, with: Array((String(format: "%06o", sum) + "\u{0} ").utf8))
        return block + archive[512...]
    }

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
