import Foundation
import GuestSupport
import Testing

/// The level-1 engine's cgroup v2 limits, enforced for real inside the QEMU test guest (the build
/// hosts have no cgroup v2 controllers). One boot runs `guest-cgroup-checks`, which drives the
/// engine through its public API and reports what it measured per scenario; each test below
/// asserts on one scenario's facts.
@Suite("cgroup v2 limits inside the QEMU guest", .serialized)
struct GuestCgroupTests {
    @Test("the engine finds the memory, pids and cpu controllers in the guest")
    func controllers() async throws {
        let facts = try await GuestChecks.facts(for: "engine")
        let available = Set((facts["available_controllers"] ?? "").split(separator: " ").map(String.init))
        #expect(available.isSuperset(of: ["memory", "pids", "cpu"]), "\(facts)")
    }

    @Test("a memory bomb is OOM-killed at memory.max, reported as oom, and the sandbox keeps working")
    func memoryBomb() async throws {
        let facts = try await GuestChecks.facts(for: "memory-bomb")
        #expect(facts["memory.max"] == String(64 << 20), "\(facts)")
        #expect(facts["limits_enforced"] == "true", "\(facts)")
        #expect(facts["memory.swap.max"] == "0", "\(facts)")
        #expect(facts["oom_killed"] == "true", "\(facts)")
        #expect(facts["status"] == "oom", "\(facts)")
        #expect(facts["signal"] == "9", "\(facts)")
        #expect(Int(facts["memory.events.oom_kill"] ?? "") ?? 0 >= 1, "\(facts)")
        let peak = try #require(UInt64(facts["memory_peak_bytes"] ?? ""), "memory.peak not reported: \(facts)")
        #expect(peak > 32 << 20 && peak <= 64 << 20, "\(facts)")
        #expect(facts["after_stdout"] == "alive", "\(facts)")
        #expect(facts["cgroup_removed"] == "true", "\(facts)")
    }

    @Test("a fork bomb stops at pids.max, is killed at the timeout with everything it forked, and the guest can still start processes")
    func forkBomb() async throws {
        let facts = try await GuestChecks.facts(for: "fork-bomb")
        #expect(facts["pids.max"] == "32", "\(facts)")
        // The bomb reached the limit and no further (the kernel's peak, counted in the sandbox's cgroup).
        #expect(facts["pids.peak"] == "32", "\(facts)")
        #expect(facts["timed_out"] == "true", "\(facts)")
        #expect(facts["status"] == "timeout", "\(facts)")
        #expect(facts["cgroup_removed"] == "true", "\(facts)")
        let after = try await GuestChecks.facts(for: "after-fork-bomb")
        #expect(after["guest_can_start_processes"] == "true", "\(after)")
    }

    @Test("cpu_limit 0.5 writes cpu.max 50000 100000 and a busy loop is throttled")
    func cpuLimit() async throws {
        let facts = try await GuestChecks.facts(for: "cpu-limit")
        #expect(facts["cpu.max"] == "50000 100000", "\(facts)")
        #expect(Int(facts["cpu.stat.nr_throttled"] ?? "") ?? 0 > 0, "\(facts)")
        #expect(Int(facts["cpu.stat.throttled_usec"] ?? "") ?? 0 > 0, "\(facts)")
        #expect(facts["exit_code"] == "124", "timeout(1) ends the loop with 124: \(facts)")
        #expect(facts["cgroup_removed"] == "true", "\(facts)")
    }

    @Test("memory.peak of an exec is reported in its result")
    func memoryPeak() async throws {
        let facts = try await GuestChecks.facts(for: "memory-peak")
        #expect(facts["exit_code"] == "0", "\(facts)")
        #expect(facts["stdout"]?.trimmingCharacters(in: .whitespacesAndNewlines) == String(48 << 20), "\(facts)")
        let peak = try #require(UInt64(facts["memory_peak_bytes"] ?? ""), "memory.peak not reported: \(facts)")
        #expect(peak >= 48 << 20 && peak <= 256 << 20, "\(facts)")
        #expect(facts["oom_killed"] == "false", "\(facts)")
        #expect(facts["cgroup_removed"] == "true", "\(facts)")
    }

    @Test("a preset policy's resources reach the cgroup exactly: memory.max bytes, swap 0, pids.max, cpu.max = cpu_limit × 100000",
          arguments: [("default", String(512 << 20), "256", "50000 100000"), ("ml-model", String(4 << 30), "512", "100000 100000")])
    func presetLimits(preset: String, memory: String, pids: String, cpu: String) async throws {
        let facts = try await GuestChecks.facts(for: "preset-\(preset)")
        #expect(facts["policy.memory_limit_bytes"] == memory, "the preset file's memory_limit, parsed: \(facts)")
        #expect(facts["memory.max"] == memory, "\(facts)")
        #expect(facts["memory.swap.max"] == "0", "\(facts)")
        #expect(facts["pids.max"] == pids, "\(facts)")
        #expect(facts["cpu.max"] == cpu, "\(facts)")
        #expect(facts["limits_enforced"] == "true", "\(facts)")
        #expect(facts["exit_code"] == "0", "\(facts)")
        #expect(facts["cgroup_removed"] == "true", "\(facts)")
    }

    @Test("teardown leaves no cgroup directory behind")
    func teardown() async throws {
        let facts = try await GuestChecks.facts(for: "teardown")
        #expect(facts["leftover_cgroups"] == "", "\(facts)")
        #expect(facts["engine_lists"] == "", "\(facts)")
        #expect(facts["guest_can_start_processes"] == "true", "\(facts)")
    }
}

/// One boot of the guest running `guest-cgroup-checks`, shared by every test above.
actor GuestChecks {
    static let shared = GuestChecks()
    private var run: Task<Result<[String: Report], GuestMachineError>, Never>?

    struct Report: Decodable {
        var scenario: String
        var error: String?
        var facts: [String: String]
    }

    static func facts(for scenario: String) async throws -> [String: String] {
        let reports = try await shared.reports()
        let report = try #require(reports[scenario], "guest-cgroup-checks reported no \"\(scenario)\" scenario; got \(reports.keys.sorted())")
        if let error = report.error { Issue.record("scenario \(scenario) failed inside the guest: \(error)\nfacts: \(report.facts)") }
        return report.facts
    }

    func reports() async throws -> [String: Report] {
        if run == nil {
            run = Task {
                do throws(GuestMachineError) {
                    let checks = try GuestMachine.builtProduct(named: "guest-cgroup-checks")
                    let result = try await GuestMachine().run([checks], timeout: 600)
                    print("guest-cgroup-checks: \(result.timingSummary), exit \(result.exitCode)")
                    var reports: [String: Report] = [:]
                    for line in result.output.split(separator: "\n") where line.hasPrefix("GUEST-CHECK ") {
                        print(line)
                        if let report = try? JSONDecoder().decode(Report.self, from: Data(line.dropFirst("GUEST-CHECK ".count).utf8)) {
                            reports[report.scenario] = report
                        }
                    }
                    guard result.exitCode == 0, result.output.contains("GUEST-CHECKS-DONE") else {
                        let tail = result.console.split(separator: "\n", omittingEmptySubsequences: false).suffix(40).joined(separator: "\n")
                        return .failure(GuestMachineError(.guestEnded, "guest-cgroup-checks exited \(result.exitCode) without finishing",
                                                          partialOutput: result.output, consoleTail: tail))
                    }
                    return .success(reports)
                } catch {
                    return .failure(error)
                }
            }
        }
        return try await run!.value.get()
    }
}
