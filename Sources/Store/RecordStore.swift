import Foundation
import Logging
import SandboxCore

/// Execution records, users and sessions in PostgreSQL, over a `ConnectionPool`.
///
/// Every write is idempotent (keyed by an id chosen by the caller or by a unique column), so the
/// pool may retry it once on a new connection after a server restart.
public struct RecordStore: Sendable {
    public let pool: ConnectionPool
    /// Records per round trip and transaction in `insert(_:[ExecutionRecord])`.
    public var batchChunkSize = 500
    /// How `insert(_:[ExecutionRecord])` sends a chunk.
    public var batchMethod = BatchMethod.pipeline

    /// Two ways to write many records in one round trip; `make bench` measures both.
    public enum BatchMethod: String, Sendable, CaseIterable {
        /// One prepared INSERT per record, all sent in a libpq pipeline with a single sync.
        case pipeline
        /// One INSERT … SELECT FROM jsonb_to_recordset($1) per chunk: the chunk travels as one JSONB parameter.
        case jsonRecordset
    }

    public init(pool: ConnectionPool) {
        self.pool = pool
    }

    /// Creates a pool for `settings` and a store over it.
    public init(settings: DatabaseSettings, logger: Logger = Logger(label: "sandboxd.store")) throws {
        self.pool = try ConnectionPool(settings: settings, logger: logger)
    }

    /// Applies pending schema migrations (see `ConnectionPool.migrate`).
    @discardableResult
    public func migrate() async throws -> [Int] { try await pool.migrate() }

    // MARK: - Execution records

    /// Writes `record` unless a record with its id exists. Returns whether it was written.
    @discardableResult
    public func insert(_ record: ExecutionRecord) async throws -> Bool {
        let items = try Self.statements(for: record, upsert: false)
        let counts = try await pool.withConnection { connection in
            // Without a code part one statement suffices; with one, the pipeline keeps both rows in one transaction.
            items.count == 1 ? [try connection.execute(items[0].0, items[0].1).affectedRows] : try connection.pipeline(items)
        }
        return counts.first == 1
    }

    /// Writes every record whose id does not exist yet, pipelined: `batchChunkSize` records per
    /// round trip and transaction. Returns how many were written.
    @discardableResult
    public func insert(_ records: [ExecutionRecord]) async throws -> Int {
        var written = 0
        var start = records.startIndex
        while start < records.endIndex {
            let end = min(start + max(batchChunkSize, 1), records.endIndex)
            var items: [(PreparedStatement, [String?])] = []
            var agentRows: [Int] = []
            switch batchMethod {
            case .pipeline:
                items.reserveCapacity((end - start) * 2)
                for record in records[start..<end] {
                    agentRows.append(items.count)
                    items += try Self.statements(for: record, upsert: false)
                }
            case .jsonRecordset:
                items = try Self.recordsetStatements(for: records[start..<end])
                agentRows = [0]
            }
            let counts = try await pool.withConnection { [items] in try $0.pipeline(items) }
            written += agentRows.reduce(0) { $0 + counts[$1] }
            start = end
        }
        return written
    }

    /// Writes `record`, replacing an existing record with the same id — except that a finished
    /// record is never set back to `running` by a late write. Returns whether a row changed.
    @discardableResult
    public func upsert(_ record: ExecutionRecord) async throws -> Bool {
        let items = try Self.statements(for: record, upsert: true)
        let counts = try await pool.withConnection { try $0.pipeline(items) }
        return counts.first == 1
    }

    /// The record with `id`, or `nil`.
    public func record(id: UUID) async throws -> ExecutionRecord? {
        let result = try await pool.withConnection { connection in
            try connection.execute(Statements.fetch, [Parameter.uuid(id)])
        }
        return try result.rows.first.map(Self.decodeRecord)
    }

    /// Records matching `filter`, newest first.
    public func list(_ filter: ExecutionFilter = ExecutionFilter()) async throws -> [ExecutionRecord] {
        guard filter.limit >= 0 else { throw StoreError(.invalidRecord, "list limit \(filter.limit) is negative") }
        let statement = Statements.list(sandbox: filter.sandboxID != nil, session: filter.sessionID != nil, owner: filter.ownerUID != nil)
        let filters: [String] = [filter.sandboxID, filter.sessionID.map(Parameter.uuid), filter.ownerUID.map { String($0) }]
            .compactMap { $0 }
        let parameters: [String?] = filters + [String(filter.limit)]
        let result = try await pool.withConnection { connection in
            try connection.execute(statement, parameters)
        }
        return try result.rows.map(Self.decodeRecord)
    }

    /// Marks every record still `running` as `aborted` (done at start: their daemon died).
    /// Returns how many were marked.
    @discardableResult
    public func markRunningAborted() async throws -> Int {
        try await pool.withConnection { connection in
            try connection.execute(Statements.markAborted, []).affectedRows
        }
    }

    // MARK: - Users and sessions

    /// The `users.id` for Unix uid `unixUID`, creating the user as `username` if needed.
    public func ensureUser(unixUID: UInt32, username: String) async throws -> UUID {
        try Self.checkLength(username, column: "users.username", limit: 50)
        let result = try await pool.withConnection { connection in
            try connection.execute(Statements.ensureUser, [username, String(unixUID)])
        }
        guard let text = result.rows.first?.first ?? nil, let id = UUID(uuidString: text) else {
            throw StoreError(.decodingFailed, "ensureUser returned no id for uid \(unixUID)")
        }
        return id
    }

    /// Creates a session for `userID` named `name`.
    public func createSession(userID: UUID?, name: String?) async throws -> SessionRecord {
        if let name { try Self.checkLength(name, column: "sessions.session_name", limit: 100) }
        // The id is chosen here so that a retry after a lost reply cannot create a second session.
        let id = UUID()
        let result = try await pool.withConnection { connection in
            try connection.execute(Statements.createSession, [Parameter.uuid(id), userID.map(Parameter.uuid), name])
        }
        guard let row = result.rows.first, row.count == 5 else {
            throw StoreError(.decodingFailed, "createSession returned no row")
        }
        return SessionRecord(
            id: try Decode.uuid(row[0], "sessions.id"),
            userID: try row[1].map { try Decode.uuid($0, "sessions.user_id") },
            name: row[2],
            createdAt: try row[3].map { try Decode.epoch($0, "sessions.created_at") },
            status: row[4])
    }

    // MARK: - Encoding

    static let recordColumns = """
        id, session_id, agent_type, input_data, output_data, execution_time, sandbox_id, status, \
        isolation_level, policy, exit_code, signal, started_at, finished_at, cpu_usec, memory_peak_bytes, \
        limits_enforced, owner_uid
        """

    static func statements(for record: ExecutionRecord, upsert: Bool) throws -> [(PreparedStatement, [String?])] {
        try validate(record)
        let agent: [String?] = [
            Parameter.uuid(record.id),
            record.sessionID.map(Parameter.uuid),
            record.agentType,
            try record.inputData.map(Parameter.json),
            try record.outputData.map(Parameter.json),
            try record.executionTime.map { try Parameter.double($0, "execution_time") },
            record.sandboxID,
            record.status.rawValue,
            record.isolationLevel.map { String($0.rawValue) },
            record.policy,
            record.exitCode.map { String($0) },
            record.signal.map { String($0) },
            try record.startedAt.map { try Parameter.date($0, "started_at") },
            try record.finishedAt.map { try Parameter.date($0, "finished_at") },
            record.usage.cpuMicroseconds.map { String($0) },
            record.usage.memoryPeakBytes.map { String($0) },
            record.limitsEnforced.map { $0 ? "true" : "false" },
            record.ownerUID.map { String($0) },
        ]
        var items = [(upsert ? Statements.upsertAgent : Statements.insertAgent, agent)]
        if let code = record.code {
            let codeParameters: [String?] = [
                Parameter.uuid(record.id),
                record.sessionID.map(Parameter.uuid),
                code.code,
                code.language,
                try code.result.map(Parameter.json),
                try record.executionTime.map { try Parameter.double($0, "execution_time") },
            ]
            items.append((upsert ? Statements.upsertCode : Statements.insertCode, codeParameters))
        }
        return items
    }

    /// The chunk as one JSONB array for the agent rows (and one for the code rows, if any).
    static func recordsetStatements(for records: ArraySlice<ExecutionRecord>) throws -> [(PreparedStatement, [String?])] {
        var agentRows = "["
        var codeRows = "["
        var hasCodeRows = false
        agentRows.reserveCapacity(records.count * 400)
        for (index, record) in records.enumerated() {
            try validate(record)
            if index > 0 { agentRows += "," }
            agentRows += try agentRow(record)
            if let code = record.code {
                var row = JSONWriter.Object()
                row.string("id", Parameter.uuid(record.id))
                row.string("session_id", record.sessionID.map(Parameter.uuid))
                row.string("code", code.code)
                row.string("language", code.language)
                try row.wrapped("result", code.result)
                try row.number("execution_time", record.executionTime)
                if hasCodeRows { codeRows += "," }  // (String.count would be O(n) here)
                hasCodeRows = true
                codeRows += row.close()
            }
        }
        agentRows += "]"
        codeRows += "]"
        var items: [(PreparedStatement, [String?])] = [(Statements.insertAgentRecordset, [agentRows])]
        if hasCodeRows { items.append((Statements.insertCodeRecordset, [codeRows])) }
        return items
    }

    /// One `agent_executions` row as a JSON object for jsonb_to_recordset (nil fields left out → NULL).
    /// JSON values travel wrapped in a one-element array (unwrapped by `-> 0`) so that a JSON null
    /// stays a JSON null instead of becoming SQL NULL.
    static func agentRow(_ record: ExecutionRecord) throws -> String {
        var row = JSONWriter.Object()
        row.string("id", Parameter.uuid(record.id))
        row.string("session_id", record.sessionID.map(Parameter.uuid))
        row.string("agent_type", record.agentType)
        try row.wrapped("input_data", record.inputData)
        try row.wrapped("output_data", record.outputData)
        try row.number("execution_time", record.executionTime)
        row.string("sandbox_id", record.sandboxID)
        row.string("status", record.status.rawValue)
        row.integer("isolation_level", record.isolationLevel?.rawValue)
        row.string("policy", record.policy)
        row.integer("exit_code", record.exitCode)
        row.integer("signal", record.signal)
        try row.number("started_at", record.startedAt?.timeIntervalSince1970)
        try row.number("finished_at", record.finishedAt?.timeIntervalSince1970)
        row.integer("cpu_usec", record.usage.cpuMicroseconds)
        row.integer("memory_peak_bytes", record.usage.memoryPeakBytes)
        row.bool("limits_enforced", record.limitsEnforced)
        row.integer("owner_uid", record.ownerUID)
        return row.close()
    }

    /// Checks what the columns would reject, so the error names the field instead of a SQLSTATE.
    static func validate(_ record: ExecutionRecord) throws {
        try checkLength(record.agentType, column: "agent_executions.agent_type", limit: 50)
        if let sandboxID = record.sandboxID { try checkLength(sandboxID, column: "agent_executions.sandbox_id", limit: 100) }
        if let policy = record.policy { try checkLength(policy, column: "agent_executions.policy", limit: 100) }
        if let code = record.code {
            try checkLength(code.language, column: "code_executions.language", limit: 20)
            if code.code.utf8.contains(0) {
                throw StoreError(.invalidRecord, "record \(record.id): code_executions.code contains a NUL byte")
            }
        }
        for (name, value) in [("agent_type", record.agentType), ("sandbox_id", record.sandboxID ?? ""), ("policy", record.policy ?? "")]
        where value.utf8.contains(0) {
            throw StoreError(.invalidRecord, "record \(record.id): agent_executions.\(name) contains a NUL byte")
        }
        if let cpu = record.usage.cpuMicroseconds, cpu > UInt64(Int64.max) {
            throw StoreError(.invalidRecord, "record \(record.id): cpu_usec \(cpu) does not fit a BIGINT")
        }
        if let memory = record.usage.memoryPeakBytes, memory > UInt64(Int64.max) {
            throw StoreError(.invalidRecord, "record \(record.id): memory_peak_bytes \(memory) does not fit a BIGINT")
        }
    }

    static func checkLength(_ value: String, column: String, limit: Int) throws {
        // VARCHAR(n) counts characters, which PostgreSQL takes to be code points.
        let length = value.unicodeScalars.count
        if length > limit {
            throw StoreError(.invalidRecord, "\(column) is \(length) characters long; the column holds at most \(limit)")
        }
    }

    // MARK: - Decoding

    static func decodeRecord(_ row: [String?]) throws -> ExecutionRecord {
        guard row.count == 22 else { throw StoreError(.decodingFailed, "execution row has \(row.count) columns, expected 22") }
        let id = try Decode.uuid(row[0], "agent_executions.id")
        guard let agentType = row[2] else { throw StoreError(.decodingFailed, "agent_executions.agent_type is NULL for \(id)") }
        guard let statusText = row[7], let status = ExecutionStatus(rawValue: statusText) else {
            throw StoreError(.decodingFailed, "agent_executions.status \(row[7] ?? "NULL") of \(id) is not a known status")
        }
        var code: CodeRun? = nil
        if let text = row[19], let language = row[20] {
            code = CodeRun(code: text, language: language, result: try row[21].map { try Decode.json($0, "code_executions.result") })
        }
        return ExecutionRecord(
            id: id,
            sessionID: try row[1].map { try Decode.uuid($0, "agent_executions.session_id") },
            agentType: agentType,
            inputData: try row[3].map { try Decode.json($0, "agent_executions.input_data") },
            outputData: try row[4].map { try Decode.json($0, "agent_executions.output_data") },
            executionTime: try row[5].map { try Decode.number($0, "agent_executions.execution_time") },
            sandboxID: row[6],
            status: status,
            isolationLevel: try row[8].map { text in
                guard let level = Int(text).flatMap(IsolationLevel.init(rawValue:)) else {
                    throw StoreError(.decodingFailed, "agent_executions.isolation_level \(text) of \(id) is not 1–4")
                }
                return level
            },
            policy: row[9],
            exitCode: try row[10].map { try Decode.integer($0, "agent_executions.exit_code") },
            signal: try row[11].map { try Decode.integer($0, "agent_executions.signal") },
            startedAt: try row[12].map { try Decode.epoch($0, "agent_executions.started_at") },
            finishedAt: try row[13].map { try Decode.epoch($0, "agent_executions.finished_at") },
            usage: ResourceUsage(
                cpuMicroseconds: try row[14].map { try Decode.integer($0, "agent_executions.cpu_usec") },
                memoryPeakBytes: try row[15].map { try Decode.integer($0, "agent_executions.memory_peak_bytes") }),
            limitsEnforced: row[16].map { $0 == "t" },
            ownerUID: try row[17].map { try Decode.integer($0, "agent_executions.owner_uid") },
            createdAt: try row[18].map { try Decode.epoch($0, "agent_executions.created_at") },
            code: code)
    }
}
