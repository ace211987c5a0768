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
/// so tests share guests where that is sound. Swift Testing has no suite-wide teardown: when the
/// test process exits, the agent sockets close and every guest powers itself off.
actor SharedVMEngine {
    static let shared = SharedVMEngine()
    private var engine: VMSandboxEngine?
    private var serving: VMSandbox?
    let stateDirectory = NSTemporaryDirectory() + "sandboxd-vm-test"
    /// Fixed, so that the next run's start reaps whatever a killed run left.
    let cgroupSubtree = "sandboxd-vm-test"

    func get() async throws -> VMSandboxEngine {
        if let engine { return engine }
        let started = Date()
        let engine = try await VMSandboxEngine.start(configuration: .init(
            stateDirectory: stateDirectory, imageCacheDirectory: VMTestEnvironment.imageCache,
            cgroupSubtree: cgroupSubtree, memoryMiB: 512, cpus: 1, accelerator: .tcg, poolSize: 1,
            bootTimeout: 240, enableTestHooks: true)) { print("vm test: \($0)") }
        print(String(format: "vm test: engine ready in %.1f s (%@)", Date().timeIntervalSince(started), engine.accelerator.description))
        self.engine = engine
        return engine
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
