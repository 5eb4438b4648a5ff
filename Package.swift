// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "resalloc",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "resalloc-master", targets: ["resalloc-master"]),
        .executable(name: "resalloc", targets: ["resalloc"]),
        .library(name: "SSH", targets: ["SSH"]),
        .library(name: "Docker", targets: ["Docker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssh.git", from: "0.15.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibSSH2",
            pkgConfig: "libssh2",
            providers: [.apt(["libssh2-1-dev"])]
        ),
        .target(
            name: "SSH",
            dependencies: [
                "CLibSSH2", .product(name: "NIOSSH", package: "swift-nio-ssh"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Docker",
            dependencies: ["SSH", .product(name: "Metrics", package: "swift-metrics"), .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "ResallocAPI", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "Store",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "Core",
            dependencies: [
                "SSH", "Docker", "Store", "ResallocAPI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "Server",
            dependencies: [
                "Core", "Gateway", "ResallocAPI",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            resources: [.copy("openapi.yaml"), .copy("Console")]
        ),
        .target(
            name: "Gateway",
            dependencies: [
                "Core", "SSH", "ResallocAPI",
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "resalloc-master",
            dependencies: [
                "Server", "Gateway", "Core", "Store", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "ResallocClient",
            dependencies: [
                "ResallocAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "resalloc",
            dependencies: ["ResallocClient", "ResallocAPI", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            // The CLI is a process per command: linked with the Swift runtime and Foundation
            // inside, it starts in less time (no symbol lookups across a dozen shared libraries).
            linkerSettings: [
                .unsafeFlags(["-static-stdlib"]), .linkedLibrary("CoreFoundation"), .linkedLibrary("_FoundationCollections"),
                .linkedLibrary("_FoundationCShims"), .linkedLibrary("_FoundationICU"),
            ]
        ),
        .target(name: "Testbed", dependencies: ["SSH"], path: "Tests/Testbed"),
        .executableTarget(
            name: "resalloc-bench",
            dependencies: [
                "SSH", "Docker", "Testbed", "Server", "Core", "Store", "ResallocAPI", "ResallocClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/resalloc-bench"
        ),
        .testTarget(name: "SSHTests", dependencies: ["SSH", "Testbed", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "DockerTests", dependencies: ["Docker", "SSH", "Testbed"]),
        .testTarget(
            name: "StoreTests",
            dependencies: [
                "Store", "Testbed",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "MasterTests",
            dependencies: [
                "Server", "Gateway", "Core", "Store", "ResallocAPI", "ResallocClient", "SSH", "Testbed",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
