import Foundation

/// Which execution records `RecordStore.list` returns; every set field must match.
public struct ExecutionFilter: Sendable, Hashable {
    public var sandboxID: String?
    public var sessionID: UUID?
    public var ownerUID: UInt32?
    /// At most this many records, newest first.
    public var limit: Int

    public init(sandboxID: String? = nil, sessionID: UUID? = nil, ownerUID: UInt32? = nil, limit: Int = 100) {
        self.sandboxID = sandboxID
        self.sessionID = sessionID
        self.ownerUID = ownerUID
        self.limit = limit
    }
}
