import SandboxValues

/// The engine's calls for a caller that owns its thread and may block it: the level-3 guest
/// agent, which serves one request at a time on its main thread. The same checks and work as the
/// async calls, done on the calling thread instead of being handed to one of the engine's.
///
/// Why: in a guest under TCG, starting Swift's concurrency runtime (its first task and the
/// executor's threads) and the hop to an engine thread cost 50–90 ms of a cold create's first
/// request, for a process that has nothing else to do while it waits. Never call these from
/// Swift's cooperative pool: they block for as long as the work takes.
extension LinuxSandboxEngine {
    /// `create(_:)` without attachments, on the calling thread.
    public func createOnCallingThread(_ spec: SandboxSpec) throws(LinuxSandboxError) -> LinuxSandbox {
        try Self.validate(spec)
        let enforced = try limitsEnforced(for: spec)
        return try createBlocking(spec, limitsEnforced: enforced, attachments: LaunchAttachments())
    }
}

extension LinuxSandbox {
    /// `exec(_:onOutput:)` on the calling thread (`onOutput` is called on it too). `answer`, when
    /// given, gets the result as soon as it is known, before the exec's tidy-up (waiting for its
    /// first process to exit, removing its cgroup): a caller that passes results on (the level-3
    /// guest agent) answers without waiting for that.
    public func execOnCallingThread(
        _ request: ExecRequest, onOutput: (@Sendable (OutputChunk) -> Void)? = nil, answer: ((ExecResult) -> Void)? = nil
    ) throws(LinuxSandboxError) -> ExecResult {
        let (number, timeout) = try startExec(request)
        let (result, tidyUp) = try execBlocking(request, number: number, timeout: timeout, onOutput: onOutput)
        answer?(result)
        tidyUp()
        return result
    }

    /// `destroy()` on the calling thread. Idempotent.
    public func destroyOnCallingThread() {
        guard markDestroyed() else { return }
        destroyBlocking()
    }

    /// `readWorkspaceFile(_:limit:)` on the calling thread.
    public func readWorkspaceFileOnCallingThread(_ path: String, limit: Int = 16 << 20) throws(LinuxSandboxError) -> [UInt8] {
        try Self.readAll(try openWorkspaceFile(path, mode: .read), path: path, limit: limit)
    }

    /// `writeWorkspaceFile(_:contents:)` on the calling thread.
    public func writeWorkspaceFileOnCallingThread(_ path: String, contents: [UInt8]) throws(LinuxSandboxError) {
        try Self.writeAll(try openWorkspaceFile(path, mode: .write), contents, path: path)
    }
}
