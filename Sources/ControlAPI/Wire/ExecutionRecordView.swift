#if canImport(FoundationEssentials)
import SandboxCore
import FoundationEssentials
#else
import Foundation
#endif

/// One `agent_executions` row as `GET /v1/executions[/{id}]` returns it.
public struct ExecutionRecordView: Codable, Sendable, Hashable {
    public var executionID: UUID
    public var sandboxID: String?
    public var sessionID: UUID?
    public var agentType: String
    /// `running`, `ok`, `error`, `timeout`, `oom`, `killed`, `aborted`.
    public var status: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var isolationLevel: Int?
    public var policy: String?
    public var executionTime: Double?
    public var ownerUID: UInt32?
    public var createdAt: Date?
    public var startedAt: Date?
    public var finishedAt: Date?
    public var limitsEnforced: Bool?
    public var cpuMicroseconds: UInt64?
    public var memoryPeakBytes: UInt64?
    /// The request as recorded (`input_data`, secrets removed).
    public var input: JSONValue?
    /// The result as recorded (`output_data`).
    public var output: JSONValue?

    public init(executionID: UUID, sandboxID: String?, sessionID: UUID?, agentType: String, status: String,
                exitCode: Int32? = nil, signal: Int32? = nil, isolationLevel: Int? = nil, policy: String? = nil,
                executionTime: Double? = nil, ownerUID: UInt32? = nil, createdAt: Date? = nil, startedAt: Date? = nil,
                finishedAt: Date? = nil, limitsEnforced: Bool? = nil, cpuMicroseconds: UInt64? = nil,
                memoryPeakBytes: UInt64? = nil, input: JSONValue? = nil, output: JSONValue? = nil) {
        self.executionID = executionID
        self.sandboxID = sandboxID
        self.sessionID = sessionID
        self.agentType = agentType
        self.status = status
        self.exitCode = exitCode
        self.signal = signal
        self.isolationLevel = isolationLevel
        self.policy = policy
        self.executionTime = executionTime
        self.ownerUID = ownerUID
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.limitsEnforced = limitsEnforced
        self.cpuMicroseconds = cpuMicroseconds
        self.memoryPeakBytes = memoryPeakBytes
        self.input = input
        self.output = output
    }

    enum CodingKeys: String, CodingKey {
        case executionID = "execution_id"
        case sandboxID = "sandbox_id"
        case sessionID = "session_id"
        case agentType = "agent_type"
        case status
        case exitCode = "exit_code"
        case signal
        case isolationLevel = "isolation_level"
        case policy
        case executionTime = "execution_time"
        case ownerUID = "owner_uid"
        case createdAt = "created_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case limitsEnforced = "limits_enforced"
        case cpuMicroseconds = "cpu_usec"
        case memoryPeakBytes = "memory_peak_bytes"
        case input = "input_data"
        case output = "output_data"
    }

    // Every field, null when unknown; UUIDs in lowercase, as PostgreSQL prints them.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(executionID.uuidString.lowercased(), forKey: .executionID)
        try c.encode(sandboxID, forKey: .sandboxID)
        try c.encode(sessionID?.uuidString.lowercased(), forKey: .sessionID)
        try c.encode(agentType, forKey: .agentType)
        try c.encode(status, forKey: .status)
        try c.encode(exitCode, forKey: .exitCode)
        try c.encode(signal, forKey: .signal)
        try c.encode(isolationLevel, forKey: .isolationLevel)
        try c.encode(policy, forKey: .policy)
        try c.encode(executionTime, forKey: .executionTime)
        try c.encode(ownerUID, forKey: .ownerUID)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(startedAt, forKey: .startedAt)
        try c.encode(finishedAt, forKey: .finishedAt)
        try c.encode(limitsEnforced, forKey: .limitsEnforced)
        try c.encode(cpuMicroseconds, forKey: .cpuMicroseconds)
        try c.encode(memoryPeakBytes, forKey: .memoryPeakBytes)
        try c.encode(input, forKey: .input)
        try c.encode(output, forKey: .output)
    }
}

/// `GET /v1/executions`.
public struct ExecutionList: Codable, Sendable, Hashable {
    public var executions: [ExecutionRecordView]
    public init(executions: [ExecutionRecordView]) { self.executions = executions }
}

/// The filter of `GET /v1/executions?sandbox_id=&session_id=&limit=`.
public struct ExecutionQuery: Sendable, Hashable {
    public var sandboxID: String?
    public var sessionID: UUID?
    /// 1...1000, default 100.
    public var limit: Int

    public init(sandboxID: String? = nil, sessionID: UUID? = nil, limit: Int = 100) {
        self.sandboxID = sandboxID
        self.sessionID = sessionID
        self.limit = limit
    }
}
