import Foundation
import SandboxCore
import Testing
@testable import Store

#if canImport(Glibc)
import Glibc
#endif

/// The read-only database tool against a real throwaway cluster: the restricted role is used for
/// real (libpq from the test, and psql as an unprivileged user through a bind mount of the socket
/// directory), every hostile statement is run and must fail with its SQLSTATE.
struct ReadOnlyAccessTests {
    /// A migrated cluster with a row in each table a test reads, and the tool over it.
    struct Fixture {
        var server: TestPostgres
        var store: RecordStore
        var access: ReadOnlyDatabaseAccess
        var admin: ConnectionPool

        func close() async {
            await access.close()
            await admin.close()
            await store.pool.close()
        }
    }

    static func withFixture<T>(_ body: (Fixture) async throws -> T) async throws -> T {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 2)
            try await store.insert(RecordStoreTests.finishedRecord(sandbox: "sbx-records"))
            let adminSettings = try server.embedded.superuserSettings(database: server.settings.database)
            let admin = try ConnectionPool(settings: adminSettings)
            try await admin.withConnection { connection in
                try connection.execute("""
                    INSERT INTO documents (filename, content) VALUES ('readme.txt', 'listed');
                    INSERT INTO chat_messages (user_message) VALUES ('not listed');
                    INSERT INTO index_stats (document_count) VALUES (7);
                    CREATE SCHEMA analytics;
                    CREATE TABLE analytics.orders (id int, total numeric);
                    INSERT INTO analytics.orders VALUES (1, 9.5);
                    CREATE VIEW analytics.big_orders AS SELECT * FROM analytics.orders WHERE total > 5;
                    CREATE TABLE analytics.users (id int);
                    """)
            }
            let access = try ReadOnlyDatabaseAccess(configuration: .init(
                admin: adminSettings, socketDirectory: server.embedded.sandboxSocketDirectory, clusterIsPrivate: true))
            let fixture = Fixture(server: server, store: store, access: access, admin: admin)
            do {
                let result = try await body(fixture)
                await fixture.close()
                return result
            } catch {
                await fixture.close()
                throw error
            }
        }
    }

    /// Runs each statement on one connection as the sandbox's role; the SQLSTATE each failed
    /// with (`nil`: it succeeded).
    static func outcomes(_ grant: SandboxDatabaseConnection, _ statements: [String]) async throws -> [String: String?] {
        let pool = try ConnectionPool(settings: grant.hostSettings())
        defer { Task { await pool.close() } }
        return try await pool.withConnection(idempotent: false) { connection in
            var results: [String: String?] = [:]
            for sql in statements {
                do {
                    try connection.execute(sql)
                    results[sql] = .some(nil)
                } catch let error as StoreError {
                    results[sql] = .some(error.sqlState ?? "no SQLSTATE: \(error.message)")
                } catch {
                    results[sql] = .some("\(error)")
                }
            }
            return results
        }
    }

    static let documentsOnly = Policy.DatabaseAccess(tables: ["public.documents"], statementTimeout: 0.5)

    @Test("SELECT on the listed table works; reading anything else, writing, DDL, server files and programs, SET ROLE and long statements all fail")
    func hostileStatementsFail() async throws {
        try await Self.withFixture { fixture in
            let grant = try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-hostile")
            #expect(grant.readableTables == ["public.documents"])
            #expect(grant.role == ReadOnlyDatabaseAccess.roleName(forSandbox: "sbx-hostile"))

            let pool = try ConnectionPool(settings: grant.hostSettings())
            let (rows, readOnly, timeout) = try await pool.withConnection { connection in
                (try connection.query("SELECT filename, content FROM public.documents").rows,
                 try connection.query("SHOW default_transaction_read_only").rows.first?.first ?? nil,
                 try connection.query("SHOW statement_timeout").rows.first?.first ?? nil)
            }
            await pool.close()
            #expect(rows == [["readme.txt", "listed"]])
            #expect(readOnly == "on")
            #expect(timeout == "500ms")

            let evilFile = "/tmp/sandboxd-dbtool-evil-\(getpid())"
            // In the session as the role starts: read-only transactions by default.
            let expectedByDefault: [(String, String)] = [
                ("SELECT * FROM public.chat_messages", "42501"),  // unlisted table
                ("SELECT * FROM public.index_stats", "42501"),
                ("SELECT * FROM public.agent_executions", "42501"),  // the daemon's records
                ("SELECT * FROM public.code_executions", "42501"),
                ("SELECT * FROM public.schema_migrations", "42501"),
                ("SELECT * FROM public.users", "42501"),
                ("SELECT * FROM public.sessions", "42501"),
                ("SELECT * FROM public.egress_events", "42501"),
                ("SELECT * FROM analytics.orders", "42501"),
                ("INSERT INTO public.documents (filename) VALUES ('evil')", "25006"),
                ("UPDATE public.documents SET content = 'evil'", "25006"),
                ("DELETE FROM public.documents", "25006"),
                ("CREATE TABLE public.evil (x int)", "25006"),
                ("COPY (SELECT 1) TO PROGRAM 'touch \(evilFile)'", "42501"),
                ("COPY (SELECT 1) TO '\(evilFile)'", "42501"),
                ("COPY public.documents (filename) FROM '/etc/passwd'", "42501"),
                ("SELECT pg_read_file('/etc/passwd')", "42501"),
                ("SELECT pg_ls_dir('/')", "42501"),
                ("SELECT lo_import('/etc/passwd')", "42501"),
                ("SELECT lo_export(1, '\(evilFile)')", "42501"),
                ("SET ROLE sandboxd_test", "42501"),
                ("SET ROLE postgres", "42501"),
                ("SET SESSION AUTHORIZATION postgres", "42501"),
                ("SELECT pg_sleep(5)", "57014"),  // statement_timeout 500 ms
            ]
            // A hostile client turns the read-only default off: the missing grants still stop it.
            let expectedReadWrite: [(String, String)] = [
                ("INSERT INTO public.documents (filename) VALUES ('evil')", "42501"),
                ("UPDATE public.documents SET content = 'evil'", "42501"),
                ("DELETE FROM public.documents", "42501"),
                ("TRUNCATE public.documents", "42501"),
                ("CREATE TABLE public.evil (x int)", "42501"),
                ("CREATE TABLE analytics.evil (x int)", "42501"),
                ("CREATE SCHEMA evil", "42501"),
                ("CREATE TEMP TABLE evil (x int)", "42501"),
                ("CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'", "42501"),
                ("SELECT lo_from_bytea(0, 'evil')", "42501"),
                ("SELECT lo_create(0)", "42501"),
                ("COPY public.documents (filename) FROM '/etc/passwd'", "42501"),
                ("ALTER TABLE public.documents ADD COLUMN evil int", "42501"),
                ("DROP TABLE public.documents", "42501"),
                ("GRANT SELECT ON public.chat_messages TO PUBLIC", "42501"),
                // PostgreSQL lets a role change its own session defaults (which it could SET anyway),
                // but not superuser-only settings, nor store arbitrary placeholder settings.
                ("ALTER ROLE \(grant.role) SET temp_file_limit = -1", "42501"),
                ("ALTER ROLE \(grant.role) SET sandbox.filler = 'evil'", "42501"),
                ("ALTER ROLE \(grant.role) CONNECTION LIMIT 100", "42501"),
                ("CREATE ROLE evil", "42501"),
                ("SET temp_file_limit = -1", "42501"),
            ]
            let first = try await Self.outcomes(grant, expectedByDefault.map(\.0))
            for (sql, state) in expectedByDefault {
                #expect(first[sql] == .some(state), "\(sql)")
            }
            let second = try await Self.outcomes(
                grant, ["SET default_transaction_read_only = off"] + expectedReadWrite.map(\.0))
            #expect(second["SET default_transaction_read_only = off"] == .some(nil))
            for (sql, state) in expectedReadWrite {
                #expect(second[sql] == .some(state), "\(sql)")
            }

            // Nothing changed: no file, the table as it was, no new objects, no large objects.
            #expect(!FileManager.default.fileExists(atPath: evilFile))
            let after = try await fixture.admin.withConnection { connection in
                try connection.query("""
                    SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM documents WHERE content = 'evil'),
                           to_regclass('public.evil') IS NULL, to_regnamespace('evil') IS NULL,
                           (SELECT count(*) FROM pg_largeobject_metadata), (SELECT count(*) FROM pg_roles WHERE rolname = 'evil')
                    """).rows.first
            }
            #expect(after == ["1", "0", "t", "t", "0", "0"])
        }
    }

    @Test("psql as an unprivileged user, given only the mounted socket directory and the environment, reads the listed table and nothing else")
    func psqlThroughTheMountedSocket() async throws {
        guard geteuid() == 0 else {
            print("skipped: bind-mounting the socket directory in a private mount namespace needs root")
            return
        }
        try await Self.withFixture { fixture in
            let grant = try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-psql")
            #expect(grant.environment["PGHOST"] == "/run/postgresql")
            // What the sandbox gets: private mount and network namespaces (a pathname socket does
            // not need the network), the socket directory alone at /run/postgresql (read-only), an
            // unprivileged uid, and the environment.
            let script = """
                mount -t tmpfs -o size=1m,mode=0755 sandboxd-test /run && mkdir /run/postgresql \
                && mount --bind "$SOCKET_SOURCE" /run/postgresql && mount -o remount,bind,ro /run/postgresql \
                && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
                """
            func psql(_ sql: String, environment: [String: String]) async throws -> ProcessOutcome {
                var environment = environment
                environment["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin"
                environment["SOCKET_SOURCE"] = grant.hostSocketDirectory
                return try await ProcessOutcome.run(
                    "/usr/bin/unshare", ["--mount", "--net", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
                                         fixture.server.embedded.configuration.binDirectory + "/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                    environment: environment)
            }
            let whoAmI = try await psql("SELECT current_user, session_user", environment: grant.environment)
            #expect(whoAmI.status == 0, "\(whoAmI)")
            #expect(whoAmI.stdout == "\(grant.role)|\(grant.role)\n")
            let listed = try await psql("SELECT filename FROM documents", environment: grant.environment)
            #expect(listed.status == 0, "\(listed)")
            #expect(listed.stdout == "readme.txt\n")
            let records = try await psql("SELECT count(*) FROM agent_executions", environment: grant.environment)
            #expect(records.status != 0)
            #expect(records.stderr.contains("permission denied for table agent_executions"), "\(records)")
            // The password is the role's own: another role with it is refused, and so is no password.
            var asDaemon = grant.environment
            asDaemon["PGUSER"] = fixture.server.settings.user
            let otherRole = try await psql("SELECT 1", environment: asDaemon)
            #expect(otherRole.status != 0)
            #expect(otherRole.stderr.contains("password authentication failed"), "\(otherRole)")
            var noPassword = grant.environment
            noPassword["PGPASSWORD"] = nil
            let without = try await psql("SELECT 1", environment: noPassword)
            #expect(without.status != 0)
            #expect(without.stderr.contains("no password supplied"), "\(without)")
        }
    }

    @Test("the role has no privileged attribute, no membership, a connection limit and its settings; the daemon's own role keeps working")
    func roleShape() async throws {
        try await Self.withFixture { fixture in
            let grant = try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-shape")
            let (role, members, config, publicGrants, daemonTemp) = try await fixture.admin.withConnection { connection in
                (try connection.query(
                    "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1",
                    [grant.role]).rows.first,
                 try connection.query(
                    "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1", [grant.role]).rows.first?.first ?? nil,
                 try connection.query(
                    "SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = $1", [grant.role]).rows.first?.first ?? nil,
                 try connection.query("""
                    SELECT count(*) FROM information_schema.role_table_grants
                    WHERE grantee = 'PUBLIC' AND table_name IN ('agent_executions', 'code_executions', 'schema_migrations', 'users', 'sessions', 'egress_events')
                    """).rows.first?.first ?? nil,
                 try connection.query(
                    "SELECT has_database_privilege($1, current_database(), 'TEMPORARY')", [fixture.server.settings.user]).rows.first?.first ?? nil)
            }
            #expect(role == ["f", "f", "f", "f", "f", "f", "t", "4"])
            #expect(members == "0")
            #expect(config?.contains("default_transaction_read_only=on") == true, "\(config ?? "")")
            #expect(config?.contains("statement_timeout=500ms") == true)
            #expect(config?.contains("temp_file_limit=65536kB") == true)
            #expect(publicGrants == "0")
            #expect(daemonTemp == "t")
            // The daemon's role still writes its records after the hardening.
            #expect(try await fixture.store.insert(RecordStoreTests.finishedRecord(sandbox: "after-hardening")))
            // And the password reaches the server only as a SCRAM verifier.
            let stored = try await fixture.admin.withConnection { connection in
                try connection.query("SELECT rolpassword FROM pg_authid WHERE rolname = $1", [grant.role]).rows.first?.first ?? nil
            }
            #expect(stored?.hasPrefix("SCRAM-SHA-256$") == true)
            #expect(stored?.contains(grant.password.revealed) == false)
            #expect(!"\(grant)".contains(grant.password.revealed))

            // CONNECTION LIMIT 4: a fifth simultaneous session is refused.
            var open: [PostgresConnection] = []
            for _ in 0..<4 { open.append(try await PostgresConnection.open(grant.hostSettings())) }
            let fifth = try await #require(throws: StoreError.self) { try await PostgresConnection.open(grant.hostSettings()) }
            #expect(fifth.message.contains("too many connections for role"), "\(fifth)")
            for connection in open { connection.closeInBackground() }
        }
    }

    @Test("a listed schema grants its tables and views but never tables named like sandboxd's records")
    func schemaWide() async throws {
        try await Self.withFixture { fixture in
            let analytics = try await fixture.access.grant(Policy.DatabaseAccess(schemas: ["analytics"]), sandboxID: "sbx-analytics")
            #expect(analytics.readableTables == ["analytics.big_orders", "analytics.orders"])
            let outcomes = try await Self.outcomes(analytics, [
                "SELECT * FROM analytics.orders", "SELECT * FROM analytics.big_orders", "SELECT * FROM analytics.users",
                "SELECT * FROM public.documents",
            ])
            #expect(outcomes["SELECT * FROM analytics.orders"] == .some(nil))
            #expect(outcomes["SELECT * FROM analytics.big_orders"] == .some(nil))
            #expect(outcomes["SELECT * FROM analytics.users"] == .some("42501"))
            #expect(outcomes["SELECT * FROM public.documents"] == .some("42501"))

            let wholePublic = try await fixture.access.grant(Policy.DatabaseAccess(schemas: ["public"]), sandboxID: "sbx-public")
            #expect(wholePublic.readableTables == ["public.chat_messages", "public.documents", "public.index_stats"])
            let records = try await Self.outcomes(wholePublic, ["SELECT * FROM public.agent_executions", "SELECT * FROM public.chat_messages"])
            #expect(records["SELECT * FROM public.agent_executions"] == .some("42501"))
            #expect(records["SELECT * FROM public.chat_messages"] == .some(nil))
        }
    }

    @Test("a missing table, a record table, or a role that would see more than listed is refused and nothing is granted")
    func refusals() async throws {
        try await Self.withFixture { fixture in
            let missing = try await #require(throws: StoreError.self) {
                try await fixture.access.grant(Policy.DatabaseAccess(tables: ["public.nope"]), sandboxID: "sbx-refused")
            }
            #expect(missing.code == .databaseAccessRefused)
            #expect(missing.message.contains("public.nope"))
            let records = try await #require(throws: StoreError.self) {
                try await fixture.access.grant(Policy.DatabaseAccess(tables: ["public.agent_executions"]), sandboxID: "sbx-refused")
            }
            #expect(records.message.contains("record tables"))
            let system = try await #require(throws: StoreError.self) {
                try await fixture.access.grant(Policy.DatabaseAccess(schemas: ["pg_catalog"]), sandboxID: "sbx-refused")
            }
            #expect(system.message.contains("system schema"))

            // Someone granted PUBLIC more than the policy says: the check after granting sees it.
            try await fixture.admin.withConnection { connection in
                try connection.execute("""
                    GRANT SELECT ON chat_messages TO PUBLIC;
                    GRANT INSERT ON index_stats TO PUBLIC;
                    CREATE FUNCTION public.lend_rights() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
                    """)
            }
            let excess = try await #require(throws: StoreError.self) {
                try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-refused")
            }
            #expect(excess.code == .databaseAccessRefused)
            #expect(excess.message.contains("it could read public.chat_messages"), "\(excess)")
            #expect(excess.message.contains("it could write to public.index_stats"), "\(excess)")
            #expect(excess.message.contains("it could call lend_rights(), a SECURITY DEFINER function"), "\(excess)")

            let role = ReadOnlyDatabaseAccess.roleName(forSandbox: "sbx-refused")
            let exists = try await fixture.admin.withConnection {
                try $0.query("SELECT count(*) FROM pg_roles WHERE rolname = $1", [role]).rows.first?.first ?? nil
            }
            #expect(exists == "0")
        }
    }

    @Test("granting again resets the role to the new policy and password; revoke drops it and ends its sessions; sweep drops only leftovers of ours")
    func lifecycle() async throws {
        try await Self.withFixture { fixture in
            let first = try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-life")
            let second = try await fixture.access.grant(Policy.DatabaseAccess(tables: ["public.index_stats"]), sandboxID: "sbx-life")
            #expect(first.role == second.role)
            #expect(first.password != second.password)
            let stale = try ConnectionPool(settings: first.hostSettings())
            let staleError = try await #require(throws: StoreError.self) { try await stale.withConnection { try $0.query("SELECT 1") } }
            #expect(staleError.code == .authenticationFailed)
            await stale.close()
            let now = try await Self.outcomes(second, ["SELECT * FROM public.documents", "SELECT * FROM public.index_stats"])
            #expect(now["SELECT * FROM public.documents"] == .some("42501"))
            #expect(now["SELECT * FROM public.index_stats"] == .some(nil))

            // An open session of the role is ended when the sandbox goes.
            let session = try ConnectionPool(settings: second.hostSettings())
            _ = try await session.withConnection { try $0.query("SELECT 1") }
            #expect(try await fixture.access.revoke(sandboxID: "sbx-life"))
            let ended = try await #require(throws: StoreError.self) {
                try await session.withConnection(idempotent: false) { try $0.query("SELECT * FROM public.index_stats") }
            }
            #expect(ended.code == .connectionLost || ended.sqlState == "57P01", "\(ended)")
            await session.close()
            #expect(try await fixture.access.revoke(sandboxID: "sbx-life") == false)

            // Leftovers of a previous daemon run, and roles that are not ours.
            let leftover = try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-leftover")
            try await fixture.admin.withConnection { try $0.execute("CREATE ROLE sbx_ro_not_ours; CREATE ROLE unrelated") }
            let swept = try await fixture.access.sweep()
            #expect(swept == [leftover.role])
            let remaining = try await fixture.admin.withConnection {
                try $0.query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'sbx%' OR rolname = 'unrelated' ORDER BY 1").rows.map { $0[0] ?? "" }
            }
            #expect(remaining == ["sbx_ro_not_ours", "unrelated"])
            #expect(try await fixture.access.sweep() == [])
            // A role of that name that is not ours is neither reused nor dropped.
            let squatted = ReadOnlyDatabaseAccess.roleName(forSandbox: "sbx-squat")
            try await fixture.admin.withConnection { try $0.execute("CREATE ROLE \(squatted)") }
            let reuse = try await #require(throws: StoreError.self) { try await fixture.access.grant(Self.documentsOnly, sandboxID: "sbx-squat") }
            #expect(reuse.message.contains("not made by sandboxd"))
            await #expect(throws: StoreError.self) { try await fixture.access.revoke(sandboxID: "sbx-squat") }
        }
    }

    @Test("sandboxes created and destroyed at the same time all get and lose their own roles")
    func concurrentGrants() async throws {
        try await Self.withFixture { fixture in
            let access = fixture.access
            let ids = (0..<6).map { "sbx-parallel-\($0)" }
            let grants = try await withThrowingTaskGroup(of: SandboxDatabaseConnection.self) { group in
                for id in ids { group.addTask { try await access.grant(Self.documentsOnly, sandboxID: id) } }
                var all: [SandboxDatabaseConnection] = []
                for try await grant in group { all.append(grant) }
                return all
            }
            #expect(Set(grants.map(\.role)) == Set(ids.map(ReadOnlyDatabaseAccess.roleName(forSandbox:))))
            for grant in grants {
                let outcome = try await Self.outcomes(grant, ["SELECT * FROM public.documents"])
                #expect(outcome["SELECT * FROM public.documents"] == .some(nil), "\(grant.role)")
            }
            let dropped = try await withThrowingTaskGroup(of: Bool.self) { group in
                for id in ids { group.addTask { try await access.revoke(sandboxID: id) } }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(dropped == ids.count)
            #expect(try await access.sweep() == [])
        }
    }

    @Test("role names are valid identifiers, readable, and distinct for ids that read alike")
    func roleNames() {
        let plain = ReadOnlyDatabaseAccess.roleName(forSandbox: "sbx-1F3A")
        #expect(plain.hasPrefix("sbx_ro_sbx1f3a_"))
        #expect(plain != ReadOnlyDatabaseAccess.roleName(forSandbox: "sbx_1f3a"))
        let long = ReadOnlyDatabaseAccess.roleName(forSandbox: String(repeating: "ü-x", count: 60))
        #expect(long.utf8.count <= 63)
        for name in [plain, long] {
            #expect(name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" })
        }
    }

    @Test("PostgreSQL over TCP has no socket to mount: the tool is refused with a clear error")
    func tcpIsRefused() throws {
        let settings = DatabaseSettings(host: "db.internal", port: 5432, database: "sandboxd", user: "sandboxd", password: "x")
        let opened = OpenedDatabase(store: try RecordStore(settings: settings), embedded: nil, settings: settings)
        let error = try #require(throws: StoreError.self) { try ReadOnlyDatabaseAccess(database: opened) }
        #expect(error.code == .databaseToolUnavailable)
        #expect(error.message.contains("TCP"))
        #expect(!error.message.contains("x@"))
    }
}

/// A finished child process and what it wrote.
struct ProcessOutcome: CustomStringConvertible, Sendable {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status), stdout: \(stdout), stderr: \(stderr)" }

    /// Runs `executable` with exactly `environment`, waiting on a dispatch thread.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]) async throws -> ProcessOutcome {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                do {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: executable)
                    process.arguments = arguments
                    process.environment = environment
                    let out = Pipe()
                    let err = Pipe()
                    process.standardOutput = out
                    process.standardError = err
                    process.standardInput = FileHandle.nullDevice
                    try process.run()
                    let stdout = out.fileHandleForReading.readDataToEndOfFile()
                    let stderr = err.fileHandleForReading.readDataToEndOfFile()
                    process.waitUntilExit()
                    continuation.resume(returning: ProcessOutcome(
                        status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                        stderr: String(decoding: stderr, as: UTF8.self)))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }
}
