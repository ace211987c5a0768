import Foundation
import SandboxCore
import Testing
@testable import VMSandbox

/// Level-3 tests need root (cgroups, namespaces, setpriv), QEMU and busybox-static.
enum VMTestEnvironment {
    static var unavailableReason: String? {
        if getuid() != 0 { return "level-3 tests need root (jailed QEMU: cgroup, namespaces, uid switch)" }
        if access("/usr/bin/qemu-system-x86_64", X_OK) != 0 { return "qemu-system-x86_64 is missing (make test-deps installs qemu-system-x86)" }
        if access("/bin/busybox", X_OK) != 0 { return "busybox is missing (make test-deps installs busybox-static)" }
        return nil
    }

    static var available: Bool {
        if let reason = unavailableReason {
            print("VMSandboxTests skipped: \(reason)")
            return false
        }
        return true
    }

    /// The checkout's `.build-guest` (shared with the guest test harness's cache; not in git).
    static var imageCache: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build-guest").path
    }
}

/// One engine (TCG, pool of 1, test hooks on) for the whole suite: boots cost ~6–15 s under TCG,
/// so tests share guests where that is sound. Swift Testing has no suite-wide teardown: an exit
/// handler kills this run's guests and removes its cgroup subtree and state directory.
actor SharedVMEngine {
    static let shared = SharedVMEngine()
    private var engine: VMSandboxEngine?
    private var serving: VMSandbox?
    /// Per test process: two runs on one host (two checkouts, two CI jobs) must not reap each other's guests.
    static let runName = runPrefix + String(getpid())
    static let runPrefix = "sandboxd-vm-test-run-"
    let stateDirectory = NSTemporaryDirectory() + SharedVMEngine.runName
    let cgroupSubtree = SharedVMEngine.runName

    func get() async throws -> VMSandboxEngine {
        if let engine { return engine }
        let started = Date()
        Self.removeDeadRuns()
        // At exit, whether the suite passed or not (a killed run is removed by the next run's removeDeadRuns).
        atexit { SharedVMEngine.removeRun(SharedVMEngine.runName) }
        let engine = try await VMSandboxEngine.start(configuration: .init(
            stateDirectory: stateDirectory, imageCacheDirectory: VMTestEnvironment.imageCache,
            cgroupSubtree: cgroupSubtree, memoryMiB: 512, cpus: 1, accelerator: .tcg, poolSize: 1,
            bootTimeout: 240, enableTestHooks: true)) { print("vm test: \($0)") }
        print(String(format: "vm test: engine ready in %.1f s (%@)", Date().timeIntervalSince(started), engine.accelerator.description))
        self.engine = engine
        return engine
    }

    /// Removes what runs whose test process is gone left: their guests (killed), cgroup subtrees and state directories.
    static func removeDeadRuns() {
        guard let root = VMSandboxEngine.detectCgroupRoot() else { return }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix(runPrefix) {
            guard let pid = pid_t(entry.dropFirst(runPrefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            removeRun(entry)
        }
    }

    /// Kills a run's guests (their VM cgroups), then removes its cgroup subtree and state directory.
    static func removeRun(_ name: String) {
        if let root = VMSandboxEngine.detectCgroupRoot() {
            let parent = root + "/" + name
            for vm in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where vm.hasPrefix("vm-") {
                JailedQEMU.killCgroup(parent + "/" + vm)
                JailedQEMU.removeCgroup(parent + "/" + vm)
            }
            rmdir(parent)
        }
        try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + name)
    }

    /// A long-lived guest that the read-only and round-trip tests share (64 MiB memory limit inside).
    func servingSandbox() async throws -> VMSandbox {
        if let serving, serving.state == .running { return serving }
        let engine = try await get()
        let started = Date()
        let sandbox = try await engine.create(SandboxSpec(id: "vmtest-serving", limits: ResourceLimits(memory: .mebibytes(64), cpu: 1, pids: 64, executionTimeout: 60)))
        print(String(format: "vm test: serving sandbox created in %.1f s (from pool: %@)", Date().timeIntervalSince(started), sandbox.fromPool ? "yes" : "no"))
        serving = sandbox
        return sandbox
    }
}

extension ExecResult {
    var out: String { String(decoding: stdout, as: UTF8.self) }
    var err: String { String(decoding: stderr, as: UTF8.self) }
}
