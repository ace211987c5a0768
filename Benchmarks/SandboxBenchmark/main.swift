// One-shot `/bin/true` through the LinuxSandbox library against bubblewrap doing the same
// isolation, run alternately in this process; then exec into an existing sandbox.
// Prints p50 and p99 of each and the ratios. Run by Benchmarks/run (`make bench`), as root, with bubblewrap installed.
import LinuxSandbox
import SandboxCore

#if canImport(Glibc)
import Glibc
#endif

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

/// Runs a program with stdio on /dev/null and waits; returns false unless it exited 0.
func spawnAndWait(_ argv: [String]) -> Bool {
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd in [0, 1, 2] as [Int32] {
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    let cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    guard posix_spawn(&pid, argv[0], &actions, nil, cargs, environ) == 0 else { return false }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status == 0
}

func findCgroupRoot() -> String? {
    for path in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
    where access(path + "/cgroup.procs", F_OK) == 0 && access(path + "/cgroup.subtree_control", F_OK) == 0 {
        return path
    }
    return nil
}

func ms(_ seconds: Double) -> String {
    let v = (seconds * 10_000).rounded() / 10
    return "\(v) ms"
}

func ratio(_ a: Double, _ b: Double) -> String {
    let v = (a / b * 100).rounded() / 100
    return "\(v)×"
}

let iterations = Int(String(cString: getenv("BENCH_ITERATIONS") ?? strdup("200"))) ?? 200
let warmup = 10

guard geteuid() == 0 else { print("sandbox benchmark: needs root"); exit(1) }
guard let cgroupRoot = findCgroupRoot() else { print("sandbox benchmark: no cgroup2 mount"); exit(1) }
let bwrapPath = ["/usr/bin/bwrap", "/bin/bwrap"].first(where: { (path: String) in access(path, X_OK) == 0 })
guard let bwrapPath else { print("sandbox benchmark: bubblewrap is not installed (apt-get install bubblewrap)"); exit(1) }

// The same isolation bwrap is asked for: all namespaces, read-only runtime, new /proc, minimal
// /dev, private /tmp. (sandboxd adds a cgroup, seccomp, generated /etc, capability drop.)
var bwrap = [bwrapPath, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
for link in ["bin", "sbin", "lib", "lib64"] {
    var buffer = [CChar](repeating: 0, count: 256)
    let n = readlink("/" + link, &buffer, 255)
    if n > 0 {
        bwrap += ["--symlink", String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self), "/" + link]
    } else if access("/" + link, F_OK) == 0 {
        bwrap += ["--ro-bind", "/" + link, "/" + link]
    }
}
bwrap += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"]

let tag = "\(getpid())"
let stateDirectory = "/tmp/sandboxd-bench-\(tag)"
let engine = try LinuxSandboxEngine(configuration: LinuxSandboxConfiguration(
    cgroupRoot: cgroupRoot, cgroupSubtree: "sandboxd-bench-\(tag)", stateDirectory: stateDirectory))
/// A fresh id per sandbox (ids of live sandboxes must differ; these die at once anyway).
func spec() -> SandboxSpec {
    SandboxSpec(id: "bench-\(UInt64.random(in: 0..<UInt64.max))", limits: ResourceLimits(memory: nil, cpu: nil, pids: nil, executionTimeout: 30))
}
let truth = ExecRequest(["/bin/true"])

print("sandbox benchmark: \(iterations) runs each after \(warmup) warm-up runs, alternating; cgroup2 at \(cgroupRoot)")
print("baseline: \(bwrap.joined(separator: " "))")

for _ in 0..<warmup {
    _ = spawnAndWait(bwrap)
    _ = try await engine.run(spec(), truth)
}
var bwrapTimes: [Double] = []
var oneShotTimes: [Double] = []
for _ in 0..<iterations {
    var t0 = now()
    guard spawnAndWait(bwrap) else { print("bwrap failed"); exit(1) }
    bwrapTimes.append(now() - t0)
    t0 = now()
    let result = try await engine.run(spec(), truth)
    oneShotTimes.append(now() - t0)
    guard result.exitCode == 0 else { print("sandboxd run failed: \(result)"); exit(1) }
}

let sandbox = try await engine.create(spec())
for _ in 0..<warmup { _ = try await sandbox.exec(truth) }
var execTimes: [Double] = []
for _ in 0..<iterations {
    let t0 = now()
    let result = try await sandbox.exec(truth)
    execTimes.append(now() - t0)
    guard result.exitCode == 0 else { print("exec failed: \(result)"); exit(1) }
}
await sandbox.destroy()
_ = await engine.reapLeftovers()
rmdir(cgroupRoot + "/sandboxd-bench-\(tag)")
rmdir(stateDirectory + "/rootfs")
rmdir(stateDirectory)

let b50 = percentile(bwrapTimes, 50), b99 = percentile(bwrapTimes, 99)
let s50 = percentile(oneShotTimes, 50), s99 = percentile(oneShotTimes, 99)
let e50 = percentile(execTimes, 50), e99 = percentile(execTimes, 99)
print("")
print("one-shot /bin/true              p50        p99")
print("  bwrap (baseline)              \(ms(b50))    \(ms(b99))")
print("  sandboxd library              \(ms(s50))    \(ms(s99))")
print("  ratio sandboxd / bwrap        \(ratio(s50, b50))      \(ratio(s99, b99))     (target p50 ≤ 1.0×)")
print("exec /bin/true in a live sandbox")
print("  sandboxd library              \(ms(e50))    \(ms(e99))     (target p50 ≤ 3 ms)")
print("  ratio exec / bwrap one-shot   \(ratio(e50, b50))      \(ratio(e99, b99))")

