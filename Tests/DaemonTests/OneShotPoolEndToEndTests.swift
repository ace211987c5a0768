#if SANDBOXD_LEVEL1_ENGINE
import Foundation
import Testing
import SandboxCore

/// The pool of level-1 sandboxes built ahead for one-shot runs (`sandbox.pool_size`), through the
/// real daemon and socket: which sandbox a run gets is read from the daemon's cgroup subtree (a
/// pooled sandbox is a live cgroup there before any run names it) and from the answers.
@Suite(.serialized)
struct OneShotPoolEndToEndTests {
    static let alice = "sbxt-alice"
    static let admin = "sbxt-admin"

    /// Sandbox cgroups (`sbx-…`) alive in the daemon's subtree.
    private func liveSandboxes(_ daemon: EndToEndTests.Daemon) -> Set<String> {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: daemon.cgroupDirectory)) ?? []
        return Set(entries.filter { $0.hasPrefix("sbx-") })
    }

    /// Waits (up to 10 s) until `condition` holds for the live sandboxes; returns them.
    private func waitForSandboxes(_ daemon: EndToEndTests.Daemon, _ what: String,
                                  _ condition: (Set<String>) -> Bool) async throws -> Set<String> {
        for _ in 0..<200 {
            let live = liveSandboxes(daemon)
            if condition(live) { return live }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestError("timed out waiting for \(what); live sandboxes: \(liveSandboxes(daemon))")
    }

    private func waitForReady(_ daemon: EndToEndTests.Daemon, _ count: Double) async throws {
        for _ in 0..<200 {
            if metricValue(try daemon.curl("GET", "/metrics").body, "sandboxd_one_shot_pool_ready") == count { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestError("timed out waiting for \(count) ready sandboxes in the pool")
    }

    private func field(_ body: String, _ name: String) throws -> String {
        let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        guard let value = object?[name] as? String else { throw TestError("no \(name) in \(body)") }
        return value
    }

    private func run(_ daemon: EndToEndTests.Daemon, _ script: String) throws -> (sandboxID: String, stdout: String, body: String) {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: ["command": ["sh", "-c", script]]), as: UTF8.self)
        let response = try daemon.curl("POST", "/v1/run", as: Self.alice, json: json)
        guard response.status == 200, response.body.contains(#""status":"ok""#) else {
            throw TestError("run failed: HTTP \(response.status) \(response.body)")
        }
        return (try field(response.body, "sandbox_id"), try field(response.body, "stdout"), response.body)
    }

    private func poolCount(_ daemon: EndToEndTests.Daemon, _ result: String) throws -> Double {
        metricValue(try daemon.curl("GET", "/metrics").body, #"sandboxd_one_shot_pool_total{result="\#(result)"}"#) ?? 0
    }

    @Test("one-shot runs take sandboxes built while idle: the default policy's from the start, others once run; each used once, nothing of an earlier run visible, not listed, dead ones skipped; reload and stop destroy them")
    func pool() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        _ = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        _ = try TestHost.ensureUser(Self.admin, groups: ["sandboxd", "sandboxd-admin"])
        // The presets plus a second policy without tools of the daemon's: its runs can be pooled too.
        let defaultText = try String(contentsOfFile: TestHost.packageRoot.appendingPathComponent("policies/default.yaml").path, encoding: .utf8)
        let policies = try TestHost.policyDirectory(
            extra: ["second.yaml": defaultText.replacingOccurrences(of: "execution_timeout: 30", with: "execution_timeout: 20")])
        defer { try? FileManager.default.removeItem(atPath: policies) }

        let daemon = try EndToEndTests.Daemon(extraConfiguration: "policy_directory: \(policies)\nsandbox:\n  pool_size: 2")
        defer { daemon.cleanupNow() }
        do {
            try await daemon.start()
            // Built at start for the default policy, before any run.
            let pooled = try await waitForSandboxes(daemon, "two pooled sandboxes after start") { $0.count == 2 }
            // Pooled sandboxes belong to no one: not listed, not counted as alive.
            let listed = try daemon.curl("GET", "/v1/sandboxes", as: Self.admin)
            #expect(listed.status == 200 && !pooled.contains { listed.body.contains($0) }, "\(listed.body)")
            let metrics = try daemon.curl("GET", "/metrics").body
            #expect(metricValue(metrics, "sandboxd_sandboxes_alive") == 0, "\(metrics)")
            #expect(metricValue(metrics, "sandboxd_one_shot_pool_ready") == 2, "\(metrics)")

            // The first run takes one and leaves a file in it.
            let first = try run(daemon, "echo secret > /tmp/mark; echo written")
            #expect(first.stdout == "written\n")
            #expect(pooled.contains(first.sandboxID), "\(first.sandboxID) not among \(pooled)")
            // Refilled while idle; the used one is destroyed, never handed out again.
            let refilled = try await waitForSandboxes(daemon, "the pool refilled") { $0.count == 2 && !$0.contains(first.sandboxID) }
            // The next two runs get one each; neither sees the first run's file.
            let second = try run(daemon, "cat /tmp/mark 2>/dev/null; hostname")
            let third = try run(daemon, "cat /tmp/mark 2>/dev/null; hostname")
            #expect(refilled.contains(second.sandboxID) && refilled.contains(third.sandboxID), "\(second.sandboxID), \(third.sandboxID) not among \(refilled)")
            #expect(second.sandboxID != third.sandboxID)
            #expect(second.stdout == "sbx-" + second.sandboxID.prefix(12) + "\n", "\(second.body)")
            #expect(third.stdout == "sbx-" + third.sandboxID.prefix(12) + "\n", "\(third.body)")
            #expect(try poolCount(daemon, "taken") == 3)
            #expect(try poolCount(daemon, "empty") == 0)
            // Each is recorded under its own id.
            for run in [first, second, third] {
                let records = try daemon.curl("GET", "/v1/executions?sandbox_id=\(run.sandboxID)", as: Self.alice)
                let list = (try JSONSerialization.jsonObject(with: Data(records.body.utf8)) as? [String: Any])?["executions"] as? [Any]
                #expect(records.status == 200 && list?.count == 1, "\(records.body)")
            }
            let ready = try await waitForSandboxes(daemon, "the pool refilled again") {
                $0.count == 2 && $0.isDisjoint(with: [first.sandboxID, second.sandboxID, third.sandboxID])
            }

            // Another policy: its first run builds its own, then two of its shape are kept ready as well.
            let json = #"{"command":["true"],"policy":"second"}"#
            let other = try daemon.curl("POST", "/v1/run", as: Self.alice, json: json)
            #expect(other.status == 200 && other.body.contains(#""status":"ok""#), "\(other.body)")
            #expect(try poolCount(daemon, "empty") == 1)
            let both = try await waitForSandboxes(daemon, "two of each policy") { $0.count == 4 && ready.isSubset(of: $0) }
            let secondShape = both.subtracting(ready)
            let taken = try daemon.curl("POST", "/v1/run", as: Self.alice, json: json)
            let takenID = try field(taken.body, "sandbox_id")
            #expect(secondShape.contains(takenID), "\(taken.body)")

            // Pooled sandboxes killed from the host while they wait are not handed out: the run builds its own.
            // First all four built to the end and in the pool (a cgroup appears early in a build, and
            // a build still running after the kill would hand the run a live one), then the used
            // one's destruction (after its answer) over: what is left is exactly the pool.
            try await waitForReady(daemon, 4)
            let waiting = try await waitForSandboxes(daemon, "the second policy's pool refilled") { $0.count == 4 && !$0.contains(takenID) }
            for id in waiting {
                try "1".write(toFile: daemon.cgroupDirectory + "/" + id + "/cgroup.kill", atomically: false, encoding: .utf8)
            }
            let emptyBefore = try poolCount(daemon, "empty")
            let afterKill = try run(daemon, "echo alive")
            #expect(afterKill.stdout == "alive\n" && !waiting.contains(afterKill.sandboxID), "\(afterKill.body)")
            #expect(try poolCount(daemon, "empty") == emptyBefore + 1)
            let rebuilt = try await waitForSandboxes(daemon, "the dead ones removed and the pool refilled") {
                $0.count == 4 && $0.isDisjoint(with: waiting) && !$0.contains(afterKill.sandboxID)
            }

            // A policy reload drops everything built under the old rules and builds the default policy's again.
            guard let pid = daemon.process?.pid else { throw TestError("no daemon process") }
            kill(pid, SIGHUP)
            _ = try await waitForSandboxes(daemon, "only the default policy's, built anew, after the reload") {
                $0.count == 2 && $0.isDisjoint(with: rebuilt)
            }
            #expect(metricValue(try daemon.curl("GET", "/metrics").body, "sandboxd_one_shot_pool_ready") == 2)

            // A graceful stop destroys the pool with everything else.
            #expect(try await daemon.stop() == 0, "\(daemon.logText)")
            #expect(liveSandboxes(daemon).isEmpty, "left after stop: \(liveSandboxes(daemon))")
        } catch {
            print("daemon log:\n\(daemon.logText)")
            throw error
        }
    }

    @Test("pool_size 0: every run builds its own sandbox and nothing is built ahead")
    func poolDisabled() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        _ = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        let daemon = try EndToEndTests.Daemon(extraConfiguration: "sandbox:\n  pool_size: 0")
        defer { daemon.cleanupNow() }
        do {
            try await daemon.start()
            _ = try run(daemon, "true")
            _ = try run(daemon, "true")
            try await Task.sleep(for: .milliseconds(300))
            #expect(liveSandboxes(daemon).isEmpty, "built ahead: \(liveSandboxes(daemon))")
            #expect(try poolCount(daemon, "taken") == 0 && poolCount(daemon, "empty") == 0)
        } catch {
            print("daemon log:\n\(daemon.logText)")
            throw error
        }
    }
}
#endif
