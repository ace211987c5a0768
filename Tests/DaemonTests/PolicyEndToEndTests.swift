#if SANDBOXD_LEVEL1_ENGINE
import Foundation
import Testing
@testable import ControlAPI
import SandboxCore

extension EndToEndTests {
/// Policies applied by the real daemon, through its real socket: every bundled preset's
/// non-network rules (limits, timeout ceiling, environment, filesystem), escalation, reload over
/// HTTP and SIGHUP, and sandboxctl's policy commands. Nested in ``EndToEndTests`` so that its
/// daemons never run beside that suite's: every daemon reaps the shared cgroup subtree at start.
@Suite(.serialized)
struct PolicyEndToEndTests {
    static let alice = "sbxt-alice"
    static let admin = "sbxt-admin"

    /// A daemon whose policy directory holds a copy of the repository's presets plus `extra` files.
    private func withPolicyDaemon(extra: [String: String] = [:], _ body: (Daemon, String) async throws -> Void) async throws {
        _ = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        _ = try TestHost.ensureUser(Self.admin, groups: ["sandboxd", "sandboxd-admin"])
        let directory = try TestHost.policyDirectory(extra: extra)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try Daemon(extraConfiguration: "policy_directory: \(directory)")
        do {
            try await daemon.start()
            try await body(daemon, directory)
        } catch {
            print("daemon log:\n\(daemon.logText)")
            await daemon.cleanup()
            throw error
        }
        await daemon.cleanup()
    }

    private func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder.iso.decode(T.self, from: Data(text.utf8))
    }

    private func json(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// `POST /v1/run` as alice; the status and (for 200) the result.
    private func run(_ daemon: Daemon, _ body: [String: Any]) throws -> (status: Int, body: String, result: ExecutionResult?) {
        let response = try daemon.curl("POST", "/v1/run", as: Self.alice, json: json(body))
        return (response.status, response.body, response.status == 200 ? try decode(ExecutionResult.self, response.body) : nil)
    }

    private func errorBody(_ text: String) throws -> APIErrorBody.Content {
        try decode(APIErrorBody.self, text).error
    }

    /// A directory the test makes for a preset's allowed path, and removes (with what it made
    /// above it) afterwards; an existing one is used as it is and left alone.
    final class HostDirectory {
        let path: String
        private(set) var created: [String] = []

        init(_ path: String, mode: mode_t) {
            self.path = path
            var current = ""
            for component in path.split(separator: "/") {
                current += "/" + component
                if access(current, F_OK) != 0 {
                    mkdir(current, 0o755)
                    created.append(current)
                }
            }
            if created.last == path { chmod(path, mode) }
        }

        var ours: Bool { created.last == path }

        func remove() {
            guard ours else { return }
            try? FileManager.default.removeItem(atPath: path)
            for directory in created.dropLast().reversed() { rmdir(directory) }
        }
    }

    @Test("GET /v1/policies lists every preset with the SHA-256 of its file, its load time and source")
    func listing() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try await withPolicyDaemon { daemon, directory in
            let response = try daemon.curl("GET", "/v1/policies", as: Self.alice)
            #expect(response.status == 200, "\(response.body)")
            let list = try decode(PolicyList.self, response.body)
            #expect(list.policies.map(\.name) == ["database-readonly", "default", "filesystem", "ml-model", "network", "web-scraper"])
            #expect(list.directory == directory)
            for policy in list.policies {
                let sum = try TestHost.run(["/usr/bin/sha256sum", directory + "/" + policy.name + ".yaml"]).stdout
                #expect(sum.hasPrefix(policy.digest + " "), "\(policy.name): \(policy.digest) vs \(sum)")
                #expect(policy.source == directory + "/" + policy.name + ".yaml")
                #expect(abs(policy.loadedAt.timeIntervalSinceNow) < 600)
            }
            let ctl = try daemon.ctl(["policy", "list"], as: Self.alice)
            #expect(ctl.status == 0 && ctl.stdout.contains("web-scraper"), "\(ctl.stderr)")
        }
    }

    @Test("default: limits and timeout from the policy, environment starts empty, allowed passes, unlisted dropped, blocked refused")
    func defaultPreset() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try await withPolicyDaemon { daemon, _ in
            let shown = #"echo "$LANG|${FOO-unset}|${SECRET_TOKEN-unset}|$PATH|$HOME"; env | cut -d= -f1 | sort | tr '\n' ' '"#
            let env = try run(daemon, ["command": ["sh", "-c", shown], "env": ["LANG": "C.UTF-8", "FOO": "bar", "SECRET_TOKEN": "s3cret"]])
            #expect(env.status == 200, "\(env.body)")
            let lines = env.result?.stdout.split(separator: "\n").map(String.init) ?? []
            #expect(lines.first == "C.UTF-8|unset|unset|/usr/local/bin:/usr/bin:/bin|/tmp", "\(env.body)")
            // Nothing of the daemon's own environment, nothing unlisted: exactly these names.
            #expect(lines.last == "HOME LANG PATH PWD ", "\(lines)")
            #expect(env.result?.policy == "default" && env.result?.isolationLevel == 1 && env.result?.levelRaisedBy == nil)
            #expect(env.result?.requestedIsolationLevel == 1 && env.result?.policyDigest?.count == 64, "\(env.body.prefix(800))")

            for blocked in ["LD_PRELOAD", "PATH", "HOME", "USER", "HTTPS_PROXY"] {
                let refused = try run(daemon, ["command": ["true"], "env": ["LANG": "C", blocked: "x"]])
                #expect(refused.status == 400, "\(blocked): \(refused.body)")
                let error = try errorBody(refused.body)
                #expect(error.code == "environment_refused" && error.message.contains(blocked), "\(refused.body)")
                #expect(error.details["variables"] == .array([.string(blocked)]))
            }
            // The same rules on a persistent sandbox's env and on each exec's env.
            let create = try daemon.curl("POST", "/v1/sandboxes", as: Self.alice, json: #"{"env":{"LD_LIBRARY_PATH":"/tmp"}}"#)
            #expect(create.status == 400 && create.body.contains("LD_LIBRARY_PATH"), "\(create.body)")
            let sandbox = try decode(SandboxDescription.self, try daemon.curl("POST", "/v1/sandboxes", as: Self.alice,
                                                                                json: #"{"env":{"TZ":"UTC","OTHER":"x"}}"#).body)
            let exec = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.alice,
                                       json: #"{"command":["sh","-c","echo $TZ-$LANG-${OTHER-none}-${MORE-none}"],"env":{"LANG":"C","MORE":"y"}}"#)
            #expect(try decode(ExecutionResult.self, exec.body).stdout == "UTC-C-none-none\n", "\(exec.body)")
            let execBlocked = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.alice,
                                              json: #"{"command":["true"],"env":{"LD_PRELOAD":"/x.so"}}"#)
            #expect(execBlocked.status == 400 && execBlocked.body.contains("LD_PRELOAD"), "\(execBlocked.body)")

            // execution_timeout 30: the default of every exec, and its ceiling (refused above, not capped).
            let over = try run(daemon, ["command": ["true"], "timeout": 31])
            #expect(over.status == 400, "\(over.body)")
            let overError = try errorBody(over.body)
            #expect(overError.code == "invalid_field" && overError.message.contains("execution_timeout"), "\(over.body)")
            #expect(overError.details["limit"] == .number(30) || overError.details["limit"] == .integer(30))
            let createOver = try daemon.curl("POST", "/v1/sandboxes", as: Self.alice, json: #"{"timeout":45}"#)
            #expect(createOver.status == 400, "\(createOver.body)")
            let execOver = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.alice, json: #"{"command":["true"],"timeout":31}"#)
            #expect(execOver.status == 400, "\(execOver.body)")
            #expect(try run(daemon, ["command": ["true"], "timeout": 30]).status == 200)

            // output_limit 1MB = 1,048,576 bytes kept of stdout.
            let output = try run(daemon, ["command": ["sh", "-c", "yes | head -c 3000000"]])
            #expect(output.status == 200, "\(output.body.prefix(500))")
            #expect(output.result?.stdout.utf8.count == 1 << 20 && output.result?.stdoutTruncated == true)
            // The caller gets the whole megabyte; the record keeps a 64 KiB prefix and says so.
            let big = try #require(output.result).executionID.uuidString.lowercased()
            let bigView = try decode(ExecutionRecordView.self, try daemon.curl("GET", "/v1/executions/\(big)", as: Self.alice).body)
            guard case .object(let recorded)? = bigView.output, case .string(let kept)? = recorded["stdout"] else {
                Issue.record("no output_data: \(String(describing: bigView.output))"); return
            }
            #expect(kept.utf8.count == 64 << 10 && recorded["stdout_recorded_truncated"] == .bool(true))

            // The record: the effective level and how it was decided, the policy's digest.
            let id = try #require(env.result?.executionID).uuidString.lowercased()
            let view = try decode(ExecutionRecordView.self, try daemon.curl("GET", "/v1/executions/\(id)", as: Self.alice).body)
            #expect(view.isolationLevel == 1 && view.policy == "default")
            guard case .object(let input)? = view.input else { Issue.record("no input_data: \(String(describing: view.input))"); return }
            #expect(input["requested_isolation_level"] == .integer(1) && input["level_raised_by"] == .null)
            #expect(input["policy_digest"] == env.result?.policyDigest.map(JSONValue.string))
            #expect(try daemon.curl("DELETE", "/v1/sandboxes/\(sandbox.sandboxID)", as: Self.alice).status == 204)
        }
    }

    @Test("web-scraper, network, database-readonly: accepted, and their own limits, timeouts and variables apply")
    func otherPresets() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try await withPolicyDaemon { daemon, _ in
            // policy, variable it allows, its execution_timeout, its output_limit
            for (policy, variable, timeout, output) in [("web-scraper", "USER_AGENT", 120, 8 << 20), ("network", "OPENAI_API_KEY", 60, 4 << 20),
                                                        ("database-readonly", "TZ", 30, 4 << 20)] {
                let ok = try run(daemon, ["command": ["sh", "-c", "echo ${\(variable)}; yes | head -c \(output + 4096)"], "policy": policy,
                                          "env": [variable: "v-\(policy)"], "timeout": timeout])
                #expect(ok.status == 200, "\(policy): \(ok.body.prefix(500))")
                #expect(ok.result?.policy == policy)
                #expect(ok.result?.stdout.hasPrefix("v-\(policy)\n") == true)
                #expect(ok.result?.stdout.utf8.count == output && ok.result?.stdoutTruncated == true, "\(policy) output_limit")
                let over = try run(daemon, ["command": ["true"], "policy": policy, "timeout": timeout + 1])
                #expect(over.status == 400 && over.body.contains("execution_timeout"), "\(policy): \(over.body)")
                let blocked = try run(daemon, ["command": ["true"], "policy": policy, "env": ["LD_PRELOAD": "x"]])
                #expect(blocked.status == 400 && blocked.body.contains("LD_PRELOAD"))
            }
        }
    }

    @Test("escalation: web-scraper raises browser agents 1 → 3; refused with the host's reason for level 3 when it is unavailable")
    func escalation() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        let minimum3 = "description: everything in a VM\nisolation:\n  minimum_level: 3\n"
        try await withPolicyDaemon(extra: ["vm-only.yaml": minimum3]) { daemon, _ in
            let info = try decode(InfoResponse.self, try daemon.curl("GET", "/v1/info", as: Self.alice).body)
            let level3 = try #require(info.levels.first { $0.level == 3 })
            for (body, rule) in [(["command": ["true"], "policy": "web-scraper", "agent_type": "browser"] as [String: Any], "isolation.agent_types.browser"),
                                 (["command": ["true"], "policy": "vm-only"], "isolation.minimum_level")] {
                let response = try run(daemon, body)
                if level3.available {
                    #expect(response.status == 200, "\(response.body)")
                    #expect(response.result?.isolationLevel == 3 && response.result?.requestedIsolationLevel == 1)
                    #expect(response.result?.levelRaisedBy == rule)
                } else {
                    #expect(response.status == 422, "\(response.body)")
                    let error = try errorBody(response.body)
                    #expect(error.code == "isolation_level_unavailable")
                    #expect(error.message.contains(try #require(level3.reason)), "the reason /v1/info gives for level 3: \(error.message)")
                    #expect(error.message.contains(rule) && error.message.contains("never lowered"), "\(error.message)")
                    #expect(error.details["level_raised_by"] == .string(rule))
                    #expect(error.details["isolation_level"] == .integer(3) && error.details["requested_isolation_level"] == .integer(1))
                }
            }
            // Another agent type is not raised: it runs at level 1 and says nothing raised it.
            let python = try run(daemon, ["command": ["true"], "policy": "web-scraper", "agent_type": "python"])
            #expect(python.status == 200 && python.result?.isolationLevel == 1 && python.result?.levelRaisedBy == nil, "\(python.body)")
        }
    }

    @Test("filesystem and ml-model: allowed paths visible (writable or read-only as the preset says), blocked paths masked")
    func filesystemPresets() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        // The presets name fixed host paths; the test makes them when absent and removes only what it made.
        let data = HostDirectory("/app/data", mode: 0o777)
        let models = HostDirectory("/opt/models", mode: 0o755)
        defer { data.remove(); models.remove() }
        guard data.ours, models.ours else {
            print("skipped: /app/data or /opt/models already exists on this host; the test does not touch a real one")
            return
        }
        try "rows\n".write(toFile: "/app/data/input.csv", atomically: false, encoding: .utf8)
        mkdir("/app/data/secrets", 0o755)
        try "api-key\n".write(toFile: "/app/data/secrets/key", atomically: false, encoding: .utf8)
        try "weights\n".write(toFile: "/opt/models/model.bin", atomically: false, encoding: .utf8)
        chmod("/app/data/input.csv", 0o644); chmod("/app/data/secrets/key", 0o644); chmod("/opt/models/model.bin", 0o644)
        try await withPolicyDaemon { daemon, _ in
            let files = try run(daemon, ["policy": "filesystem", "timeout": 60, "command": ["sh", "-c",
                "cat /app/data/input.csv; echo out > /app/data/result.txt && echo wrote; echo \"[$(ls -A /app/data/secrets)]\"; cat /app/data/secrets/key 2>/dev/null || echo masked"]])
            #expect(files.status == 200, "\(files.body)")
            #expect(files.result?.stdout == "rows\nwrote\n[]\nmasked\n", "\(files.body)")
            #expect((try? String(contentsOfFile: "/app/data/result.txt", encoding: .utf8)) == "out\n")
            #expect(try run(daemon, ["policy": "filesystem", "timeout": 61, "command": ["true"]]).status == 400)

            let model = try run(daemon, ["policy": "ml-model", "timeout": 600, "env": ["MODEL_NAME": "m1"], "command": ["sh", "-c",
                "cat /opt/models/model.bin; echo $MODEL_NAME; echo x > /opt/models/new 2>/dev/null && echo wrote || echo read-only; ls /app 2>/dev/null || echo no-app"]])
            #expect(model.status == 200, "\(model.body)")
            #expect(model.result?.stdout == "weights\nm1\nread-only\nno-app\n", "\(model.body)")
            #expect(access("/opt/models/new", F_OK) != 0)
            // The default preset mounts no host path at all.
            let none = try run(daemon, ["command": ["sh", "-c", "ls /app /opt/models 2>/dev/null || echo none"]])
            #expect(none.result?.stdout == "none\n", "\(none.body)")
        }
    }

    @Test("reload: admins only; a bad file changes nothing (422 with file, line, key); running sandboxes keep their policy, new ones get the new one")
    func reload() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        let teamA = "description: team\nenvironment:\n  allowed_vars: [ALPHA]\n"
        let teamB = "description: team\nenvironment:\n  allowed_vars: [BETA]\n"
        try await withPolicyDaemon(extra: ["team.yaml": teamA]) { daemon, directory in
            func teamDigest() throws -> String? {
                try decode(PolicyList.self, try daemon.curl("GET", "/v1/policies", as: Self.alice).body).policies.first { $0.name == "team" }?.digest
            }
            func envOf(_ sandbox: String) throws -> String {
                let response = try daemon.curl("POST", "/v1/sandboxes/\(sandbox)/exec", as: Self.alice,
                                               json: #"{"command":["sh","-c","echo ${ALPHA-none}-${BETA-none}"],"env":{"ALPHA":"a","BETA":"b"}}"#)
                return try decode(ExecutionResult.self, response.body).stdout
            }
            func newSandbox() throws -> String {
                try decode(SandboxDescription.self, try daemon.curl("POST", "/v1/sandboxes", as: Self.alice, json: #"{"policy":"team"}"#).body).sandboxID
            }
            let before = try #require(try teamDigest())
            let old = try newSandbox()
            #expect(try envOf(old) == "a-none\n")

            let denied = try daemon.curl("POST", "/v1/policies/reload", as: Self.alice)
            #expect(denied.status == 403, "\(denied.body)")

            // A new team.yaml and a broken file: the whole reload is refused.
            try teamB.write(toFile: directory + "/team.yaml", atomically: true, encoding: .utf8)
            try "resources:\n  memroy_limit: 1GB\n".write(toFile: directory + "/broken.yaml", atomically: true, encoding: .utf8)
            let refused = try daemon.curl("POST", "/v1/policies/reload", as: Self.admin)
            #expect(refused.status == 422, "\(refused.body)")
            let error = try errorBody(refused.body)
            #expect(error.code == "invalid_policy")
            guard case .array(let diagnostics)? = error.details["diagnostics"], case .object(let first)? = diagnostics.first else {
                Issue.record("no diagnostics: \(refused.body)"); return
            }
            #expect(first["file"] == .string(directory + "/broken.yaml"))
            #expect(first["line"] == .integer(2))
            #expect(first["key"] == .string("resources.memroy_limit"))
            #expect(try teamDigest() == before, "nothing changed")
            #expect(try envOf(try newSandbox()) == "a-none\n", "new sandboxes still get the old team policy")
            #expect(daemon.logText.contains("resources.memroy_limit"), "the refusal is logged")
            let ctlRefused = try daemon.ctl(["policy", "reload"], as: Self.admin)
            #expect(ctlRefused.status == 1 && ctlRefused.stderr.contains("broken.yaml:2"), "\(ctlRefused.stderr)")

            unlink(directory + "/broken.yaml")
            let reloaded = try daemon.ctl(["policy", "reload"], as: Self.admin)
            #expect(reloaded.status == 0, "\(reloaded.stderr)")
            let after = try #require(try teamDigest())
            #expect(after != before)
            #expect(try envOf(old) == "a-none\n", "the running sandbox keeps the policy it was created with")
            #expect(try envOf(try newSandbox()) == "none-b\n", "a new sandbox gets the reloaded policy")
        }
    }

    @Test("SIGHUP reloads every policy file; a bad file on SIGHUP changes nothing and the daemon keeps serving")
    func sighup() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try await withPolicyDaemon(extra: ["team.yaml": "description: first\n"]) { daemon, directory in
            func team() throws -> PolicyView? {
                try decode(PolicyList.self, try daemon.curl("GET", "/v1/policies", as: Self.alice).body).policies.first { $0.name == "team" }
            }
            let pid = try #require(daemon.process?.pid)
            let first = try #require(try team())
            try "description: second\n".write(toFile: directory + "/team.yaml", atomically: true, encoding: .utf8)
            kill(pid, SIGHUP)
            var second: PolicyView?
            for _ in 0..<200 {
                if let now = try team(), now.digest != first.digest { second = now; break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(second?.description == "second", "SIGHUP did not reload: \(daemon.logText.suffix(2000))")

            try "isolation:\n  minimum_level: 9\n".write(toFile: directory + "/team.yaml", atomically: true, encoding: .utf8)
            kill(pid, SIGHUP)
            for _ in 0..<200 where !daemon.logText.contains("refused") { try await Task.sleep(for: .milliseconds(50)) }
            #expect(daemon.logText.contains("isolation.minimum_level"), "the refused reload is logged with the key")
            #expect(try team()?.digest == second?.digest, "a bad file changes nothing")
            #expect(daemon.process?.poll() == nil, "SIGHUP does not stop the daemon")
            #expect(try run(daemon, ["command": ["true"], "policy": "team"]).status == 200)
        }
    }

    @Test("sandboxctl policy validate: offline, exit 0 for the presets, 1 with FILE:LINE: KEY for a bad file")
    func validateOffline() throws {
        let presets = TestHost.packageRoot.appendingPathComponent("policies").path
        let files = try FileManager.default.contentsOfDirectory(atPath: presets).filter { $0.hasSuffix(".yaml") }.sorted().map { presets + "/" + $0 }
        #expect(files.count == 6)
        let ok = try TestHost.run([TestHost.product("sandboxctl"), "policy", "validate"] + files)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.split(separator: "\n").count == 6, "\(ok.stdout)")

        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("sandboxd-bad-\(getpid()).yaml").path
        try "network:\n  allowed_hosts: [example.com]\nresources:\n  cpu_limit: -1\n  memroy_limit: 1G\n".write(toFile: bad, atomically: true, encoding: .utf8)
        defer { unlink(bad) }
        let refused = try TestHost.run([TestHost.product("sandboxctl"), "policy", "validate", bad])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("\(bad):4: resources.cpu_limit"), "\(refused.stderr)")
        #expect(refused.stderr.contains("\(bad):5: resources.memroy_limit"), "\(refused.stderr)")
    }
}
}
#endif
