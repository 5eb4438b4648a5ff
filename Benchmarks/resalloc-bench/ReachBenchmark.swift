import Foundation
import ResallocAPI
import ResallocClient
import Testbed

// Reaching a lease (BENCH=reach): keystrokes through the SSH gateway against ssh -t straight to
// the machine + docker exec -it; resalloc cp of 1 GiB in and out against docker cp over one
// ssh, with the master's resident memory before and after; scp through the gateway against
// scp to the machine itself. The master runs in this process, so its memory is this process's.

func reachBenchmark(testbed: Testbed, keystrokes: Int = 200) async throws {
    let gatewayPort = freeLoopbackPort()
    try await withBenchMaster(testbed, sshPort: gatewayPort) { client, server, _ in
        let directory = try makeTemporaryDirectory("resalloc-bench-reach")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = "\(directory)/id_ed25519"
        try await Testbed.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        _ = try await client.addKey("bench", publicKey: try String(contentsOfFile: key + ".pub", encoding: .utf8))
        _ = try await client.createResource("sftp", dockerfile: "FROM sftp-base\n")
        let lease = try await client.createLease("sftp", name: "reach", ttl: nil)
        let container = try require(lease.value.container, "the lease's container")
        let machine = testbed.machine("m1")
        let sshOptions = [
            "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        ]
        let toMachine = ["-i", testbed.keys["ed25519"]!] + sshOptions + ["-p", String(machine.port)]
        let toGateway = ["-i", key] + sshOptions
        try await testbed.docker("m1", ["exec", container, "sh", "-c", "head -c 37748736 /dev/urandom | base64 > /tmp/big"])

        print("\nreach benchmark: machine m1, lease on sftp-base; the master (and its gateway) in this process")
        let shells = try await measureShells(
            [
                try programTerminal(
                    "gateway (ssh -t -p \(gatewayPort))",
                    ["ssh", "-t"] + toGateway + ["-p", String(gatewayPort), "reach@127.0.0.1"]
                ),
                try programTerminal(
                    "ssh -t to the machine + docker exec",
                    ["ssh", "-t"] + toMachine + ["\(machine.login)@\(machine.host)", "docker exec -it -e TERM=xterm \(container) sh"]
                ),
            ],
            keystrokes: keystrokes
        )
        let (gateway, direct) = (shells[0], shells[1])
        printTable([gateway.keystrokes, direct.keystrokes])
        let ratio = gateway.keystrokes.median.milliseconds / direct.keystrokes.median.milliseconds
        verdict("keystroke round trip, gateway / direct (median)", ratio: ratio, target: "<= 1.5 ", met: ratio <= 1.5)
        print(String(format: "cat of 50 MB: gateway %.1f MB/s, direct %.1f MB/s", gateway.megabytesPerSecond, direct.megabytesPerSecond))

        // resalloc cp of 1 GiB, in and out, against docker cp over one ssh to the machine.
        let cli = cliPath()
        let big = "\(directory)/big.bin"
        try await Testbed.run(["sh", "-c", "head -c 1073741824 /dev/urandom > \(big)"], timeout: .seconds(300))
        let environment = try cliEnvironment(server: server, token: client.token, home: directory)
        let before = memory()
        let copyIn = try await timed {
            try await Testbed.run(["env"] + environment.map { "\($0)=\($1)" } + [cli, "cp", "-q", big, "reach:/tmp/in.bin"], timeout: .seconds(900))
        }
        let afterIn = memory()
        try FileManager.default.createDirectory(atPath: "\(directory)/out", withIntermediateDirectories: true)
        let copyOut = try await timed {
            try await Testbed.run(
                ["env"] + environment.map { "\($0)=\($1)" } + [cli, "cp", "-q", "reach:/tmp/in.bin", "\(directory)/out/"],
                timeout: .seconds(900)
            )
        }
        let afterOut = memory()
        let ssh = (["ssh"] + toMachine + ["\(machine.login)@\(machine.host)"]).joined(separator: " ")
        let dockerIn = try await timed {
            try await Testbed.run(["sh", "-c", "tar -C \(directory) -cf - big.bin | \(ssh) docker cp - \(container):/tmp/"], timeout: .seconds(900))
        }
        try await Testbed.run(["rm", "-f", "\(directory)/out/in.bin"])
        let dockerOut = try await timed {
            try await Testbed.run(
                ["sh", "-c", "\(ssh) docker cp \(container):/tmp/in.bin - | tar -C \(directory)/out -xf -"],
                timeout: .seconds(900)
            )
        }
        let gib = 1073.741824
        print("")
        for (label, seconds) in [
            ("resalloc cp 1 GiB into the lease", copyIn), ("docker cp 1 GiB in, over one ssh", dockerIn),
            ("resalloc cp 1 GiB out of the lease", copyOut), ("docker cp 1 GiB out, over one ssh", dockerOut),
        ] {
            print("\(pad(label, 44)) \(String(format: "%7.2f", seconds)) s  \(String(format: "%7.1f", gib / seconds)) MB/s")
        }
        verdict("resalloc cp in / docker cp in (throughput)", ratio: dockerIn / copyIn, target: ">= 0.7 ", met: dockerIn / copyIn >= 0.7)
        verdict("resalloc cp out / docker cp out (throughput)", ratio: dockerOut / copyOut, target: ">= 0.7 ", met: dockerOut / copyOut >= 0.7)
        print(
            String(
                format:
                    "master resident memory: %.0f MiB before, %.0f MiB after the copy in, %.0f MiB after the copy out (peak %.0f MiB; target: < 64 MiB growth)",
                before.rss,
                afterIn.rss,
                afterOut.rss,
                afterOut.peak
            )
        )

        // scp of 200 MB through the gateway against scp to the machine itself.
        try await Testbed.run(["sh", "-c", "head -c 209715200 \(big) > \(directory)/200.bin"])
        let scpGateway = try await timed {
            try await Testbed.run(
                ["scp"] + toGateway + ["-P", String(gatewayPort), "\(directory)/200.bin", "reach@127.0.0.1:/tmp/scp.bin"],
                timeout: .seconds(600)
            )
        }
        let scpDirect = try await timed {
            try await Testbed.run(
                ["scp", "-O"] + toMachine.map { $0 == "-p" ? "-P" : $0 } + [
                    "\(directory)/200.bin", "\(machine.login)@\(machine.host):/tmp/resalloc-bench-scp.bin",
                ],
                timeout: .seconds(600)
            )
        }
        _ = try? await Testbed.run(["ssh"] + toMachine + ["\(machine.login)@\(machine.host)", "rm -f /tmp/resalloc-bench-scp.bin"])
        print(
            String(
                format:
                    "scp 200 MB: through the gateway (SFTP) %.2f s (%.1f MB/s), to the machine (scp -O: its sshd has no sftp subsystem) %.2f s (%.1f MB/s)",
                scpGateway,
                209.7 / scpGateway,
                scpDirect,
                209.7 / scpDirect
            )
        )
        verdict("scp through the gateway / scp direct (throughput)", ratio: scpDirect / scpGateway, target: "report ", met: true)
        _ = try await client.deleteLease("reach")
    }
}

/// Seconds that `body` took.
func timed(_ body: () async throws -> Void) async throws -> Double {
    let start = ContinuousClock.now
    try await body()
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// This process's resident memory and its peak, in MiB (from /proc/self/status).
func memory() -> (rss: Double, peak: Double) {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    func field(_ name: String) -> Double {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
        return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}
