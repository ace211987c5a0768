import Foundation

/// A row of `sessions`: a named group of executions belonging to one user.
public struct SessionRecord: Hashable, Sendable, Codable, Identifiable {
    public var id: UUID
    public var userID: UUID?
    public var name: String?
    public var createdAt: Date?
    public var endedAt: Date?
    /// `active` until ended.
    public var status: String?

    public init(id: UUID, userID: UUID?, name: String?, createdAt: Date?, endedAt: Date? = nil, status: String?) {
        self.id = id
        self.userID = userID
        self.name = name
        self.createdAt = createdAt
        self.endedAt = endedAt
        self.status = status
    }

    enum CodingKeys: String, CodingKey {
        case id
        case userID = "user_id"
        case name = "session_name"
        case createdAt = "created_at"
        case endedAt = "ended_at"
        case status
    }
}
