import Foundation
import ResallocAPI

/// Aligned columns for people; JSON for scripts.
enum Output {
    static func table(_ header: [String], _ rows: [[String]]) {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }

    static func json<T: Encodable>(_ value: T) throws {
        let encoder = WireCoding.encoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// `3m`, `2h5m`, `1d2h`: a person's reading of a duration.
    static func duration(_ seconds: TimeInterval) -> String {
        let total = Int(seconds.rounded())
        if total < 0 { return "expired" }
        if total < 60 { return "\(total)s" }
        if total < 3600 { return "\(total / 60)m" }
        if total < 86400 { return "\(total / 3600)h\(total % 3600 / 60 > 0 ? "\(total % 3600 / 60)m" : "")" }
        return "\(total / 86400)d\(total % 86400 / 3600 > 0 ? "\(total % 86400 / 3600)h" : "")"
    }

    static func bytes(_ count: Int64) -> String {
        let gib = Double(count) / 1_073_741_824
        return gib >= 1 ? String(format: "%.1f GiB", gib) : String(format: "%.0f MiB", Double(count) / 1_048_576)
    }
}
