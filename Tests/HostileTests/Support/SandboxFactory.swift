import Foundation
import Glibc
import LinuxSandbox
import SandboxCore

/// A level-1 engine of its own for one hostile scenario: its own cgroup subtree and state directory,
/// both removed at the end, so "no cgroup left behind" is checked on a subtree nothing else uses.
final class ScenarioEngine: Sendable {
    let engine: LinuxSandboxEngine
    /// `<cgroup2 mount>/<subtree>`: one directory per live sandbox appears in it.
    let cgroupSubtreePath: String
    let stateDirectory: String

    /// The cgroup2 mount: /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones
    /// such as the build machines (host-facts.md), where it offers grouping and cgroup.kill but no
    /// limit controllers.
    static let cgroupRoot: String? = {
        for path in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        where access(path + "/cgroup.procs", F_OK) == 0 && access(path + "/cgroup.subtree_control", F_OK) == 0 {
            return path
        }
        return nil
    }()

    init(tag: String) throws {
        guard let root = Self.cgroupRoot else { throw HostileTestError("no cgroup2 mount on this host") }
        let subtree = "sandboxd-hostile-\(tag)"
        stateDirectory = "/tmp/sandboxd-hostile-state-\(tag)"
        cgroupSubtreePath = root + "/" + subtree
        do {
            // A uid range apart from the engine's own tests, which may run at the same time on this machine.
            engine = try LinuxSandboxEngine(configuration: LinuxSandboxConfiguration(
                cgroupRoot: root, cgroupSubtree: subtree, stateDirectory: stateDirectory,
                idBase: 400_000, idCount: 65_536))
        } catch {
            // The engine may have prepared its subtree and state directory before failing.
            for dir in [root + "/" + subtree, stateDirectory + "/rootfs", stateDirectory] { rmdir(dir) }
            throw error
        }
    }

    /// Sandboxes whose cgroup still exists.
    var liveCgroups: [String] { engine.listCgroups() }

    /// Removes the subtree and the state directory; returns what could not be removed.
    func finish() -> [String] {
        var left: [String] = liveCgroups.map { "cgroup \(cgroupSubtreePath)/\($0)" }
        if rmdir(cgroupSubtreePath) != 0 && errno != ENOENT { left.append("\(cgroupSubtreePath): \(errnoText())") }
        for dir in [stateDirectory + "/rootfs", stateDirectory] where rmdir(dir) != 0 && errno != ENOENT {
            left.append("\(dir): \(errnoText())")
        }
        return left
    }

    /// Descriptors only this engine would hold: anything in its cgroup subtree or state directory,
    /// and pidfds of its processes (all created in its subtree) or of processes already reaped
    /// (the engine reaps everything it starts). Pidfds of live processes elsewhere belong to other
    /// suites running in this process at the same time.
    func isEngineDescriptor(_ fd: Int32, _ target: String) -> Bool {
        if target.hasPrefix(cgroupSubtreePath) || target.hasPrefix(stateDirectory) || target.contains("sandboxd-seccomp") {
            return true
        }
        guard target.contains("[pidfd]"),
              let info = FileManager.default.contents(atPath: "/proc/self/fdinfo/\(fd)") else { return false }
        let pidLine = String(decoding: info, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("Pid:") }
        guard let pid = pidLine.flatMap({ Int32($0.dropFirst(4).trimmingCharacters(in: .whitespaces)) }) else { return false }
        if pid == -1 { return true }
        guard let cgroup = FileManager.default.contents(atPath: "/proc/\(pid)/cgroup") else { return false }
        let subtree = "/" + (cgroupSubtreePath as NSString).lastPathComponent + "/"
        return String(decoding: cgroup, as: UTF8.self).contains(subtree)
    }
}
