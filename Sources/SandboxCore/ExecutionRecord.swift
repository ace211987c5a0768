import Foundation
import SandboxValues

/// One execution as recorded in `agent_executions` (and, for code runs, `code_executions`).
///
/// The id is chosen before the run starts so that the record can be written first as `running`
/// and later completed by an idempotent upsert with the same id.
public struct ExecutionRecord: Hashable, Sendable, Codable, Identifiable {
    /// Chosen by the caller before the run; the primary key of both rows.
    public var id: UUID
    /// The `sessions` row this execution belongs to, if any.
    public var sessionID: UUID?
    /// What kind of agent work this was (`agent_type`, at most 50 characters).
    public var agentType: String
    /// What the agent submitted.
    public var inputData: JSONValue?
    /// What the execution produced.
    public var outputData: JSONValue?
    /// Wall-clock duration in seconds.
    public var executionTime: Double?
    /// The sandbox that ran it (at most 100 characters).
    public var sandboxID: String?
    public var status: ExecutionStatus
    public var isolationLevel: IsolationLevel?
    /// Name of the policy applied (at most 100 characters).
    public var policy: String?
    public var exitCode: Int32?
    /// The signal that ended the process, if one did.
    public var signal: Int32?
    public var startedAt: Date?
    public var finishedAt: Date?
    /// CPU time and peak memory, when known.
    public var usage: ResourceUsage
    /// Whether every requested limit was really enforced (false when run best-effort without a controller).
    public var limitsEnforced: Bool?
    /// The uid of the caller (from SO_PEERCRED): who may see this record.
    public var ownerUID: UInt32?
    /// Set by the database when the row is first written; ignored on insert.
    public var createdAt: Date?
    /// The code that ran, for code executions: one `code_executions` row with `execution_mode = 'sandbox'`.
    public var code: CodeRun?

    public init(
        id: UUID = UUID(),
        sessionID: UUID? = nil,
        agentType: String,
        inputData: JSONValue? = nil,
        outputData: JSONValue? = nil,
        executionTime: Double? = nil,
        sandboxID: String? = nil,
        status: ExecutionStatus = .running,
        isolationLevel: IsolationLevel? = nil,
        policy: String? = nil,
        exitCode: Int32? = nil,
        signal: Int32? = nil,
        startedAt: Date? = nil,
        finishedAt: Date? = nil,
        usage: ResourceUsage = ResourceUsage(),
        limitsEnforced: Bool? = nil,
        ownerUID: UInt32? = nil,
        createdAt: Date? = nil,
        code: CodeRun? = nil
    ) {
        self.id = id
        self.sessionID = sessionID
        self.agentType = agentType
        self.inputData = inputData
        self.outputData = outputData
        self.executionTime = executionTime
        self.sandboxID = sandboxID
        self.status = status
        self.isolationLevel = isolationLevel
        self.policy = policy
        self.exitCode = exitCode
        self.signal = signal
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.usage = usage
        self.limitsEnforced = limitsEnforced
        self.ownerUID = ownerUID
        self.createdAt = createdAt
        self.code = code
    }

    enum CodingKeys: String, CodingKey {
        case id
        case sessionID = "session_id"
        case agentType = "agent_type"
        case inputData = "input_data"
        case outputData = "output_data"
        case executionTime = "execution_time"
        case sandboxID = "sandbox_id"
        case status
        case isolationLevel = "isolation_level"
        case policy
        case exitCode = "exit_code"
        case signal
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case usage
        case limitsEnforced = "limits_enforced"
        case ownerUID = "owner_uid"
        case createdAt = "created_at"
        case code
    }
}

/// The code part of a code execution (`code_executions`).
public struct CodeRun: Hashable, Sendable, Codable {
    /// The program text.
    public var code: String
    /// Its language, e.g. `python` (at most 20 characters).
    public var language: String
    /// What the run produced, as stored in `code_executions.result`.
    public var result: JSONValue?

    public init(code: String, language: String, result: JSONValue? = nil) {
        self.code = code
        self.language = language
        self.result = result
    }
}
