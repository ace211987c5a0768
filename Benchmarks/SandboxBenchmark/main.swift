// One-shot `/bin/true` through the LinuxSandbox library against bubblewrap doing the same
// isolation, run alternately in this process, one at a time and then several at once; then exec
// into an existing sandbox. Prints p50 and p99 of each and the ratios. Run by Benchmarks/run
// (`make bench`), as root, with bubblewrap installed.
//
// Every measured run starts with the previous run's sandbox gone: bwrap returns when its
// sandbox's PID 1 has reported the command's status, before that PID 1 and its namespaces are
// torn down, so without waiting (untimed) for that PID 1 its teardown would run during, and be
// charged to, the next measurement. sandboxd's `run` returns only after the teardown, and is timed
// with it.
import BenchmarkSupport
import CLinuxSandbox
import LinuxSandbox
import SandboxCore

#if canImport(Glibc)
import Glibc
#endif

/// Runs bwrap (with `--info-fd 3` as its first options) with stdio on /dev/null and times it until
/// it exits; then, untimed, waits until the sandbox's PID 1 it reported has ended too. Returns the
/// time, or nil unless bwrap exited 0.
func timeBwrap(_ argv: [String]) -> Double? {
    var info: [Int32] = [-1, -1]
    guard pipe(&info) == 0 else { return nil }
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, info[1], 3)
    for fd in [0, 1, 2] as [Int32] {
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    let cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    let t0 = now()
    guard posix_spawn(&pid, argv[0], &actions, nil, cargs, environ) == 0 else {
        close(info[0]); close(info[1])
        return nil
    }
    close(info[1])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let elapsed = now() - t0
    // {"child-pid": N, ...}, written before the command started.
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = read(info[0], &buffer, buffer.count)
    close(info[0])
    if n > 0, let range = String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\n")
        .first(where: { $0.contains("\"child-pid\"") }),
       let child = Int32(range.filter(\.isNumber)) {
        let pidfd = sbx_pidfd_open(child)
        if pidfd >= 0 {
            var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 5_000)
            close(pidfd)
        }
    }
    return status == 0 ? elapsed : nil
}

/// Runs `body(i)` for i in 0..<count on as many threads at once and returns their results.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> [Double]) -> [Double] {
    final class Slot: @unchecked Sendable {
        let index: Int
        let body: @Sendable (Int) -> [Double]
        var result: [Double] = []
        init(_ index: Int, _ body: @escaping @Sendable (Int) -> [Double]) { self.index = index; self.body = body }
    }
    let slots = (0..<count).map { Slot($0, body) }
    var threads: [pthread_t] = []
    for slot in slots {
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let slot = Unmanaged<Slot>.fromOpaque(arg!).takeUnretainedValue()
            slot.result = slot.body(slot.index)
            return nil
        }, Unmanaged.passUnretained(slot).toOpaque())
        precondition(rc == 0, "pthread_create failed")
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
    return slots.flatMap(\.result)
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

func column(_ text: String, _ width: Int) -> String {
    text + String(repeating: " ", count: max(1, width - text.count))
}

let iterations = environmentInt("BENCH_ITERATIONS", 200)
let streams = max(2, environmentInt("BENCH_STREAMS", 4))
let warmup = 10

guard geteuid() == 0 else { print("sandbox benchmark: needs root"); exit(1) }
guard let cgroupRoot = findCgroupRoot() else { print("sandbox benchmark: no cgroup2 mount"); exit(1) }
guard let bwrapPath = findBwrap() else { print("sandbox benchmark: bubblewrap is not installed (apt-get install bubblewrap)"); exit(1) }

// The isolation the daemon benchmark asks bwrap for too; --info-fd 3 tells timeBwrap its PID 1.
let bwrap = bwrapArguments(bwrapPath, options: ["--info-fd", "3"], command: ["/bin/true"])

let tag = "\(getpid())"
let stateDirectory = "/tmp/sandboxd-bench-\(tag)"
let engine = try LinuxSandboxEngine(configuration: LinuxSandboxConfiguration(
    cgroupRoot: cgroupRoot, cgroupSubtree: "sandboxd-bench-\(tag)", stateDirectory: stateDirectory))
/// A fresh id per sandbox (ids of live sandboxes must differ; these die at once anyway).
@Sendable func spec() -> SandboxSpec {
    SandboxSpec(id: "bench-\(UInt64.random(in: 0..<UInt64.max))", limits: ResourceLimits(memory: nil, cpu: nil, pids: nil, executionTimeout: 30))
}
let truth = ExecRequest(["/bin/true"])

/// Removes the benchmark's (empty) cgroup subtree and state directory.
func removeBenchmarkState() {
    rmdir(cgroupRoot + "/sandboxd-bench-\(tag)")
    rmdir(stateDirectory + "/rootfs")
    rmdir(stateDirectory)
}

/// One timed `engine.run` of /bin/true.
@Sendable func timeSandboxd() async throws -> Double {
    let t0 = now()
    let result = try await engine.run(spec(), truth)
    let elapsed = now() - t0
    guard result.exitCode == 0 else { print("sandboxd run failed: \(result)"); exit(1) }
    return elapsed
}

// BENCH_PROFILE=sandboxd|bwrap|exec: only that side, one at a time, for `perf record` (which follows
// every process the run starts, so its sample count is the CPU one side spends).
if let side = getenv("BENCH_PROFILE").map({ String(cString: $0) }) {
    var times: [Double] = []
    // `exec`: execs into one live sandbox (built once, untimed).
    let live = side == "exec" ? try await engine.create(spec()) : nil
    for _ in 0..<iterations {
        if let live {
            let t0 = now()
            guard try await live.exec(truth).exitCode == 0 else { print("exec failed"); exit(1) }
            times.append(now() - t0)
        } else if side == "bwrap" {
            guard let elapsed = timeBwrap(bwrap) else { print("bwrap failed"); exit(1) }
            times.append(elapsed)
        } else {
            times.append(try await timeSandboxd())
        }
    }
    await live?.destroy()
    print("\(side): \(iterations) runs, p50 \(ms(percentile(times, 50))), p99 \(ms(percentile(times, 99)))")
    removeBenchmarkState()
    exit(0)
}

print("sandbox benchmark: \(iterations) runs each after \(warmup) warm-up runs, alternating; then \(streams) at once; cgroup2 at \(cgroupRoot)")
print("baseline: \(bwrap.joined(separator: " "))")

for _ in 0..<warmup {
    _ = timeBwrap(bwrap)
    _ = try await timeSandboxd()
}
var bwrapTimes: [Double] = []
var oneShotTimes: [Double] = []
for _ in 0..<iterations {
    guard let elapsed = timeBwrap(bwrap) else { print("bwrap failed"); exit(1) }
    bwrapTimes.append(elapsed)
    oneShotTimes.append(try await timeSandboxd())
}

// Several at once: rounds of `streams` concurrent bwrap loops, then `streams` concurrent
// sandboxd loops, alternating; per-run times and the throughput of each side's rounds.
let rounds = 4
let perStream = max(5, iterations / (rounds * streams) * 2)
var concurrentBwrapTimes: [Double] = [], concurrentOneShotTimes: [Double] = []
var bwrapWall = 0.0, oneShotWall = 0.0
for _ in 0..<rounds {
    var t0 = now()
    concurrentBwrapTimes += onThreads(streams) { _ in
        (0..<perStream).map { _ in
            guard let elapsed = timeBwrap(bwrap) else { print("bwrap failed"); exit(1) }
            return elapsed
        }
    }
    bwrapWall += now() - t0
    t0 = now()
    concurrentOneShotTimes += try await withThrowingTaskGroup(of: [Double].self) { group in
        for _ in 0..<streams {
            group.addTask {
                var times: [Double] = []
                for _ in 0..<perStream { times.append(try await timeSandboxd()) }
                return times
            }
        }
        var all: [Double] = []
        for try await times in group { all += times }
        return all
    }
    oneShotWall += now() - t0
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
removeBenchmarkState()

let b50 = percentile(bwrapTimes, 50), b99 = percentile(bwrapTimes, 99)
let s50 = percentile(oneShotTimes, 50), s99 = percentile(oneShotTimes, 99)
let cb50 = percentile(concurrentBwrapTimes, 50), cb99 = percentile(concurrentBwrapTimes, 99)
let cs50 = percentile(concurrentOneShotTimes, 50), cs99 = percentile(concurrentOneShotTimes, 99)
let bwrapRate = Double(concurrentBwrapTimes.count) / bwrapWall
let oneShotRate = Double(concurrentOneShotTimes.count) / oneShotWall
let e50 = percentile(execTimes, 50), e99 = percentile(execTimes, 99)
var loadAverage = [Double](repeating: 0, count: 3)
_ = getloadavg(&loadAverage, 3)
let w = 32
print("")
print(column("one-shot /bin/true", w) + column("p50", 11) + "p99")
print(column("  bwrap (baseline)", w) + column(ms(b50), 11) + ms(b99))
print(column("  sandboxd library", w) + column(ms(s50), 11) + ms(s99))
print(column("  ratio sandboxd / bwrap", w) + column(ratio(s50, b50), 11) + ratio(s99, b99) + "     (target p50 ≤ 1.0×)")
print(column("\(streams) at once", w) + column("p50", 11) + column("p99", 11) + "runs/s")
print(column("  bwrap (baseline)", w) + column(ms(cb50), 11) + column(ms(cb99), 11) + "\((bwrapRate * 10).rounded() / 10)")
print(column("  sandboxd library", w) + column(ms(cs50), 11) + column(ms(cs99), 11) + "\((oneShotRate * 10).rounded() / 10)")
print(column("  ratio sandboxd / bwrap", w) + column(ratio(cs50, cb50), 11) + column(ratio(cs99, cb99), 11)
      + ratio(bwrapRate, oneShotRate) + " (time per run)")
print("exec /bin/true in a live sandbox")
print(column("  sandboxd library", w) + column(ms(e50), 11) + ms(e99) + "     (target p50 ≤ 3 ms)")
print(column("  ratio exec / bwrap one-shot", w) + column(ratio(e50, b50), 11) + ratio(e99, b99))
print("load average at the end: \(loadAverage.map { String(($0 * 100).rounded() / 100) }.joined(separator: " "))")
