// guest-cgroup-checks: runs inside the QEMU test guest (GuestCgroupTests boots it), where a real
// cgroup2 hierarchy with every controller exists. It drives the level-1 engine through its public
// API, one scenario at a time, and prints one line per scenario:
//
//     GUEST-CHECK {"scenario":"memory-bomb","error":null,"facts":{"oom_killed":"true",...}}
//
// It reports what it measured and judges nothing: the host test asserts on the facts, so a
// broken engine shows up as a failing assertion with the numbers, not as a missing line.
// The bombs run only here, inside the guest, inside a sandbox whose limits the engine set.

import Foundation
import LinuxSandbox
import SandboxCore

/// What one scenario measured (values as text, so the host reads them without a schema).
struct ScenarioReport: Codable {
    var scenario: String
    var error: String?
    var facts: [String: String]
}

func emit(_ report: ScenarioReport) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let json = (try? encoder.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "{\"scenario\":\"\(report.scenario)\",\"error\":\"unencodable report\",\"facts\":{}}"
    // Unbuffered, so a scenario that takes the guest down still leaves the earlier lines.
    FileHandle.standardOutput.write(Data(("GUEST-CHECK " + json + "\n").utf8))
}

func readCgroupFile(_ directory: String, _ name: String) -> String {
    ((try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)) ?? "<unreadable>")
        .trimmingCharacters(in: .whitespacesAndNewlines)
}

/// `key value` lines (cpu.stat, memory.events, pids.events) as a dictionary.
func keyedValues(_ text: String) -> [String: String] {
    var values: [String: String] = [:]
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: " ", maxSplits: 1)
        if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
    }
    return values
}

/// Records the facts every scenario shares: how the exec ended, and whether teardown left the
/// sandbox's cgroup directory behind.
func describe(_ result: ExecResult, into facts: inout [String: String]) {
    facts["exit_code"] = result.exitCode.map(String.init) ?? "none"
    facts["signal"] = result.signal.map(String.init) ?? "none"
    facts["status"] = result.status.rawValue
    facts["oom_killed"] = String(result.oomKilled)
    facts["timed_out"] = String(result.timedOut)
    facts["limits_enforced"] = String(result.limitsEnforced)
    facts["memory_peak_bytes"] = result.usage.memoryPeakBytes.map(String.init) ?? "none"
    facts["cpu_usec"] = result.usage.cpuMicroseconds.map(String.init) ?? "none"
    facts["wall_seconds"] = String(format: "%.2f", result.wallTime)
    facts["stdout"] = String(decoding: result.stdout.prefix(2000), as: UTF8.self)
    facts["stderr"] = String(decoding: result.stderr.prefix(2000), as: UTF8.self)
}

/// Runs one scenario: create a sandbox with `limits`, let `body` exec in it and read its cgroup,
/// destroy it, and record whether its cgroup directory is gone.
func scenario(
    _ name: String, engine: LinuxSandboxEngine, limits: ResourceLimits,
    _ body: (LinuxSandbox, inout [String: String]) async throws -> Void
) async {
    var facts: [String: String] = [:]
    var failure: String?
    do {
        let sandbox = try await engine.create(SandboxSpec(id: "check-\(name)", limits: limits, enforcement: .strict))
        facts["cgroup_path"] = sandbox.cgroupPath
        do {
            try await body(sandbox, &facts)
        } catch {
            failure = "\(error)"
        }
        await sandbox.destroy()
        facts["cgroup_removed"] = String(!FileManager.default.fileExists(atPath: sandbox.cgroupPath))
    } catch {
        failure = "\(error)"
    }
    emit(ScenarioReport(scenario: name, error: failure, facts: facts))
}

/// Can this (guest) system still start a process? Checked after the bombs.
func guestCanStartProcesses() -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/true")
    do { try process.run() } catch { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}

let configuration = LinuxSandboxConfiguration(
    cgroupRoot: "/sys/fs/cgroup",
    cgroupSubtree: "sandboxd-guest-checks",
    stateDirectory: "/run/sandboxd")
let subtreePath = configuration.cgroupRoot + "/" + configuration.cgroupSubtree

let engine: LinuxSandboxEngine
do {
    engine = try LinuxSandboxEngine(configuration: configuration)
} catch {
    emit(ScenarioReport(scenario: "engine", error: "\(error)", facts: [:]))
    exit(1)
}
emit(ScenarioReport(scenario: "engine", error: nil, facts: [
    "available_controllers": engine.availableControllers.sorted().joined(separator: " "),
    "root_controllers": readCgroupFile(configuration.cgroupRoot, "cgroup.controllers"),
]))

// A memory bomb: perl grows a list of 1 MiB strings until the 64 MiB memory.max stops it.
await scenario("memory-bomb", engine: engine, limits: ResourceLimits(memory: .mebibytes(64), cpu: nil, pids: 64, executionTimeout: 120)) { sandbox, facts in
    facts["memory.max"] = readCgroupFile(sandbox.cgroupPath, "memory.max")
    facts["memory.swap.max"] = readCgroupFile(sandbox.cgroupPath, "memory.swap.max")
    let result = try await sandbox.exec(ExecRequest(["/usr/bin/perl", "-e", #"my @a; while (1) { push @a, "x" x (1 << 20) }"#]))
    describe(result, into: &facts)
    facts["memory.events"] = readCgroupFile(sandbox.cgroupPath, "memory.events")
    facts["memory.events.oom_kill"] = keyedValues(facts["memory.events"] ?? "")["oom_kill"] ?? "none"
    // The sandbox keeps working after one of its processes was OOM-killed.
    let after = try await sandbox.exec(ExecRequest(["/bin/echo", "alive"]))
    facts["after_stdout"] = String(decoding: after.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

// A fork bomb: every process forks for ever (failed forks are retried, so it never dies out by
// itself), under pids.max 32, until the exec's 5 s timeout kills the whole sandbox.
await scenario("fork-bomb", engine: engine, limits: ResourceLimits(memory: .mebibytes(256), cpu: nil, pids: 32, executionTimeout: 5)) { sandbox, facts in
    facts["pids.max"] = readCgroupFile(sandbox.cgroupPath, "pids.max")
    let result = try await sandbox.exec(ExecRequest(["/usr/bin/perl", "-e", "while (1) { fork }"]))
    describe(result, into: &facts)
    // 6.1 counts the "max" event in the forking (per-exec) cgroup, gone by now; pids.peak of the
    // sandbox shows how far the bomb got.
    facts["pids.peak"] = readCgroupFile(sandbox.cgroupPath, "pids.peak")
    facts["pids.current_after"] = readCgroupFile(sandbox.cgroupPath, "pids.current")
}
emit(ScenarioReport(scenario: "after-fork-bomb", error: nil, facts: [
    "guest_can_start_processes": String(guestCanStartProcesses()),
]))

// CPU: half a core, a busy loop for 3 s; cpu.stat must show the sandbox being throttled.
await scenario("cpu-limit", engine: engine, limits: ResourceLimits(memory: .mebibytes(256), cpu: 0.5, pids: 64, executionTimeout: 60)) { sandbox, facts in
    facts["cpu.max"] = readCgroupFile(sandbox.cgroupPath, "cpu.max")
    let result = try await sandbox.exec(ExecRequest(["/usr/bin/timeout", "3", "/bin/sh", "-c", "while :; do :; done"]))
    describe(result, into: &facts)
    let stat = keyedValues(readCgroupFile(sandbox.cgroupPath, "cpu.stat"))
    for key in ["usage_usec", "nr_periods", "nr_throttled", "throttled_usec"] { facts["cpu.stat." + key] = stat[key] ?? "none" }
}

// memory.peak: a 48 MiB string under a 256 MiB limit; the result reports the peak.
await scenario("memory-peak", engine: engine, limits: ResourceLimits(memory: .mebibytes(256), cpu: nil, pids: 64, executionTimeout: 60)) { sandbox, facts in
    let result = try await sandbox.exec(ExecRequest(["/usr/bin/perl", "-e", #"my $s = "x" x (48 << 20); print length($s), "\n""#]))
    describe(result, into: &facts)
    facts["memory.peak"] = readCgroupFile(sandbox.cgroupPath, "memory.peak")
}

// Presets: each bundled policy file (the same text as policies/*.yaml) parsed as the daemon parses
// it, its limits taken as the daemon takes them (Policy.resourceLimits → the sandbox's spec), and
// the cgroup files read back: what the file says must be what the kernel enforces.
for preset in ["default", "ml-model"] {
    var facts: [String: String] = [:]
    var failure: String?
    do {
        guard let loaded = try PolicySet.bundled(hostCores: nil)[preset] else { throw CocoaError(.fileNoSuchFile) }
        let limits = loaded.policy.resourceLimits
        facts["policy.memory_limit_bytes"] = String(loaded.policy.resources.memoryLimit.bytes)
        facts["policy.cpu_limit"] = String(loaded.policy.resources.cpuLimit)
        facts["policy.pids_limit"] = String(loaded.policy.resources.pidsLimit)
        let sandbox = try await engine.create(SandboxSpec(id: "check-preset-\(preset)", limits: limits, enforcement: .strict))
        for file in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
            facts[file] = readCgroupFile(sandbox.cgroupPath, file)
        }
        let result = try await sandbox.exec(ExecRequest(["/bin/cat", "/proc/self/cgroup"]))
        describe(result, into: &facts)
        await sandbox.destroy()
        facts["cgroup_removed"] = String(!FileManager.default.fileExists(atPath: sandbox.cgroupPath))
    } catch {
        failure = "\(error)"
    }
    emit(ScenarioReport(scenario: "preset-\(preset)", error: failure, facts: facts))
}

// Teardown: every scenario destroyed its sandbox; nothing may be left in the subtree.
let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: subtreePath)) ?? []).filter { entry in
    var isDirectory: ObjCBool = false
    return FileManager.default.fileExists(atPath: subtreePath + "/" + entry, isDirectory: &isDirectory) && isDirectory.boolValue
}
emit(ScenarioReport(scenario: "teardown", error: nil, facts: [
    "leftover_cgroups": leftovers.sorted().joined(separator: " "),
    "engine_lists": engine.listCgroups().sorted().joined(separator: " "),
    "guest_can_start_processes": String(guestCanStartProcesses()),
]))
FileHandle.standardOutput.write(Data("GUEST-CHECKS-DONE\n".utf8))
