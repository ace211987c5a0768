import Foundation
import SandboxCore

extension RecordStore {
    /// Upserts many records in one pipelined round trip (the Supervisor's group commit): the same
    /// statement as `upsert(_:)` per record, so a finished record is never set back to `running`.
    /// Returns how many agent rows changed.
    @discardableResult
    public func upsert(_ records: [ExecutionRecord]) async throws -> Int {
        guard !records.isEmpty else { return 0 }
        var items: [(PreparedStatement, [String?])] = []
        var agentRows: [Int] = []
        items.reserveCapacity(records.count * 2)
        for record in records {
            agentRows.append(items.count)
            items += try Self.statements(for: record, upsert: true)
        }
        let counts = try await pool.withConnection { [items] in try $0.pipeline(items) }
        return agentRows.reduce(0) { $0 + counts[$1] }
    }

    /// The Unix uid of the user owning session `id`: `.some(nil)` for a session without a user,
    /// `nil` when there is no such session.
    public func sessionOwnerUID(_ id: UUID) async throws -> UInt32?? {
        let result = try await pool.withConnection { connection in
            try connection.query(
                "SELECT u.unix_uid FROM sessions s LEFT JOIN users u ON u.id = s.user_id WHERE s.id = $1::uuid",
                [Parameter.uuid(id)])
        }
        guard let row = result.rows.first else { return nil }
        guard let text = row.first ?? nil else { return .some(nil) }
        return .some(UInt32(text))
    }
}
