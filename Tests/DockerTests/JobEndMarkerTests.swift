import Foundation
import Testbed
import Testing

@testable import Docker

@Suite("The end-of-job marker")
struct JobEndMarkerTests {
    let marker = JobEndMarker(jobID: 42)

    /// Feeds `stream` to a scanner in the pieces `cuts` make of it; returns the output and status.
    func scan(_ stream: [UInt8], cuts: [Int] = []) -> (output: [UInt8], status: Int?) {
        var scanner = JobEndScanner(marker)
        var output: [UInt8] = []
        var from = 0
        for cut in cuts + [stream.count] {
            output += scanner.feed(Array(stream[from..<cut]))
            from = cut
        }
        output += scanner.finish()
        return (output, scanner.status)
    }

    @Test("What a real sh writes with the marker's text is read back: the status, and each stream's output without it")
    func realShell() throws {
        let directory = try makeTemporaryDirectory("resalloc-marker")
        let script = "printf 'partial'; printf 'err\\n' >&2; s=7; \(marker.shell)"
        _ = try Testbed.run(["sh", "-c", "(\(script)) >\(directory)/out 2>\(directory)/err"])
        let out = scan(Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/out"))))
        let err = scan(Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/err"))))
        #expect(out.status == 7 && String(decoding: out.output, as: UTF8.self) == "partial")
        #expect(err.status == 7 && String(decoding: err.output, as: UTF8.self) == "err\n")
    }

    @Test("Cut anywhere, the stream gives the same output and status; what follows the marker is dropped")
    func everyCut() {
        let stream = Array("line\n\u{1}resalloc-job-4\u{1}x".utf8) + marker.prefix + Array("0\nafter the end\n".utf8)
        for cut in 0...stream.count {
            let result = scan(stream, cuts: [cut])
            #expect(result.status == 0, "cut at \(cut)")
            #expect(String(decoding: result.output, as: UTF8.self) == "line\n\u{1}resalloc-job-4\u{1}x", "cut at \(cut)")
        }
        for cut in 0...stream.count - 1 {
            let result = scan(stream, cuts: [cut, cut + 1])
            #expect(result.status == 0 && result.output == Array("line\n\u{1}resalloc-job-4\u{1}x".utf8), "cuts at \(cut), \(cut + 1)")
        }
    }

    @Test("Look-alikes stay output: another job's marker, no status, a status out of range, a stream that ends inside the prefix")
    func lookAlikes() {
        for text in [
            "\u{1}resalloc-job-41-end 0\n", "\u{1}resalloc-job-42-end x\n", "\u{1}resalloc-job-42-end 256\n",
            "\u{1}resalloc-job-42-end 12345\n", "\u{1}resalloc-job-42-en", "\u{1}resalloc-job-42-end 3",
        ] {
            let result = scan(Array(text.utf8))
            #expect(result.status == nil, "\(text.debugDescription)")
            #expect(result.output == Array(text.utf8), "\(text.debugDescription)")
        }
        // A look-alike before the real marker is output; the marker after it still ends the stream.
        let result = scan(Array("\u{1}resalloc-job-42-end no\n".utf8) + marker.prefix + Array("255\n".utf8))
        #expect(result.status == 255 && result.output == Array("\u{1}resalloc-job-42-end no\n".utf8))
    }
}
