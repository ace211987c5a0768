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

    /// One prepared statement per combination of filters, so that each gets a plan using its
    /// index (a single statement with `$1 IS NULL OR …` would settle on a generic plan that
    /// scans the whole table). Only fixed SQL fragments are combined; values stay parameters.
    static func list(sandbox: Bool, session: Bool, owner: Bool) -> PreparedStatement {
        var clauses: [String] = []
        var next = 1
        if sandbox { clauses.append("a.sandbox_id = $\(next)::text"); next += 1 }
        if session { clauses.append("a.session_id = $\(next)::uuid"); next += 1 }
        if owner { clauses.append("a.owner_uid = $\(next)::bigint"); next += 1 }
        let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        return PreparedStatement(
            name: "sandboxd_list_executions_\(sandbox ? "s" : "")\(session ? "e" : "")\(owner ? "o" : "")",
            sql: """
                \(select)
                \(whereClause)
                ORDER BY a.created_at DESC, a.started_at DESC NULLS LAST, a.id
                LIMIT $\(next)::bigint
                """)
    }

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

    static let insertEgressEvent = PreparedStatement(
        name: "sandboxd_insert_egress_event",
        sql: """
            INSERT INTO egress_events (\(RecordStore.egressEventColumns))
            VALUES ($1::uuid, $2::uuid, $3, to_timestamp($4::float8), $5, $6, $7::int, $8, $9, $10, $11::int,
                    $12::bigint, $13::bigint, $14::float8)
            ON CONFLICT (id) DO NOTHING
            """)

    private static let egressSelect = """
        SELECT id, execution_id, sandbox_id, extract(epoch FROM occurred_at), method, host, port, address, decision,
               reason, status, bytes_up, bytes_down, duration
        FROM egress_events
        """

    static let egressEventsByExecution = PreparedStatement(
        name: "sandboxd_egress_events_by_execution",
        sql: "\(egressSelect) WHERE execution_id = $1::uuid ORDER BY occurred_at, id LIMIT $2::bigint")

    static let egressEventsBySandbox = PreparedStatement(
        name: "sandboxd_egress_events_by_sandbox",
        sql: "\(egressSelect) WHERE sandbox_id = $1::text ORDER BY occurred_at, id LIMIT $2::bigint")
}
