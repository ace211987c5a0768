import Foundation

/// One connection through a sandbox's egress proxy as recorded in `egress_events`.
///
/// The egress proxy emits this type directly (with `executionID` nil) and the daemon fills in the
/// execution that was running when the request arrived; it lives here so the Store needs no
/// dependency on the proxy. The id is chosen when the record is made, which makes writing it
/// idempotent: a retried batch does not duplicate events.
public struct EgressEventRecord: Hashable, Sendable, Codable, Identifiable {
    /// What the proxy did with the request (`egress_events.decision`).
    public enum Decision: String, Hashable, Sendable, Codable, CaseIterable {
        /// Allowed by the policy and relayed.
        case allowed
        /// Refused by the policy or by the proxy's limits.
        case denied
        /// Allowed, but the upstream could not be resolved or reached.
        case failed
    }

    public var id: UUID
    /// The execution that made the connection; `nil` when it happened between executions.
    public var executionID: UUID?
    /// The sandbox whose proxy saw it (at most 100 characters).
    public var sandboxID: String
    /// When the request arrived.
    public var occurredAt: Date
    /// `CONNECT` or the HTTP method; empty when the request could not be parsed.
    public var method: String
    /// Host name as requested; empty when unknown.
    public var host: String
    /// Requested port (0 when unknown).
    public var port: Int
    /// The address connected to or refused, when there was one.
    public var address: String?
    public var decision: Decision
    /// Why the proxy decided so.
    public var reason: String
    /// HTTP status the proxy answered with itself, if it did.
    public var status: Int?
    /// Bytes relayed from the sandbox to the upstream.
    public var bytesUp: Int
    /// Bytes relayed from the upstream to the sandbox.
    public var bytesDown: Int
    /// Seconds from the request's arrival to the connection's close.
    public var duration: Double

    public init(id: UUID = UUID(), executionID: UUID? = nil, sandboxID: String, occurredAt: Date, method: String,
                host: String, port: Int, address: String? = nil, decision: Decision, reason: String,
                status: Int? = nil, bytesUp: Int = 0, bytesDown: Int = 0, duration: Double = 0) {
        self.id = id
        self.executionID = executionID
        self.sandboxID = sandboxID
        self.occurredAt = occurredAt
        self.method = method
        self.host = host
        self.port = port
        self.address = address
        self.decision = decision
        self.reason = reason
        self.status = status
        self.bytesUp = bytesUp
        self.bytesDown = bytesDown
        self.duration = duration
    }

    enum CodingKeys: String, CodingKey {
        case id, executionID = "execution_id", sandboxID = "sandbox_id", occurredAt = "occurred_at", method, host, port
        case address, decision, reason, status, bytesUp = "bytes_up", bytesDown = "bytes_down", duration
    }
}
