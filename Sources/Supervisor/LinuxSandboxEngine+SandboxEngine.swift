// Level 1 behind the Supervisor's engine protocol. Compiled when Package.swift defines
// SANDBOXD_LEVEL1_ENGINE (together with the LinuxSandbox dependency, once the engine is on main).
#if SANDBOXD_LEVEL1_ENGINE
import ControlAPI
import LinuxSandbox
import SandboxCore

extension LinuxSandboxError: APIErrorConvertible {
    public var apiError: APIError {
        switch code {
        case .invalidRequest:
            return APIError(.invalidField, message)
        case .controllersMissing:
            return APIError(.limitsNotEnforceable, message + " (set resources.enforcement: best-effort to run with rlimits instead)")
        case .workspacePath:
            if errno == 2 /* ENOENT */ { return APIError(.notFound, message, details: ["path": .string(path ?? "")]) }
            return APIError(.pathRefused, message, details: ["path": .string(path ?? "")])
        case .sandboxGone:
            return APIError(.conflict, message)
        case .exhausted:
            return APIError(.tooManyRequests, message)
        case .childSetup, .cgroup, .system, .seccomp:
            return APIError(.internalError, message)
        }
    }
}

extension LinuxSandboxEngine: SandboxEngine {
    /// Level 1 only; the Supervisor reports the levels other engines (or none) serve.
    public func availability() async -> [InfoResponse.Level] {
        [.init(level: 1, available: true, reason: nil)]
    }

    public func createSandbox(_ spec: EngineSandboxSpec) async throws -> any EngineSandbox {
        LinuxEngineSandbox(sandbox: try await create(Self.sandboxSpec(spec), attachments: Self.launchAttachments(spec.attachments)),
                           daemonEnvironment: spec.attachments.environment)
    }

    public func reapLeftovers() async throws -> Int {
        await reapLeftovers().count
    }

    public func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, output: OutputSink?) async throws -> ExecResult {
        try await run(Self.sandboxSpec(spec), Self.request(exec, daemonEnvironment: spec.attachments.environment),
                      onOutput: output.map(Self.forward), attachments: Self.launchAttachments(spec.attachments))
    }

    public func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, output: OutputSink?,
                        onEnded: @escaping @Sendable (ExecResult) -> Void) async throws -> ExecResult {
        try await run(Self.sandboxSpec(spec), Self.request(exec, daemonEnvironment: spec.attachments.environment),
                      onOutput: output.map(Self.forward), attachments: Self.launchAttachments(spec.attachments),
                      onEnded: onEnded)
    }

    public func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, tornDown: @escaping @Sendable () -> Void) async throws -> ExecResult {
        try await runAnsweringAtEnd(Self.sandboxSpec(spec), Self.request(exec, daemonEnvironment: spec.attachments.environment),
                                    attachments: Self.launchAttachments(spec.attachments), tornDown: tornDown)
    }

    static func sandboxSpec(_ spec: EngineSandboxSpec) -> SandboxSpec {
        SandboxSpec(id: spec.id, limits: spec.limits, enforcement: spec.enforcement,
                    environment: spec.attachments.environment(over: spec.environment),
                    mounts: PolicyApplication.mounts(spec.rules), maskedPaths: PolicyApplication.maskedPaths(spec.rules))
    }

    /// The daemon's variables are set over the exec's own: a request never overrides them.
    static func request(_ exec: EngineExec, daemonEnvironment: [String: String] = [:]) -> ExecRequest {
        ExecRequest(exec.argv, environment: exec.environment.merging(daemonEnvironment) { _, daemon in daemon },
                    stdin: exec.stdin, timeout: exec.timeout)
    }

    static func launchAttachments(_ attachments: SandboxAttachments) -> LaunchAttachments {
        let directories = attachments.readOnlyDirectories
        var hook: (@Sendable (Int32) throws -> Void)?
        if let beforeWorkload = attachments.beforeWorkload {
            hook = { pid in try beforeWorkload.body(pid) }
        }
        return LaunchAttachments(readOnlyDirectories: directories, beforeWorkload: hook)
    }

    static func forward(_ sink: @escaping ControlAPI.OutputSink) -> @Sendable (SandboxCore.OutputChunk) -> Void {
        { chunk in sink(ControlAPI.OutputChunk(stream: chunk.stream == .stdout ? .stdout : .stderr, bytes: chunk.bytes)) }
    }
}

/// A persistent level-1 sandbox as the Supervisor drives it.
struct LinuxEngineSandbox: EngineSandbox {
    let sandbox: LinuxSandbox
    /// Variables of the daemon's tools (proxy, database), set over every exec's own.
    var daemonEnvironment: [String: String] = [:]

    var limitsEnforced: Bool { sandbox.limitsEnforced }

    /// Its init is what keeps the namespaces alive; once it has exited nothing can run there.
    var failure: String? { sandbox.initHasExited ? "the sandbox's init has exited" : nil }

    func exec(_ exec: EngineExec, output: OutputSink?) async throws -> ExecResult {
        try await sandbox.exec(LinuxSandboxEngine.request(exec, daemonEnvironment: daemonEnvironment), onOutput: output.map(LinuxSandboxEngine.forward))
    }

    private func relative(_ path: String) throws(APIError) -> String {
        try workspaceRelativePath(path, workspace: sandbox.spec.workspacePath)
    }

    func writeFile(_ path: String, contents: [UInt8]) async throws -> String {
        let relative = try relative(path)
        try await sandbox.writeWorkspaceFile(relative, contents: contents)
        return sandbox.spec.workspacePath + "/" + relative
    }

    func readFile(_ path: String, limit: Int) async throws -> [UInt8] {
        try await sandbox.readWorkspaceFile(try relative(path), limit: limit)
    }

    func destroy() async { await sandbox.destroy() }
}
#endif
