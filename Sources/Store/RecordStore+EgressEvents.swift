import Foundation
import SandboxCore

extension RecordStore {
    /// Writes every event whose id is not stored yet: `batchChunkSize` events per round trip and
    /// transaction, as one libpq pipeline (the path execution records take). Returns how many
    /// were written.
    ///
    /// An event's `executionID` must name an execution already written (the foreign key), so the
    /// daemon writes the `running` record before the events of its execution; a chunk holding an
    /// event of an unknown execution is refused as a whole and nothing of it is written.
    @discardableResult
    public func insert(_ events: [EgressEventRecord]) async throws -> Int {
        var written = 0
        var start = events.startIndex
        while start < events.endIndex {
            let end = min(start + max(batchChunkSize, 1), events.endIndex)
            let items = try events[start..<end].map { (Statements.insertEgressEvent, try Self.parameters(for: $0)) }
            let counts = try await pool.withConnection { try $0.pipeline(items) }
            written += counts.reduce(0, +)
            start = end
        }
        return written
    }

    /// The egress events of execution `executionID`, oldest first.
    public func egressEvents(executionID: UUID, limit: Int = 1000) async throws -> [EgressEventRecord] {
        try await egressEvents(Statements.egressEventsByExecution, Parameter.uuid(executionID), limit: limit)
    }

    /// The egress events of sandbox `sandboxID` (all its executions and between them), oldest first.
    public func egressEvents(sandboxID: String, limit: Int = 1000) async throws -> [EgressEventRecord] {
        guard !sandboxID.utf8.contains(0) else { throw StoreError(.invalidRecord, "sandbox id contains a NUL byte") }
        return try await egressEvents(Statements.egressEventsBySandbox, sandboxID, limit: limit)
    }

    private func egressEvents(_ statement: PreparedStatement, _ key: String, limit: Int) async throws -> [EgressEventRecord] {
        guard limit >= 0 else { throw StoreError(.invalidRecord, "egress event limit \(limit) is negative") }
        let result = try await pool.withConnection { connection in
            try connection.execute(statement, [key, String(limit)])
        }
        return try result.rows.map(Self.decodeEgressEvent)
    }

    // MARK: - Encoding and decoding

    static let egressEventColumns =
        "id, execution_id, sandbox_id, occurred_at, method, host, port, address, decision, reason, status, bytes_up, bytes_down, duration"

    static func parameters(for event: EgressEventRecord) throws -> [String?] {
        let what = "egress event \(Parameter.uuid(event.id))"
        try checkLength(event.sandboxID, column: "egress_events.sandbox_id", limit: 100)
        for (column, value) in [("sandbox_id", event.sandboxID), ("method", event.method), ("host", event.host),
                                ("address", event.address ?? ""), ("reason", event.reason)]
        where value.utf8.contains(0) {
            throw StoreError(.invalidRecord, "\(what): egress_events.\(column) contains a NUL byte")
        }
        guard (0...65535).contains(event.port) else {
            throw StoreError(.invalidRecord, "\(what): port \(event.port) is not between 0 and 65535")
        }
        guard event.bytesUp >= 0, event.bytesDown >= 0 else {
            throw StoreError(.invalidRecord, "\(what): byte counts \(event.bytesUp)/\(event.bytesDown) must not be negative")
        }
        if let status = event.status, !(0...999).contains(status) {
            throw StoreError(.invalidRecord, "\(what): status \(status) is not an HTTP status")
        }
        return [
            Parameter.uuid(event.id),
            event.executionID.map(Parameter.uuid),
            event.sandboxID,
            try Parameter.date(event.occurredAt, "egress_events.occurred_at"),
            event.method,
            event.host,
            String(event.port),
            event.address,
            event.decision.rawValue,
            event.reason,
            event.status.map { String($0) },
            String(event.bytesUp),
            String(event.bytesDown),
            try Parameter.double(event.duration, "egress_events.duration"),
        ]
    }

    static func decodeEgressEvent(_ row: [String?]) throws -> EgressEventRecord {
        guard row.count == 14 else { throw StoreError(.decodingFailed, "egress event row has \(row.count) columns, expected 14") }
        let id = try Decode.uuid(row[0], "egress_events.id")
        func required(_ index: Int, _ column: String) throws -> String {
            guard let value = row[index] else { throw StoreError(.decodingFailed, "egress_events.\(column) is NULL for \(id)") }
            return value
        }
        let decisionText = try required(8, "decision")
        guard let decision = EgressEventRecord.Decision(rawValue: decisionText) else {
            throw StoreError(.decodingFailed, "egress_events.decision \(decisionText) of \(id) is not allowed, denied or failed")
        }
        return EgressEventRecord(
            id: id,
            executionID: try row[1].map { try Decode.uuid($0, "egress_events.execution_id") },
            sandboxID: try required(2, "sandbox_id"),
            occurredAt: try Decode.epoch(try required(3, "occurred_at"), "egress_events.occurred_at"),
            method: try required(4, "method"),
            host: try required(5, "host"),
            port: try Decode.integer(try required(6, "port"), "egress_events.port"),
            address: row[7],
            decision: decision,
            reason: try required(9, "reason"),
            status: try row[10].map { try Decode.integer($0, "egress_events.status") },
            bytesUp: try Decode.integer(try required(11, "bytes_up"), "egress_events.bytes_up"),
            bytesDown: try Decode.integer(try required(12, "bytes_down"), "egress_events.bytes_down"),
            duration: try Decode.number(try required(13, "duration"), "egress_events.duration"))
    }
}
