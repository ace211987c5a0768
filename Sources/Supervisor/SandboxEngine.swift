import ControlAPI
import SandboxCore

/// What the Supervisor asks an isolation engine to build (level 1 or level 3).
public struct EngineSandboxSpec: Sendable, Hashable {
    public var id: String
    public var isolationLevel: IsolationLevel
    /// The policy's name, as recorded.
    public var policy: String
    /// The policy's rules as loaded when the sandbox was created (a later reload does not change them).
    public var rules: Policy
    public var limits: ResourceLimits
    public var environment: [String: String]
    public var enforcement: LimitEnforcement
    /// What the daemon's tools add (egress listener hook, database socket, their variables).
    public var attachments: SandboxAttachments = .init()

    public init(id: String, isolationLevel: IsolationLevel, policy: String, rules: Policy = Policy(), limits: ResourceLimits,
                environment: [String: String], enforcement: LimitEnforcement) {
        self.id = id
        self.isolationLevel = isolationLevel
        self.policy = policy
        self.rules = rules
        self.limits = limits
        self.environment = environment
        self.enforcement = enforcement
    }
}

/// One command to run in a sandbox.
public struct EngineExec: Sendable, Hashable {
    public var argv: [String]
    public var stdin: [UInt8]
    public var environment: [String: String]
    public var timeout: Double
    public var outputLimit: Int

    public init(argv: [String], stdin: [UInt8], environment: [String: String], timeout: Double, outputLimit: Int) {
        self.argv = argv
        self.stdin = stdin
        self.environment = environment
        self.timeout = timeout
        self.outputLimit = outputLimit
    }
}

/// An isolation engine as the Supervisor drives it: one per isolation level it serves. Engines
/// know nothing of HTTP or records; their errors are their own and are reported to the caller by message.
public protocol SandboxEngine: Sendable {
    /// Whether the level(s) this engine serves can run here now, and why not. The Supervisor
    /// reads the entry for the level it registered the engine at.
    func availability() async -> [InfoResponse.Level]
    /// Builds a sandbox that can run any number of execs.
    func createSandbox(_ spec: EngineSandboxSpec) async throws -> any EngineSandbox
    /// Removes what a previous daemon left (cgroups, mounts, state directories, processes).
    /// Returns how many sandboxes were reaped.
    func reapLeftovers() async throws -> Int
    /// One-shot: build, run one command, tear down — as one step when the engine can do it faster.
    func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, output: OutputSink?) async throws -> ExecResult
    /// `runOnce` that may also hand the result to `onEnded` as soon as the command's end is
    /// known, before the sandbox's teardown is done (the Supervisor writes the record meanwhile).
    /// It returns the same result when the teardown is done. Engines without that moment never call it.
    func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, output: OutputSink?,
                 onEnded: @escaping @Sendable (ExecResult) -> Void) async throws -> ExecResult
    /// One-shot that returns as soon as the command's end is known (the Supervisor records it and
    /// answers meanwhile); the sandbox's teardown goes on, and `tornDown` is called exactly once
    /// when it is gone — also when this throws. Engines without that moment return after the teardown.
    func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, tornDown: @escaping @Sendable () -> Void) async throws -> ExecResult
    /// Drops what the engine keeps besides sandboxes (the level-3 warm pool); called once at daemon stop.
    func shutdown() async
}

extension SandboxEngine {
    /// Nothing to drop.
    public func shutdown() async {}

    /// No early answer: returns after the teardown, `tornDown` called just before.
    public func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, tornDown: @escaping @Sendable () -> Void) async throws -> ExecResult {
        defer { tornDown() }
        return try await runOnce(spec, exec, output: nil)
    }

    /// No early outcome: `onEnded` is never called.
    public func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, output: OutputSink?,
                        onEnded: @escaping @Sendable (ExecResult) -> Void) async throws -> ExecResult {
        try await runOnce(spec, exec, output: output)
    }

    /// Create + exec + destroy, for engines without a faster one-shot path.
    public func runOnce(_ spec: EngineSandboxSpec, _ exec: EngineExec, output: OutputSink?) async throws -> ExecResult {
        let sandbox = try await createSandbox(spec)
        do {
            let result = try await sandbox.exec(exec, output: output)
            await sandbox.destroy()
            return result
        } catch {
            await sandbox.destroy()
            throw error
        }
    }
}

/// A live sandbox.
public protocol EngineSandbox: Sendable {
    /// False when the host could not enforce the limits (best-effort mode).
    var limitsEnforced: Bool { get }
    /// Runs one command; `output` sees stdout/stderr as they are produced.
    func exec(_ exec: EngineExec, output: OutputSink?) async throws -> ExecResult
    /// Writes a file under the sandbox's writable workspace. `path` is relative to the workspace or
    /// absolute inside the sandbox; escapes (`..`, symlinks out) are refused. Returns the path inside
    /// the sandbox.
    func writeFile(_ path: String, contents: [UInt8]) async throws -> String
    /// Reads at most `limit` bytes of a file under the workspace (same confinement as `writeFile`).
    func readFile(_ path: String, limit: Int) async throws -> [UInt8]
    /// Kills everything in it and removes it. Idempotent.
    func destroy() async
    /// Why the sandbox can no longer run anything (a level-3 guest that died), nil while it can.
    var failure: String? { get }
}

extension EngineSandbox {
    /// Sandboxes that cannot die on their own.
    public var failure: String? { nil }
}

/// An engine error that knows which API error it is (the caller's mistake or a host limit).
public protocol APIErrorConvertible: Error {
    var apiError: APIError { get }
}
