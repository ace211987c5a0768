import LinuxSandbox
import SandboxCore
import Synchronization
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

    /// `seccompProgram`: an exported program the engine uses instead of compiling its own.
    init(seccompProgram: [UInt8]? = nil) throws {
        let tag = "\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        subtree = "sandboxd-test-\(tag)"
        stateDirectory = "/tmp/sandboxd-test-\(tag)"
        var configuration = LinuxSandboxConfiguration(
            cgroupRoot: Host.cgroupRoot!, cgroupSubtree: subtree, stateDirectory: stateDirectory,
            idBase: Self.idRanges.next(), idCount: Self.idRangeSize)
        configuration.seccompProgram = seccompProgram
        engine = try LinuxSandboxEngine(configuration: configuration)
    }

    /// Every test engine has a uid range of its own, so "no process runs as one of its uids" is
    /// about this test's sandboxes only: not the hostile suite's (400000…), not another test
    /// process's on this machine (a random block of 2^24 … 2^24 + 2^31).
    static let idRangeSize: UInt32 = 4096
    static let idRanges = IDRanges()

    final class IDRanges: Sendable {
        private let first = UInt32(1 << 24) + UInt32.random(in: 0..<(1 << 19)) * TestEngine.idRangeSize
        private let used = Mutex<UInt32>(0)
        func next() -> UInt32 { first + used.withLock { n in defer { n += 1 }; return n } * TestEngine.idRangeSize }
    }

    /// A test that threw before `finish()` still leaves nothing behind (sandboxes it created are
    /// destroyed by their own handles' deinit first).
    deinit {
        _ = rmdir(Host.cgroupRoot! + "/" + subtree)
        _ = rmdir(stateDirectory + "/rootfs")
        _ = rmdir(stateDirectory)
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

/// The descriptors of this process that belong to `t`'s engine, as `fd→target` (pidfds with their
/// pidfs inode). Every suite of the test process runs at once and opens and closes descriptors of
/// its own, so a process-wide count proves nothing; these are the kinds the engine could leak:
/// - anything under the engine's own cgroup subtree or state directory (cgroup directory fds,
///   the new-root directory, mount points);
/// - pidfds of processes in that cgroup subtree (every process an engine starts is created there);
/// - pidfds of processes that are gone (`Pid: -1`): the engine's processes are all reaped by the
///   time a check runs, so a pidfd of a reaped process still open after the settle time is held
///   by someone who forgot it.
func engineDescriptors(of t: TestEngine) -> Set<String> {
    var found = Set<String>()
    let subtreePath = Host.cgroupRoot! + "/" + t.subtree
    for (fd, target) in openDescriptors() {
        if target.hasPrefix(subtreePath) || target.hasPrefix(t.stateDirectory) {
            found.insert("\(fd)→\(target)")
            continue
        }
        guard target.contains("[pidfd]"),
              let info = try? readAll("/proc/self/fdinfo/\(fd)") else { continue }
        let fields = fdinfoFields(String(decoding: info, as: UTF8.self))
        guard let pid = fields["Pid"].flatMap({ Int32($0) }) else { continue }
        let inode = fields["ino"] ?? "?"
        if pid == -1 {
            found.insert("\(fd)→pidfd(ino \(inode), reaped)")
        } else if let cgroup = try? readAll("/proc/\(pid)/cgroup"),
                  String(decoding: cgroup, as: UTF8.self).contains("/" + t.subtree + "/") {
            found.insert("\(fd)→pidfd(ino \(inode), pid \(pid) in the engine's cgroup)")
        }
    }
    return found
}

/// True when no descriptor of `t`'s engine is open that was not open at `before` (a few looks:
/// the engine drops its last references on its own threads a moment after a result is delivered).
func engineDescriptorsSettle(_ t: TestEngine, since before: Set<String>) async -> Bool {
    var leaked = engineDescriptors(of: t).subtracting(before)
    for _ in 0..<20 where !leaked.isEmpty {
        usleep(100_000)   // not Task.sleep: its first use opens a timerfd of its own
        leaked = engineDescriptors(of: t).subtracting(before)
    }
    if !leaked.isEmpty { print("descriptors the engine left open: \(leaked.sorted())") }
    return leaked.isEmpty
}

private func fdinfoFields(_ text: String) -> [String: String] {
    var fields: [String: String] = [:]
    for line in text.split(separator: "\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        fields[String(line[..<colon])] = String(line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" }))
    }
    return fields
}

/// `fd → target` for every open descriptor.
func openDescriptors() -> [(Int32, String)] {
    var result: [(Int32, String)] = []
    guard let dir = opendir("/proc/self/fd") else { return [] }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard let fd = Int32(name) else { continue }
        var buffer = [CChar](repeating: 0, count: 512)
        let n = readlink("/proc/self/fd/" + name, &buffer, 511)
        result.append((fd, n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"))
    }
    return result
}

/// Parent of every engine suite: sandboxes are created one test at a time, so 2-core CI machines
/// are not swamped. Other test targets still run alongside: checks look only at what the test's
/// own engine made (its cgroup subtree, state directory, uid range, pidfds).
@Suite("LinuxSandbox", .serialized)
struct LinuxSandboxTests {}

