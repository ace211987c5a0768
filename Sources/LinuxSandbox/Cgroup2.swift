import SandboxValues
import CLinuxSandbox

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's cgroup v2 subtree: one directory per sandbox, `init` and `exec-N` leaves below it.
///
/// Layout: `<mount>/<subtree>/<sandbox id>/{init,exec-1,exec-2,…}`. Limits are written on the
/// sandbox directory so they cover init and every exec together; the leaves exist because a cgroup
/// with controllers enabled for its children may hold no processes itself, and because a per-exec
/// leaf lets a timeout kill exactly that exec's processes (including setsid'd and double-forked
/// ones: nothing inside can leave its cgroup, cgroupfs is not mounted there).
struct Cgroup2: Sendable {
    /// Where cgroup2 is mounted (`/sys/fs/cgroup`; `/sys/fs/cgroup/unified` on hybrid hosts).
    let mountPoint: String
    /// The daemon's directory below the mount point.
    let subtreePath: String

    static let limitControllers = ["cpu", "memory", "pids"]

    init(mountPoint: String, subtree: String) throws(LinuxSandboxError) {
        let type = sbx_statfs_type(mountPoint)
        guard type >= 0 else { throw .system("statfs", mountPoint, Int32(-type)) }
        // CGROUP2_SUPER_MAGIC
        guard type == 0x6367_7270 else {
            throw LinuxSandboxError(.cgroup, "\(mountPoint) is not a cgroup2 mount (set the cgroup root to where cgroup2 is mounted, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified)")
        }
        self.mountPoint = mountPoint
        self.subtreePath = subtree.isEmpty ? mountPoint : mountPoint + "/" + subtree
    }

    /// Creates the subtree and enables, at every level from the mount point down, the limit
    /// controllers the level offers. Returns the controllers sandboxes can use.
    func prepareSubtree() throws(LinuxSandboxError) -> Set<String> {
        var levels = [mountPoint]
        if subtreePath != mountPoint {
            var path = mountPoint
            for component in subtreePath.dropFirst(mountPoint.count + 1).split(separator: "/") {
                path += "/" + component
                levels.append(path)
            }
        }
        for (i, level) in levels.enumerated() {
            if i > 0, mkdir(level, 0o755) != 0, Sys.errno != EEXIST {
                throw LinuxSandboxError(.cgroup, "mkdir(\"\(level)\"): \(errnoName(Sys.errno))", errno: Sys.errno)
            }
            // The last level's subtree_control is what sandbox directories inherit.
            try enableControllers(at: level)
        }
        return controllers(at: subtreePath).intersection(Self.limitControllers)
    }

    func controllers(at path: String) -> Set<String> {
        guard let text = try? Sys.readFile(path + "/cgroup.controllers") else { return [] }
        return Set(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    }

    /// Enables every limit controller `path` offers for its children. A level that holds processes
    /// refuses (EBUSY): it is reported by the caller as a missing controller further down.
    func enableControllers(at path: String) throws(LinuxSandboxError) {
        let offered = controllers(at: path).intersection(Self.limitControllers)
        let enabled = (try? Sys.readFile(path + "/cgroup.subtree_control"))
            .map { Set($0.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)) } ?? []
        for controller in offered.subtracting(enabled).sorted() {
            try? Sys.writeFile(path + "/cgroup.subtree_control", "+" + controller)
        }
    }

    func sandboxPath(_ id: String) -> String { subtreePath + "/" + id }

    func makeDirectory(_ path: String) throws(LinuxSandboxError) {
        if mkdir(path, 0o755) != 0 {
            throw LinuxSandboxError(.cgroup, "mkdir(\"\(path)\"): \(errnoName(Sys.errno))", errno: Sys.errno)
        }
    }

    func openDirectory(_ path: String) throws(LinuxSandboxError) -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw LinuxSandboxError(.cgroup, "open(\"\(path)\"): \(errnoName(Sys.errno))", errno: Sys.errno) }
        return fd
    }

    /// Writes the spec's limits on a sandbox directory (only those whose controller is enabled).
    /// - Parameter delegate: enable the controllers for children too (a persistent sandbox's
    ///   `init` and `exec-N` leaves); a one-shot sandbox's processes live in `path` itself.
    func applyLimits(_ limits: ResourceLimits, at path: String, available: Set<String>, delegate: Bool) throws(LinuxSandboxError) {
        func set(_ file: String, _ value: String) throws(LinuxSandboxError) {
            do { try Sys.writeFile(path + "/" + file, value) } catch {
                throw LinuxSandboxError(.cgroup, "setting \(file)=\(value) on \(path): \(error.message)", errno: error.errno)
            }
        }
        if let memory = limits.memory, available.contains("memory") {
            try set("memory.max", String(memory.bytes))
            // No swap: a memory limit that spills to swap is not a memory limit.
            if Sys.exists(path + "/memory.swap.max") { try set("memory.swap.max", "0") }
        }
        if let pids = limits.pids, available.contains("pids") {
            try set("pids.max", String(pids))
        }
        if let cpu = limits.cpu, available.contains("cpu") {
            let period = 100_000
            let quota = max(1_000, Int((cpu * Double(period)).rounded()))
            try set("cpu.max", "\(quota) \(period)")
        }
        guard delegate else { return }
        let enable = available.sorted().map { "+" + $0 }
        for entry in enable { try? Sys.writeFile(path + "/cgroup.subtree_control", entry) }
    }

    /// `usage_usec` from `cpu.stat` (present in every cgroup2 directory, controller or not).
    func cpuUsageMicroseconds(_ path: String) -> UInt64? {
        guard let text = try? Sys.readFile(path + "/cpu.stat") else { return nil }
        return keyedValue(text, "usage_usec")
    }

    func memoryPeak(_ path: String) -> UInt64? {
        guard let text = try? Sys.readFile(path + "/memory.peak") else { return nil }
        return UInt64(text.trimmingCharacters(in: " \n"))
    }

    func oomKills(_ path: String) -> UInt64 {
        guard let text = try? Sys.readFile(path + "/memory.events") else { return 0 }
        return keyedValue(text, "oom_kill") ?? 0
    }

    func isPopulated(_ path: String) -> Bool {
        guard let text = try? Sys.readFile(path + "/cgroup.events") else { return false }
        return keyedValue(text, "populated") == 1
    }

    /// SIGKILLs every process in `path` and below (`cgroup.kill`, kernel ≥ 5.14).
    func kill(_ path: String) -> Bool {
        (try? Sys.writeFile(path + "/cgroup.kill", "1")) != nil
    }

    /// Waits until nothing runs in `path` (polling `cgroup.events`), up to `timeout` seconds.
    func waitUntilEmpty(_ path: String, timeout: Double) -> Bool {
        let deadline = Sys.monotonicNow() + timeout
        while isPopulated(path) {
            if Sys.monotonicNow() > deadline { return false }
            usleep(500)
        }
        return true
    }

    /// Removes `path` and every cgroup below it, deepest first. Retries EBUSY briefly: a killed
    /// task leaves its cgroup a moment after it is reported dead.
    func removeTree(_ path: String, timeout: Double = 2) -> Bool {
        // Usually a leaf (one-shot sandboxes, exec cgroups): then one rmdir is all it takes.
        if rmdir(path) == 0 || Sys.errno == ENOENT { return true }
        for entry in Sys.listDirectory(path) where entry.isDirectory {
            _ = removeTree(path + "/" + entry.name, timeout: timeout)
        }
        let deadline = Sys.monotonicNow() + timeout
        while rmdir(path) != 0 {
            let e = Sys.errno
            if e == ENOENT { return true }
            if e != EBUSY || Sys.monotonicNow() > deadline { return false }
            usleep(500)
        }
        return true
    }

    private func keyedValue(_ text: String, _ key: String) -> UInt64? {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == key { return UInt64(parts[1]) }
        }
        return nil
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        guard let first = firstIndex(where: { !chars.contains($0) }),
              let last = lastIndex(where: { !chars.contains($0) }) else { return "" }
        return String(self[first...last])
    }
}
