import AsyncHTTPClient
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import Synchronization
import Testbed

/// A headless Chromium (Debian's `chromium`, installed by `make deps`) driven over its DevTools
/// protocol: the console's tests type, click and read in a real browser, with its real cookie
/// jar, form posts and JavaScript.
final class Browser: Sendable {
    private let process: Subprocess
    let directory: String
    private let outgoing: AsyncStream<String>.Continuation
    private let replies = Replies()
    private let connection: Task<Void, Never>

    private init(process: Subprocess, directory: String, socketURL: String) {
        self.process = process
        self.directory = directory
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        outgoing = continuation
        let replies = replies
        connection = Task {
            var configuration = WebSocketClientConfiguration()
            configuration.maxFrameSize = 1 << 26  // screenshots arrive as one frame
            var logger = Logger(label: "browser")
            logger.logLevel = .critical
            let failure: any Error
            do {
                try await WebSocketClient.connect(url: socketURL, configuration: configuration, logger: logger) { inbound, outbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { for await text in stream { try await outbound.write(.text(text)) } }
                        for try await message in inbound.messages(maxSize: 1 << 26) {
                            guard case .text(let text) = message, let data = text.data(using: .utf8),
                                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let id = object["id"] as? Int
                            else { continue }
                            let waiter = replies.state.withLock { $0.waiting.removeValue(forKey: id) }
                            waiter?.resume(returning: data)
                        }
                        group.cancelAll()
                    }
                }
                failure = TestbedError("the browser closed its DevTools connection")
            } catch {
                failure = error
            }
            for waiter in replies.state.withLock({ state in
                defer { state.waiting = [:] }
                return Array(state.waiting.values)
            }) {
                waiter.resume(throwing: failure)
            }
        }
    }

    /// Starts a browser with an empty profile, 1280×900, and connects to its one page.
    static func launch() async throws -> Browser {
        let directory = try makeTemporaryDirectory("resalloc-browser")
        let log = "\(directory)/chromium.log"
        let process = try Subprocess.start(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--hide-scrollbars", "--window-size=1280,900", "--remote-debugging-port=0",
                // The WebSocket client sends its own address as Origin.
                "--remote-allow-origins=ws://127.0.0.1",
                "--user-data-dir=\(directory)/profile", "about:blank",
            ],
            stdout: .file(log),
            stderr: .file(log)
        )
        do {
            // Chromium writes the port it chose here once DevTools listens.
            var port: Int?
            for _ in 0..<300 where port == nil {
                if let status = process.exitStatus { throw TestbedError("chromium exited with status \(status); see \(log)") }
                port = (try? String(contentsOfFile: "\(directory)/profile/DevToolsActivePort", encoding: .utf8))?
                    .split(separator: "\n").first.flatMap { Int($0) }
                if port == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard let port else { throw TestbedError("chromium did not open DevTools within 30 s; see \(log)") }
            let list = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/json/list"), timeout: .seconds(10))
            let body = try await list.body.collect(upTo: 1 << 20)
            let targets = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [[String: Any]] ?? []
            guard let page = targets.first(where: { $0["type"] as? String == "page" }), let url = page["webSocketDebuggerUrl"] as? String else {
                throw TestbedError("chromium has no page to drive: \(targets)")
            }
            return Browser(process: process, directory: directory, socketURL: url)
        } catch {
            process.kill9()
            throw error
        }
    }

    func close() {
        outgoing.finish()
        connection.cancel()
        process.kill9()
    }

    // MARK: The protocol

    /// Sends a DevTools command and returns its `result`.
    @discardableResult
    func command(_ method: String, _ parameters: [String: Any] = [:]) async throws -> [String: Any] {
        let data: Data = try await withCheckedThrowingContinuation { continuation in
            let id = replies.state.withLock { state in
                defer { state.next += 1 }
                state.waiting[state.next] = continuation
                return state.next
            }
            let message = try? JSONSerialization.data(withJSONObject: ["id": id, "method": method, "params": parameters])
            outgoing.yield(String(decoding: message ?? Data(), as: UTF8.self))
        }
        let reply = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        if let error = reply["error"] as? [String: Any] { throw TestbedError("\(method): \(error["message"] ?? error)") }
        return reply["result"] as? [String: Any] ?? [:]
    }

    /// Runs `script` in the page and returns its value (JSON-like: String, Bool, numbers, arrays).
    @discardableResult
    func evaluate(_ script: String) async throws -> Any? {
        let result = try await command("Runtime.evaluate", ["expression": script, "returnByValue": true, "awaitPromise": true])
        if let exception = result["exceptionDetails"] as? [String: Any] {
            let description = (exception["exception"] as? [String: Any])?["description"] ?? exception["text"] ?? exception
            throw TestbedError("the page's script failed: \(description)\n\(script)")
        }
        return (result["result"] as? [String: Any])?["value"]
    }

    // MARK: What a person does

    /// Loads `url` and waits until the new document has loaded.
    func open(_ url: String) async throws {
        try await navigating { try await self.command("Page.navigate", ["url": url]) }
    }

    /// Types `text` into the field `selector` names.
    func fill(_ selector: String, _ text: String) async throws {
        let done = try await evaluate(
            "(() => { const e = document.querySelector(\(Self.quote(selector))); if (!e) return false; e.value = \(Self.quote(text)); return true })()"
        )
        guard done as? Bool == true else { throw TestbedError("no field \(selector) on \(try await location())") }
    }

    /// Clicks `selector` (a submit button) and waits for the page the form leads to. `choosing`
    /// sets fields (selector, value) first, in the same turn of the page's script, so that a
    /// refresh of the page cannot come between.
    func click(_ selector: String, choosing fields: [(String, String)] = []) async throws {
        let setting = fields.map { "document.querySelector(\(Self.quote($0.0))).value = \(Self.quote($0.1));" }.joined()
        try await navigating {
            let done = try await self.evaluate(
                "(() => { \(setting) const e = document.querySelector(\(Self.quote(selector))); if (!e) return false; e.click(); return true })()"
            )
            guard done as? Bool == true else { throw TestbedError("nothing to click at \(selector) on \(try await self.location())") }
        }
    }

    /// The text of the element `selector` names, or nil when the page has none.
    func text(_ selector: String) async throws -> String? {
        try await evaluate("document.querySelector(\(Self.quote(selector)))?.textContent ?? null") as? String
    }

    func location() async throws -> String { try await evaluate("location.href") as? String ?? "" }

    /// The HTTP status of the document on screen.
    func status() async throws -> Int {
        let value = try await evaluate("performance.getEntriesByType('navigation')[0]?.responseStatus ?? 0")
        return (value as? NSNumber)?.intValue ?? 0
    }

    /// The browser's cookies, as DevTools reports them (name, value, httpOnly, sameSite, …).
    func cookies() async throws -> [[String: Any]] {
        try await command("Network.getCookies")["cookies"] as? [[String: Any]] ?? []
    }

    /// A PNG of the whole page.
    func screenshot(to path: String) async throws {
        let result = try await command("Page.captureScreenshot", ["format": "png", "captureBeyondViewport": true])
        guard let encoded = result["data"] as? String, let data = Data(base64Encoded: encoded) else { throw TestbedError("no screenshot data") }
        try data.write(to: URL(fileURLWithPath: path))
    }

    /// Runs `action`, then waits until a new document has replaced the current one and loaded.
    private func navigating(_ action: () async throws -> Void) async throws {
        try await evaluate("window.__resallocOld = true")
        try await action()
        for _ in 0..<200 {
            if try await evaluate("window.__resallocOld !== true && document.readyState === 'complete'") as? Bool == true { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestbedError("the page did not load within 10 s (at \(try await location()))")
    }

    /// Commands sent and not yet answered, by id.
    private final class Replies: Sendable {
        let state = Mutex<(next: Int, waiting: [Int: CheckedContinuation<Data, any Error>])>((1, [:]))
    }

    static func quote(_ text: String) -> String {
        let data = try? JSONSerialization.data(withJSONObject: [text])
        return String(String(decoding: data ?? Data(), as: UTF8.self).dropFirst().dropLast())
    }
}
