import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the host can do, decided once: tests that need root and user namespaces skip with the
/// reason printed when they cannot run.
enum Host {
    static let isRoot = geteuid() == 0

    /// The cgroup2 mount: /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
    static let cgroupRoot: String? = {
        for path in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where access(path + "/cgroup.procs", F_OK) == 0
            && access(path + "/cgroup.subtree_control", F_OK) == 0 {
            return path
        }
        return nil
    }()

    static var canRunSandboxes: Bool {
        if !isRoot { print("skipping: the sandbox engine tests need root"); return false }
        if cgroupRoot == nil { print("skipping: no cgroup2 mount found"); return false }
        return true
    }
}

/// An engine in its own cgroup subtree and state directory, removed afterwards.
final class TestEngine: Sendable {
    let engine: LinuxSandboxEngine
    let subtree: String
    let stateDirectory: String

    init() throws {
        let tag = "\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        subtree = "sandboxd-test-\(tag)"
        stateDirectory = "/tmp/sandboxd-test-\(tag)"
        engine = try LinuxSandboxEngine(configuration: LinuxSandboxConfiguration(
            cgroupRoot: Host.cgroupRoot!, cgroupSubtree: subtree, stateDirectory: stateDirectory))
    }

    /// Removes the subtree and state directory; returns false if anything was left behind.
    func finish() async -> Bool {
        let leftovers = engine.listCgroups()
        let subtreePath = Host.cgroupRoot! + "/" + subtree
        let removedCgroup = rmdir(subtreePath) == 0
        let removedRoot = rmdir(stateDirectory + "/rootfs") == 0
        let removedState = rmdir(stateDirectory) == 0
        return leftovers.isEmpty && removedCgroup && removedRoot && removedState
    }

    static func spec(_ name: String = "t", limits: ResourceLimits = .unlimited, enforcement: LimitEnforcement = .strict,
                     mounts: [MountSpec] = []) -> SandboxSpec {
        SandboxSpec(id: "\(name)-\(UInt32.random(in: 0..<UInt32.max))", limits: limits, enforcement: enforcement, mounts: mounts)
    }
}

extension ResourceLimits {
    /// No cgroup-controller limits: runs on hosts without controllers in strict mode.
    static var unlimited: ResourceLimits {
        ResourceLimits(memory: nil, cpu: nil, pids: nil, executionTimeout: 30)
    }
}

extension ExecResult {
    var out: String { String(decoding: stdout, as: UTF8.self) }
    var err: String { String(decoding: stderr, as: UTF8.self) }
}

nonisolated(unsafe) var fdSnapshot = ""

/// Counts open descriptors and remembers them, for `fdCountSettles` to name what changed.
func takeFDSnapshot() -> Int {
    fdSnapshot = describeFDs()
    return openFDCount()
}

func openFDCount() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count - 3   // ., .., and the directory's own fd
}

/// Parent of every engine suite: sandboxes are created one test at a time, so process-wide
/// checks (open descriptors, cgroups) see only the test's own doing, and 2-core CI machines are
/// not swamped.
@Suite("LinuxSandbox", .serialized)
struct LinuxSandboxTests {}

/// True when the process's descriptor count returns to `expected` (other test targets may
/// briefly hold descriptors of their own, so a few looks are taken).
func fdCountSettles(at expected: Int) async -> Bool {
    for _ in 0..<20 {
        if openFDCount() == expected { return true }
        usleep(100_000)   // not Task.sleep: its first use opens a timerfd of its own
    }
    let before = Set(fdSnapshot.split(separator: " "))
    let now = Set(describeFDs().split(separator: " "))
    print("open descriptors: expected \(expected), have \(openFDCount()); new: \(now.subtracting(before).sorted()) gone: \(before.subtracting(now).sorted())")
    return false
}

/// `fd → target` for every open descriptor, for failure messages.
func describeFDs() -> String {
    var parts: [String] = []
    guard let dir = opendir("/proc/self/fd") else { return "" }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        if name.hasPrefix(".") { continue }
        var buffer = [CChar](repeating: 0, count: 512)
        let n = readlink("/proc/self/fd/" + name, &buffer, 511)
        parts.append(name + "→" + (n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"))
    }
    return parts.joined(separator: " ")
}
