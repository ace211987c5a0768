#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A persistent sandbox as `POST/GET /v1/sandboxes` describe it.
public struct SandboxDescription: Codable, Sendable, Hashable {
    public var sandboxID: String
    /// Peer uid of the caller that created it.
    public var ownerUID: UInt32
    /// `running` or `destroying`.
    public var state: String
    public var isolationLevel: Int
    public var policy: String
    public var agentType: String
    public var sessionID: UUID?
    public var createdAt: Date
    /// Execs started in it so far.
    public var execCount: Int
    public var limitsEnforced: Bool

    public init(sandboxID: String, ownerUID: UInt32, state: String, isolationLevel: Int, policy: String,
                agentType: String, sessionID: UUID?, createdAt: Date, execCount: Int, limitsEnforced: Bool) {
        self.sandboxID = sandboxID
        self.ownerUID = ownerUID
        self.state = state
        self.isolationLevel = isolationLevel
        self.policy = policy
        self.agentType = agentType
        self.sessionID = sessionID
        self.createdAt = createdAt
        self.execCount = execCount
        self.limitsEnforced = limitsEnforced
    }

    enum CodingKeys: String, CodingKey {
        case sandboxID = "sandbox_id"
        case ownerUID = "owner_uid"
        case state
        case isolationLevel = "isolation_level"
        case policy
        case agentType = "agent_type"
        case sessionID = "session_id"
        case createdAt = "created_at"
        case execCount = "exec_count"
        case limitsEnforced = "limits_enforced"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sandboxID, forKey: .sandboxID)
        try c.encode(ownerUID, forKey: .ownerUID)
        try c.encode(state, forKey: .state)
        try c.encode(isolationLevel, forKey: .isolationLevel)
        try c.encode(policy, forKey: .policy)
        try c.encode(agentType, forKey: .agentType)
        try c.encode(sessionID?.uuidString.lowercased(), forKey: .sessionID)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(execCount, forKey: .execCount)
        try c.encode(limitsEnforced, forKey: .limitsEnforced)
    }
}

/// `GET /v1/sandboxes`.
public struct SandboxList: Codable, Sendable, Hashable {
    public var sandboxes: [SandboxDescription]
    public init(sandboxes: [SandboxDescription]) { self.sandboxes = sandboxes }
}

/// `PUT /v1/sandboxes/{id}/files?path=`.
public struct FileWriteResult: Codable, Sendable, Hashable {
    /// The path inside the sandbox, normalised (e.g. `/workspace/out/data.txt`).
    public var path: String
    public var size: Int

    public init(path: String, size: Int) {
        self.path = path
        self.size = size
    }
}
