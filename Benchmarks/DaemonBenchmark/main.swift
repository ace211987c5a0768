// The whole daemon, client to recorded result: the release sandboxd (embedded PostgreSQL, level-1
// engine) started in a temporary directory, driven over its Unix socket with HTTP/1.1.
//
// 1. One-shot `POST /v1/run {"command": ["/bin/true"]}` (the answer comes after its record is
//    committed) against standalone bubblewrap running /bin/true with comparable isolation, run
//    alternately: p50 and p90, and the ratio (target p50 ≤ 1.0×). The level-1 engine called
//    directly in this process runs alongside, so the daemon's own share (HTTP, JSON, admission,
//    the record's commit) is the difference between the two. Each round starts after a 30 ms
//    pause, as an agent's tool calls come with a pause between them: the daemon's pool of
//    pre-built one-shot sandboxes (sandbox.pool_size) is refilled while idle, and no work of the
//    daemon's overlaps the next round's baseline. A third daemon run per round finds the pool
//    used up (two per policy by default) and shows the latency without it. How many runs found a
//    pre-built sandbox is printed from /metrics. Part 2 runs back to back, where the pool is
//    rarely refilled.
// 2. Sustained recorded runs per second at concurrency 2, 8 and 32 (one keep-alive connection per
//    client) against bwrap runs per second at the same concurrency (target ≥ 300 runs/s); the
//    rows in agent_executions are counted afterwards and must match the answered runs.
// 3. The daemon's resident memory: idle after start, after the load, idle again.
//
// Run by Benchmarks/run (`make bench`), as root, with bubblewrap and PostgreSQL 15 installed.
// BENCH_ITERATIONS (default 200) and BENCH_SECONDS (default 5) scale it.
import BenchmarkSupport
import Foundation
import LinuxSandbox
import SandboxCore

#if canImport(Glibc)
import Glibc
#endif

// MARK: Helpers

func ms(_ seconds: Double) -> String { String(format: "%7.2f ms", seconds * 1000) }
func ratio(_ a: Double, _ b: Double) -> String { String(format: "%.2f×", a / b) }

func fail(_ message: String) -> Never {
    print("daemon benchmark: \(message)")
    exit(1)
}

/// Starts `argv` with stdin and stdout on /dev/null and stderr to `log` (nil: /dev/null).
func spawn(_ argv: [String], log: String? = nil) -> pid_t? {
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, log ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
    let cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    guard posix_spawn(&pid, argv[0], &actions, nil, cargs, environ) == 0 else { return nil }
    return pid
}

func waitFor(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

func spawnAndWait(_ argv: [String]) -> Bool {
    guard let pid = spawn(argv) else { return false }
    return waitFor(pid) == 0
}

/// Resident set size of `pid` in KiB (VmRSS).
func residentKiB(_ pid: pid_t) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }
    return nil
}

/// The first three fields of /proc/loadavg (other work on the machine skews every figure here).
func loadAverage() -> String {
    let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?"
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

func mib(_ kib: Int?) -> String { kib.map { String(format: "%.1f MiB", Double($0) / 1024) } ?? "?" }

/// One keep-alive HTTP/1.1 connection on a Unix socket, blocking. Content-Length answers only
/// (all the daemon sends for non-streamed requests).
final class Connection {
    let fd: Int32
    private var buffer: [UInt8] = []

    init?(path: String) {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { close(fd); return nil }
    }

    deinit { close(fd) }

    /// Sends one request and returns the status and body, or nil when the connection failed.
    func request(_ method: String, _ path: String, json: String? = nil) -> (status: Int, body: String)? {
        let body = Array((json ?? "").utf8)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(body.count)\r\n"
        if json != nil { head += "Content-Type: application/json\r\n" }
        let message = Array((head + "\r\n").utf8) + body
        var offset = 0
        while offset < message.count {
            let written = message.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard written > 0 else { return nil }
            offset += written
        }
        guard let headerEnd = readUntilHeaderEnd() else { return nil }
        let headerText = String(decoding: buffer[..<headerEnd], as: UTF8.self)
        buffer.removeFirst(headerEnd + 4)
        let lines = headerText.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.split(separator: " ").count > 1,
              let status = Int(statusLine.split(separator: " ")[1]) else { return nil }
        var length = 0
        for line in lines.dropFirst() where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
        }
        while buffer.count < length { guard fill() else { return nil } }
        let text = String(decoding: buffer[..<length], as: UTF8.self)
        buffer.removeFirst(length)
        return (status, text)
    }

    private func readUntilHeaderEnd() -> Int? {
        var searched = 0
        while true {
            if buffer.count >= 4 {
                var index = max(0, searched - 3)
                while index + 4 <= buffer.count {
                    if buffer[index] == 13, buffer[index + 1] == 10, buffer[index + 2] == 13, buffer[index + 3] == 10 { return index }
                    index += 1
                }
                searched = buffer.count
            }
            guard fill() else { return nil }
        }
    }

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return false }
        buffer.append(contentsOf: chunk[..<count])
        return true
    }
}

/// Counts shared by the load threads.
final class LoadCounters: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var ok = 0
    private(set) var failed = 0
    private(set) var latencies: [Double] = []
    private(set) var firstFailure: String?

    func add(ok: Int, failed: Int, latencies: [Double], failure: String?) {
        lock.lock()
        self.ok += ok
        self.failed += failed
        self.latencies += latencies
        if firstFailure == nil { firstFailure = failure }
        lock.unlock()
    }
}

/// The highest VmRSS of a process, sampled every 200 ms while started.
final class PeakSampler: @unchecked Sendable {
    private let lock = NSLock()
    private let pid: pid_t
    private var highest = 0
    private var running = false

    init(pid: pid_t) { self.pid = pid }

    var peak: Int { lock.withLock { highest } }

    func start() {
        lock.withLock { running = true }
        Thread {
            while self.lock.withLock({ self.running }) {
                if let rss = residentKiB(self.pid) { self.lock.withLock { self.highest = max(self.highest, rss) } }
                usleep(200_000)
            }
        }.start()
    }

    func stop() { lock.withLock { running = false } }
}

/// Runs `body` on `count` threads at once until `seconds` pass; returns the wall time used.
func runConcurrently(_ count: Int, seconds: Double, _ body: @escaping @Sendable (_ deadline: Double) -> Void) -> Double {
    let group = DispatchGroup()
    let start = now()
    let deadline = start + seconds
    for _ in 0..<count {
        group.enter()
        let thread = Thread {
            body(deadline)
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
    return now() - start
}

// MARK: Setup

guard geteuid() == 0 else { fail("needs root") }
let iterations = environmentInt("BENCH_ITERATIONS", 200)
let loadSeconds = Double(environmentInt("BENCH_SECONDS", 5))
let warmup = 20
let concurrencies = [2, 8, 32]

guard let bwrapPath = findBwrap() else {
    fail("bubblewrap is not installed (apt-get install bubblewrap)")
}
let psql = "/usr/lib/postgresql/15/bin/psql"
guard access(psql, X_OK) == 0 else { fail("PostgreSQL 15 is not installed (apt-get install postgresql-15)") }
let cgroupRoot = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].first { (path: String) in
    access(path + "/cgroup.procs", F_OK) == 0 && access(path + "/cgroup.subtree_control", F_OK) == 0
}
guard let cgroupRoot else { fail("no cgroup2 mount") }
let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
let daemonPath = executable.deletingLastPathComponent().appendingPathComponent("sandboxd").path
guard access(daemonPath, X_OK) == 0 else { fail("\(daemonPath) is missing: swift build -c release --product sandboxd") }

// The same isolation bwrap is asked for as in SandboxBenchmark.
let bwrap = bwrapArguments(bwrapPath, command: ["/bin/true"])

var template = Array("/tmp/sandboxd-daemon-bench-XXXXXX".utf8CString)
guard let made = mkdtemp(&template) else { fail("mkdtemp: \(String(cString: strerror(errno)))") }
let directory = String(cString: made)
chmod(directory, 0o755)
let socketPath = directory + "/run/sandboxd.sock"
let configPath = directory + "/sandboxd.yaml"
let logPath = directory + "/daemon.log"
// Admission limits above the highest concurrency; everything else is the shipped default
// (log level info, default policy, embedded PostgreSQL with its default pool).
try! """
state_directory: \(directory)/state
socket:
  path: \(socketPath)
  group: root
resources:
  enforcement: best-effort
  cgroup_root: \(cgroupRoot)
sandbox:
  max_sandboxes: 256
  max_sandboxes_per_uid: 256
shutdown_grace_period: 5
""".write(toFile: configPath, atomically: true, encoding: .utf8)

func removeDirectory() { _ = spawnAndWait(["/bin/rm", "-rf", directory]) }

print("daemon benchmark: \(daemonPath)")
print("load average at start: \(loadAverage())")
print("baseline: \(bwrap.joined(separator: " "))")
guard let daemon = spawn([daemonPath, "--config", configPath], log: logPath) else { fail("cannot start \(daemonPath)") }
func daemonLog() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
func stopDaemon() {
    kill(daemon, SIGTERM)
    _ = waitFor(daemon)
}
var started = false
for _ in 0..<1200 {
    if Connection(path: socketPath) != nil { started = true; break }
    var status: Int32 = 0
    if waitpid(daemon, &status, WNOHANG) == daemon { print(daemonLog()); removeDirectory(); fail("sandboxd exited early") }
    usleep(50_000)
}
guard started else { stopDaemon(); print(daemonLog()); removeDirectory(); fail("sandboxd did not start") }

// Idle: after start-up settles (the first seconds include migrations and the pool's connections).
sleep(3)
let rssIdle = residentKiB(daemon)

@Sendable func runOnce(_ connection: Connection) -> String? {
    guard let (status, body) = connection.request("POST", "/v1/run", json: #"{"command": ["/bin/true"]}"#) else { return "connection failed" }
    guard status == 200, body.contains(#""status":"ok""#), body.contains(#""exit_code":0"#) else { return "HTTP \(status): \(body)" }
    return nil
}

// MARK: 1. One-shot latency

guard let keepAlive = Connection(path: socketPath) else { stopDaemon(); fail("connect \(socketPath)") }
for _ in 0..<warmup {
    _ = spawnAndWait(bwrap)
    if let problem = runOnce(keepAlive) { stopDaemon(); print(daemonLog()); removeDirectory(); fail("warm-up run failed: \(problem)") }
}
// The engine alone, as the daemon calls it (its own cgroup subtree, so it never meets the daemon's).
let engineTag = "sandboxd-daemon-bench-engine-\(getpid())"
let engine = try! LinuxSandboxEngine(configuration: LinuxSandboxConfiguration(
    cgroupRoot: cgroupRoot, cgroupSubtree: engineTag, stateDirectory: directory + "/engine", idBase: 2_000_000))
func engineSpec() -> SandboxSpec {
    // What the daemon asks of the engine for this request: the default limits, best-effort here.
    var limits = ResourceLimits()
    limits.executionTimeout = 30
    return SandboxSpec(id: "bench-\(UInt64.random(in: 0..<UInt64.max))", limits: limits, enforcement: .bestEffort)
}
func policySpec() -> SandboxSpec {
    var spec = engineSpec()
    spec.limits.memory = .mebibytes(512); spec.limits.cpu = 0.5; spec.limits.pids = 256; spec.limits.tmpfsSize = .mebibytes(64)
    spec.maskedPaths = ["/etc/shadow", "/etc/gshadow", "/root", "/home"]
    return spec
}
var policyTimes: [Double] = [], readyTimes: [Double] = [], emptyPoolTimes: [Double] = []
let truth = ExecRequest(["/bin/true"])
for _ in 0..<warmup { _ = try? await engine.run(engineSpec(), truth) }
var bwrapTimes: [Double] = [], keepAliveTimes: [Double] = [], freshTimes: [Double] = [], engineTimes: [Double] = []
for _ in 0..<iterations {
    usleep(30_000)
    let e0 = now()
    guard (try? await engine.run(engineSpec(), truth))?.exitCode == 0 else { stopDaemon(); removeDirectory(); fail("engine run failed") }
    engineTimes.append(now() - e0)
    let p0 = now()
    guard (try? await engine.run(policySpec(), truth))?.exitCode == 0 else { stopDaemon(); removeDirectory(); fail("engine run failed") }
    policyTimes.append(now() - p0)
    // What a run that finds a pre-built sandbox costs the engine: one exec into it (built and destroyed untimed).
    guard let ready = try? await engine.create(policySpec()) else { stopDaemon(); removeDirectory(); fail("engine create failed") }
    let r0 = now()
    guard (try? await ready.exec(truth))?.exitCode == 0 else { stopDaemon(); removeDirectory(); fail("engine exec failed") }
    readyTimes.append(now() - r0)
    await ready.destroy()
    var t0 = now()
    guard spawnAndWait(bwrap) else { stopDaemon(); removeDirectory(); fail("bwrap failed") }
    bwrapTimes.append(now() - t0)
    t0 = now()
    if let problem = runOnce(keepAlive) { stopDaemon(); removeDirectory(); fail("run failed: \(problem)") }
    keepAliveTimes.append(now() - t0)
    t0 = now()
    guard let fresh = Connection(path: socketPath) else { stopDaemon(); removeDirectory(); fail("connect failed") }
    if let problem = runOnce(fresh) { stopDaemon(); removeDirectory(); fail("run failed: \(problem)") }
    freshTimes.append(now() - t0)
    // The round's third run finds the pool used up (two per policy by default): the path every run takes without it.
    t0 = now()
    if let problem = runOnce(keepAlive) { stopDaemon(); removeDirectory(); fail("run failed: \(problem)") }
    emptyPoolTimes.append(now() - t0)
}
let b50 = percentile(bwrapTimes, 50), b90 = percentile(bwrapTimes, 90)
let k50 = percentile(keepAliveTimes, 50), k90 = percentile(keepAliveTimes, 90)
let f50 = percentile(freshTimes, 50), f90 = percentile(freshTimes, 90)
let e50 = percentile(engineTimes, 50), e90 = percentile(engineTimes, 90)
engine.releaseSubtree()
print("")
print("one-shot /bin/true, \(iterations) runs each after \(warmup) warm-up runs, alternating")
print("                                            p50         p90")
print("  bwrap (baseline)                     \(ms(b50))  \(ms(b90))")
print("  sandboxd, keep-alive connection      \(ms(k50))  \(ms(k90))")
print("  sandboxd, new connection per run     \(ms(f50))  \(ms(f90))")
print("  sandboxd, keep-alive, pool used up    \(ms(percentile(emptyPoolTimes, 50)))  \(ms(percentile(emptyPoolTimes, 90)))")
print("  engine alone (LinuxSandbox library)  \(ms(e50))  \(ms(e90))")
print("  engine, default policy's spec         \(ms(percentile(policyTimes, 50)))  \(ms(percentile(policyTimes, 90)))")
print("  engine, exec into a pre-built sandbox \(ms(percentile(readyTimes, 50)))  \(ms(percentile(readyTimes, 90)))")
print("  ratio keep-alive / bwrap             \(ratio(k50, b50))       \(ratio(k90, b90))     (target p50 ≤ 1.0×)")
print("  ratio new connection / bwrap         \(ratio(f50, b50))       \(ratio(f90, b90))")
print("  ratio pool used up / bwrap           \(ratio(percentile(emptyPoolTimes, 50), b50))       \(ratio(percentile(emptyPoolTimes, 90), b90))")
print("  ratio engine alone / bwrap           \(ratio(e50, b50))       \(ratio(e90, b90))")
print("  daemon's own share of a run (keep-alive p50 − engine p50, the pre-built exec when most runs took one): \(ms(k50 - e50)) / \(ms(k50 - percentile(readyTimes, 50)))")
if let (_, metricsText) = keepAlive.request("GET", "/metrics") {
    let pool = metricsText.split(separator: "\n").filter { $0.hasPrefix("sandboxd_one_shot_pool_total") }
    print("  pre-built one-shot sandboxes (warm-up included): " + (pool.isEmpty ? "none used" : pool.joined(separator: ", ")))
}

// MARK: 2. Sustained rate

print("")
print("sustained runs/s over \(Int(loadSeconds)) s per step (each client: one keep-alive connection, back to back)")
print("  concurrency   bwrap runs/s   sandboxd recorded runs/s   ratio    sandboxd p50 / p90          failures")
var totalAnswered = 3 * iterations + warmup
let peak = PeakSampler(pid: daemon)
let bwrapArgv = bwrap
let loadSocket = socketPath
for concurrency in concurrencies {
    let bwrapCounters = LoadCounters()
    let bwrapWall = runConcurrently(concurrency, seconds: loadSeconds) { deadline in
        var ok = 0, failed = 0
        while now() < deadline { if spawnAndWait(bwrapArgv) { ok += 1 } else { failed += 1 } }
        bwrapCounters.add(ok: ok, failed: failed, latencies: [], failure: nil)
    }
    let daemonCounters = LoadCounters()
    peak.start()
    let daemonWall = runConcurrently(concurrency, seconds: loadSeconds) { deadline in
        var ok = 0, failed = 0, latencies: [Double] = [], failure: String?
        guard let connection = Connection(path: loadSocket) else {
            daemonCounters.add(ok: 0, failed: 1, latencies: [], failure: "connect failed")
            return
        }
        while now() < deadline {
            let t0 = now()
            if let problem = runOnce(connection) {
                failed += 1
                failure = failure ?? problem
                if problem == "connection failed" { break }
            } else {
                ok += 1
                latencies.append(now() - t0)
            }
        }
        daemonCounters.add(ok: ok, failed: failed, latencies: latencies, failure: failure)
    }
    peak.stop()
    totalAnswered += daemonCounters.ok
    let bwrapRate = Double(bwrapCounters.ok) / bwrapWall
    let daemonRate = Double(daemonCounters.ok) / daemonWall
    print(String(format: "  %11d   %12.0f   %24.0f   %5.2f×   %@ / %@   %d",
                 concurrency, bwrapRate, daemonRate, daemonRate / bwrapRate,
                 ms(percentile(daemonCounters.latencies, 50)), ms(percentile(daemonCounters.latencies, 90)), daemonCounters.failed))
    if let failure = daemonCounters.firstFailure { print("    first failure: \(failure.prefix(300))") }
}
print("  (target ≥ 300 recorded runs/s)")

// Every answered run has its row: the answer is sent after the commit.
let password = (try? String(contentsOfFile: directory + "/state/postgres/superuser.password", encoding: .utf8))?
    .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
let psqlOutput = directory + "/psql.out"
var actions = posix_spawn_file_actions_t()
posix_spawn_file_actions_init(&actions)
posix_spawn_file_actions_addopen(&actions, 1, psqlOutput, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
var psqlPID: pid_t = 0
let psqlArgs: [UnsafeMutablePointer<CChar>?] = ([psql, "-h", directory + "/state/postgres/socket", "-U", "postgres", "-d", "sandboxd", "-At", "-c",
                "SELECT count(*) FILTER (WHERE status = 'ok') FROM agent_executions"] as [String]).map { strdup($0) } + [nil]
let psqlEnvironment: [UnsafeMutablePointer<CChar>?] = (["PGPASSWORD=\(password)", "PATH=/usr/bin:/bin"] as [String]).map { strdup($0) } + [nil]
if posix_spawn(&psqlPID, psql, &actions, nil, psqlArgs, psqlEnvironment) == 0 { _ = waitFor(psqlPID) }
posix_spawn_file_actions_destroy(&actions)
let rows = Int(((try? String(contentsOfFile: psqlOutput, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
print("  rows with status ok in agent_executions: \(rows.map(String.init) ?? "?") for \(totalAnswered) answered runs"
      + (rows == totalAnswered ? " (every answered run is recorded)" : " (MISMATCH)"))

// MARK: 3. Memory

sleep(3)
let rssAfter = residentKiB(daemon)
print("")
print("sandboxd resident memory (VmRSS)")
print("  idle after start                     \(mib(rssIdle))   (target < 30 MiB)")
print("  peak under load                      \(mib(peak.peak))")
print("  idle after the load                  \(mib(rssAfter))")

print("load average at the end: \(loadAverage())")

stopDaemon()
removeDirectory()
if rows != totalAnswered { exit(1) }
