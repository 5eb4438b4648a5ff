import Core
import Foundation
import NIOCore
import NIOSSH
import SSH

/// Carries bytes between one SSH channel of a gateway client and one process in a lease (a
/// shell, a command, an sftp-server, a port relay). Both ways are bounded: the process's
/// output is acknowledged only once written to the client, and the channel stops reading
/// (so the client's SSH window closes) while a window of its input waits for the process.
final class ChannelBridge: @unchecked Sendable {
    static let window = 1 << 20

    let channel: any Channel
    private let lock = NSLock()
    private var process: RemoteProcess?
    private var recorder: SessionRecorder?
    private var pending = 0
    private var paused = false
    private var gone = false
    private let input: AsyncStream<[UInt8]>
    private let inputSink: AsyncStream<[UInt8]>.Continuation

    init(channel: any Channel) {
        self.channel = channel
        (input, inputSink) = AsyncStream.makeStream(of: [UInt8].self)
    }

    /// From the channel's read: bytes for the process. A keystroke with nothing queued before it
    /// goes out at once, on this event loop (`RemoteProcess.sendNow`); the rest in order through
    /// the feeder task.
    func received(_ bytes: [UInt8]) {
        let idle = lock.withLock { pending == 0 ? process.map { ($0, recorder) } : nil }
        if let (process, recorder) = idle, process.sendNow(bytes) {
            recorder?.input(bytes)
            return
        }
        let pause = lock.withLock {
            pending += bytes.count
            guard pending > Self.window, !paused else { return false }
            paused = true
            return true
        }
        if pause { channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
        inputSink.yield(bytes)
    }

    /// The client sent EOF.
    func inputEnded() { inputSink.finish() }

    /// The client went away: stop the process's channel, which ends `run`.
    func clientGone() {
        let process = lock.withLock {
            gone = true
            return self.process
        }
        inputSink.finish()
        process?.close()
    }

    var clientIsGone: Bool { lock.withLock { gone } }

    /// Relays until the process ends; returns its exit status, or nil when it was cut off.
    /// `recorder` gets what the terminal showed (and what was typed, if it records input).
    func run(_ process: RemoteProcess, recorder: SessionRecorder? = nil) async -> Int32? {
        let goneAlready = lock.withLock {
            self.process = process
            self.recorder = recorder
            return gone
        }
        if goneAlready { process.close() }
        let input = self.input
        let feeder = Task {
            for await bytes in input {
                await process.send(bytes)
                recorder?.input(bytes)
                let resume = lock.withLock {
                    pending -= bytes.count
                    guard paused, pending <= Self.window / 2 else { return false }
                    paused = false
                    return true
                }
                if resume {
                    // Reading on again, and a read asked for: turning autoRead back on alone does
                    // not start one on an SSH child channel, and the client would wait forever.
                    let channel = self.channel
                    channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { channel.read() }
                }
            }
            process.closeInput()
        }
        for await chunk in process.output {
            let (type, bytes): (SSHChannelData.DataType, [UInt8])
            switch chunk {
            case .stdout(let data): (type, bytes) = (.channel, data)
            case .stderr(let data): (type, bytes) = (.stdErr, data)
            }
            try? await channel.writeAndFlush(SSHChannelData(type: type, data: .byteBuffer(ByteBuffer(bytes: bytes))))
            if type == .channel { recorder?.output(bytes) }
            process.consumed(bytes.count)
        }
        feeder.cancel()
        return try? await process.exitStatus()
    }

    /// A line on the client's stderr (for a refusal after login).
    func say(_ message: String) async {
        try? await channel.writeAndFlush(SSHChannelData(type: .stdErr, data: .byteBuffer(ByteBuffer(string: "resalloc: \(message)\r\n"))))
    }
}
