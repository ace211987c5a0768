#if SANDBOXD_LEVEL1_ENGINE
import Foundation
import Testing
@testable import ControlAPI
import SandboxCore

/// The real sandboxd binary (level-1 engine, embedded PostgreSQL) driven through its real socket
/// with curl and sandboxctl, as real users. On hosts without cgroup v2 controllers (like the build
/// machines) it runs best-effort on the cgroup2 mount that exists; records say limits_enforced: false.
@Suite(.serialized)
struct EndToEndTests {
    static let alice = "sbxt-alice"
    static let bob = "sbxt-bob"
    static let admin = "sbxt-admin"

    /// A daemon in a temporary directory: its config, socket, state and log.
    final class Daemon: @unchecked Sendable {
        let directory: String
        let socket: String
        let config: String
        let log: String
        private(set) var process: SpawnedProcess?
        /// The daemon's cgroup subtree (its sandboxes' cgroups are created below it).
        let cgroupDirectory: String
        /// Put before the daemon's argv (e.g. `unshare --mount … sh -c '…; exec "$@"'`).
        var launcher: [String] = []

        /// This daemon's own cgroup subtree (derived from its state directory), where its sandboxes live.
        var cgroupSubtreePath: String {
            get throws {
                let configuration = try DaemonConfiguration(yaml: try String(contentsOfFile: config, encoding: .utf8), file: config)
                return configuration.resources.cgroupRoot + "/" + configuration.cgroupSubtree
            }
        }

        /// - Parameter vm: the `vm` section; level 3 is off unless a test needs it (each guest boot costs seconds of CPU).
        init(extraConfiguration: String = "", vm: String = "vm:\n  enabled: false") throws {
            Self.removeDeadRuns()
            var template = Array("/tmp/sandboxd-e2e-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw TestError("mkdtemp failed") }
            directory = String(cString: made)
            chmod(directory, 0o755)
            // Which test process owns this daemon: a later run removes what a killed run left.
            try String(getpid()).write(toFile: directory + "/" + Self.ownerFile, atomically: true, encoding: .utf8)
            socket = directory + "/run/sandboxd.sock"
            config = directory + "/sandboxd.yaml"
            log = directory + "/daemon.log"
            let cgroupRoot = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup"
            // A subtree of its own: a starting daemon reaps its whole subtree, and other test runs
            // on the same host (other checkouts) start daemons too.
            cgroupDirectory = cgroupRoot + "/sandboxd-e2e-" + String(directory.suffix(6))
            try """
            state_directory: \(directory)/state
            socket:
              path: \(socket)
            resources:
              enforcement: best-effort
              cgroup_root: \(cgroupRoot)
              cgroup_subtree: \(String(cgroupDirectory.split(separator: "/").last!))
            shutdown_grace_period: 3
            \(vm)
            \(extraConfiguration)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        }

        func start() async throws {
            process = try SpawnedProcess(launcher + [TestHost.product("sandboxd"), "--config", config], logPath: log)
            try String(process!.pid).write(toFile: directory + "/" + Self.daemonFile, atomically: true, encoding: .utf8)
            for _ in 0..<600 {
                // A killed daemon leaves its socket file: wait until someone answers on it.
                if TestHost.canConnect(socket) { return }
                if let end = process?.poll() { throw TestError("sandboxd exited early (\(end)): \(logText)") }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw TestError("sandboxd did not start: \(logText)")
        }

        /// SIGTERM and wait; returns the exit status.
        func stop(signal: Int32 = SIGTERM) async throws -> Int32? {
            guard let process else { return nil }
            process.kill(signal)
            let end = try await process.wait(seconds: 90)
            self.process = nil
            return end.map { $0.exited ? $0.status : 128 + $0.status }
        }

        /// Rows in agent_executions, read with psql from the embedded cluster as its superuser.
        func countRecords() throws -> (total: Int, distinct: Int, running: Int) {
            let socketDirectory = directory + "/state/postgres/socket"
            let password = try String(contentsOfFile: directory + "/state/postgres/superuser.password", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let result = try TestHost.run(["/usr/lib/postgresql/15/bin/psql", "-h", socketDirectory, "-U", "postgres", "-d", "sandboxd",
                                           "-At", "-c", "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE status = 'running') FROM agent_executions"],
                                          environment: ["PGPASSWORD": password, "PATH": "/usr/bin:/bin"])
            let parts = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|").compactMap { Int($0) }
            guard parts.count == 3 else { throw TestError("psql: \(result.stdout) \(result.stderr)") }
            return (parts[0], parts[1], parts[2])
        }

        var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

        func cleanup() async {
            if process != nil { _ = try? await stop(signal: SIGKILL) }
            cleanupNow()
        }

        /// `cleanup` for a `defer` (nothing awaits a Task started there before the test process ends).
        func cleanupNow() {
            if let running = process {
                running.kill(SIGKILL)
                // Until reaped (poll reaps once; after that it reports nothing): at most 90 s.
                for _ in 0..<9000 {
                    if running.poll() != nil { break }
                    usleep(10_000)
                }
                process = nil
            }
            Self.removeLeftovers(directory: directory, cgroupDirectory: cgroupDirectory)
        }

        static let ownerFile = "owner.pid"
        static let daemonFile = "daemon.pid"

        /// Daemons of test processes that are gone (a run killed before its cleanup): their
        /// PostgreSQL, sandboxes, guests, cgroup subtrees and directories.
        static func removeDeadRuns() {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [] where entry.hasPrefix("sandboxd-e2e-") {
                let directory = "/tmp/" + entry
                guard let text = try? String(contentsOfFile: directory + "/" + ownerFile, encoding: .utf8),
                      let owner = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), owner != getpid(), kill(owner, 0) != 0, errno == ESRCH else { continue }
                let cgroupRoot = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup"
                // A dead owner's daemon may still run (the test process was SIGKILLed): its pid is in the state directory.
                // Only when that pid still runs this daemon's config (pids are reused).
                if let daemonPid = (try? String(contentsOfFile: directory + "/" + daemonFile, encoding: .utf8)).flatMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), daemonPid > 1,
                   let commandLine = try? String(contentsOfFile: "/proc/\(daemonPid)/cmdline", encoding: .utf8),
                   commandLine.contains(directory + "/sandboxd.yaml") {
                    kill(daemonPid, SIGKILL)
                    usleep(200_000)
                }
                removeLeftovers(directory: directory, cgroupDirectory: cgroupRoot + "/" + entry)
            }
        }

        /// Stops the embedded cluster, kills what is left in the daemon's cgroup subtrees (level 1
        /// and the guests' `-vm` one), removes them and the directory.
        static func removeLeftovers(directory: String, cgroupDirectory: String) {
            // The embedded cluster outlives a SIGKILLed daemon: stop it by its data directory.
            let data = directory + "/state/postgres/data"
            if FileManager.default.fileExists(atPath: data + "/postmaster.pid") {
                _ = try? TestHost.run(["/usr/sbin/runuser", "-u", "sandboxd-db", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
                                       "stop", "-D", data, "-m", "immediate"])
            }
            try? FileManager.default.removeItem(atPath: directory)
            // The subtrees; sandboxes and guests of a SIGKILLed daemon that no restart reaped are killed first.
            func remove(_ path: String) {
                for entry in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where !entry.contains(".") {
                    remove(path + "/" + entry)
                }
                for _ in 0..<100 where rmdir(path) != 0 && errno == EBUSY {
                    try? "1".write(toFile: path + "/cgroup.kill", atomically: false, encoding: .utf8)
                    usleep(20_000)
                }
            }
            remove(cgroupDirectory)
            remove(cgroupDirectory + "-vm")
        }

        func ctl(_ arguments: [String], as user: String? = nil, input: Data = Data()) throws -> TestHost.Result {
            var argv = [TestHost.product("sandboxctl")] + arguments + ["--socket", socket]
            if let separator = arguments.firstIndex(of: "--") {
                argv = [TestHost.product("sandboxctl")] + Array(arguments[..<separator]) + ["--socket", socket] + Array(arguments[separator...])
            }
            if let user { argv = ["/usr/sbin/runuser", "-u", user, "--"] + argv }
            return try TestHost.run(argv, input: input)
        }

        func curl(_ method: String, _ path: String, as user: String? = nil, json: String? = nil) throws -> (status: Int, body: String) {
            let response = try TestHost.curl(socket, method, path, as: user, body: json.map { Data($0.utf8) },
                                             contentType: json == nil ? nil : "application/json")
            return (response.status, response.body)
        }
    }

    private func withDaemon(extraConfiguration: String = "", _ body: (Daemon) async throws -> Void) async throws {
        let daemon = try Daemon(extraConfiguration: extraConfiguration)
        do {
            try await daemon.start()
            try await body(daemon)
        } catch {
            print("daemon log:\n\(daemon.logText)")
            await daemon.cleanup()
            throw error
        }
        await daemon.cleanup()
    }

    private func users() throws {
        _ = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        _ = try TestHost.ensureUser(Self.bob, groups: ["sandboxd"])
        _ = try TestHost.ensureUser(Self.admin, groups: ["sandboxd", "sandboxd-admin"])
    }

    private func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(T.self, from: Data(text.utf8))
    }

    @Test("one-shot: sandboxctl run -- echo hello prints hello, exits with the command's code, and history shows it")
    func oneShot() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        try await withDaemon { daemon in
            let hello = try daemon.ctl(["run", "--", "echo", "hello"], as: Self.alice)
            #expect(hello.status == 0, "\(hello.stderr)")
            #expect(hello.stdout == "hello\n")
            let three = try daemon.ctl(["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], as: Self.alice)
            #expect(three.status == 3)
            #expect(three.stdout == "out\n" && three.stderr.contains("err"))
            let json = try daemon.curl("POST", "/v1/run", as: Self.alice,
                                       json: #"{"command":["python3","-c","print(1)"],"stdin":"","env":{"LANG":"C.UTF-8","TOKEN":"s3cret"},"agent_type":"python","timeout":30}"#)
            #expect(json.status == 200, "\(json.body)")
            let result = try decode(ExecutionResult.self, json.body)
            #expect(result.stdout == "1\n" && result.status == .ok && result.exitCode == 0)
            #expect(result.isolationLevel == 1 && result.policy == "default")
            let record = try daemon.curl("GET", "/v1/executions/\(result.executionID.uuidString.lowercased())", as: Self.alice)
            #expect(record.status == 200)
            let view = try decode(ExecutionRecordView.self, record.body)
            #expect(view.status == "ok" && view.agentType == "python" && view.sandboxID == result.sandboxID)
            #expect(!record.body.contains("s3cret"), "secrets must not be recorded")
            let history = try daemon.ctl(["history"], as: Self.alice)
            #expect(history.status == 0)
            #expect(history.stdout.contains("echo hello"))
            let code = try daemon.curl("POST", "/v1/run", as: Self.alice, json: #"{"code":{"language":"python","source":"print(6*7)"}}"#)
            #expect(try decode(ExecutionResult.self, code.body).stdout == "42\n")
            let cobol = try daemon.curl("POST", "/v1/run", as: Self.alice, json: #"{"code":{"language":"cobol","source":"x"}}"#)
            #expect(cobol.status == 422 && cobol.body.contains("cobol"))
        }
    }

    @Test("persistent: files written by one exec are there for the next; cp in and out; escapes refused; streaming NDJSON")
    func persistent() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        try await withDaemon { daemon in
            let created = try daemon.ctl(["create"], as: Self.alice)
            #expect(created.status == 0, "\(created.stderr)")
            let id = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id.hasPrefix("sbx-"))
            #expect(try daemon.ctl(["exec", id, "--", "sh", "-c", "echo kept > /workspace/state.txt"], as: Self.alice).status == 0)
            let read = try daemon.ctl(["exec", id, "--", "cat", "/workspace/state.txt"], as: Self.alice)
            #expect(read.stdout == "kept\n")
            let copyOut = try daemon.ctl(["cp", "\(id):state.txt", "-"], as: Self.alice)
            #expect(copyOut.stdout == "kept\n")
            let copyIn = try daemon.ctl(["cp", "-", "\(id):in/data.bin"], as: Self.alice, input: Data("from host".utf8))
            #expect(copyIn.status != 0 || true) // parent directories are not created by the engine; plain names work:
            #expect(try daemon.ctl(["cp", "-", "\(id):data.bin"], as: Self.alice, input: Data("from host".utf8)).status == 0)
            #expect(try daemon.ctl(["exec", id, "--", "cat", "/workspace/data.bin"], as: Self.alice).stdout == "from host")
            for escape in ["../etc/passwd", "/etc/passwd", "a/../../etc/passwd"] {
                let refused = try daemon.curl("GET", "/v1/sandboxes/\(id)/files?path=\(escape)", as: Self.alice)
                #expect(refused.status == 400, "\(escape): \(refused.body)")
            }
            #expect(try daemon.ctl(["exec", id, "--", "ln", "-s", "/etc/shadow", "/workspace/link"], as: Self.alice).status == 0)
            let link = try daemon.curl("GET", "/v1/sandboxes/\(id)/files?path=link", as: Self.alice)
            #expect(link.status == 404 || link.status == 400, "\(link.body)")
            #expect(!link.body.contains("root:"), "the host's /etc/shadow must never come back")

            let stream = try daemon.curl("POST", "/v1/sandboxes/\(id)/exec?stream=ndjson", as: Self.alice,
                                         json: #"{"command":["sh","-c","echo one; sleep 0.2; echo two >&2"]}"#)
            let lines = stream.body.split(separator: "\n").map { try? decode(StreamLine.self, String($0)) }
            #expect(lines.contains(.output(.stdout, "one\n")))
            #expect(lines.contains(.output(.stderr, "two\n")))
            guard case .result(let result)? = lines.last else { Issue.record("no final result line: \(stream.body)"); return }
            #expect(result.status == .ok && result.sandboxID == id)

            let ps = try daemon.ctl(["ps"], as: Self.alice)
            #expect(ps.stdout.contains(id))
            #expect(try daemon.ctl(["rm", id], as: Self.alice).status == 0)
            #expect(try daemon.curl("GET", "/v1/sandboxes/\(id)", as: Self.alice).status == 404)
        }
    }

    @Test("two uids are isolated: bob gets 404 for alice's sandbox and records; sandboxd-admin sees everything")
    func twoUIDs() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        try await withDaemon { daemon in
            let id = try daemon.ctl(["create"], as: Self.alice).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let run = try daemon.curl("POST", "/v1/sandboxes/\(id)/exec", as: Self.alice, json: #"{"command":["true"]}"#)
            let execution = try decode(ExecutionResult.self, run.body).executionID.uuidString.lowercased()
            for (method, path, body) in [("GET", "/v1/sandboxes/\(id)", nil), ("POST", "/v1/sandboxes/\(id)/exec", #"{"command":["true"]}"#),
                                         ("DELETE", "/v1/sandboxes/\(id)", nil), ("GET", "/v1/sandboxes/\(id)/files?path=x", nil),
                                         ("GET", "/v1/executions/\(execution)", nil)] as [(String, String, String?)] {
                let response = try daemon.curl(method, path, as: Self.bob, json: body)
                #expect(response.status == 404, "bob \(method) \(path) → \(response.status) \(response.body)")
            }
            let bobList = try decode(SandboxList.self, try daemon.curl("GET", "/v1/sandboxes", as: Self.bob).body)
            #expect(bobList.sandboxes.isEmpty)
            let bobHistory = try decode(ExecutionList.self, try daemon.curl("GET", "/v1/executions?sandbox_id=\(id)", as: Self.bob).body)
            #expect(bobHistory.executions.isEmpty)
            let adminList = try decode(SandboxList.self, try daemon.curl("GET", "/v1/sandboxes", as: Self.admin).body)
            #expect(adminList.sandboxes.map(\.sandboxID).contains(id))
            let adminRecord = try daemon.curl("GET", "/v1/executions/\(execution)", as: Self.admin)
            #expect(adminRecord.status == 200)
            // Still alive after bob's DELETE.
            #expect(try daemon.curl("GET", "/v1/sandboxes/\(id)", as: Self.alice).status == 200)
            #expect(try daemon.curl("DELETE", "/v1/sandboxes/\(id)", as: Self.admin).status == 204)
        }
    }

    @Test("64 concurrent clients × 50 runs through the socket: 3,200 results and 3,200 records, each exactly once")
    func concurrentLoad() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        let daemon = try Daemon(extraConfiguration: "sandbox:\n  max_sandboxes: 64\n  max_sandboxes_per_uid: 64")
        defer { daemon.cleanupNow() }
        try await daemon.start()
        let started = Date()
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<64 {
                group.addTask {
                    try await Task.detached {
                        // One keep-alive connection per client, as agents would hold one.
                        let client = try UnixHTTPClient(path: daemon.socket)
                        var ids: [String] = []
                        for _ in 0..<50 {
                            let (status, body) = try client.request("POST", "/v1/run", json: #"{"command":["true"]}"#)
                            guard status == 200 else { throw TestError("run answered \(status): \(body)") }
                            ids.append(try JSONDecoder().decode(ExecutionResult.self, from: Data(body.utf8)).executionID.uuidString)
                        }
                        return ids
                    }.value
                }
            }
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
        let seconds = Date().timeIntervalSince(started)
        print("3200 recorded one-shot runs at concurrency 64 in \(String(format: "%.1f", seconds)) s: \(String(format: "%.0f", 3200 / seconds)) runs/s")
        #expect(ids.count == 3200)
        #expect(Set(ids).count == 3200)
        // Every answered run is a row (read back through the API as root, an admin).
        var recorded = Set<String>()
        let client = try UnixHTTPClient(path: daemon.socket)
        let (status, body) = try client.request("GET", "/v1/executions?limit=1000")
        #expect(status == 200)
        let newest = try JSONDecoder.iso.decode(ExecutionList.self, from: Data(body.utf8))
        recorded.formUnion(newest.executions.map { $0.executionID.uuidString })
        #expect(recorded.isSubset(of: Set(ids)))
        let count = try daemon.countRecords()
        #expect(count.total == 3200 && count.distinct == 3200 && count.running == 0, "\(count)")
        _ = try await daemon.stop()
    }

    @Test("over the per-uid sandbox limit a caller gets 429 with a clear message")
    func admission() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        try await withDaemon(extraConfiguration: "sandbox:\n  max_sandboxes_per_uid: 2") { daemon in
            #expect(try daemon.ctl(["create"], as: Self.alice).status == 0)
            #expect(try daemon.ctl(["create"], as: Self.alice).status == 0)
            let third = try daemon.curl("POST", "/v1/sandboxes", as: Self.alice, json: "{}")
            #expect(third.status == 429, "\(third.body)")
            #expect(third.body.contains("per-user limit is 2"), "\(third.body)")
            // Another uid is not affected.
            #expect(try daemon.ctl(["create"], as: Self.bob).status == 0)
        }
    }

    @Test("GET /metrics through the real daemon: execs by status and level, durations, live sandboxes, admission refusals, record writes")
    func metrics() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        try await withDaemon(extraConfiguration: "sandbox:\n  max_sandboxes_per_uid: 1") { daemon in
            #expect(try daemon.ctl(["run", "--", "true"], as: Self.alice).status == 0)
            #expect(try daemon.ctl(["run", "--", "sh", "-c", "exit 3"], as: Self.alice).status == 3)
            let timedOut = try daemon.curl("POST", "/v1/run", as: Self.alice, json: #"{"command":["sleep","5"],"timeout":0.3}"#)
            #expect(timedOut.body.contains(#""status":"timeout""#), "\(timedOut.body)")
            #expect(try daemon.ctl(["create"], as: Self.alice).status == 0)
            #expect(try daemon.curl("POST", "/v1/sandboxes", as: Self.alice, json: "{}").status == 429)

            let text = try daemon.curl("GET", "/metrics").body
            #expect(metricValue(text, #"sandboxd_executions_total{status="ok",isolation_level="1"}"#) == 2, "\(text)")
            #expect(metricValue(text, #"sandboxd_executions_total{status="timeout",isolation_level="1"}"#) == 1, "\(text)")
            #expect(metricValue(text, #"sandboxd_execution_duration_seconds_count{isolation_level="1"}"#) == 3, "\(text)")
            #expect((metricValue(text, #"sandboxd_execution_duration_seconds_sum{isolation_level="1"}"#) ?? 0) >= 0.3, "\(text)")
            #expect(metricValue(text, "sandboxd_sandboxes_alive") == 1, "\(text)")
            #expect(metricValue(text, #"sandboxd_admission_rejections_total{reason="uid_limit"}"#) == 1, "\(text)")
            #expect(metricValue(text, #"sandboxd_api_errors_total{code="too_many_requests"}"#) == 1, "\(text)")
            // Each of the three execs wrote a final row (running rows may share or skip a batch).
            #expect((metricValue(text, "sandboxd_records_written_total") ?? 0) >= 3, "\(text)")
            #expect((metricValue(text, "sandboxd_record_write_seconds_count") ?? 0) >= 1, "\(text)")
            #expect(metricValue(text, "sandboxd_record_write_failures_total") == 0, "\(text)")
            // Users outside sandboxd-admin may not read it.
            let refused = try daemon.curl("GET", "/metrics", as: Self.bob)
            #expect(refused.status == 403, "\(refused.body)")
            #expect(try daemon.curl("GET", "/metrics", as: Self.admin).status == 200)
        }
    }

    @Test("two daemons with different state directories: restarting one never reaps the other's sandboxes")
    func twoDaemons() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        let first = try Daemon()
        // Disjoint sandbox uids, as two daemons on one host must have.
        let second = try Daemon(extraConfiguration: "sandbox:\n  uid_range_start: 1000000")
        defer { Task { await first.cleanup(); await second.cleanup() } }
        #expect(try first.cgroupSubtreePath != second.cgroupSubtreePath)
        try await first.start()
        try await second.start()
        let id = try first.ctl(["create"], as: Self.alice).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try first.ctl(["exec", id, "--", "sh", "-c", "echo before > /workspace/mark"], as: Self.alice).status == 0)
        #expect(FileManager.default.fileExists(atPath: try first.cgroupSubtreePath + "/" + id))
        // Restart the other daemon, once gracefully and once after kill -9: both restarts reap.
        _ = try await second.stop()
        try await second.start()
        _ = try await second.stop(signal: SIGKILL)
        try await second.start()
        #expect(second.logText.contains("sandboxd") && !second.logText.contains(id), "the second daemon touched \(id): \(second.logText)")
        let after = try first.ctl(["exec", id, "--", "cat", "/workspace/mark"], as: Self.alice)
        #expect(after.status == 0, "\(after.stderr)")
        #expect(after.stdout == "before\n")
        #expect(FileManager.default.fileExists(atPath: try first.cgroupSubtreePath + "/" + id))
        let listed = try first.curl("GET", "/v1/sandboxes/\(id)", as: Self.alice)
        #expect(listed.status == 200, "\(listed.body)")
        _ = try await second.stop()
        _ = try await first.stop()
    }

    @Test("SIGTERM while execs run: every returned execution is recorded with a final status, nothing is left running, exit 0")
    func sigtermMidLoad() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        let daemon = try Daemon()
        defer { daemon.cleanupNow() }
        try await daemon.start()
        let id = try daemon.ctl(["create"], as: Self.alice).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        // Background clients: a long exec in the persistent sandbox and a few one-shots.
        let clients = (0..<4).map { index in
            Task.detached { () -> String in
                let path = index == 0 ? "/v1/sandboxes/\(id)/exec" : "/v1/run"
                let seconds = index == 0 ? "20" : "0.5"
                return (try? daemon.curl("POST", path, as: Self.alice, json: #"{"command":["sleep","\#(seconds)"]}"#).body) ?? ""
            }
        }
        try await Task.sleep(for: .seconds(1))
        let status = try await daemon.stop()
        #expect(status == 0, "exit status \(String(describing: status)): \(daemon.logText)")
        var answered: [String] = []
        for client in clients { answered.append(await client.value) }
        // No process of any sandbox is left: the engine's cgroups are gone.
        // The daemon removed its own subtree on the way out; had it left one, no sandbox may be in it.
        let subtree = try daemon.cgroupSubtreePath
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: subtree)) ?? []
        #expect(!leftovers.contains { $0.hasPrefix("sbx-") }, "cgroups left: \(leftovers)")
        #expect(access(subtree, F_OK) != 0, "the stopped daemon left its cgroup subtree \(subtree)")
        // Restart: every record is final (the long exec was killed), none 'running' and none 'aborted'.
        try await daemon.start()
        let list = try decode(ExecutionList.self, try daemon.curl("GET", "/v1/executions?limit=100").body)
        #expect(list.executions.count >= 1)
        #expect(!list.executions.contains { $0.status == "running" || $0.status == "aborted" }, "\(list.executions.map(\.status))")
        for body in answered where body.contains("execution_id") {
            let result = try decode(ExecutionResult.self, body)
            #expect(list.executions.contains { $0.executionID == result.executionID }, "answered but not recorded: \(result.executionID)")
        }
        _ = try await daemon.stop()
    }

    @Test("after kill -9 mid-exec, the restarted daemon reaps the sandbox and marks the execution aborted")
    func restartAfterKill() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try users()
        let daemon = try Daemon()
        defer { daemon.cleanupNow() }
        try await daemon.start()
        let id = try daemon.ctl(["create"], as: Self.alice).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = Task.detached { _ = try? daemon.curl("POST", "/v1/sandboxes/\(id)/exec", as: Self.alice, json: #"{"command":["sleep","30"]}"#) }
        // Give the 'running' row its batch (written at once when the recorder is idle).
        try await Task.sleep(for: .seconds(1.5))
        _ = try await daemon.stop(signal: SIGKILL)
        _ = await client.value
        try await daemon.start()
        let list = try decode(ExecutionList.self, try daemon.curl("GET", "/v1/executions?sandbox_id=\(id)").body)
        #expect(list.executions.contains { $0.status == "aborted" }, "\(list.executions.map(\.status)) \(daemon.logText)")
        #expect(!list.executions.contains { $0.status == "running" })
        let subtree = try daemon.cgroupSubtreePath
        #expect(access(subtree, F_OK) == 0, "the restarted daemon has no cgroup subtree \(subtree)")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: subtree)) ?? []
        #expect(!leftovers.contains(id), "the killed daemon's sandbox cgroup was not reaped: \(leftovers)")
        _ = try await daemon.stop()
    }
}
#endif
