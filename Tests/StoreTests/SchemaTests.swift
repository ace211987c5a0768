import Foundation
import Testing
@testable import Store

struct SchemaTests {
    /// The repository's schema.sql, found from this file's path.
    static var schemaFile: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("schema.sql")
    }

    @Test("the migrations carried in the binary, concatenated in order, are exactly the repository's schema.sql")
    func migrationsEqualSchemaFile() throws {
        let file = try String(contentsOf: Self.schemaFile, encoding: .utf8)
        let first = try #require(Migration.all.first)
        #expect(first.version == 1)
        #expect(file.hasPrefix(first.sql))
        #expect(Migration.all.map(\.sql).joined() == file,
                "schema.sql must be every migration of Sources/Store/Migrations.swift, in order, and nothing else")
    }

    @Test("migrations are numbered 1, 2, 3, … without gaps")
    func migrationsAreOrdered() {
        #expect(Migration.all.map(\.version) == Array(1...Migration.all.count))
    }

    /// Tables, columns with types and defaults, constraints and indexes of the public schema.
    static let catalogQuery = """
        SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' ||
               coalesce(character_maximum_length::text, '') || ' ' || is_nullable || ' ' || coalesce(column_default, '')
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1
        """

    @Test("schema.sql applies to a fresh PostgreSQL 15 and applying it again changes nothing")
    func schemaAppliesTwice() async throws {
        try await TestPostgres.with { server in
            let pool = try ConnectionPool(settings: server.settings)
            let sql = try String(contentsOf: Self.schemaFile, encoding: .utf8)
            let (version, first, second, tables, migrations) = try await pool.withConnection { connection in
                let version = try connection.query("SHOW server_version_num").rows.first?.first ?? nil
                try connection.execute(sql)
                let first = try connection.query(Self.catalogQuery).rows.map { $0[0] ?? "" }
                try connection.execute(sql)
                let second = try connection.query(Self.catalogQuery).rows.map { $0[0] ?? "" }
                let tables = try connection.query(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
                ).rows.map { $0[0] ?? "" }
                let migrations = try connection.query("SELECT version FROM schema_migrations").rows.map { $0[0] ?? "" }
                return (version, first, second, tables, migrations)
            }
            await pool.close()
            #expect(version?.hasPrefix("15") == true, "expected PostgreSQL 15, got \(version ?? "?")")
            #expect(first.count > 80)
            #expect(first == second)
            #expect(tables == [
                "agent_executions", "chat_messages", "code_executions", "documents", "egress_events", "index_stats",
                "schema_migrations", "sessions", "users",
            ])
            #expect(migrations == Migration.all.map { String($0.version) })
            // The original plan's columns are all there with their types.
            #expect(first.contains("column agent_executions.sandbox_id character varying 100 YES "))
            #expect(first.contains("column users.username character varying 50 NO "))
            #expect(first.contains("column code_executions.execution_time double precision  YES "))
            #expect(first.contains("column documents.metadata jsonb  YES "))
        }
    }

    @Test("migrate() applies pending migrations once, also when two pools race")
    func migrateIsIdempotentAndLocked() async throws {
        try await TestPostgres.with { server in
            let a = try ConnectionPool(settings: server.settings)
            let b = try ConnectionPool(settings: server.settings)
            async let fromA = a.migrate()
            async let fromB = b.migrate()
            let applied = try await [fromA, fromB]
            #expect(applied.flatMap { $0 }.sorted() == Migration.all.map(\.version))
            #expect(try await a.migrate() == [])
            let ledger = try await a.withConnection { try $0.query("SELECT version, name FROM schema_migrations ORDER BY 1") }
            #expect(ledger.rows.map { $0[0] ?? "" } == Migration.all.map { String($0.version) })
            await a.close()
            await b.close()
        }
    }

    @Test("a failing migration is rolled back and named in the error")
    func failingMigrationRollsBack() async throws {
        try await TestPostgres.with { server in
            let pool = try ConnectionPool(settings: server.settings)
            try await pool.migrate()
            let broken = Migration(
                version: 99, name: "broken on purpose",
                sql: "CREATE TABLE half_done (id int); SELECT no_such_function();")
            let error = try await #require(throws: StoreError.self) { try await pool.migrate(Migration.all + [broken]) }
            #expect(error.code == .migrationFailed)
            #expect(error.message.contains("migration 99 (broken on purpose)"))
            let leftovers = try await pool.withConnection { connection in
                try connection.query(
                    "SELECT (SELECT count(*) FROM schema_migrations WHERE version = 99), to_regclass('half_done') IS NULL")
            }
            #expect(leftovers.rows.first == ["0", "t"])
            await pool.close()
        }
    }
}
