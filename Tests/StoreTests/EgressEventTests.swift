import Foundation
import SandboxCore
import Testing
@testable import Store

struct EgressEventTests {
    static let start = Date(timeIntervalSince1970: 1_764_000_000.25)

    static func events(execution: UUID) -> [EgressEventRecord] {
        [
            EgressEventRecord(
                executionID: execution, sandboxID: "sbx-egress", occurredAt: start, method: "CONNECT", host: "api.example.com",
                port: 443, address: "10.0.0.7", decision: .allowed, reason: "allowed by *.example.com", status: 200,
                bytesUp: 1234, bytesDown: 5_000_000_000, duration: 1.5),
            EgressEventRecord(
                executionID: execution, sandboxID: "sbx-egress", occurredAt: start.addingTimeInterval(1), method: "GET",
                host: "evil.example.org", port: 80, decision: .denied, reason: "host not allowed: evil.example.org", status: 403),
            EgressEventRecord(
                executionID: nil, sandboxID: "sbx-egress", occurredAt: start.addingTimeInterval(2), method: "", host: "",
                port: 0, decision: .denied, reason: "malformed request: 잘못된 요청 🚫", status: 400),
            EgressEventRecord(
                executionID: nil, sandboxID: "sbx-other", occurredAt: start.addingTimeInterval(3), method: "CONNECT",
                host: "down.example.com", port: 443, address: "10.0.0.9", decision: .failed, reason: "connection refused",
                status: 502, duration: 0.01),
        ]
    }

    @Test("migration 2 applies to a database at version 1 (keeping its records), again is a no-op, and gives what schema.sql gives")
    func migrationFromVersionOne() async throws {
        try await TestPostgres.with { server in
            let pool = try ConnectionPool(settings: server.settings)
            let store = RecordStore(pool: pool)
            #expect(try await pool.migrate([Migration.all[0]]) == [1])
            let record = RecordStoreTests.finishedRecord(sandbox: "before-v2")
            try await store.insert(record)
            let tableBefore = try await pool.withConnection { try $0.query("SELECT to_regclass('egress_events') IS NULL").rows.first?.first ?? nil }
            #expect(tableBefore == "t")

            #expect(try await pool.migrate() == [2])
            #expect(try await pool.migrate() == [])
            let schema = try String(contentsOf: SchemaTests.schemaFile, encoding: .utf8)
            let (migrated, afterSchemaFile, ledger) = try await pool.withConnection { connection in
                let migrated = try connection.query(SchemaTests.catalogQuery).rows.map { $0[0] ?? "" }
                try connection.execute(schema)
                let again = try connection.query(SchemaTests.catalogQuery).rows.map { $0[0] ?? "" }
                let ledger = try connection.query("SELECT version, name FROM schema_migrations ORDER BY 1").rows
                return (migrated, again, ledger)
            }
            #expect(migrated == afterSchemaFile)
            #expect(migrated.contains("column egress_events.sandbox_id character varying 100 NO "))
            #expect(migrated.contains { $0.hasPrefix("index CREATE INDEX egress_events_execution_idx") })
            #expect(migrated.contains { $0.hasPrefix("index CREATE INDEX egress_events_sandbox_idx") })
            #expect(ledger == [["1", "initial schema"], ["2", "egress events"]])
            #expect(try await store.record(id: record.id)?.sandboxID == "before-v2")
            await pool.close()
        }
    }

    @Test("egress events round-trip, in chunks, once only, listed by execution and by sandbox")
    func roundTrip() async throws {
        try await TestPostgres.with { server in
            var store = try await server.makeStore(poolSize: 2)
            store.batchChunkSize = 3
            let execution = RecordStoreTests.finishedRecord(sandbox: "sbx-egress")
            try await store.insert(execution)
            let events = Self.events(execution: execution.id)
            #expect(try await store.insert(events) == 4)
            #expect(try await store.insert(events) == 0)  // a retried batch writes nothing twice

            #expect(try await store.egressEvents(executionID: execution.id) == Array(events[0..<2]))
            #expect(try await store.egressEvents(sandboxID: "sbx-egress") == Array(events[0..<3]))
            #expect(try await store.egressEvents(sandboxID: "sbx-egress", limit: 1) == [events[0]])
            #expect(try await store.egressEvents(sandboxID: "sbx-other") == [events[3]])
            #expect(try await store.egressEvents(executionID: UUID()).isEmpty)

            // Deleting the execution deletes its events; events between executions stay.
            try await store.pool.withConnection { try $0.query("DELETE FROM agent_executions WHERE id = $1::uuid", [Parameter.uuid(execution.id)]) }
            #expect(try await store.egressEvents(sandboxID: "sbx-egress") == [events[2]])
            await store.pool.close()
        }
    }

    @Test("an event of an unknown execution refuses its whole chunk; bad fields are named before anything is sent")
    func refusals() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 1)
            let good = EgressEventRecord(sandboxID: "sbx-refused", occurredAt: Self.start, method: "CONNECT", host: "a.example",
                                         port: 443, decision: .allowed, reason: "allowed")
            var orphan = good
            orphan.id = UUID()
            orphan.executionID = UUID()
            let error = try await #require(throws: StoreError.self) { try await store.insert([good, orphan]) }
            #expect(error.sqlState == "23503")
            #expect(try await store.egressEvents(sandboxID: "sbx-refused").isEmpty)

            var badPort = good
            badPort.port = 70_000
            let portError = try await #require(throws: StoreError.self) { try await store.insert([badPort]) }
            #expect(portError.code == .invalidRecord)
            #expect(portError.message.contains("port 70000"))
            var longID = good
            longID.sandboxID = String(repeating: "s", count: 101)
            let idError = try await #require(throws: StoreError.self) { try await store.insert([longID]) }
            #expect(idError.message.contains("egress_events.sandbox_id"))
            var nul = good
            nul.host = "a\u{0}b"
            let nulError = try await #require(throws: StoreError.self) { try await store.insert([nul]) }
            #expect(nulError.message.contains("egress_events.host"))
            await store.pool.close()
        }
    }
}
