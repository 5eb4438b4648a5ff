import Synchronization

/// Turns output chunks into whole lines, keeping a line split across two reads whole (and a
/// multi-byte character split across them intact), and remembers the last lines for an error.
final class LineSplitter: Sendable {
    private struct State {
        var pending: [OutputStream: [UInt8]] = [:]
        var tail: [String] = []
    }
    enum OutputStream { case stdout, stderr }

    private let state = Mutex(State())
    private let tailLength: Int

    init(tailLength: Int = 30) { self.tailLength = tailLength }

    /// Complete lines in `bytes` (with what was left over before), without their line ends.
    func feed(_ bytes: [UInt8], from stream: OutputStream) -> [String] {
        state.withLock { state in
            var buffer = state.pending[stream, default: []] + bytes
            var lines: [String] = []
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                // A carriage return rewrites the line on a terminal (docker's progress does it):
                // keep what a terminal would show last.
                let line = buffer[..<newline].split(separator: UInt8(ascii: "\r"), omittingEmptySubsequences: true).last ?? []
                lines.append(String(decoding: line, as: UTF8.self))
                buffer.removeSubrange(...newline)
            }
            state.pending[stream] = buffer
            state.tail.append(contentsOf: lines)
            if state.tail.count > tailLength { state.tail.removeFirst(state.tail.count - tailLength) }
            return lines
        }
    }

    /// What is left without a final line end.
    func finish() -> [String] {
        state.withLock { state in
            let rest = [OutputStream.stdout, .stderr].compactMap { stream -> String? in
                guard let bytes = state.pending[stream], !bytes.isEmpty else { return nil }
                return String(decoding: bytes, as: UTF8.self)
            }
            state.pending = [:]
            state.tail.append(contentsOf: rest)
            if state.tail.count > tailLength { state.tail.removeFirst(state.tail.count - tailLength) }
            return rest
        }
    }

    var tail: String { state.withLock { $0.tail.joined(separator: "\n") } }
}
