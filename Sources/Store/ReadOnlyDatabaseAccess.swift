import Foundation
import Logging
import SandboxCore

/// The read-only database tool: for each sandbox whose policy has a `database` section, one
/// PostgreSQL role that can `SELECT` from exactly the tables the policy lists, and nothing else.
///
/// What a sandbox's role (`sbx_ro_…`) gets: `LOGIN` with a generated password, `NOSUPERUSER
/// NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS`, a small `CONNECTION LIMIT`, no
/// role memberships, `CONNECT` on the daemon's database, `USAGE` on the schemas of the listed
/// tables and `SELECT` on those tables (all tables of a listed schema when the policy lists the
/// schema), and the settings `default_transaction_read_only = on`, `statement_timeout` from the
/// policy, `idle_in_transaction_session_timeout`, and `temp_file_limit` (when the administering
/// role is a superuser, which it is for the embedded cluster). The read-only default is a
/// courtesy; a client can turn it off, so the real barrier is that nothing else is granted.
///
/// Hardening done on the database (idempotent, at every grant): `TEMPORARY` is revoked from
/// PUBLIC on the daemon's database (and, for the embedded cluster, on every database), `EXECUTE`
/// on the large-object creating functions (`lo_create`, `lo_creat`, `lo_from_bytea`) is revoked
/// from PUBLIC, and all privileges of PUBLIC on sandboxd's record tables are revoked. The
/// database's owner (the daemon's role) keeps its own privileges. After granting, the role's
/// effective privileges are checked against the policy in the same transaction; any excess
/// (a write privilege, a readable table the policy does not list, `CREATE` on a schema,
/// temporary tables anywhere it can connect, a role membership) refuses the grant and rolls it
/// back, naming what was found.
///
/// Authentication: scram-sha-256 with a 256-bit random password per sandbox, handed to the
/// sandbox in `PGPASSWORD`. The verifier is computed by libpq here, so the password never
/// reaches the server's log. Knowing only its own password, a sandbox cannot log in as any other
/// role, and without memberships it cannot `SET ROLE`. (Peer authentication would need a
/// distinct host uid per sandbox plus an ident map; `trust` on a sandbox-only socket is not
/// possible because `pg_hba.conf` cannot tell a server's sockets apart.)
///
/// The sandbox reaches the server through a Unix socket directory bind-mounted inside (see
/// ``SandboxDatabaseConnection``). PostgreSQL over TCP has no such directory:
/// ``init(database:logger:)`` refuses it with `database_tool_unavailable` (a relay through the
/// egress listener mechanism would be the way to offer it).
///
/// Blocking libpq work runs on the pool's connection threads. Grants and drops take one
/// transaction-scoped advisory lock, so concurrent calls (two sandboxes created at once) do not
/// collide on the database's ACL.
public struct ReadOnlyDatabaseAccess: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// A role that may create roles and grant `SELECT` on the listed tables, connected to the
        /// database the sandboxes read: the embedded cluster's superuser, or for an external
        /// server a role with `CREATEROLE` that owns (or may grant) the tables.
        public var admin: DatabaseSettings
        /// Host directory holding the server's Unix socket, to be bind-mounted into sandboxes.
        public var socketDirectory: String
        /// Where `socketDirectory` appears inside a sandbox (`PGHOST`).
        public var mountPoint: String
        /// Most connections one sandbox's role may hold at once.
        public var connectionLimit: Int
        /// The cluster belongs to sandboxd alone (the embedded default): `TEMPORARY` is revoked
        /// from PUBLIC on every database, not only on the daemon's. For a shared server that
        /// revocation is left to its operator; a grant is refused until it is done.
        public var clusterIsPrivate: Bool
        /// `temp_file_limit` for sorts and hashes of a sandbox's queries (superuser admins only).
        public var tempFileLimitKilobytes: Int
        /// Seconds a sandbox's session may stay idle inside a transaction before the server ends it.
        public var idleInTransactionTimeoutSeconds: Int

        public init(
            admin: DatabaseSettings, socketDirectory: String, mountPoint: String = "/run/postgresql",
            connectionLimit: Int = 4, clusterIsPrivate: Bool, tempFileLimitKilobytes: Int = 65536,
            idleInTransactionTimeoutSeconds: Int = 60
        ) {
            self.admin = admin
            self.socketDirectory = socketDirectory
            self.mountPoint = mountPoint
            self.connectionLimit = connectionLimit
            self.clusterIsPrivate = clusterIsPrivate
            self.tempFileLimitKilobytes = tempFileLimitKilobytes
            self.idleInTransactionTimeoutSeconds = idleInTransactionTimeoutSeconds
        }
    }

    public let configuration: Configuration
    private let pool: ConnectionPool
    private let logger: Logger

    /// Every role this tool creates starts so; ``sweep()`` only considers such roles.
    public static let rolePrefix = "sbx_ro_"
    /// Start of the comment put on every role this tool creates; only roles carrying it (for this
    /// database) are ever altered or dropped.
    static let commentPrefix = "sandboxd read-only database tool; database="

    /// How the comment of a role made for `database` starts (up to the sandbox id).
    static func ownershipMark(database: String) -> String { commentPrefix + database + "; sandbox=" }
    /// Key of the transaction-scoped advisory lock serialising grants and drops ("sbx_ro" in ASCII).
    static let lockKey: Int64 = 0x7362_785f_726f
    /// Functions a role with no grants could use to write or to reach the server's files, were
    /// PUBLIC allowed to execute them. The first three are revoked here; the rest are revoked from
    /// PUBLIC by PostgreSQL itself. The check after granting covers all of them.
    static let dangerousFunctions = [
        "lo_create(oid)", "lo_creat(integer)", "lo_from_bytea(oid, bytea)",
        "lo_import(text)", "lo_import(text, oid)", "lo_export(oid, text)",
        "pg_read_file(text)", "pg_read_binary_file(text)", "pg_ls_dir(text)", "pg_stat_file(text)",
    ]
    static let revokedFunctions = Array(dangerousFunctions.prefix(3))

    public init(configuration: Configuration, logger: Logger = Logger(label: "sandboxd.store.dbtool")) throws {
        func bad(_ message: String) -> StoreError { StoreError(.invalidSettings, "database tool: \(message)") }
        guard configuration.socketDirectory.hasPrefix("/") else {
            throw bad("socket directory \"\(configuration.socketDirectory)\" is not an absolute path")
        }
        guard configuration.mountPoint.hasPrefix("/"), !configuration.mountPoint.contains("\0") else {
            throw bad("mount point \"\(configuration.mountPoint)\" is not an absolute path")
        }
        guard (1...100).contains(configuration.connectionLimit) else {
            throw bad("connection limit \(configuration.connectionLimit) is not between 1 and 100")
        }
        guard configuration.tempFileLimitKilobytes >= 0, configuration.idleInTransactionTimeoutSeconds >= 1 else {
            throw bad("temp_file_limit and idle_in_transaction_session_timeout must be positive")
        }
        var admin = configuration.admin
        admin.poolSize = 2
        admin.applicationName = "sandboxd-dbtool"
        self.configuration = configuration
        self.pool = try ConnectionPool(settings: admin, logger: logger)
        self.logger = logger
    }

    /// The tool for the daemon's opened database: the embedded cluster is administered as its
    /// superuser and offers its sandbox socket directory; an external server on a Unix socket is
    /// administered as the daemon's role (which then needs `CREATEROLE`) and offers its socket
    /// directory.
    /// - Throws: `database_tool_unavailable` for PostgreSQL over TCP.
    public init(database: OpenedDatabase, logger: Logger = Logger(label: "sandboxd.store.dbtool")) throws {
        try self.init(settings: database.settings, embedded: database.embedded, logger: logger)
    }

    /// The same, from the settings the daemon's store connects with and its embedded server, if any.
    public init(settings: DatabaseSettings, embedded: EmbeddedPostgres?, logger: Logger = Logger(label: "sandboxd.store.dbtool")) throws {
        if let embedded {
            try self.init(
                configuration: Configuration(
                    admin: try embedded.superuserSettings(database: settings.database),
                    socketDirectory: embedded.sandboxSocketDirectory, clusterIsPrivate: true),
                logger: logger)
        } else if settings.isUnixSocket {
            try self.init(
                configuration: Configuration(admin: settings, socketDirectory: settings.host, clusterIsPrivate: false),
                logger: logger)
        } else {
            throw StoreError(
                .databaseToolUnavailable,
                "the read-only database tool needs PostgreSQL on a Unix socket of this host, to mount into sandboxes; "
                    + "the daemon's database \(settings.redactedDescription) is reached over TCP. Use the embedded database "
                    + "or a local server's socket (POSTGRES_HOST=/var/run/postgresql), or drop the policy's database section")
        }
    }

    /// Closes the administering connections.
    public func close() async { await pool.close() }

    /// The role name for sandbox `sandboxID`: `sbx_ro_`, the id's letters and digits (lower case,
    /// at most 32), `_`, and 16 hex digits of a hash of the whole id (so distinct ids never share
    /// a role). At most 56 characters, a valid unquoted identifier.
    public static func roleName(forSandbox sandboxID: String) -> String {
        let readable = String(String.UnicodeScalarView(
            sandboxID.lowercased().unicodeScalars.filter { ("a"..."z").contains($0) || ("0"..."9").contains($0) }.prefix(32)))
        // FNV-1a: not a security measure, only a collision guard between ids that read alike.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in sandboxID.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return rolePrefix + readable + "_" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    // MARK: - Grant

    /// Creates (or, when it exists, resets) sandbox `sandboxID`'s role with exactly the access
    /// `access` describes and a new password, and returns how the sandbox reaches it.
    ///
    /// - Throws: `database_access_refused` naming the problem when a listed schema or table does
    ///   not exist, names one of sandboxd's record tables or a system schema, or when the role
    ///   would end up with more than the policy says; nothing is granted then.
    public func grant(_ access: Policy.DatabaseAccess, sandboxID: String) async throws -> SandboxDatabaseConnection {
        try Self.checkSandboxID(sandboxID)
        let request = try Self.Request(access)
        let role = Self.roleName(forSandbox: sandboxID)
        let password = Self.generatePassword()
        let configuration = configuration
        let (database, tables) = try await pool.withConnection { connection in
            try Self.provision(connection, role: role, sandboxID: sandboxID, password: password, request: request,
                               configuration: configuration)
        }
        logger.info("granted read-only database access", metadata: [
            "sandbox": "\(sandboxID)", "role": "\(role)", "tables": "\(tables.joined(separator: ","))",
        ])
        return SandboxDatabaseConnection(
            role: role, password: Secret(password), database: database, port: configuration.admin.port,
            hostSocketDirectory: configuration.socketDirectory, mountPoint: configuration.mountPoint,
            statementTimeoutMilliseconds: request.statementTimeoutMilliseconds, readableTables: tables)
    }

    /// The policy's section, checked and normalised (unquoted SQL names fold to lower case).
    struct Request: Sendable {
        var schemas: [String]
        var tables: [(schema: String, table: String)]
        var statementTimeoutMilliseconds: Int

        init(_ access: Policy.DatabaseAccess) throws(StoreError) {
            func refused(_ message: String) -> StoreError { StoreError(.databaseAccessRefused, "database tool: \(message)") }
            func checkName(_ name: String, _ what: String) throws(StoreError) -> String {
                let lower = name.lowercased()
                guard (1...63).contains(lower.utf8.count), let first = lower.unicodeScalars.first,
                      first == "_" || ("a"..."z").contains(first),
                      lower.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" })
                else { throw refused("\(what) \"\(name)\" is not a plain SQL name (letters, digits, _; at most 63)") }
                guard lower != "information_schema", !lower.hasPrefix("pg_") else {
                    throw refused("\(what) \"\(name)\" is a system schema and cannot be exposed")
                }
                return lower
            }
            schemas = []
            for schema in access.schemas { schemas.append(try checkName(schema, "schema")) }
            tables = []
            for text in access.tables {
                let parts = text.split(separator: ".", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw refused("table \"\(text)\" is not schema.table") }
                let schema = try checkName(String(parts[0]), "schema of table")
                let table = String(parts[1]).lowercased()
                guard Policy.protectedTables.contains(table) == false else {
                    throw refused("table \"\(text)\" is one of sandboxd's own record tables and cannot be exposed")
                }
                _ = try checkName(table, "table")
                tables.append((schema, table))
            }
            guard !schemas.isEmpty || !tables.isEmpty else { throw refused("the policy lists neither schemas nor tables") }
            guard access.statementTimeout.isFinite, access.statementTimeout > 0, access.statementTimeout <= 86_400 else {
                throw refused("statement_timeout \(access.statementTimeout) s is not between 0 and 86400")
            }
            statementTimeoutMilliseconds = max(1, Int((access.statementTimeout * 1000).rounded(.up)))
        }
    }

    /// One transaction: harden, create or reset the role, grant, check, commit.
    private static func provision(
        _ connection: PostgresConnection, role: String, sandboxID: String, password: String, request: Request,
        configuration: Configuration
    ) throws -> (String, [String]) {
        let facts = try connection.query(
            "SELECT current_database(), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
        guard let row = facts.rows.first, let database = row[0] else {
            throw StoreError(.databaseAccessRefused, "database tool: cannot read the current database")
        }
        let isSuperuser = row[1] == "t"
        let verifier = try connection.scramVerifier(password: password, user: role)
        let comment = ownershipMark(database: database) + sandboxID

        try connection.execute("BEGIN")
        do {
            try connection.query("SELECT pg_advisory_xact_lock($1::bigint)", [String(lockKey)])
            try harden(connection, database: database, clusterIsPrivate: configuration.clusterIsPrivate)

            let existing = try connection.query(
                "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1", [role])
            let attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT %s PASSWORD %L"
            if let existingComment = existing.rows.first?.first ?? nil {
                guard existingComment.hasPrefix(ownershipMark(database: database)) else {
                    throw StoreError(.databaseAccessRefused,
                                     "database tool: a role named \(role) exists but was not made by sandboxd for database \(database); it is left alone")
                }
                // Back to nothing, then granted afresh: the role ends up exactly as a new one.
                try run(connection, "DROP OWNED BY %I", [role])
                try run(connection, "ALTER ROLE %I RESET ALL", [role])
                try run(connection, "ALTER ROLE %I WITH " + attributes, [role, String(configuration.connectionLimit), verifier])
                let memberships = try connection.query(
                    "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
                    [role])
                for group in memberships.rows.compactMap({ $0.first ?? nil }) { try run(connection, "REVOKE %I FROM %I", [group, role]) }
            } else {
                try run(connection, "CREATE ROLE %I WITH " + attributes, [role, String(configuration.connectionLimit), verifier])
            }
            try run(connection, "COMMENT ON ROLE %I IS %L", [role, comment])
            try run(connection, "ALTER ROLE %I SET default_transaction_read_only = on", [role])
            try run(connection, "ALTER ROLE %I SET statement_timeout = %L", [role, "\(request.statementTimeoutMilliseconds)ms"])
            try run(connection, "ALTER ROLE %I SET idle_in_transaction_session_timeout = %L",
                    [role, "\(configuration.idleInTransactionTimeoutSeconds)s"])
            if isSuperuser {
                // temp_file_limit can only be set by a superuser, which is also why the role cannot lift it.
                try run(connection, "ALTER ROLE %I SET temp_file_limit = %L", [role, "\(configuration.tempFileLimitKilobytes)kB"])
            }
            try run(connection, "GRANT CONNECT ON DATABASE %I TO %I", [database, role])

            let tables = try resolveTables(connection, request: request, database: database)
            for schema in Set(tables.map(\.schema)).union(request.schemas).sorted() {
                try run(connection, "GRANT USAGE ON SCHEMA %I TO %I", [schema, role])
            }
            for (schema, table) in tables {
                try run(connection, "GRANT SELECT ON TABLE %I.%I TO %I", [schema, table, role])
            }
            let readable = tables.map { "\($0.schema).\($0.table)" }.sorted()
            try check(connection, role: role, database: database, readable: Set(readable))
            try connection.execute("COMMIT")
            return (database, readable)
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// Revokes from PUBLIC what a role without grants would otherwise have. Idempotent.
    private static func harden(_ connection: PostgresConnection, database: String, clusterIsPrivate: Bool) throws {
        let databases = clusterIsPrivate
            ? try connection.query("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").rows.compactMap { $0.first ?? nil }
            : [database]
        for name in databases { try run(connection, "REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC", [name]) }
        for function in revokedFunctions {
            // The signature is a fixed constant from this file, never input.
            try connection.execute("REVOKE EXECUTE ON FUNCTION pg_catalog.\(function) FROM PUBLIC")
        }
        let recordTables = try connection.query(
            """
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
              AND n.oid = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('agent_executions'))
            ORDER BY 2
            """,
            [arrayLiteral(Policy.protectedTables.sorted())])
        for row in recordTables.rows {
            guard let schema = row[0], let table = row[1] else { continue }
            try run(connection, "REVOKE ALL ON TABLE %I.%I FROM PUBLIC", [schema, table])
        }
    }

    /// The relations to grant: each listed table (which must exist) and every table, view,
    /// materialised view and foreign table of each listed schema, except any named like one of
    /// sandboxd's record tables.
    private static func resolveTables(
        _ connection: PostgresConnection, request: Request, database: String
    ) throws -> [(schema: String, table: String)] {
        var result: [(schema: String, table: String)] = []
        var seen: Set<String> = []
        func add(_ schema: String, _ table: String) {
            if seen.insert("\(schema).\(table)").inserted { result.append((schema, table)) }
        }
        for (schema, table) in request.tables {
            let found = try connection.query(
                """
                SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                """, [schema, table])
            guard !found.rows.isEmpty else {
                throw StoreError(.databaseAccessRefused,
                                 "database tool: table \(schema).\(table) listed in the policy does not exist in database \(database)")
            }
            add(schema, table)
        }
        for schema in request.schemas {
            guard !(try connection.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schema])).rows.isEmpty else {
                throw StoreError(.databaseAccessRefused,
                                 "database tool: schema \(schema) listed in the policy does not exist in database \(database)")
            }
            let relations = try connection.query(
                """
                SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relname = ANY($2::text[])
                ORDER BY 1
                """, [schema, arrayLiteral(Policy.protectedTables.sorted())])
            for table in relations.rows.compactMap({ $0.first ?? nil }) { add(schema, table) }
        }
        return result
    }

    /// Checks what the role can really do (through PUBLIC too) against what the policy grants.
    private static func check(_ connection: PostgresConnection, role: String, database: String, readable: Set<String>) throws {
        var problems: [String] = []
        let attributes = try connection.query(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = $1",
            [role])
        if attributes.rows.first?.contains("t") != false { problems.append("the role has a privileged attribute") }
        let memberships = try connection.query(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
            [role])
        for group in memberships.rows.compactMap({ $0.first ?? nil }) { problems.append("the role is a member of \(group)") }

        let databases = try connection.query(
            """
            SELECT datname, has_database_privilege($1::name, oid, 'TEMPORARY'), has_database_privilege($1::name, oid, 'CREATE')
            FROM pg_database WHERE datallowconn AND has_database_privilege($1::name, oid, 'CONNECT') ORDER BY 1
            """, [role])
        for row in databases.rows {
            let name = row[0] ?? "?"
            if row[1] == "t" {
                problems.append("it could create temporary tables in database \(name) (run: REVOKE TEMPORARY ON DATABASE \(name) FROM PUBLIC)")
            }
            if row[2] == "t" { problems.append("it could create schemas in database \(name)") }
        }
        let schemas = try connection.query(
            "SELECT nspname FROM pg_namespace WHERE has_schema_privilege($1::name, oid, 'CREATE') ORDER BY 1", [role])
        for schema in schemas.rows.compactMap({ $0.first ?? nil }) {
            problems.append("it could create objects in schema \(schema) (run: REVOKE CREATE ON SCHEMA \(schema) FROM PUBLIC)")
        }
        let relations = try connection.query(
            """
            SELECT n.nspname || '.' || c.relname, c.relkind::text,
                   has_any_column_privilege($1::name, c.oid, 'SELECT'),
                   has_any_column_privilege($1::name, c.oid, 'INSERT, UPDATE, REFERENCES')
                     OR has_table_privilege($1::name, c.oid, 'DELETE, TRUNCATE, TRIGGER')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
            UNION ALL
            SELECT n.nspname || '.' || c.relname, 'S', false, has_sequence_privilege($1::name, c.oid, 'USAGE, UPDATE')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'S' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
            ORDER BY 1
            """, [role])
        for row in relations.rows {
            let name = row[0] ?? "?"
            if row[3] == "t" { problems.append("it could write to \(name)") }
            if row[2] == "t", !readable.contains(name) { problems.append("it could read \(name), which the policy does not list") }
        }
        for name in readable where relations.rows.first(where: { $0[0] == name })?[2] != "t" {
            problems.append("it cannot read \(name) after the grant")
        }
        // A SECURITY DEFINER function runs with its owner's rights: callable, it would lend them.
        let definers = try connection.query(
            """
            SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE p.prosecdef AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
              AND has_schema_privilege($1::name, n.oid, 'USAGE') AND has_function_privilege($1::name, p.oid, 'EXECUTE')
            ORDER BY 1
            """, [role])
        for function in definers.rows.compactMap({ $0.first ?? nil }) {
            problems.append("it could call \(function), a SECURITY DEFINER function running with its owner's rights")
        }
        let functions = dangerousFunctions.map { "has_function_privilege($1::name, '\($0)', 'EXECUTE')" }.joined(separator: ", ")
        let executable = try connection.query("SELECT \(functions)", [role])
        for (index, value) in (executable.rows.first ?? []).enumerated() where value == "t" {
            problems.append("it could execute \(dangerousFunctions[index])")
        }
        guard problems.isEmpty else {
            throw StoreError(.databaseAccessRefused,
                             "database tool: role \(role) on database \(database) would hold more than SELECT on the listed tables: "
                                + problems.joined(separator: "; "))
        }
    }

    // MARK: - Drop

    /// Drops sandbox `sandboxID`'s role: no new logins, its sessions terminated, its privileges
    /// revoked, the role dropped. Returns false when there was no such role.
    @discardableResult
    public func revoke(sandboxID: String) async throws -> Bool {
        try Self.checkSandboxID(sandboxID)
        let role = Self.roleName(forSandbox: sandboxID)
        let dropped = try await pool.withConnection { connection in
            try Self.drop(connection, role: role)
        }
        if dropped { logger.info("dropped read-only database role", metadata: ["sandbox": "\(sandboxID)", "role": "\(role)"]) }
        return dropped
    }

    /// Drops every role this tool made for this database (at daemon start: the sandboxes of a
    /// previous run are gone). Roles of other databases and roles it did not make are left alone.
    /// Returns the names dropped.
    @discardableResult
    public func sweep() async throws -> [String] {
        let dropped = try await pool.withConnection { connection in
            let roles = try connection.query(
                """
                SELECT rolname FROM pg_roles
                WHERE starts_with(rolname, $1)
                  AND starts_with(coalesce(shobj_description(oid, 'pg_authid'), ''), $2 || current_database() || '; sandbox=')
                ORDER BY 1
                """, [Self.rolePrefix, Self.commentPrefix])
            var dropped: [String] = []
            for role in roles.rows.compactMap({ $0.first ?? nil }) {
                if try Self.drop(connection, role: role) { dropped.append(role) }
            }
            return dropped
        }
        if !dropped.isEmpty { logger.notice("dropped leftover read-only database roles", metadata: ["roles": "\(dropped)"]) }
        return dropped
    }

    private static func drop(_ connection: PostgresConnection, role: String) throws -> Bool {
        func ours() throws -> Bool? {
            let found = try connection.query(
                """
                SELECT starts_with(coalesce(shobj_description(oid, 'pg_authid'), ''), $2 || current_database() || '; sandbox=')
                FROM pg_roles WHERE rolname = $1
                """, [role, commentPrefix])
            guard let row = found.rows.first else { return nil }
            return row[0] == "t"
        }
        guard let isOurs = try ours() else { return false }
        guard isOurs else {
            throw StoreError(.databaseAccessRefused, "database tool: role \(role) was not made by sandboxd for this database; not dropping it")
        }
        // First no new sessions, then end the open ones, then the role.
        try run(connection, "ALTER ROLE %I NOLOGIN", [role])
        // An administering role without pg_signal_backend cannot end them; they then lose their
        // privileges with the role below and fail at their next statement.
        _ = try? connection.query(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()", [role])
        try connection.execute("BEGIN")
        do {
            try connection.query("SELECT pg_advisory_xact_lock($1::bigint)", [String(lockKey)])
            guard try ours() == true else {
                try connection.execute("ROLLBACK")
                return false
            }
            try run(connection, "DROP OWNED BY %I", [role])
            try run(connection, "DROP ROLE %I", [role])
            try connection.execute("COMMIT")
            return true
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    // MARK: - Helpers

    /// Runs a utility statement built by the server's `format()` (`%I` quotes identifiers, `%L`
    /// literals): utility statements take no parameters, and no value is spliced into SQL here.
    private static func run(_ connection: PostgresConnection, _ format: String, _ arguments: [String]) throws {
        let placeholders = arguments.indices.map { "$\($0 + 2)::text" }.joined(separator: ", ")
        let built = try connection.query("SELECT format($1::text, \(placeholders))", [format] + arguments)
        guard let sql = built.rows.first?.first ?? nil else {
            throw StoreError(.queryFailed, "database tool: format() returned nothing for \(format)")
        }
        try connection.execute(sql)
    }

    /// `{"a","b"}`: a text[] parameter (elements are fixed names from this module).
    private static func arrayLiteral(_ values: [String]) -> String {
        "{" + values.map { "\"\($0)\"" }.joined(separator: ",") + "}"
    }

    private static func checkSandboxID(_ sandboxID: String) throws(StoreError) {
        guard !sandboxID.isEmpty, sandboxID.unicodeScalars.count <= 100,
              !sandboxID.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw StoreError(.invalidSettings, "database tool: sandbox id must be 1–100 characters without control characters")
        }
    }

    /// 256 bits from getrandom(2), as 64 hex digits.
    private static func generatePassword() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return String(byte >> 4, radix: 16) + String(byte & 0xf, radix: 16)
        }.joined()
    }
}
