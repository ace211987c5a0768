import Foundation
import SandboxCore

extension EgressEvent {
    /// This event as the record the daemon stores in `egress_events`.
    /// - Parameters:
    ///   - id: the record's key; keep it when retrying a write so the event is stored once.
    ///   - executionID: the execution the connection belongs to, `nil` between executions.
    public func record(id: UUID = UUID(), executionID: UUID?) -> EgressEventRecord {
        let recordDecision: EgressEventRecord.Decision
        switch decision {
        case .allowed: recordDecision = .allowed
        case .denied: recordDecision = .denied
        case .failed: recordDecision = .failed
        }
        return EgressEventRecord(
            id: id, executionID: executionID, sandboxID: sandboxID, occurredAt: time, method: method, host: host,
            port: port, address: address, decision: recordDecision, reason: reason, status: status,
            bytesUp: bytesUp, bytesDown: bytesDown, duration: duration)
    }
}
