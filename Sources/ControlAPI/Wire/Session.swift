#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `POST /v1/sessions` (the body may be empty).
public struct SessionCreateRequest: Codable, Sendable, Hashable {
    public var sessionName: String?

    public init(sessionName: String? = nil) { self.sessionName = sessionName }

    enum CodingKeys: String, CodingKey, CaseIterable { case sessionName = "session_name" }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sessionName = try c.decodeIfPresent(String.self, forKey: .sessionName)
    }

    public func validate() throws(APIError) {
        if let sessionName, sessionName.count > 100 {
            throw APIError(.invalidField, "\"session_name\" is longer than 100 characters", details: ["field": "session_name"])
        }
    }
}

/// A row of `sessions`, created for the caller's `users` row.
public struct SessionDescription: Codable, Sendable, Hashable {
    public var sessionID: UUID
    public var userID: UUID
    public var sessionName: String?
    public var status: String
    public var createdAt: Date?

    public init(sessionID: UUID, userID: UUID, sessionName: String?, status: String, createdAt: Date?) {
        self.sessionID = sessionID
        self.userID = userID
        self.sessionName = sessionName
        self.status = status
        self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case sessionID = "session_id"
        case userID = "user_id"
        case sessionName = "session_name"
        case status
        case createdAt = "created_at"
    }

    // UUIDs in lowercase, as PostgreSQL prints them.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sessionID.uuidString.lowercased(), forKey: .sessionID)
        try c.encode(userID.uuidString.lowercased(), forKey: .userID)
        try c.encode(sessionName, forKey: .sessionName)
        try c.encode(status, forKey: .status)
        try c.encode(createdAt, forKey: .createdAt)
    }
}
