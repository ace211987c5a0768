// Level-3 latency (make bench): cold create+exec against a raw QEMU boot of the same kernel,
// initramfs and runtime shares running the same command (`uname -r`) straight from init, in one
// run; then warm-pool create+exec. TCG. Ratios against the baseline measured here.
//   VM_BENCH_COLD=N (default 4) cold/raw pairs, VM_BENCH_WARM=N (default 6) warm samples.
import BenchmarkSupport
import Foundation
import QEMUGuest
import SandboxCore
import VMSandbox

/// QEMU with the engine's machine arguments minus the jail and agent port, `sandboxd.raw=1`;
/// seconds from spawn until QEMU exits, and the console.
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

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let scratch = NSTemporaryDirectory() + "sandboxd-vm-bench-\(getpid())"
try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: scratch) }
guard getuid() == 0 else { print("VMBenchmark: needs root (jailed QEMU); skipped"); exit(0) }

let coldEngine = try await VMSandboxEngine.start(configuration: .init(
    stateDirectory: scratch + "/state-cold", imageCacheDirectory: packageRoot + "/.build-guest",
    cgroupSubtree: "sandboxd-vm-bench", accelerator: .tcg, poolSize: 0)) { print("  \($0)") }
let release = coldEngine.image.kernelPackage.description

var raw: [Double] = [], cold: [Double] = []
for round in 0..<environmentInt("VM_BENCH_COLD", 4) {
    let (rawSeconds, console) = try rawBoot(image: coldEngine.image, scratch: scratch)
    guard console.contains("-amd64") else { print("raw boot printed no kernel release:\n\(console.suffix(2000))"); exit(1) }
    raw.append(rawSeconds)
    let started = Date()
    let sandbox = try await coldEngine.create(SandboxSpec(id: "bench-cold-\(round)"))
    let result = try await sandbox.exec(ExecRequest(["uname", "-r"]))
    cold.append(Date().timeIntervalSince(started))
    guard result.exitCode == 0, String(decoding: result.stdout, as: UTF8.self).contains("-amd64") else { print("cold exec failed: \(result)"); exit(1) }
    await sandbox.destroy()
    print(String(format: "  round %d: raw boot %.2f s, cold create+exec %.2f s", round + 1, rawSeconds, cold.last!))
}
await coldEngine.shutdown()

let warmEngine = try await VMSandboxEngine.start(configuration: .init(
    stateDirectory: scratch + "/state-warm", imageCacheDirectory: packageRoot + "/.build-guest",
    cgroupSubtree: "sandboxd-vm-bench", accelerator: .tcg, poolSize: 1)) { _ in }
var warm: [Double] = []
for round in 0..<environmentInt("VM_BENCH_WARM", 6) {
    var waited = 0
    while warmEngine.pooledCount == 0, waited < 3000 { try await Task.sleep(for: .milliseconds(100)); waited += 1 }
    let started = Date()
    let sandbox = try await warmEngine.create(SandboxSpec(id: "bench-warm-\(round)"))
    let result = try await sandbox.exec(ExecRequest(["uname", "-r"]))
    let elapsed = Date().timeIntervalSince(started)
    guard result.exitCode == 0, sandbox.fromPool else {
        print("warm run \(round) failed or was not pooled: exit \(String(describing: result.exitCode)); pool: \(warmEngine.lastPoolError ?? "no error")")
        exit(1)
    }
    warm.append(elapsed)
    await sandbox.destroy()
}
await warmEngine.shutdown()

let rawP50 = percentile(raw, 50), coldP50 = percentile(cold, 50), warmP50 = percentile(warm, 50)
print("VM sandbox (level 3, TCG, \(release), 768 MiB, 1 vCPU), command: uname -r")
print(String(format: "  raw qemu boot + command   p50 %7.2f s   (n=%d, baseline)", rawP50, raw.count))
print(String(format: "  cold create+exec          p50 %7.2f s   %.2fx raw   (target <= 1.2x)", coldP50, coldP50 / rawP50))
print(String(format: "  warm-pool create+exec     p50 %7.1f ms  p90 %.1f ms  %.3fx raw  (n=%d, target p50 <= 100 ms)", warmP50 * 1000, percentile(warm, 90) * 1000, warmP50 / rawP50, warm.count))
