#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import SandboxCore

/// One `agent_executions` row (plus its `code_executions` row for code runs) as the Supervisor
/// writes it: first with status `running` when the exec starts, then with the outcome.
public struct ExecutionRecordDraft: Sendable, Hashable {
    public var id: UUID
    public var sessionID: UUID?
    public var agentType: String
    public var sandboxID: String
    public var ownerUID: UInt32
    public var status: ExecutionStatus
    public var isolationLevel: Int
    public var policy: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var startedAt: Date
    public var finishedAt: Date?
    public var executionTime: Double?
    public var usage: ResourceUsage
    public var limitsEnforced: Bool?
    /// The request, secrets removed (`input_data`).
    public var input: AnyJSON
    /// The result (`output_data`); `nil` while running.
    public var output: AnyJSON?
    /// Set for code runs: the `code_executions` row (`execution_mode = 'sandbox'`).
    public var code: CodeSpec?

    public init(id: UUID, sessionID: UUID?, agentType: String, sandboxID: String, ownerUID: UInt32,
                status: ExecutionStatus, isolationLevel: Int, policy: String, exitCode: Int32? = nil, signal: Int32? = nil,
                startedAt: Date, finishedAt: Date? = nil, executionTime: Double? = nil, usage: ResourceUsage = .init(),
                limitsEnforced: Bool? = nil, input: AnyJSON, output: AnyJSON? = nil, code: CodeSpec? = nil) {
        self.id = id
        self.sessionID = sessionID
        self.agentType = agentType
        self.sandboxID = sandboxID
        self.ownerUID = ownerUID
        self.status = status
        self.isolationLevel = isolationLevel
        self.policy = policy
        self.exitCode = exitCode
        self.signal = signal
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.executionTime = executionTime
        self.usage = usage
        self.limitsEnforced = limitsEnforced
        self.input = input
        self.output = output
        self.code = code
    }
}

/// Filter of a history query; `ownerUID` nil means every owner (admins).
public struct ExecutionRecordFilter: Sendable, Hashable {
    public var sandboxID: String?
    public var sessionID: UUID?
    public var ownerUID: UInt32?
    public var limit: Int

    public init(sandboxID: String?, sessionID: UUID?, ownerUID: UInt32?, limit: Int) {
        self.sandboxID = sandboxID
        self.sessionID = sessionID
        self.ownerUID = ownerUID
        self.limit = limit
    }
}

/// The record side of the daemon as the Supervisor uses it (implemented over the Store).
///
/// Durability contract the Supervisor relies on: `recordStarted` only enqueues (no wait) on the
/// batched path; `recordFinished` returns once the row is committed (group commit: concurrent
/// execs share one round trip) or safely in the Store's durable outbox.
public protocol RecordStore: Sendable {
    /// Enqueues the `running` row; never waits for the database.
    func recordStarted(_ record: ExecutionRecordDraft)
    /// Writes the final row (idempotent upsert by id) and returns once it is durable.
    func recordFinished(_ record: ExecutionRecordDraft) async throws
    /// Waits until everything enqueued is written.
    func flush() async throws
    func executions(_ filter: ExecutionRecordFilter) async throws -> [ExecutionRecordView]
    func execution(id: UUID) async throws -> ExecutionRecordView?
    /// Marks rows a dead daemon left `running` as `aborted`; returns how many.
    func markRunningAborted() async throws -> Int
    /// The `users` row of a socket peer, created on first use.
    func ensureUser(unixUID: UInt32, username: String) async throws -> UUID
    func createSession(userID: UUID, name: String?) async throws -> SessionDescription
    /// The unix uid that owns a session, or nil when the session does not exist.
    func sessionOwner(_ id: UUID) async throws -> UInt32?
    /// `connected`/`unavailable` and a password-free description for `/v1/info`.
    func databaseState() async -> InfoResponse.Database
}
