// Level 3 behind the Supervisor's engine protocol. Compiled when Package.swift defines
// SANDBOXD_LEVEL3_ENGINE (with the VMSandbox dependency).
#if SANDBOXD_LEVEL3_ENGINE
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import Logging
import SandboxCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import VMSandbox

extension VMSandboxError: APIErrorConvertible {
    public var apiError: APIError {
        switch code {
        case .invalidRequest:
            return APIError(.invalidField, message)
        case .guest:
            switch guestCode {
            case "workspace_path" where message.contains("ENOENT"): return APIError(.notFound, message)
            case "workspace_path": return APIError(.pathRefused, message)
            case "invalid_request": return APIError(.invalidField, message)
            case "controllers_missing": return APIError(.limitsNotEnforceable, message)
            case "exhausted": return APIError(.tooManyRequests, message)
            default: return APIError(.internalError, message)
            }
        case .guestGone:
            return APIError(.conflict, "the sandbox's guest is gone (\(message)); destroy the sandbox")
        case .launch where message.contains("uids are in use"):
            return APIError(.tooManyRequests, message)
        case .imageBuild, .launch, .bootTimedOut, .protocolViolation, .system:
            return APIError(.internalError, message)
        }
    }
}

/// Level 3 as the Supervisor drives it: a `VMSandboxEngine` started in the background.
///
/// `start()` returns at once; the guest image is found or built (the first build downloads the
/// Debian kernel), the accelerator probed (KVM time-boxed, else TCG), leftovers of a previous
/// daemon reaped and the warm pool filled while the daemon already serves level 1. Until then
/// `/v1/info` reports level 3 unavailable with the step it is at ("guest image: …"); a failed
/// start stays reported with its reason until the daemon restarts.
public final class VirtualMachineEngine: SandboxEngine {
    /// Where the engine stands.
    enum Phase: Sendable {
        case notStarted
        case starting(since: ContinuousClock.Instant, step: String)
        case ready(VMSandboxEngine)
        case failed(String)
        case stopped
    }

    public let configuration: VMSandboxConfiguration
    private let logger: Logger
    private let phase = Mutex(Phase.notStarted)

    /// - Parameters:
    ///   - configuration: the VM engine's settings; `poolLimits` should be what `guestLimits`
    ///     gives for the default policy, so a default sandbox takes a pooled guest as it is.
    public init(configuration: VMSandboxConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts the engine in the background (once); `onSettled` runs when it is ready or has failed.
    public func start(onSettled: @escaping @Sendable () -> Void = {}) {
        let begin = phase.withLock { phase -> Bool in
            guard case .notStarted = phase else { return false }
            phase = .starting(since: .now, step: "starting")
            return true
        }
        guard begin else { return }
        Task.detached { [self] in
            do {
                let engine = try await VMSandboxEngine.start(configuration: configuration) { [self] line in
                    logger.info("level 3: \(line)")
                    phase.withLock { phase in
                        if case .starting(let since, _) = phase { phase = .starting(since: since, step: line) }
                    }
                }
                let keep = phase.withLock { phase -> Bool in
                    guard case .starting = phase else { return false }
                    phase = .ready(engine)
                    return true
                }
                if keep {
                    logger.notice("level 3 ready: \(engine.accelerator); guest image \(engine.image.key.prefix(12)) (\(engine.image.wasBuilt ? "built now" : "from cache"))")
                } else {
                    await engine.shutdown()
                }
            } catch {
                logger.error("level 3 unavailable: \(error)")
                phase.withLock { phase in
                    if case .starting = phase { phase = .failed("\(error)") }
                }
            }
            onSettled()
        }
    }

    /// The running engine, nil while starting or after a failure.
    public var engine: VMSandboxEngine? {
        phase.withLock { phase in
            if case .ready(let engine) = phase { return engine }
            return nil
        }
    }

    public func availability() async -> [InfoResponse.Level] {
        let entry: InfoResponse.Level = phase.withLock { phase in
            switch phase {
            case .notStarted:
                return .init(level: 3, available: false, reason: "the level-3 engine has not been started")
            case .starting(let since, let step):
                let seconds = Int((ContinuousClock.now - since).components.seconds)
                return .init(level: 3, available: false, reason: "starting for \(seconds) s (guest image build, accelerator probe): \(step)")
            case .ready(let engine):
                let image = engine.image
                let pool = engine.lastPoolError.map { "; last pool boot failed: \($0.prefix(300))" } ?? ""
                return .init(level: 3, available: true, reason: nil,
                             detail: "\(engine.accelerator); guest image \(image.key.prefix(12)) (\(image.kernelPackage)) in \(image.directory); "
                                 + "warm pool \(engine.pooledCount)/\(engine.configuration.poolSize)\(pool)")
            case .failed(let reason):
                return .init(level: 3, available: false, reason: "the level-3 engine did not start: \(reason) (fix it, e.g. sandboxctl image build, then restart sandboxd)")
            case .stopped:
                return .init(level: 3, available: false, reason: "sandboxd is shutting down")
            }
        }
        return [entry]
    }

    public func createSandbox(_ spec: EngineSandboxSpec) async throws -> any EngineSandbox {
        guard let engine else {
            let reason = await availability().first?.reason ?? "not ready"
            throw APIError(.levelUnavailable, "isolation level 3 is not available yet: \(reason)", details: ["isolation_level": .integer(3)])
        }
        return VMEngineSandbox(sandbox: try await engine.create(Self.sandboxSpec(spec)))
    }

    /// A previous daemon's guests: the engine reaps them as it starts; later calls reap what this
    /// engine does not own.
    public func reapLeftovers() async throws -> Int {
        guard let engine else { return 0 }
        return await engine.reapLeftovers().count
    }

    public func shutdown() async {
        let running: VMSandboxEngine? = phase.withLock { phase in
            defer { phase = .stopped }
            if case .ready(let engine) = phase { return engine }
            return nil
        }
        await running?.shutdown()
        // Every sandbox and pooled guest is gone: leave no empty per-daemon VM subtree behind,
        // also when the engine was still starting (it makes the directory first). A guest still
        // being torn down keeps it busy, and the next start reaps it.
        let root = configuration.cgroupRoot ?? VMSandboxEngine.detectCgroupRoot()
        if let parent = running?.cgroupParent ?? root.map({ $0 + "/" + configuration.cgroupSubtree }) { _ = rmdir(parent) }
    }

    /// The guest's level-1 limits: the policy's memory and CPU size the VM (memory + overhead,
    /// vCPUs rounded up) and bound the sandbox inside it; the rest as the Supervisor derived them.
    public static func guestLimits(_ limits: ResourceLimits, rules: Policy) -> ResourceLimits {
        var guest = limits
        guest.memory = rules.resources.memoryLimit
        guest.cpu = rules.resources.cpuLimit
        guest.pids = rules.resources.pidsLimit
        return guest
    }

    /// Inside the guest the cgroup v2 controllers exist, so limits are always enforced there (strict).
    static func sandboxSpec(_ spec: EngineSandboxSpec) -> SandboxSpec {
        SandboxSpec(id: spec.id, limits: guestLimits(spec.limits, rules: spec.rules), enforcement: .strict, environment: spec.environment)
    }
}

/// A level-3 sandbox as the Supervisor drives it.
struct VMEngineSandbox: EngineSandbox {
    let sandbox: VMSandbox

    var limitsEnforced: Bool { sandbox.limitsEnforced }

    var failure: String? {
        sandbox.state == .failed ? (sandbox.failureReason ?? "the guest died") : nil
    }

    /// A guest that dies during the exec (panic, QEMU gone) throws `guest_gone`: the Supervisor
    /// records the execution as status `error`, and the sandbox stays `failed`.
    func exec(_ exec: EngineExec, output: OutputSink?) async throws -> ExecResult {
        let request = ExecRequest(exec.argv, environment: exec.environment, stdin: exec.stdin, timeout: exec.timeout)
        return try await sandbox.exec(request) { chunk in
            output?(ControlAPI.OutputChunk(stream: chunk.stream == .stdout ? .stdout : .stderr, bytes: chunk.bytes))
        }
    }

    func writeFile(_ path: String, contents: [UInt8]) async throws -> String {
        let relative = try workspaceRelativePath(path, workspace: sandbox.spec.workspacePath)
        try await sandbox.writeWorkspaceFile(relative, contents: contents)
        return sandbox.spec.workspacePath + "/" + relative
    }

    func readFile(_ path: String, limit: Int) async throws -> [UInt8] {
        try await sandbox.readWorkspaceFile(try workspaceRelativePath(path, workspace: sandbox.spec.workspacePath), limit: limit)
    }

    func destroy() async { await sandbox.destroy() }
}
#endif
