import Foundation
import Glibc
import LinuxSandbox
import SandboxCore
import Testing

/// One hostile test: the host state it must leave unchanged, the processes and files it may aim at,
/// and a way to run the payload in a fresh level-1 sandbox.
///
/// `HostileScenario.run { scenario in ... }` takes a snapshot of the host, starts a victim process,
/// writes a secret file only root can read, runs the body, then checks that the snapshot is unchanged,
/// the victim is alive and untouched, no sandbox cgroup was left behind and this process holds no new
/// descriptors the engine opened. Everything it creates it removes.
final class HostileScenario: @unchecked Sendable {
    let payloads: Payloads
    let victim: HostVictim
    /// A host file (0600, root) holding `secret`; nothing in a sandbox may read it.
    let secretPath: String
    let secret: String
    let engine: ScenarioEngine
    private let scratch: String

    /// Unique per scenario; goes into sandbox ids and marker process names.
    let tag: String

    private init(built: Payloads) throws {
        tag = String(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12))
        var template = Array("/tmp/sandboxd-hostile-\(tag)-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw HostileTestError("mkdtemp: \(errnoText())") }
        scratch = String(cString: dir)
        secret = "host-secret-" + UUID().uuidString
        secretPath = scratch + "/secret"
        do {
            // Searchable by the sandbox's unprivileged uid, which resolves bind sources while it builds
            // the root; the files in it keep their own modes (the secret stays 0600 root).
            chmod(scratch, 0o755)
            guard FileManager.default.createFile(atPath: secretPath, contents: Data(secret.utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw HostileTestError("cannot write \(secretPath)")
            }
            // The build cache may sit where others cannot search (a clone under /root): mount a copy.
            payloads = try built.copy(into: scratch + "/payloads")
            engine = try ScenarioEngine(tag: tag)
            victim = try HostVictim()
        } catch {
            try? FileManager.default.removeItem(atPath: scratch)
            throw error
        }
    }

    /// A host directory for this scenario's files, removed at the end.
    var scratchDirectory: String { scratch }

    /// Files whose `stat` must not change. Only files nothing else on the machine touches while tests
    /// run (not /etc/passwd or /etc/shadow, which other tests may legitimately change with useradd).
    static let watchedFiles = ["/usr/bin/ls", "/usr/bin/passwd", "/etc/hostname", "/usr"]

    /// Runs `body` with host-unchanged checks around it.
    static func run(
        watching extraFiles: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (HostileScenario) async throws -> Void
    ) async throws {
        let scenario = try HostileScenario(built: try await Payloads.shared())
        defer { scenario.tearDown() }

        let watched = watchedFiles + [scenario.secretPath] + extraFiles
        let cgroupParent = scenario.engine.cgroupSubtreePath
        let before = HostSnapshot.take(sentinels: watched, cgroupParent: cgroupParent)
        let descriptorsBefore = HostFiles.openDescriptors()

        try await body(scenario)

        // Teardown is asynchronous in places (cgroup removal after the last process is reaped): give it a moment.
        var after = HostSnapshot.take(sentinels: watched, cgroupParent: cgroupParent)
        for _ in 0..<20 where !before.differences(to: after).isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            after = HostSnapshot.take(sentinels: watched, cgroupParent: cgroupParent)
        }
        let differences = before.differences(to: after)
        #expect(differences.isEmpty, "the host changed:\n\(differences.joined(separator: "\n"))", sourceLocation: sourceLocation)
        #expect(scenario.victim.isAliveAndUntouched, "the host victim process \(scenario.victim.pid) was killed, stopped or traced",
                sourceLocation: sourceLocation)
        func leakedDescriptors() -> [Int32: String] {
            HostFiles.openDescriptors().filter { fd, target in
                descriptorsBefore[fd] == nil && scenario.engine.isEngineDescriptor(fd, target)
            }
        }
        // The engine's last references (and so its pidfds) may be dropped by its own threads a moment
        // after the result is delivered; a descriptor still open after two seconds is a leak.
        var leaked = leakedDescriptors()
        for _ in 0..<20 where !leaked.isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            leaked = leakedDescriptors()
        }
        #expect(leaked.isEmpty, "descriptors the engine left open in this process: \(leaked)", sourceLocation: sourceLocation)
        let stray = HostFiles.processes(withMarker: scenario.tag)
        #expect(stray.isEmpty, "processes of this test still running on the host: \(stray)", sourceLocation: sourceLocation)
        for pid in stray { kill(pid, SIGKILL) } // they carry this scenario's unique tag: this test started them
        let left = scenario.engine.finish()
        #expect(left.isEmpty, "the engine left behind: \(left.joined(separator: ", "))", sourceLocation: sourceLocation)
    }

    /// Runs `hostile <arguments>` one-shot in a fresh sandbox.
    func hostile(_ arguments: String..., timeout: Double = 20, stdin: [UInt8] = [], outputLimit: ByteCount = .mebibytes(1),
                 mounts: [MountSpec] = []) async throws -> PayloadRun {
        try await runInSandbox([payloads.hostile] + arguments, timeout: timeout, stdin: stdin,
                               outputLimit: outputLimit, mounts: mounts)
    }

    /// Runs any command one-shot in a fresh sandbox that has the payloads mounted.
    func runInSandbox(_ arguments: [String], timeout: Double = 20, stdin: [UInt8] = [],
                      outputLimit: ByteCount = .mebibytes(1), mounts: [MountSpec] = []) async throws -> PayloadRun {
        let spec = sandboxSpec(timeout: timeout, outputLimit: outputLimit, mounts: mounts)
        let result = try await engine.engine.run(spec, ExecRequest(arguments, stdin: stdin, timeout: timeout))
        return PayloadRun(arguments: arguments, result: result)
    }

    /// A persistent sandbox for tests that must prove something about it before the hostile step.
    func withSandbox<T: Sendable>(timeout: Double = 20, _ body: (LinuxSandbox) async throws -> T) async throws -> T {
        let sandbox = try await engine.engine.create(sandboxSpec(timeout: timeout, outputLimit: .mebibytes(1), mounts: []))
        do {
            let value = try await body(sandbox)
            await sandbox.destroy()
            return value
        } catch {
            await sandbox.destroy()
            throw error
        }
    }

    private var sandboxCount = 0
    private let countLock = NSLock()

    /// The spec every hostile run uses.
    ///
    /// This host has no cgroup v2 controllers (docs/host-facts.md), so the sandbox runs with
    /// `enforcement: .bestEffort` and no memory/cpu/pids limits: the hostile tests are about isolation,
    /// not resource limits, which are tested in the QEMU guest where the controllers exist.
    func sandboxSpec(timeout: Double, outputLimit: ByteCount, mounts: [MountSpec]) -> SandboxSpec {
        let number = countLock.withLock { sandboxCount += 1; return sandboxCount }
        let limits = ResourceLimits(memory: nil, cpu: nil, pids: nil, executionTimeout: timeout,
                                    outputLimit: outputLimit, tmpfsSize: .mebibytes(16), openFiles: 256)
        return SandboxSpec(
            id: "hostile-\(tag)-\(number)",
            limits: limits,
            enforcement: .bestEffort,
            mounts: [MountSpec(hostPath: payloads.hostDirectory, sandboxPath: Payloads.sandboxDirectory, readOnly: true)] + mounts
        )
    }

    private func tearDown() {
        victim.stop()
        _ = engine.finish()
        try? FileManager.default.removeItem(atPath: scratch)
    }
}
