import Foundation
import Logging
import SSH
import Synchronization

extension Master {
    /// The recorder of a session in `target`: one with a terminal, when recording is on (both
    /// front doors, `resalloc ssh` and the SSH gateway, ask here).
    public func recorder(_ target: LeaseTarget, terminal: (term: String, size: TerminalSize)?, logger: Logger) -> SessionRecorder? {
        guard let terminal, let recordDirectory else { return nil }
        return SessionRecorder.start(
            directory: recordDirectory,
            lease: target.name,
            user: target.user,
            columns: terminal.size.columns,
            rows: terminal.size.rows,
            term: terminal.term,
            recordInput: recordInput,
            maxBytes: recordMax,
            logger: logger
        )
    }
}

/// One interactive session recorded in asciinema's v2 format: a JSON header line, then
/// `[seconds, "o", text]` for output (`"i"` for input, only when asked; `"r"` for a resize).
/// Events are timed when they happen, kept in order, and encoded and written in batches on a
/// queue of the recorder's own at most every 50 ms, so recording costs a keystroke's path
/// neither the disk nor a thread's wake-up; a write that fails (a full disk) ends the
/// recording, never the session. Files are mode 0600.
public final class SessionRecorder: Sendable {
    public let path: String
    private let queue = DispatchQueue(label: "resalloc.recording")
    private let started = ContinuousClock.now
    private let recordInput: Bool
    private let logger: Logger
    private struct State {
        var handle: FileHandle?
        /// Bytes of a UTF-8 sequence cut at a chunk's end, per stream ("o", "i").
        var pending: [String: [UInt8]] = [:]
        /// Events not yet written: seconds, kind, text.
        var events: [(Double, String, String)] = []
        var flushScheduled = false
        /// Bytes in the file so far.
        var written = 0
    }
    /// A recording stops growing here (`serve --record-max`): the session goes on, and the
    /// recording's last event says it was cut.
    private let maxBytes: Int
    public static let defaultMaxBytes = 64 << 20
    static let batchInterval = DispatchTimeInterval.milliseconds(50)
    private let state = Mutex(State())

    /// Starts a recording under `directory`, or returns nil (logged) when it cannot.
    public static func start(
        directory: String,
        lease: String,
        user: String,
        columns: Int,
        rows: Int,
        term: String,
        recordInput: Bool,
        maxBytes: Int = SessionRecorder.defaultMaxBytes,
        logger: Logger
    ) -> SessionRecorder? {
        let now = Date()
        let stamp = ISO8601DateFormatter.string(
            from: now,
            timeZone: .gmt,
            formatOptions: [.withYear, .withMonth, .withDay, .withTime, .withTimeZone]
        )
        .replacingOccurrences(of: ":", with: "")
        let id = "\(lease)-\(user)-\(stamp)-\(UUID().uuidString.prefix(8).lowercased())"
        let path = "\(directory)/\(id).cast"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw CocoaError(.fileWriteNoPermission)
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            let header: [String: Any] = [
                "version": 2, "width": columns, "height": rows, "timestamp": Int(now.timeIntervalSince1970),
                "env": ["TERM": term], "title": "lease \(lease) by \(user)", "lease": lease, "user": user,
            ]
            var line = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
            line.append(0x0A)
            try handle.write(contentsOf: line)
            let recorder = SessionRecorder(path: path, handle: handle, recordInput: recordInput, maxBytes: maxBytes, logger: logger)
            recorder.state.withLock { $0.written = line.count }
            return recorder
        } catch {
            logger.warning("cannot record the session", metadata: ["path": "\(path)", "error": "\(error)"])
            return nil
        }
    }

    private init(path: String, handle: FileHandle, recordInput: Bool, maxBytes: Int, logger: Logger) {
        self.path = path
        self.recordInput = recordInput
        self.maxBytes = maxBytes
        self.logger = logger
        state.withLock { $0.handle = handle }
    }

    public func output(_ bytes: [UInt8]) { event("o", bytes) }
    public func input(_ bytes: [UInt8]) { if recordInput { event("i", bytes) } }
    public func resize(columns: Int, rows: Int) { write(seconds(), "r", "\(columns)x\(rows)") }

    /// Writes what is pending and closes the file; a second call does nothing.
    public func close() {
        let rest = state.withLock { state in
            defer { state.pending = [:] }
            return state.pending
        }
        let at = seconds()
        for (kind, bytes) in rest.sorted(by: { $0.key < $1.key }) where !bytes.isEmpty { write(at, kind, String(decoding: bytes, as: UTF8.self)) }
        queue.async { [self] in
            flush()
            state.withLock { state in
                try? state.handle?.close()
                state.handle = nil
            }
        }
    }

    /// Closes as `close()` does and returns once the file is written: sessions call it before
    /// their client hears the exit status, so a session seen to end has its whole recording.
    public func closeAndWait() async {
        close()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in queue.async { done.resume() } }
    }

    private func seconds() -> Double {
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// Text up to the last whole UTF-8 character; the rest waits for the next chunk.
    private func event(_ kind: String, _ bytes: [UInt8]) {
        let at = seconds()
        let text: String? = state.withLock { state in
            let data = state.pending[kind, default: []] + bytes
            let cut = Self.wholeCharacters(data)
            state.pending[kind] = Array(data[cut...])
            return cut == 0 ? nil : String(decoding: data[..<cut], as: UTF8.self)
        }
        if let text { write(at, kind, text) }
    }

    /// The length of `data`'s longest prefix that does not end inside a UTF-8 sequence.
    static func wholeCharacters(_ data: [UInt8]) -> Int {
        var index = data.count
        var back = 0
        while index > 0 && back < 4 {
            let byte = data[index - 1]
            if byte & 0xC0 != 0x80 {  // a lead byte (or ASCII): is its sequence complete?
                let length = byte < 0x80 ? 1 : byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                return length > back + 1 ? index - 1 : data.count
            }
            index -= 1
            back += 1
        }
        return data.count
    }

    /// Keeps the event for the next batch, and schedules that batch if none is.
    private func write(_ at: Double, _ kind: String, _ text: String) {
        let schedule = state.withLock { state -> Bool in
            guard state.handle != nil else { return false }
            state.events.append((at, kind, text))
            defer { state.flushScheduled = true }
            return !state.flushScheduled
        }
        if schedule { queue.asyncAfter(deadline: .now() + Self.batchInterval) { [self] in flush() } }
    }

    /// Encodes and writes the events kept so far; on the recorder's queue.
    private func flush() {
        let (events, handle) = state.withLock { state in
            defer {
                state.events = []
                state.flushScheduled = false
            }
            return (state.events, state.handle)
        }
        guard let handle, !events.isEmpty else { return }
        let encoder = JSONEncoder()
        func line(_ at: Double, _ kind: String, _ text: String) -> Data {
            let encoded = (try? encoder.encode(text)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
            return Data("[\(String(format: "%.6f", at)), \"\(kind)\", \(encoded)]\n".utf8)
        }
        var lines = Data()
        var cut = false
        let room = maxBytes - state.withLock { $0.written }
        for (at, kind, text) in events {
            let next = line(at, kind, text)
            // Room is kept for the note that says where the recording was cut.
            if lines.count + next.count > room - 200 {
                lines.append(line(at, "o", "\r\n[resalloc: the recording stops here, at its limit of \(maxBytes) bytes; the session went on]\r\n"))
                cut = true
                break
            }
            lines.append(next)
        }
        state.withLock { $0.written += lines.count }
        if cut {
            logger.notice("a session recording reached its limit", metadata: ["path": "\(path)", "bytes": "\(maxBytes)"])
            state.withLock { state in
                try? state.handle?.write(contentsOf: lines)
                try? state.handle?.close()
                state.handle = nil
            }
            return
        }
        do { try handle.write(contentsOf: lines) } catch {
            // A full disk ends the recording, not the session.
            logger.warning("the session recording stopped", metadata: ["path": "\(path)", "error": "\(error)"])
            state.withLock { state in
                try? state.handle?.close()
                state.handle = nil
            }
        }
    }
}

/// The recordings in a directory, as `resalloc-master sessions` and `GET /session` list them.
public enum SessionRecordings {
    public struct Entry: Sendable, Equatable, Codable {
        public var id: String
        public var lease: String
        public var user: String
        public var started: Date
        public var bytes: Int
    }

    public static func list(_ directory: String, lease: String? = nil, user: String? = nil) -> [Entry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return names.filter { $0.hasSuffix(".cast") }.compactMap { name -> Entry? in
            let path = "\(directory)/\(name)"
            guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
            defer { try? handle.close() }
            let head = (try? handle.read(upToCount: 4096)) ?? Data()
            guard let line = head.split(separator: 0x0A).first,
                let header = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                let leaseName = header["lease"] as? String, let userName = header["user"] as? String,
                let timestamp = header["timestamp"] as? Int
            else { return nil }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            return Entry(
                id: String(name.dropLast(5)),
                lease: leaseName,
                user: userName,
                started: Date(timeIntervalSince1970: Double(timestamp)),
                bytes: size
            )
        }
        .filter { (lease == nil || $0.lease == lease) && (user == nil || $0.user == user) }
        .sorted { ($0.started, $0.id) < ($1.started, $1.id) }
    }

    /// Removes the recordings last written before `date`; returns how many.
    @discardableResult
    public static func purge(_ directory: String, before date: Date) -> Int {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return 0 }
        var removed = 0
        for name in names where name.hasSuffix(".cast") {
            let path = "\(directory)/\(name)"
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date, modified < date else {
                continue
            }
            if (try? FileManager.default.removeItem(atPath: path)) != nil { removed += 1 }
        }
        return removed
    }

    /// The file of recording `id`, if there is one (ids are file names: no path may be given).
    public static func path(_ directory: String, id: String) -> String? {
        guard id.wholeMatch(of: /[A-Za-z0-9_.-]{1,200}/) != nil, !id.hasPrefix("."), !id.contains("..") else { return nil }
        let path = "\(directory)/\(id).cast"
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
}
