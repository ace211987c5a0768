import Foundation
import QEMUGuest
import SandboxCore
import VMAgentProtocol

/// A live level-3 sandbox: one jailed QEMU guest whose agent runs a level-1 sandbox inside.
///
/// Execs run one at a time, in order. Files persist between execs (the guest sandbox's
/// workspace). When the guest dies (kernel panic, QEMU killed), every call fails with
/// `guestGone`, `state` becomes `.failed`, and the VM is cleaned up; `destroy` is still safe.
public final class VMSandbox: Sendable {
    /// The sandbox id (the spec's).
    public let id: String
    public let spec: SandboxSpec
    /// `uname -r` inside the guest.
    public let guestKernelRelease: String
    /// cgroup v2 controllers inside the guest (limits are enforced there).
    public let guestControllers: [String]
    /// TCG or KVM, and why.
    public let accelerator: AcceleratorChoice
    /// True when `create` took a pre-booted guest from the warm pool.
    public let fromPool: Bool
    /// Guest memory and vCPUs.
    public var memoryMiB: Int { machine.shape.memoryMiB }
    public var cpus: Int { machine.shape.cpus }
    /// The unprivileged uid QEMU runs as.
    public var qemuUID: UInt32 { machine.uid }
    /// The jailed QEMU's pid (in the host's pid namespace), nil once it is gone.
    public var qemuPID: pid_t? { machine.qemuPID }
    /// The VM's cgroup on the host.
    public var cgroupPath: String { machine.cgroupDirectory }
    /// The VM's state directory (console log, QEMU's own log).
    public var stateDirectory: String { machine.stateDirectory }
    /// The bounded serial console log.
    public var consoleLogPath: String { machine.console.path }

    /// Where the sandbox stands.
    public enum State: String, Sendable { case running, failed, destroyed }
    public var state: State { stateBox.withLock { $0 } }
    /// Why it failed, when it did.
    public var failureReason: String? { machine.connection.closed }

    /// Limits are enforced by the guest's own cgroup v2 hierarchy when it has the controllers.
    public var limitsEnforced: Bool {
        !spec.limits.needsControllers || Set(guestControllers).isSuperset(of: ["memory", "cpu", "pids"])
    }

    let machine: JailedQEMU
    private let stateBox = NSLockedValue(State.running)
    private let onEnd: @Sendable (JailedQEMU) -> Void

    init(spec: SandboxSpec, machine: JailedQEMU, hello: AgentHello, accelerator: AcceleratorChoice, fromPool: Bool, onEnd: @escaping @Sendable (JailedQEMU) -> Void) {
        self.id = spec.id
        self.spec = spec
        self.machine = machine
        self.guestKernelRelease = hello.kernelRelease
        self.guestControllers = hello.controllers
        self.accelerator = accelerator
        self.fromPool = fromPool
        self.onEnd = onEnd
    }

    /// Runs a command in the guest's sandbox; `onOutput` sees stdout/stderr chunks as they come.
    /// - Throws: `guest` (with the agent's code, e.g. `child_setup` for a missing program),
    ///   `guestGone` when the guest died (the sandbox is then `failed`).
    public func exec(_ request: ExecRequest, onOutput: (@Sendable (OutputChunk) -> Void)? = nil) async throws(VMSandboxError) -> ExecResult {
        let timeout = (request.timeout ?? spec.limits.executionTimeout) + 30
        let frame: AgentFrame
        do { frame = try AgentFrame(.exec, json: request) } catch {
            throw VMSandboxError(.invalidRequest, "exec request: \(error)")
        }
        // The output crosses the channel once, as it streams: the agent's execResult carries none
        // (protocol version 2). What is kept here is bounded by the sandbox's output limit, whatever
        // a hostile guest sends; the caller's onOutput sees the same bytes.
        let limit = Int(clamping: spec.limits.outputLimit.bytes)
        let captured = NSLockedValue((stdout: CapturedOutput(limit: limit), stderr: CapturedOutput(limit: limit)))
        let reply = try await call(frame, timeout: timeout) { frame in
            let stream: OutputChunk.Stream
            switch frame.kind {
            case .stdout: stream = .stdout
            case .stderr: stream = .stderr
            default: return true
            }
            let kept = captured.withLock { stream == .stdout ? $0.stdout.take(frame.payload) : $0.stderr.take(frame.payload) }
            if !kept.isEmpty { onOutput?(OutputChunk(stream: stream, bytes: Array(kept))) }
            return false
        }
        guard reply.kind == .execResult, var result = try? reply.decode(ExecResult.self) else {
            throw VMSandboxError(.protocolViolation, "exec answered with \(reply.kind)")
        }
        guard result.stdout.isEmpty, result.stderr.isEmpty else {
            throw VMSandboxError(.protocolViolation, "the guest's execResult carries output; protocol version \(AgentHello.currentVersion) streams it only")
        }
        let output = captured.withLock { $0 }
        result.stdout = output.stdout.kept
        result.stderr = output.stderr.kept
        result.stdoutTruncated = result.stdoutTruncated || output.stdout.truncated
        result.stderrTruncated = result.stderrTruncated || output.stderr.truncated
        return result
    }

    /// Writes a file in the guest sandbox's workspace (relative path, or absolute under it).
    public func writeWorkspaceFile(_ path: String, contents: [UInt8]) async throws(VMSandboxError) {
        guard contents.count <= AgentFrame.maximumPayload - 4096 else {
            throw VMSandboxError(.invalidRequest, "file \(path) is \(contents.count) bytes; at most \(AgentFrame.maximumPayload - 4096) fit one request")
        }
        let frame: AgentFrame
        do { frame = try AgentFilePut(path: path).frame(contents: contents) } catch {
            throw VMSandboxError(.invalidRequest, "putFile \(path): \(error)")
        }
        let reply = try await call(frame, timeout: 120) { _ in true }
        guard reply.kind == .ok else { throw VMSandboxError(.protocolViolation, "putFile answered with \(reply.kind)") }
    }

    /// Reads at most `limit` bytes of a workspace file.
    public func readWorkspaceFile(_ path: String, limit: Int = 16 << 20) async throws(VMSandboxError) -> [UInt8] {
        let frame: AgentFrame
        do { frame = try AgentFrame(.getFile, json: AgentFileGet(path: path, limit: limit)) } catch {
            throw VMSandboxError(.invalidRequest, "getFile \(path): \(error)")
        }
        let reply = try await call(frame, timeout: 120) { _ in true }
        guard reply.kind == .fileData else { throw VMSandboxError(.protocolViolation, "getFile answered with \(reply.kind)") }
        return reply.payload
    }

    /// Test-only (engine `enableTestHooks`): the agent writes `c` to `/proc/sysrq-trigger`
    /// outside its level-1 sandbox, panicking the guest kernel.
    public func panicGuestForTesting() async throws(VMSandboxError) {
        _ = try await call(AgentFrame(.panicForTesting), timeout: 60) { _ in true }
    }

    /// Kills QEMU (through its cgroup), removes its sockets, state directory and cgroup. Idempotent.
    public func destroy() async {
        let first = stateBox.withLock { state -> Bool in
            defer { state = .destroyed }
            return state != .destroyed
        }
        guard first else { return }
        let machine = self.machine
        await onThread { machine.terminate() }
        onEnd(machine)
    }

    /// Sends one request; an `error` reply becomes `VMSandboxError(.guest)`, a dead guest `guestGone`.
    private func call(_ frame: AgentFrame, timeout: Double, onFrame: @escaping @Sendable (AgentFrame) -> Bool) async throws(VMSandboxError) -> AgentFrame {
        if state == .destroyed { throw VMSandboxError(.guestGone, "sandbox \(id) was destroyed") }
        let last = NSLockedValue<AgentFrame?>(nil)
        do {
            try await machine.connection.request(frame, timeout: timeout) { reply in
                guard onFrame(reply) else { return false }
                last.withLock { $0 = reply }
                return true
            }
        } catch let error as VMSandboxError {
            if error.code == .guestGone || error.code == .bootTimedOut { await fail(error) }
            throw error.code == .bootTimedOut ? VMSandboxError(.guestGone, "the guest stopped answering (\(error.message)); it was killed") : error
        } catch {
            throw VMSandboxError(.system, "\(error)")
        }
        guard let reply = last.withLock({ $0 }) else { throw VMSandboxError(.protocolViolation, "no reply") }
        if reply.kind == .error {
            let failure = (try? reply.decode(AgentFailure.self)) ?? AgentFailure(code: "unknown", message: "guest error")
            throw VMSandboxError(.guest, failure.message, guestCode: failure.code)
        }
        return reply
    }

    /// The guest died or hung: it is cleaned up now, and the sandbox stays `failed`.
    private func fail(_ error: VMSandboxError) async {
        let first = stateBox.withLock { state -> Bool in
            guard state == .running else { return false }
            state = .failed
            return true
        }
        guard first else { return }
        let machine = self.machine
        await onThread { machine.terminate() }
        onEnd(machine)
    }
}

/// A value behind a lock, for the few fields threads and tasks share.
final class NSLockedValue<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Runs a blocking body on a thread of its own, never on Swift's cooperative pool.
func onThread<Result: Sendable>(_ body: @escaping @Sendable () -> Result) async -> Result {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: body()) }
        thread.start()
    }
}

extension SandboxSpec {
    /// Same sandbox apart from the id: what a pooled guest's ready sandbox can stand in for.
    func matches(_ other: SandboxSpec) -> Bool {
        limits == other.limits && enforcement == other.enforcement && environment == other.environment
            && mounts == other.mounts && workspacePath == other.workspacePath && network == other.network
            && (other.hostname == nil || other.hostname == hostname)
    }
}
