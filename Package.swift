// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "resalloc",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SSH", targets: ["SSH"]),
        .library(name: "Docker", targets: ["Docker"]),
    ],
    targets: [
        .systemLibrary(
            name: "CLibSSH2",
            pkgConfig: "libssh2",
            providers: [.apt(["libssh2-1-dev"])]
        ),
        .target(name: "SSH", dependencies: ["CLibSSH2"]),
        .target(name: "Docker", dependencies: ["SSH"]),
        .target(name: "Testbed", dependencies: ["SSH"], path: "Tests/Testbed"),
        .executableTarget(name: "resalloc-bench", dependencies: ["SSH", "Docker", "Testbed"], path: "Benchmarks/resalloc-bench"),
        .testTarget(name: "SSHTests", dependencies: ["SSH", "Testbed"]),
        .testTarget(name: "DockerTests", dependencies: ["Docker", "SSH", "Testbed"]),
    ],
    swiftLanguageModes: [.v6]
)
