#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Who sent a request, from the connection's `SO_PEERCRED` / `SO_PEERGROUPS`.
public struct Caller: Sendable, Hashable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// Root, or a member of the admin group (`sandboxd-admin`): sees and controls everything.
    public var isAdmin: Bool

    public init(uid: UInt32, gid: UInt32, pid: Int32, isAdmin: Bool) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.isAdmin = isAdmin
    }

    /// True when this caller may see and control something owned by `ownerUID`.
    public func mayAccess(ownerUID: UInt32?) -> Bool {
        isAdmin || ownerUID == uid
    }

    public var description: String { "uid=\(uid) gid=\(gid) pid=\(pid)\(isAdmin ? " admin" : "")" }
}

/// The daemon's brain as the control API sees it. `ControlAPI` knows nothing of engines or
/// databases: the Supervisor implements this, and every method throws `APIError` for what the
/// caller did wrong (any other error is answered as `internal_error` without its details).
///
/// Authorization is the implementation's job: a caller sees only what it owns unless `isAdmin`,
/// and ids it may not see are answered exactly like ids that do not exist (`not_found`).
public protocol SandboxService: Sendable {
    func health() async -> HealthResponse
    func info(caller: Caller) async -> InfoResponse
    /// One-shot: create, exec, destroy. `output` receives output as it happens when streaming.
    func run(_ request: RunRequest, caller: Caller, output: OutputSink?) async throws -> ExecutionResult
    func createSandbox(_ request: SandboxCreateRequest, caller: Caller) async throws -> SandboxDescription
    func listSandboxes(caller: Caller) async throws -> [SandboxDescription]
    func sandbox(id: String, caller: Caller) async throws -> SandboxDescription
    func destroySandbox(id: String, caller: Caller) async throws
    func exec(sandboxID: String, _ request: SandboxExecRequest, caller: Caller, output: OutputSink?) async throws -> ExecutionResult
    /// Writes `contents` to `path` inside the sandbox's writable workspace.
    func writeFile(sandboxID: String, path: String, contents: [UInt8], caller: Caller) async throws -> FileWriteResult
    /// Reads at most `limit` bytes of `path` inside the sandbox's workspace (more is `payload_too_large`).
    func readFile(sandboxID: String, path: String, limit: Int, caller: Caller) async throws -> [UInt8]
    func executions(_ query: ExecutionQuery, caller: Caller) async throws -> [ExecutionRecordView]
    func execution(id: UUID, caller: Caller) async throws -> ExecutionRecordView
    /// The egress events of an execution the caller may see (`not_found` otherwise).
    func egressEvents(executionID: UUID, caller: Caller) async throws -> EgressEventList
    func createSession(_ request: SessionCreateRequest, caller: Caller) async throws -> SessionDescription
    /// The policies in force (any caller may read them: they say what a sandbox may do).
    func policies(caller: Caller) async throws -> PolicyList
    /// Re-reads every policy file; all of them load or nothing changes (`invalid_policy` with
    /// every diagnostic). Admins only.
    func reloadPolicies(caller: Caller) async throws -> PolicyList
}

extension SandboxService {
    public func policies(caller: Caller) async throws -> PolicyList {
        throw APIError(.unavailable, "this sandboxd serves no policies")
    }

    public func reloadPolicies(caller: Caller) async throws -> PolicyList {
        throw APIError(.unavailable, "this sandboxd serves no policies")
    }
}

extension SandboxService {
    /// For services without an egress proxy: the execution exists (or not) and made no connections.
    public func egressEvents(executionID: UUID, caller: Caller) async throws -> EgressEventList {
        _ = try await execution(id: executionID, caller: caller)
        return EgressEventList(executionID: executionID, events: [])
    }
}
