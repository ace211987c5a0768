// Level-3 latency (make bench): cold create+exec against a raw QEMU boot of the same kernel,
// initramfs and runtime shares running the same command (`uname -r`) straight from init, in one
// run; then warm-pool create+exec. TCG. Ratios against the baseline measured here.
//   VM_BENCH_COLD=N (default 10) cold/raw pairs, VM_BENCH_WARM=N (default 6) warm samples.
// Single boots under TCG vary by ±0.5 s with the host's load, over minutes as well as between
// neighbours, so the figures are medians over many pairs, the two of a pair seconds apart, after
// one untimed boot of each kind (the first reads the kernel, initramfs and runtime from disk);
// the ratio is given both as p50 against p50 and as the median of the pairs' own ratios.
//   VM_BENCH_STAMPS=1 prints each cold guest's own stamp lines (the agent's and init's).
//   VM_BENCH_COMPARE_AGENT=PATH also runs every cold round with an image built from that agent
//   (e.g. main's build), in turns, and prints the per-round differences: two agents compared
//   under the same load, which single runs at these noise levels cannot do.
import BenchmarkSupport
import Foundation
import QEMUGuest
import SandboxCore
import VMSandbox

/// QEMU with the engine's machine arguments minus the jail and agent port, `sandboxd.raw=1`;
/// seconds from spawn until QEMU exits, and the console.
/// CPU seconds (user + system) of the children reaped so far: a raw boot's QEMU after its exit.
func childrenCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_CHILDREN.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds used by everything in a cgroup so far (`usage_usec` of its `cpu.stat`, present
/// with or without the cpu controller): a cold guest's QEMU and jail.
func cgroupCPUSeconds(_ path: String) -> Double? {
    guard let text = try? String(contentsOfFile: path + "/cpu.stat", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("usage_usec ") {
        return Double(line.split(separator: " ")[1]).map { $0 / 1e6 }
    }
    return nil
}

func rawBoot(image: GuestImage, scratch: String) throws -> (Double, String) {
    let console = scratch + "/raw-console.log"
    unlink(console)
    let arguments = image.rawBaselineArguments(memoryMiB: 768, cpus: 1, consolePath: console)
    let started = Date()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try QEMUProcess.findExecutable())
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    let elapsed = Date().timeIntervalSince(started)
    return (elapsed, (try? String(contentsOfFile: console, encoding: .utf8)) ?? "")
}

/// Guest uptime stamps from a console log: "guest-init: root ready at 3.71 s" → ["root ready": 3.71].
func guestStamps(_ console: String) -> [String: Double] {
    var stamps: [String: Double] = [:]
    for line in console.split(whereSeparator: \.isNewline) {
        guard let colon = line.firstIndex(of: ":"), line.hasPrefix("guest-init") || line.hasPrefix("sandbox-guest") else { continue }
        let text = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        guard let at = text.range(of: " at ", options: .backwards) else { continue }
        let value = text[at.upperBound...].split(separator: " ").first.flatMap { Double($0) }
        if let value { stamps[String(text[..<at.lowerBound])] = value }
    }
    return stamps
}

/// One line per stage: the median guest uptime at which it ended, and the median step from the stage before.
func printBreakdown(_ title: String, _ rounds: [[String: Double]], stages: [(String, String)], hostTotal: Double) {
    print("  \(title) (guest uptime, p50 over \(rounds.count) rounds; host total p50 \(String(format: "%.2f", hostTotal)) s):")
    var previous: String?
    for (key, label) in stages {
        let at = rounds.compactMap { $0[key] }
        guard !at.isEmpty else { continue }
        let steps = previous.map { previous in rounds.compactMap { round in round[key].flatMap { end in round[previous].map { end - $0 } } } } ?? at
        let padded = label.padding(toLength: 34, withPad: " ", startingAt: 0)
        print("    \(padded) at " + String(format: "%6.2f s  (+%.2f s)", percentile(at, 50), percentile(steps, 50)))
        previous = key
    }
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let scratch = NSTemporaryDirectory() + "sandboxd-vm-bench-\(getpid())"
// This run's own cgroup subtree, removed at the end (engines leave their parent directory to the caller).
let cgroupSubtree = "sandboxd-vm-bench-\(getpid())"
try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: scratch) }
guard getuid() == 0 else { print("VMBenchmark: needs root (jailed QEMU); skipped"); exit(0) }

let coldEngine = try await VMSandboxEngine.start(configuration: .init(
    stateDirectory: scratch + "/state-cold", imageCacheDirectory: packageRoot + "/.build-guest",
    cgroupSubtree: cgroupSubtree, accelerator: .tcg, poolSize: 0)) { print("  \($0)") }
let release = coldEngine.image.kernelPackage.description

// VM_BENCH_COMPARE_AGENT=PATH: every round also runs the cold path with an image built from that
// agent (and the spawn helper next to it), in turns with this one, so two agents are compared
// under the same load; the figure that counts is the per-round difference.
let compareAgent = ProcessInfo.processInfo.environment["VM_BENCH_COMPARE_AGENT"].flatMap { $0.isEmpty ? nil : $0 }
var compareEngine: VMSandboxEngine?
if let compareAgent {
    compareEngine = try await VMSandboxEngine.start(configuration: .init(
        stateDirectory: scratch + "/state-compare", imageCacheDirectory: packageRoot + "/.build-guest-compare",
        agentBinary: compareAgent, cgroupSubtree: cgroupSubtree + "-compare", accelerator: .tcg, poolSize: 0)) { print("  compared agent: \($0)") }
}

/// One cold create + `uname -r`: total and create seconds, the guest's stamps and its console lines, QEMU's CPU seconds.
struct ColdRun {
    var total: Double, create: Double, stamps: [String: Double], console: String, cpu: Double?
    /// Guest seconds from "root ready" to the first exec's end: what the agent and level 1 add.
    var guestSpan: Double? { stamps["first exec done"].flatMap { done in stamps["root ready"].map { done - $0 } } }
}
func coldRun(_ engine: VMSandboxEngine, id: String) async throws -> ColdRun {
    let started = Date()
    let sandbox = try await engine.create(SandboxSpec(id: id))
    let create = Date().timeIntervalSince(started)
    let result = try await sandbox.exec(ExecRequest(["uname", "-r"]))
    let total = Date().timeIntervalSince(started)
    let cpu = cgroupCPUSeconds(sandbox.cgroupPath)
    guard result.exitCode == 0, String(decoding: result.stdout, as: UTF8.self).contains("-amd64") else { print("cold exec failed: \(result)"); exit(1) }
    // The agent logs its first exec's end just after sending the result.
    try await Task.sleep(for: .milliseconds(300))
    let console = (try? String(contentsOfFile: sandbox.consoleLogPath, encoding: .utf8)) ?? ""
    await sandbox.destroy()
    return ColdRun(total: total, create: create, stamps: guestStamps(console), console: console, cpu: cpu)
}

// Untimed: the first boot of each kind reads the kernel, initramfs, agent and runtime files into
// the page cache and runs the engine's first-use paths; a counted round would charge that to
// whichever side went first.
do {
    let (rawSeconds, _) = try rawBoot(image: coldEngine.image, scratch: scratch)
    let run = try await coldRun(coldEngine, id: "bench-warm-up")
    print(String(format: "  warm-up (not counted): raw boot %.2f s, cold create+exec %.2f s", rawSeconds, run.total))
}

var raw: [Double] = [], pairRatios: [Double] = []
var rawStamps: [[String: Double]] = []
// QEMU's CPU time (all its threads: the vCPU's translated code and TCG's translation, the 9p
// server): what the guest's work costs; with one vCPU it follows the wall time closely.
var rawCPU: [Double] = []
var coldRuns: [ColdRun] = [], compared: [ColdRun] = [], spanDifferences: [Double] = [], totalDifferences: [Double] = []
for round in 0..<environmentInt("VM_BENCH_COLD", 10) {
    // The raw boot goes first in even rounds and last in odd ones: whatever the boot before leaves
    // behind (its freed guest memory, a warmer page cache) falls on both sides alike.
    var rawResult: (seconds: Double, console: String, cpu: Double)?
    func bootRaw() throws {
        let cpuBefore = childrenCPUSeconds()
        let (seconds, console) = try rawBoot(image: coldEngine.image, scratch: scratch)
        rawResult = (seconds, console, childrenCPUSeconds() - cpuBefore)
    }
    if round % 2 == 0 { try bootRaw() }
    // With a compared agent, which one goes first alternates between rounds.
    var other: ColdRun?
    if let compareEngine, round % 2 == 1 { other = try await coldRun(compareEngine, id: "bench-compare-\(round)") }
    let run = try await coldRun(coldEngine, id: "bench-cold-\(round)")
    if let compareEngine, round % 2 == 0 { other = try await coldRun(compareEngine, id: "bench-compare-\(round)") }
    if round % 2 == 1 { try bootRaw() }
    guard let (rawSeconds, console, rawCPUSeconds) = rawResult else { exit(1) }
    rawCPU.append(rawCPUSeconds)
    guard console.contains("-amd64") else { print("raw boot printed no kernel release:\n\(console.suffix(2000))"); exit(1) }
    raw.append(rawSeconds)
    pairRatios.append(run.total / rawSeconds)
    rawStamps.append(guestStamps(console))
    coldRuns.append(run)
    let rawRootReady = rawStamps.last?["root ready"] ?? .nan
    print(String(format: "  round %d: raw boot %.2f s (QEMU CPU %.2f s, root ready at %.2f s), cold create+exec %.2f s (QEMU CPU %.2f s, root ready at %.2f s, root ready → first exec done %.3f s) (load %@)",
                 round + 1, rawSeconds, rawCPU.last!, rawRootReady, run.total, run.cpu ?? .nan, run.stamps["root ready"] ?? .nan, run.guestSpan ?? .nan, loadAverage() as NSString))
    if let other {
        compared.append(other)
        totalDifferences.append(run.total - other.total)
        if let a = run.guestSpan, let b = other.guestSpan { spanDifferences.append(a - b) }
        print(String(format: "           compared agent: cold create+exec %.2f s (root ready → first exec done %.3f s)", other.total, other.guestSpan ?? .nan))
    }
    if ProcessInfo.processInfo.environment["VM_BENCH_STAMPS"] == "1" {
        // This round's cold guest's own lines (every stamp the agent printed).
        for line in run.console.split(whereSeparator: \.isNewline) where line.hasPrefix("sandbox-guest") || line.hasPrefix("guest-init") {
            print("      " + line)
        }
    }
}
let cold = coldRuns.map(\.total), coldCreate = coldRuns.map(\.create), coldCPU = coldRuns.compactMap(\.cpu)
let coldStamps = coldRuns.map(\.stamps)
if let compareEngine {
    await compareEngine.shutdown()
    rmdir(compareEngine.cgroupParent)
    let spans = compared.compactMap(\.guestSpan), ours = coldRuns.compactMap(\.guestSpan)
    print(String(format: "  this agent against %@ (n=%d): cold create+exec p50 %.2f s vs %.2f s, per-round difference p50 %+.3f s; "
                 + "root ready → first exec done p50 %.3f s vs %.3f s, per-round difference p50 %+.3f s", compareAgent! as NSString, compared.count,
                 percentile(cold, 50), percentile(compared.map(\.total), 50), percentile(totalDifferences, 50),
                 percentile(ours, 50), percentile(spans, 50), percentile(spanDifferences, 50)))
}
await coldEngine.shutdown()
rmdir(coldEngine.cgroupParent)

let warmEngine = try await VMSandboxEngine.start(configuration: .init(
    stateDirectory: scratch + "/state-warm", imageCacheDirectory: packageRoot + "/.build-guest",
    cgroupSubtree: cgroupSubtree, accelerator: .tcg, poolSize: 1)) { _ in }
var warm: [Double] = [], warmCommand: [Double] = []
// VM_BENCH_WARM_COMMAND (words split on spaces) tells the warm path's parts apart, e.g. a command
// whose files the pool's warm-up already read (`/bin/sh -c true`) against one it did not.
let warmCommandLine = ProcessInfo.processInfo.environment["VM_BENCH_WARM_COMMAND"].map { $0.split(separator: " ").map(String.init) } ?? ["uname", "-r"]
for round in 0..<environmentInt("VM_BENCH_WARM", 6) {
    var waited = 0
    while warmEngine.pooledCount == 0, waited < 3000 { try await Task.sleep(for: .milliseconds(100)); waited += 1 }
    let started = Date()
    let sandbox = try await warmEngine.create(SandboxSpec(id: "bench-warm-\(round)"))
    let result = try await sandbox.exec(ExecRequest(warmCommandLine))
    let elapsed = Date().timeIntervalSince(started)
    guard result.exitCode == 0, sandbox.fromPool else {
        print("warm run \(round) failed or was not pooled: exit \(String(describing: result.exitCode)); pool: \(warmEngine.lastPoolError ?? "no error")")
        exit(1)
    }
    warm.append(elapsed)
    warmCommand.append(result.wallTime)
    await sandbox.destroy()
}
await warmEngine.shutdown()
rmdir(warmEngine.cgroupParent)

let rawP50 = percentile(raw, 50), coldP50 = percentile(cold, 50), warmP50 = percentile(warm, 50)
print("VM sandbox (level 3, TCG, \(release), 768 MiB, 1 vCPU), command: uname -r; load average \(loadAverage())")
print(String(format: "  raw qemu boot + command   p50 %7.2f s   (n=%d, baseline)", rawP50, raw.count))
print(String(format: "  cold create+exec          p50 %7.2f s   %.2fx raw   (target <= 1.2x)", coldP50, coldP50 / rawP50))
print(String(format: "  cold/raw of each pair     p50 %.2fx   (p25 %.2fx, p75 %.2fx; target <= 1.2x)",
             percentile(pairRatios, 50), percentile(pairRatios, 25), percentile(pairRatios, 75)))
print(String(format: "  QEMU CPU time p50: raw boot %.2f s (whole run), cold %.2f s (through the first exec's result): %.2fx",
             percentile(rawCPU, 50), percentile(coldCPU, 50), percentile(coldCPU, 50) / percentile(rawCPU, 50)))
printBreakdown("raw boot", rawStamps, stages: [
    ("kernel booted, init", "kernel boot (initramfs unpacked)"), ("modules loaded", "virtio, 9p, console modules"), ("root ready", "9p mounts, guest root"),
    ("command done", "uname -r from init"),
], hostTotal: rawP50)
let coldStages = [
    ("kernel booted, init", "kernel boot (initramfs unpacked)"), ("modules loaded", "virtio, 9p, console modules"), ("root ready", "9p mounts, guest root"),
    ("started", "agent's main reached"), ("ready", "agent engine set up (hello)"),
    ("sandbox configured", "level-1 sandbox configured"), ("first exec done", "uname -r through it"),
]
printBreakdown("cold create+exec", coldStamps, stages: coldStages, hostTotal: coldP50)
if !compared.isEmpty {
    printBreakdown("cold create+exec, compared agent", compared.map(\.stamps), stages: coldStages, hostTotal: percentile(compared.map(\.total), 50))
}
// Host clock against guest uptime: what the host adds before the kernel runs (QEMU start,
// firmware, loading kernel and initramfs; for cold also the jail) and after the last stamp.
let rawOutside = zip(raw, rawStamps).compactMap { total, stamps in stamps["command done"].map { total - $0 } }
let coldBeforeConfigured = zip(coldCreate, coldStamps).compactMap { create, stamps in stamps["sandbox configured"].map { create - $0 } }
let coldExecHost = zip(cold, coldCreate).map { $0 - $1 }
let coldExecGuest = coldStamps.compactMap { stamps in stamps["first exec done"].flatMap { done in stamps["sandbox configured"].map { done - $0 } } }
if !raw.isEmpty {
    print(String(format: "  host vs guest clock: raw: QEMU start to kernel + power-off and exit p50 %.2f s; cold: QEMU start to kernel + host side of hello/configure p50 %.2f s; cold exec round trip on the host p50 %.2f s (guest: configured → first exec done p50 %.2f s)",
                 percentile(rawOutside, 50), percentile(coldBeforeConfigured, 50), percentile(coldExecHost, 50), percentile(coldExecGuest, 50)))
}
print("  warm-pool create+exec: \(warmCommandLine.joined(separator: " "))")
print(String(format: "  warm-pool create+exec     p50 %7.1f ms  p90 %.1f ms  %.3fx raw  (n=%d, target p50 <= 100 ms)", warmP50 * 1000, percentile(warm, 90) * 1000, warmP50 / rawP50, warm.count))
print(String(format: "    of which the command itself (spawn to exit, measured in the guest) p50 %.1f ms; load average %@",
             percentile(warmCommand, 50) * 1000, loadAverage() as NSString))
