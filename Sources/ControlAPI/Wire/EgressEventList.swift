#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SandboxCore

/// `GET /v1/executions/{id}/egress`: every connection the execution made (or tried) through its
/// sandbox's egress proxy, oldest first.
public struct EgressEventList: Codable, Sendable, Hashable {
    public var executionID: UUID
    public var events: [EgressEventRecord]

    public init(executionID: UUID, events: [EgressEventRecord]) {
        self.executionID = executionID
        self.events = events
    }

    enum CodingKeys: String, CodingKey {
        case executionID = "execution_id"
        case events
    }
}
