/// The line a job's script writes on its stdout and on its stderr once its command has exited,
/// `\u{1}resalloc-job-ID-end STATUS` and a newline, so that whoever follows the container's log
/// knows the command's status, and that each stream has all its output, about 35 ms before the
/// engine has seen the container's exit (its log stream ends only then). Written as a whole
/// line, since the engine logs a line without its newline only at the end of the stream.
///
/// A warm container's handout (`RemoteDocker.handOff`) writes it; every reader of a job's
/// output (`JobEndScanner`) takes it off, and drops what a stream carries after it. A
/// command's own output that holds this line, with its job's id, ends its own output there.
public struct JobEndMarker: Sendable, Equatable {
    public let jobID: Int64

    public init(jobID: Int64) { self.jobID = jobID }

    /// What comes before the status.
    public var prefix: [UInt8] { Array("\u{1}resalloc-job-\(jobID)-end ".utf8) }

    /// `sh` text that writes the marker with the status in `$s` on stderr, then on stdout.
    public var shell: String {
        let format = "'\\001resalloc-job-\(jobID)-end %s\\n'"
        return "printf \(format) \"$s\" >&2; printf \(format) \"$s\""
    }
}

/// Takes a `JobEndMarker` off one stream of a job's output, fed as it comes: what `feed` returns
/// is the command's output; bytes that may begin the marker are held back until it is clear.
public struct JobEndScanner: Sendable {
    private let prefix: [UInt8]
    private var held: [UInt8] = []
    /// The status the marker said, once it has come: the stream's output is complete.
    public private(set) var status: Int?

    public init(_ marker: JobEndMarker) { prefix = marker.prefix }

    /// The output in `bytes` (and in what was held back before them); nothing once the marker came.
    public mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        guard status == nil else { return [] }
        let buffer = held + bytes
        held = []
        var from = 0
        while let start = Self.find(prefix, in: buffer, from: from) {
            let after = start + prefix.count
            let rest = buffer[after...].prefix(5)
            if let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
                if let said = Int(String(decoding: buffer[after..<newline], as: UTF8.self)), (0...255).contains(said) {
                    status = said
                    return Array(buffer[..<start])
                }
            } else if rest.count < 5 {
                held = Array(buffer[start...])  // the status or its newline is still to come
                return Array(buffer[..<start])
            }
            from = start + 1  // the same bytes, but not the marker
        }
        // The longest end of the buffer that could begin the marker waits for the next bytes.
        var keep = min(prefix.count - 1, buffer.count)
        while keep > 0 && !buffer.suffix(keep).elementsEqual(prefix.prefix(keep)) { keep -= 1 }
        held = Array(buffer.suffix(keep))
        return Array(buffer.dropLast(keep))
    }

    /// The stream ended: what was held back is output after all (no marker came).
    public mutating func finish() -> [UInt8] {
        defer { held = [] }
        return status == nil ? held : []
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard haystack.count - from >= needle.count else { return nil }
        var index = from
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0] && haystack[index..<index + needle.count].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}
