import Foundation
import Store
import Testbed
import Testing

/// `resalloc run` and `resalloc job`, the fair queue and users' limits, against the master as its
/// own process (a job must outlive it) and a real machine (m11: no other suite uses it), through
/// the CLI where a user would use it.
@Suite("Jobs and the fair queue", .serialized, .timeLimit(.minutes(5)))
struct JobTests {
    static let machine = "m11"

    /// A master process with the CLI logged in as its admin, the busybox resource `bb`, and m11
    /// with room for `capacity` containers.
    struct Fixture {
        let master: MasterProcess
        let cli: CLI
        let testbed: Testbed
        let databasePath: String
        let masterID: String

        /// Another user, registered, approved by the admin and logged in with a CLI of their own.
        func user(_ name: String) async throws -> CLI {
            let other = try CLI(server: cli.server)
            try await other.ok("register", name, "\(name)-password")
            try await cli.ok("user", "approve", name)
            try await other.ok("login", name, "\(name)-password")
            return other
        }

        func container(_ job: Int) -> String { "resalloc-\(masterID.prefix(8))-job-\(job)" }

        /// The job's containers on m11 (running or not).
        func jobContainers() async throws -> [String] {
            try await testbed.docker(JobTests.machine, ["ps", "--all", "--format", "{{.Names}}", "--filter", "label=resalloc.master=\(masterID)"])
                .split(separator: "\n").map(String.init).filter { $0.contains("-job-") }
        }

        /// Lets a job that waits for `/tmp/go` (see `gated`) go on.
        /// Lets job `job`'s gated command finish. A job is `running` once its attached `docker run`
        /// is under way, which on a loaded machine can be before the engine has started its
        /// container: the touch is tried again until the container runs.
        func release(_ job: Int) async throws {
            try await waitUntil(seconds: 60, "job \(job)'s container running, to be released") {
                do {
                    try await testbed.docker(JobTests.machine, ["exec", container(job), "touch", "/tmp/go"])
                    return true
                } catch {
                    let said = "\(error)"
                    if said.contains("is not running") || said.contains("No such container") { return false }
                    // The touch landed and the command ended at once: the container stopped under
                    // the exec, which docker reports as killed. What the job did next is checked
                    // by the caller.
                    if said.contains("exited 137") { return true }
                    throw error
                }
            }
        }

        /// Waits until `ready` warm containers of `resource` are ready to be handed out.
        func waitForPool(_ resource: String, ready: Int) async throws {
            try await waitUntil(seconds: 60, "\(ready) warm containers of \(resource) ready") {
                let text = try await cli.ok("resources", "list", "--json")
                let resources = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []
                return resources.first { $0["Name"] as? String == resource }?["PoolReady"] as? Int == ready
            }
        }

        func job(_ id: Int, as user: CLI? = nil) async throws -> [String: Any] {
            let text = try await (user ?? cli).ok("job", "show", String(id), "--json")
            return try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
        }

        /// Waits until job `id` is in `state` (as its owner `user` sees it); returns the job.
        @discardableResult
        func until(_ id: Int, is state: String, as user: CLI? = nil, within seconds: Double = 60) async throws -> [String: Any] {
            let deadline = Date() + seconds
            var last: [String: Any] = [:]
            while Date() < deadline {
                last = try await job(id, as: user)
                if last["State"] as? String == state { return last }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw TestbedError("job \(id) never became \(state): \(last)")
        }
    }

    /// A command that prints `before`, waits for `/tmp/go` in its container, prints `after` and
    /// exits `status`: a job that ends when the test says so, not after some time.
    static func gated(status: Int = 0) -> [String] {
        ["--", "sh", "-c", "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after; exit \(status)"]
    }

    func withMaster(capacity: Int = 8, serve extra: [String] = [], _ body: (Fixture) async throws -> Void) async throws {
        let testbed = try await Testbed.shared()
        let directory = try makeTemporaryDirectory("resalloc-jobs")
        let databasePath = "\(directory)/resalloc.db"
        let master = MasterProcess(databasePath: databasePath, keyPath: testbed.keys["ed25519"]!, extraArguments: extra)
        defer { master.kill9() }
        try await master.start()
        let cli = try CLI(server: "http://127.0.0.1:\(master.port)")
        let machine = testbed.machine(Self.machine)
        try await cli.ok("register", "admin", "admin-password")
        try await cli.ok("login", "admin", "admin-password")
        try await cli.ok("resources", "create", "bb", "-f", "-", stdin: "FROM busybox")
        try await cli.ok("machine", "create", machine.name, machine.login, machine.host, "--capacity", String(capacity))
        let fixture = Fixture(master: master, cli: cli, testbed: testbed, databasePath: databasePath, masterID: try masterID(databasePath))
        do { try await body(fixture) } catch {
            await testbed.removeContainers(ofMaster: fixture.masterID)
            throw error
        }
        await testbed.removeContainers(ofMaster: fixture.masterID)
    }

    @Test("run streams stdout and stderr apart, exits with the command's status and leaves no container; --in, --out and -f carry files")
    func runOnce() async throws {
        try await withMaster { fixture in
            let cli = fixture.cli
            let result = try await cli.run(["run", "bb", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
            #expect(result.status == 3, "\(result.stderr)")
            #expect(result.stdout == "out\n")
            #expect(result.stderr == "err\n")
            #expect(try await fixture.jobContainers().isEmpty)
            let fine = try await cli.run(["run", "bb", "--", "echo", "fine"])
            #expect(fine.status == 0 && fine.stdout == "fine\n", "\(fine.stderr)")
            // Removed as the reply goes out, as docker run --rm does it.
            try await waitUntil(seconds: 60, "the container of the job that succeeded is removed") { try await fixture.jobContainers().isEmpty }

            // A directory in, a directory out, whatever the status.
            let work = try makeTemporaryDirectory("resalloc-job-files")
            try FileManager.default.createDirectory(atPath: "\(work)/src/sub", withIntermediateDirectories: true)
            try "alpha\n".write(toFile: "\(work)/src/a.txt", atomically: true, encoding: .utf8)
            try "beta\n".write(toFile: "\(work)/src/sub/b.txt", atomically: true, encoding: .utf8)
            let carried = try await cli.run([
                "run", "bb", "--in", "\(work)/src:/work/src", "--out", "/work/out:\(work)/out", "--",
                "sh", "-c", "cp -r /work/src /work/out && cat /work/src/sub/b.txt > /work/out/seen.txt && exit 2",
            ])
            #expect(carried.status == 2, "\(carried.stderr)")
            #expect(try String(contentsOfFile: "\(work)/out/a.txt", encoding: .utf8) == "alpha\n")
            #expect(try String(contentsOfFile: "\(work)/out/sub/b.txt", encoding: .utf8) == "beta\n")
            #expect(try String(contentsOfFile: "\(work)/out/seen.txt", encoding: .utf8) == "beta\n")

            try "echo script got $1 in $(pwd)\n".write(toFile: "\(work)/check.sh", atomically: true, encoding: .utf8)
            let scripted = try await cli.run(["run", "bb", "-f", "\(work)/check.sh", "--", "first"])
            #expect(scripted.status == 0, "\(scripted.stderr)")
            #expect(scripted.stdout == "script got first in /\n")

            let unknown = try await cli.run(["run", "nosuch", "--", "true"])
            #expect(unknown.status != 0 && unknown.stderr.contains("no resource nosuch"), "\(unknown.stderr)")
            try await waitUntil(seconds: 60, "every job's container is gone") { try await fixture.jobContainers().isEmpty }
        }
    }

    @Test("A resource with a warm pool runs each job in a warm container: output, status, inputs, its memory limit, no container left")
    func pooled() async throws {
        try await withMaster { fixture in
            let cli = fixture.cli
            try await cli.ok("resources", "create", "warm", "-f", "-", "--pool", "2", stdin: "FROM busybox")
            func warm() async throws -> Set<String> {
                Set(
                    try await fixture.testbed.docker(
                        Self.machine,
                        [
                            "ps", "--format", "{{.ID}}", "--no-trunc", "--filter", "label=resalloc.pool=warm", "--filter",
                            "label=resalloc.master=\(fixture.masterID)",
                        ]
                    ).split(separator: "\n").map(String.init)
                )
            }
            try await waitUntil(seconds: 60, "two warm containers run") { try await warm().count == 2 }
            let before = try await warm()
            let result = try await cli.run(["run", "warm", "--", "sh", "-c", "echo out; echo err >&2; exit 5"])
            #expect(result.status == 5, "\(result.stderr)")
            #expect(result.stdout == "out\n" && result.stderr == "err\n", "\(result.stdout) \(result.stderr)")
            #expect(try await fixture.jobContainers().isEmpty)
            // It ran in one of the warm containers, which is gone; the pool is refilled.
            let job = try await fixture.job(1)
            #expect(job["State"] as? String == "failed" && job["ExitStatus"] as? Int == 5, "\(job)")
            let after = try await warm()
            #expect(before.subtracting(after).count == 1, "\(before) \(after)")

            let work = try makeTemporaryDirectory("resalloc-job-warm")
            try "from here\n".write(toFile: "\(work)/note.txt", atomically: true, encoding: .utf8)
            try await waitUntil(seconds: 60, "the pool is full again") { try await warm().count == 2 }
            let carried = try await cli.run(["run", "warm", "--in", "\(work)/note.txt:/data/note.txt", "--", "cat", "/data/note.txt"])
            #expect(carried.status == 0 && carried.stdout == "from here\n", "\(carried.status) \(carried.stdout) \(carried.stderr)")
            // Results come out of a warm container too, whatever the status.
            try await fixture.waitForPool("warm", ready: 2)
            let results = try await cli.run([
                "run", "warm", "--out", "/tmp/x:\(work)/results", "--", "sh", "-c", "mkdir /tmp/x; echo hi > /tmp/x/f; exit 2",
            ])
            #expect(results.status == 2, "\(results.stderr)")
            #expect((try? String(contentsOfFile: "\(work)/results/f", encoding: .utf8)) == "hi\n")

            // A command its memory limit killed says so, as a cold job's does.
            try await cli.ok("resources", "create", "tight", "-f", "-", "--pool", "1", "--memory", "64m", stdin: "FROM busybox")
            try await fixture.waitForPool("tight", ready: 1)
            let greedy = try await cli.run(["run", "tight", "--", "sh", "-c", "head -c 500m /dev/zero | tail >/dev/null"])
            #expect(greedy.status == 137 && greedy.stderr.contains("ran out of memory (its limit is 64m)"), "\(greedy.status) \(greedy.stderr)")
            try await waitUntil(seconds: 60, "every job's container is gone") { try await fixture.jobContainers().isEmpty }
        }
    }

    @Test("--detach returns the job's id at once; job logs -f and job wait give its whole output and status")
    func detached() async throws {
        try await withMaster { fixture in
            let cli = fixture.cli
            let id = try await cli.ok(["run", "bb", "--detach"] + Self.gated(status: 4)).trimmingCharacters(in: .whitespacesAndNewlines)
            let number = try #require(Int(id), "run --detach printed \(id)")
            let follower = try cli.start("job", "logs", id, "-f")
            try await fixture.until(number, is: "running")
            try await waitUntil(seconds: 60, "the job printed before") { try await cli.ok("job", "logs", id) == "before\n" }
            try await fixture.release(number)
            #expect(try await follower.process.wait(timeout: .seconds(60)) == 0)
            #expect(try String(contentsOfFile: follower.stdout, encoding: .utf8) == "before\nafter\n")
            let waited = try await cli.run(["job", "wait", id])
            #expect(waited.status == 4, "\(waited.stderr)")
            let job = try await fixture.job(number)
            #expect(job["State"] as? String == "failed" && job["ExitStatus"] as? Int == 4, "\(job)")
            let listed = try await cli.ok("job", "list")
            #expect(listed.contains("failed") && listed.contains(" 4 "), "\(listed)")
        }
    }

    @Test("A fair queue: one user's six jobs do not hold back another's one; a lease with --wait takes the place a finished job leaves")
    func fairQueue() async throws {
        try await withMaster(capacity: 2) { fixture in
            let alice = try await fixture.user("alice")
            let bob = try await fixture.user("bob")
            let carol = try await fixture.user("carol")
            var alices: [Int] = []
            for _ in 0..<6 {
                alices.append(Int(try await alice.ok(["run", "bb", "--detach"] + Self.gated()).trimmingCharacters(in: .whitespacesAndNewlines))!)
            }
            try await fixture.until(alices[0], is: "running", as: alice)
            try await fixture.until(alices[1], is: "running", as: alice)
            let third = try await fixture.job(alices[2], as: alice)
            #expect(third["State"] as? String == "queued" && third["Place"] as? Int == 1, "\(third)")
            let bobs = Int(try await bob.ok(["run", "bb", "--detach"] + Self.gated()).trimmingCharacters(in: .whitespacesAndNewlines))!
            // Bob holds nothing, Alice two: Bob's job is next although Alice's were first.
            #expect(try await fixture.job(bobs, as: bob)["Place"] as? Int == 1)
            #expect(try await fixture.job(alices[2], as: alice)["Place"] as? Int == 2)
            // The queue as /metrics tells it (updated every second).
            try await waitUntil(seconds: 60, "/metrics counts five queued and two running") {
                let samples = try await scrape(fixture.master.port).samples
                return samples.value("resalloc_job_queue_length") == 5 && samples.value("resalloc_jobs", ["state": "running"]) == 2
                    && samples.value("resalloc_jobs", ["state": "queued"]) == 5
            }

            try await fixture.release(alices[0])
            try await fixture.until(bobs, is: "running", as: bob)
            #expect(try await fixture.job(alices[2], as: alice)["State"] as? String == "queued")

            // Carol holds nothing: her lease waits, and gets Bob's place when his job finishes.
            let lease = try carol.start("lease", "create", "bb", "waiter", "--wait", "2m")
            try await waitUntil(seconds: 60, "carol's lease waits in the queue") {
                (try? String(contentsOfFile: lease.stderr, encoding: .utf8))?.contains("place 1 in the queue") == true
            }
            try await fixture.release(bobs)
            let leased = try await lease.process.wait(timeout: .seconds(60))
            #expect(leased == 0, "\((try? String(contentsOfFile: lease.stderr, encoding: .utf8)) ?? "")")
            #expect(try await carol.ok("lease", "list").contains("running"))
            #expect(try await fixture.job(alices[2], as: alice)["State"] as? String == "queued")

            // A lease that waits past its --wait fails as today, with nothing left behind.
            let late = try await carol.run(["lease", "create", "bb", "late", "--wait", "1s"])
            #expect(late.status != 0 && late.stderr.contains("no place for the lease came free"), "\(late.stderr)")
            for id in alices { _ = try await alice.run(["job", "cancel", String(id)]) }
        }
    }

    @Test("kill -9 of the master while a job runs: after a restart the job ends with its status and its whole output")
    func outlivesItsMaster() async throws {
        try await withMaster { fixture in
            let cli = fixture.cli
            let id = try await cli.ok(["run", "bb", "--detach"] + Self.gated(status: 3)).trimmingCharacters(in: .whitespacesAndNewlines)
            try await waitUntil(seconds: 60, "the job printed before") { try await cli.ok("job", "logs", id) == "before\n" }
            fixture.master.kill9()
            _ = try await fixture.master.wait(timeout: .seconds(30))
            // The job goes on without any master, and ends.
            try await fixture.release(Int(id)!)
            try await waitUntil(seconds: 60, "the job's container stopped") {
                try await fixture.testbed.docker(Self.machine, ["inspect", "--format", "{{.State.Status}}", fixture.container(Int(id)!)])
                    .hasPrefix("exited")
            }
            try await fixture.master.start()
            let waited = try await cli.run(["job", "wait", id])
            #expect(waited.status == 3, "\(waited.stderr)")
            #expect(try await cli.ok("job", "logs", id) == "before\nafter\n")
            try await waitUntil(seconds: 60, "its container is removed") { try await fixture.jobContainers().isEmpty }
        }
    }

    @Test("kill -9 of the master while a job from the warm pool runs: after a restart it ends with its status and its whole output")
    func warmJobOutlivesItsMaster() async throws {
        try await withMaster { fixture in
            let cli = fixture.cli
            try await cli.ok("resources", "create", "warm", "-f", "-", "--pool", "1", stdin: "FROM busybox")
            try await fixture.waitForPool("warm", ready: 1)
            let id = try await cli.ok(["run", "warm", "--detach"] + Self.gated(status: 4)).trimmingCharacters(in: .whitespacesAndNewlines)
            let container = fixture.container(Int(id)!)
            try await waitUntil(seconds: 60, "the job printed before") { try await cli.ok("job", "logs", id) == "before\n" }
            let pool = try await fixture.testbed.docker(
                Self.machine,
                ["inspect", "--format", "{{index .Config.Labels \"resalloc.pool\"}}", container]
            )
            #expect(pool.trimmingCharacters(in: .whitespacesAndNewlines) == "warm", "the job ran in a warm container")
            fixture.master.kill9()
            _ = try await fixture.master.wait(timeout: .seconds(30))
            // The command ends without any master; its status is in the engine's log.
            try await fixture.release(Int(id)!)
            try await waitUntil(seconds: 60, "the command said its status in the engine's log") {
                try await fixture.testbed.docker(Self.machine, ["logs", container]).contains("resalloc-job-\(id)-end 4")
            }
            try await fixture.master.start()
            let waited = try await cli.run(["job", "wait", id])
            #expect(waited.status == 4, "\(waited.stderr)")
            // Both streams, with the markers taken off.
            #expect(try await cli.ok("job", "logs", id) == "before\nafter\n")
            try await waitUntil(seconds: 60, "its container is removed") { try await fixture.jobContainers().isEmpty }
        }
    }

    @Test("A cancelled job's container is gone at once; a job past its --ttl is timed-out; output past --job-log-max is cut with a note")
    func cancelAndTimeout() async throws {
        try await withMaster(serve: ["--job-log-max", "1k"]) { fixture in
            let cli = fixture.cli
            let id = try await cli.ok(["run", "bb", "--detach"] + Self.gated()).trimmingCharacters(in: .whitespacesAndNewlines)
            try await fixture.until(Int(id)!, is: "running")
            try await cli.ok("job", "cancel", id)
            #expect(try await fixture.jobContainers().isEmpty)
            let cancelled = try await cli.run(["job", "wait", id])
            #expect(cancelled.status == 130 && cancelled.stderr.contains("cancelled"), "\(cancelled.stderr)")

            let timed = try await cli.run(["run", "bb", "--ttl", "2s", "--", "sleep", "120"])
            #expect(timed.status == 124 && timed.stderr.contains("timed out"), "\(timed.status) \(timed.stderr)")
            try await waitUntil(seconds: 60, "the timed-out job's container is removed") { try await fixture.jobContainers().isEmpty }

            let long = try await cli.run(["run", "bb", "--", "sh", "-c", #"head -c 5000 /dev/zero | tr '\0' a"#])
            #expect(long.status == 0, "\(long.stderr)")
            #expect(long.stdout == String(repeating: "a", count: 1024), "\(long.stdout.count) bytes")
            #expect(long.stderr.contains("the output was cut at 1k"), "\(long.stderr)")
        }
    }

    @Test(
        "Users' limits: a lease past --leases is refused with a sentence; with --jobs 1 three jobs run one after another; the queue holds --user-queued-jobs"
    )
    func userLimits() async throws {
        try await withMaster(serve: ["--user-queued-jobs", "2"]) { fixture in
            let dave = try await fixture.user("dave")
            let limited = try await CLI.master("user", "limit", "dave", "--leases", "1", "--jobs", "1", "--db", fixture.databasePath)
            #expect(limited.status == 0, "\(limited.stderr)")
            try await dave.ok("lease", "create", "bb", "one", "-q")
            let second = try await dave.run(["lease", "create", "bb", "two", "-q"])
            #expect(second.status != 0 && second.stderr.contains("1 of the 1 leases you may hold"), "\(second.stderr)")
            let whoami = try await dave.ok("whoami")
            #expect(whoami.contains("leases:  1 of 1") && whoami.contains("jobs:    0 running of 1"), "\(whoami)")

            var ids: [Int] = []
            for index in 0..<3 {
                ids.append(Int(try await dave.ok(["run", "bb", "--detach"] + Self.gated()).trimmingCharacters(in: .whitespacesAndNewlines))!)
                if index == 0 { try await fixture.until(ids[0], is: "running", as: dave) }  // so that two wait, not three
            }
            // One running, two waiting: as many as --user-queued-jobs 2 lets one user queue.
            let fourth = try await dave.run(["run", "bb", "--detach", "--", "true"])
            #expect(fourth.status != 0 && fourth.stderr.contains("jobs waiting in the queue, as many as one user may"), "\(fourth.stderr)")
            for (index, id) in ids.enumerated() {
                try await fixture.until(id, is: "running", as: dave)
                for later in ids.dropFirst(index + 1) { #expect(try await fixture.job(later, as: dave)["State"] as? String == "queued") }
                try await fixture.release(id)
                try await fixture.until(id, is: "succeeded", as: dave)
            }
        }
    }

    @Test("A lease with --idle and no session is expired by the next pass; one with an open shell is kept")
    func idleLeases() async throws {
        try await withMaster { fixture in
            let cli = fixture.cli
            // The resource's Idle is its leases' default; --idle sets one lease's own.
            try await cli.ok("resources", "create", "sleepy", "-f", "-", "--idle", "5s", stdin: "FROM busybox")
            #expect(try await cli.ok("resources", "list", "--json").contains(#""Idle" : "5s""#))
            try await cli.ok("lease", "create", "sleepy", "quiet", "-q")
            try await cli.ok("lease", "create", "bb", "busy", "--idle", "5s", "-q")
            let shell = try cli.start("ssh", "busy", "--", "sh", "-c", "echo open; sleep 120")
            try await waitUntil(seconds: 60, "the shell is open") { (try? String(contentsOfFile: shell.stdout, encoding: .utf8)) == "open\n" }
            let created = Date()
            // Idleness is time without a session: this test has to let that time pass.
            try await Task.sleep(for: .seconds(6))
            #expect(Date().timeIntervalSince(created) > 5)
            let pass = try await cleanup(fixture.databasePath, fixture.testbed)
            #expect(pass.status == 0, "\(pass.stderr)")
            let leases = try await cli.ok("lease", "list")
            #expect(!leases.contains("quiet") && leases.contains("busy"), "\(leases)")
            let events = try await CLI.master("events", "--db", fixture.databasePath)
            #expect(events.stdout.contains("lease.idle"), "\(events.stdout)")
            shell.process.signal(SIGTERM)
        }
    }
}
