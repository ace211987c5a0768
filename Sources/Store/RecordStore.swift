import Foundation
import Logging
import SandboxCore

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
        let counts = try await pool.withConnection { try $0.pipeline(items) }
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
        let parameters: [String?] = [
            filter.sandboxID, filter.sessionID.map(Parameter.uuid), filter.ownerUID.map { String($0) }, String(filter.limit),
        ]
        let result = try await pool.withConnection { connection in
            try connection.execute(Statements.list, parameters)
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
        var agentRows: [AgentRow] = []
        var codeRows: [CodeRow] = []
        agentRows.reserveCapacity(records.count)
        for record in records {
            try validate(record)
            for (value, column) in [(record.executionTime, "execution_time"), (record.startedAt?.timeIntervalSince1970, "started_at"),
                                    (record.finishedAt?.timeIntervalSince1970, "finished_at")] {
                if let value, !value.isFinite { throw StoreError(.invalidRecord, "\(column) is \(value); only finite numbers are stored") }
            }
            agentRows.append(AgentRow(record))
            if let code = record.code {
                codeRows.append(CodeRow(
                    id: Parameter.uuid(record.id), session_id: record.sessionID.map(Parameter.uuid), code: code.code,
                    language: code.language, result: code.result.map { [$0] }, execution_time: record.executionTime))
            }
        }
        var items = [(Statements.insertAgentRecordset, [try Parameter.json(encoding: agentRows)] as [String?])]
        if !codeRows.isEmpty { items.append((Statements.insertCodeRecordset, [try Parameter.json(encoding: codeRows)])) }
        return items
    }

    /// One `agent_executions` row as a JSON object for jsonb_to_recordset (nil fields are left out → NULL).
    struct AgentRow: Encodable {
        var id: String
        var session_id: String?
        var agent_type: String
        // JSON values travel wrapped in a one-element array (unwrapped by `-> 0`), so that a JSON
        // null stays a JSON null instead of becoming SQL NULL.
        var input_data: [JSONValue]?
        var output_data: [JSONValue]?
        var execution_time: Double?
        var sandbox_id: String?
        var status: String
        var isolation_level: Int?
        var policy: String?
        var exit_code: Int32?
        var signal: Int32?
        var started_at: Double?
        var finished_at: Double?
        var cpu_usec: UInt64?
        var memory_peak_bytes: UInt64?
        var limits_enforced: Bool?
        var owner_uid: UInt32?

        init(_ record: ExecutionRecord) {
            id = Parameter.uuid(record.id)
            session_id = record.sessionID.map(Parameter.uuid)
            agent_type = record.agentType
            input_data = record.inputData.map { [$0] }
            output_data = record.outputData.map { [$0] }
            execution_time = record.executionTime
            sandbox_id = record.sandboxID
            status = record.status.rawValue
            isolation_level = record.isolationLevel?.rawValue
            policy = record.policy
            exit_code = record.exitCode
            signal = record.signal
            started_at = record.startedAt?.timeIntervalSince1970
            finished_at = record.finishedAt?.timeIntervalSince1970
            cpu_usec = record.usage.cpuMicroseconds
            memory_peak_bytes = record.usage.memoryPeakBytes
            limits_enforced = record.limitsEnforced
            owner_uid = record.ownerUID
        }
    }

    struct CodeRow: Encodable {
        var id: String
        var session_id: String?
        var code: String
        var language: String
        var result: [JSONValue]?
        var execution_time: Double?
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

/// The SQL the store runs, each prepared once per connection.
enum Statements {
    private static let agentValues = """
        VALUES ($1::uuid, $2::uuid, $3, $4::jsonb, $5::jsonb, $6::float8, $7, $8, $9::smallint, $10, $11::int, \
        $12::int, to_timestamp($13::float8), to_timestamp($14::float8), $15::bigint, $16::bigint, $17::boolean, $18::bigint)
        """

    static let insertAgent = PreparedStatement(
        name: "sandboxd_insert_agent_execution",
        sql: "INSERT INTO agent_executions (\(RecordStore.recordColumns)) \(agentValues) ON CONFLICT (id) DO NOTHING")

    static let upsertAgent = PreparedStatement(
        name: "sandboxd_upsert_agent_execution",
        sql: """
            INSERT INTO agent_executions (\(RecordStore.recordColumns)) \(agentValues)
            ON CONFLICT (id) DO UPDATE SET
                session_id = EXCLUDED.session_id, agent_type = EXCLUDED.agent_type,
                input_data = EXCLUDED.input_data, output_data = EXCLUDED.output_data,
                execution_time = EXCLUDED.execution_time, sandbox_id = EXCLUDED.sandbox_id,
                status = EXCLUDED.status, isolation_level = EXCLUDED.isolation_level, policy = EXCLUDED.policy,
                exit_code = EXCLUDED.exit_code, signal = EXCLUDED.signal, started_at = EXCLUDED.started_at,
                finished_at = EXCLUDED.finished_at, cpu_usec = EXCLUDED.cpu_usec,
                memory_peak_bytes = EXCLUDED.memory_peak_bytes, limits_enforced = EXCLUDED.limits_enforced,
                owner_uid = EXCLUDED.owner_uid
            WHERE agent_executions.status = 'running' OR EXCLUDED.status <> 'running'
            """)

    private static let codeInsert = """
        INSERT INTO code_executions (id, session_id, code, language, execution_mode, result, execution_time, agent_execution_id)
        VALUES ($1::uuid, $2::uuid, $3, $4, 'sandbox', $5::jsonb, $6::float8, $1::uuid)
        """

    static let insertCode = PreparedStatement(
        name: "sandboxd_insert_code_execution", sql: "\(codeInsert) ON CONFLICT (id) DO NOTHING")

    static let upsertCode = PreparedStatement(
        name: "sandboxd_upsert_code_execution",
        sql: """
            \(codeInsert) ON CONFLICT (id) DO UPDATE SET
                session_id = EXCLUDED.session_id, code = EXCLUDED.code, language = EXCLUDED.language,
                result = EXCLUDED.result, execution_time = EXCLUDED.execution_time,
                agent_execution_id = EXCLUDED.agent_execution_id
            """)

    static let insertAgentRecordset = PreparedStatement(
        name: "sandboxd_insert_agent_executions_recordset",
        sql: """
            INSERT INTO agent_executions (\(RecordStore.recordColumns))
            SELECT r.id, r.session_id, r.agent_type, r.input_data -> 0, r.output_data -> 0, r.execution_time, r.sandbox_id, r.status,
                   r.isolation_level, r.policy, r.exit_code, r.signal, to_timestamp(r.started_at), to_timestamp(r.finished_at),
                   r.cpu_usec, r.memory_peak_bytes, r.limits_enforced, r.owner_uid
            FROM jsonb_to_recordset($1::jsonb) AS r(
                id uuid, session_id uuid, agent_type text, input_data jsonb, output_data jsonb, execution_time float8,
                sandbox_id text, status text, isolation_level smallint, policy text, exit_code int, signal int,
                started_at float8, finished_at float8, cpu_usec bigint, memory_peak_bytes bigint, limits_enforced boolean,
                owner_uid bigint)
            ON CONFLICT (id) DO NOTHING
            """)

    static let insertCodeRecordset = PreparedStatement(
        name: "sandboxd_insert_code_executions_recordset",
        sql: """
            INSERT INTO code_executions (id, session_id, code, language, execution_mode, result, execution_time, agent_execution_id)
            SELECT r.id, r.session_id, r.code, r.language, 'sandbox', r.result -> 0, r.execution_time, r.id
            FROM jsonb_to_recordset($1::jsonb) AS r(
                id uuid, session_id uuid, code text, language text, result jsonb, execution_time float8)
            ON CONFLICT (id) DO NOTHING
            """)

    private static let select = """
        SELECT a.id, a.session_id, a.agent_type, a.input_data, a.output_data, a.execution_time, a.sandbox_id,
               a.status, a.isolation_level, a.policy, a.exit_code, a.signal,
               extract(epoch FROM a.started_at), extract(epoch FROM a.finished_at), a.cpu_usec,
               a.memory_peak_bytes, a.limits_enforced, a.owner_uid, extract(epoch FROM a.created_at),
               c.code, c.language, c.result
        FROM agent_executions a LEFT JOIN code_executions c ON c.agent_execution_id = a.id AND c.id = a.id
        """

    static let fetch = PreparedStatement(name: "sandboxd_fetch_execution", sql: "\(select) WHERE a.id = $1::uuid")

    static let list = PreparedStatement(
        name: "sandboxd_list_executions",
        sql: """
            \(select)
            WHERE ($1::text IS NULL OR a.sandbox_id = $1::text)
              AND ($2::uuid IS NULL OR a.session_id = $2::uuid)
              AND ($3::bigint IS NULL OR a.owner_uid = $3::bigint)
            ORDER BY a.created_at DESC, a.started_at DESC NULLS LAST, a.id
            LIMIT $4::bigint
            """)

    static let markAborted = PreparedStatement(
        name: "sandboxd_mark_running_aborted",
        sql: "UPDATE agent_executions SET status = 'aborted', finished_at = COALESCE(finished_at, now()) WHERE status = 'running'")

    static let ensureUser = PreparedStatement(
        name: "sandboxd_ensure_user",
        sql: """
            INSERT INTO users (username, unix_uid) VALUES ($1, $2::bigint)
            ON CONFLICT (unix_uid) DO UPDATE SET updated_at = CURRENT_TIMESTAMP
            RETURNING id
            """)

    static let createSession = PreparedStatement(
        name: "sandboxd_create_session",
        sql: """
            INSERT INTO sessions (id, user_id, session_name) VALUES ($1::uuid, $2::uuid, $3)
            ON CONFLICT (id) DO UPDATE SET session_name = EXCLUDED.session_name
            RETURNING id, user_id, session_name, extract(epoch FROM created_at), status
            """)
}

/// Values as text parameters. Nothing here builds SQL.
enum Parameter {
    static func uuid(_ value: UUID) -> String { value.uuidString.lowercased() }

    static func json(_ value: JSONValue) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            throw StoreError(.encodingFailed, "cannot encode a JSON value: \(error)")
        }
    }

    /// Any Encodable as a JSONB parameter.
    static func json<T: Encodable>(encoding value: T) throws -> String {
        do {
            return String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
        } catch {
            throw StoreError(.encodingFailed, "cannot encode \(T.self) as JSON: \(error)")
        }
    }

    static func double(_ value: Double, _ column: String) throws -> String {
        guard value.isFinite else { throw StoreError(.invalidRecord, "\(column) is \(value); only finite numbers are stored") }
        return "\(value)"
    }

    static func date(_ value: Date, _ column: String) throws -> String {
        try double(value.timeIntervalSince1970, column)
    }
}

enum Decode {
    static func uuid(_ text: String?, _ column: String) throws -> UUID {
        guard let text, let value = UUID(uuidString: text) else {
            throw StoreError(.decodingFailed, "\(column) \(text ?? "NULL") is not a UUID")
        }
        return value
    }

    static func number(_ text: String, _ column: String) throws -> Double {
        guard let value = Double(text) else { throw StoreError(.decodingFailed, "\(column) \(text) is not a number") }
        return value
    }

    static func integer<T: FixedWidthInteger>(_ text: String, _ column: String) throws -> T {
        guard let value = T(text) else { throw StoreError(.decodingFailed, "\(column) \(text) is not a \(T.self)") }
        return value
    }

    static func epoch(_ text: String, _ column: String) throws -> Date {
        Date(timeIntervalSince1970: try number(text, column))
    }

    static func json(_ text: String, _ column: String) throws -> JSONValue {
        try json(JSONValue.self, text, column)
    }

    static func json<T: Decodable>(_ type: T.Type, _ text: String, _ column: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            throw StoreError(.decodingFailed, "\(column) does not decode as \(T.self): \(error)")
        }
    }
}
