import Crypto
import Docker
import Foundation
import ResallocAPI

extension RelayImage {
    /// The relay made of the master's static busybox (Debian's busybox-static puts it at
    /// /bin/busybox; `RESALLOC_RELAY_BUSYBOX` names another), or nil without one.
    public static func load(busybox path: String = ProcessInfo.processInfo.environment["RESALLOC_RELAY_BUSYBOX"] ?? "/bin/busybox") -> RelayImage? {
        guard let binary = FileManager.default.contents(atPath: path) else { return nil }
        let digest = SHA256.hash(data: binary).map { String(format: "%02x", $0) }.joined()
        let bytes = [UInt8](binary)
        let padding = [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512 + 1024)
        let archive = TarWriter.header(name: "busybox", mode: 0o755, size: bytes.count, mtime: 0, type: "0") + bytes + padding
        return RelayImage(tag: "resalloc/relay:\(digest.prefix(12))", archive: archive)
    }
}
