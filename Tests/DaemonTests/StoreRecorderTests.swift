import Foundation
import ControlAPI
import Logging
import SandboxCore
import Store
import Testing
@testable import Supervisor

/// The Supervisor's record path against a real PostgreSQL.
@Suite(.serialized)
struct StoreRecorderTests {
    private func recorder(_ store: RecordStore) -> StoreRecorder {
        var logger = Logger(label: "test.records")
        logger.logLevel = .warning
        return StoreRecorder(store: store, detail: "test", logger: logger)
    }

    private func record(_ id: UUID = UUID(), status: ExecutionStatus, owner: UInt32 = 1000, code: Bool = false) -> ExecutionRecord {
        ExecutionRecord(id: id, agentType: "test", inputData: ["command": ["true"]], outputData: status == .running ? nil : ["stdout": ""],
                        executionTime: status == .running ? nil : 0.01, sandboxID: "sbx-test", status: status,
                        isolationLevel: .native, policy: "default", exitCode: status == .running ? nil : 0,
                        startedAt: Date(), finishedAt: status == .running ? nil : Date(), ownerUID: owner,
                        code: code ? CodeRun(code: "print(1)", language: "python") : nil)
    }

    @Test("64 concurrent writers × 50 executions: 3,200 rows, each exactly once, none left running, in far fewer round trips")
    func concurrentGroupCommit() async throws {
        guard geteuid() == 0 else { print("skipped: the test cluster runs as user postgres (needs root)"); return }
        try await TestPostgres.with { store in
            let recorder = recorder(store)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        for index in 0..<50 {
                            let id = UUID()
                            await recorder.recordStarted(self.record(id, status: .running))
                            try await recorder.recordFinished(self.record(id, status: .ok, code: index % 10 == 0))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let rows = try await TestPostgres.query(store, "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE status = 'running') FROM agent_executions")
            #expect(rows[0][0] == "3200")
            #expect(rows[0][1] == "3200")
            #expect(rows[0][2] == "0")
            let code = try await TestPostgres.query(store, "SELECT count(*) FROM code_executions WHERE execution_mode = 'sandbox' AND agent_execution_id = id")
            #expect(code[0][0] == "320")
            let batches = await recorder.batchesWritten
            print("group commit: 3200 executions in \(batches) round trips")
            #expect(batches < 3200)
        }
    }

    @Test("with the database stopped, a finished record's caller gets service_unavailable; the record is written once it returns")
    func stalledDatabaseFailsWaiterKeepsRecord() async throws {
        guard geteuid() == 0 else { print("skipped: needs root for the test cluster"); return }
        try await TestPostgres.withServer { store, server in
            var logger = Logger(label: "test.records")
            logger.logLevel = .critical
            let recorder = StoreRecorder(store: store, detail: "test", logger: logger, commitTimeout: .seconds(1))
            try await server.stop()
            let id = UUID()
            do {
                try await recorder.recordFinished(record(id, status: .ok))
                Issue.record("recordFinished returned with the database stopped")
            } catch let error as APIError {
                #expect(error.code == .unavailable, "\(error)")
                #expect(error.message.contains(id.uuidString.lowercased()), "\(error.message)")
            }
            #expect(await recorder.databaseState().state == "unavailable")
            _ = try await server.start()
            #expect(await recorder.flush(timeout: .seconds(60)) == 0)
            let rows = try await TestPostgres.query(store, "SELECT status FROM agent_executions WHERE id = $1", [id.uuidString])
            #expect(rows.map { $0[0] } == ["ok"])
        }
    }

    @Test("a finished record is durable when recordFinished returns")
    func durableOnReturn() async throws {
        guard geteuid() == 0 else { print("skipped: needs root for the test cluster"); return }
        try await TestPostgres.with { store in
            let recorder = recorder(store)
            let id = UUID()
            try await recorder.recordFinished(record(id, status: .timeout))
            let stored = try await store.record(id: id)
            #expect(stored?.status == .timeout)
        }
    }

    @Test("running rows left by a dead daemon become aborted; finished rows stay as they are")
    func abortedAtStart() async throws {
        guard geteuid() == 0 else { print("skipped: needs root for the test cluster"); return }
        try await TestPostgres.with { store in
            let recorder = recorder(store)
            let running = UUID(), finished = UUID()
            await recorder.recordStarted(record(running, status: .running))
            try await recorder.recordFinished(record(finished, status: .ok))
            #expect(await recorder.flush(timeout: .seconds(10)) == 0)
            #expect(try await recorder.markRunningAborted() == 1)
            #expect(try await store.record(id: running)?.status == .aborted)
            #expect(try await store.record(id: finished)?.status == .ok)
        }
    }

    @Test("sessions belong to the caller's users row, found by unix uid")
    func sessions() async throws {
        guard geteuid() == 0 else { print("skipped: needs root for the test cluster"); return }
        try await TestPostgres.with { store in
            let recorder = recorder(store)
            let user = try await recorder.ensureUser(unixUID: 4242, username: "sbxt-session")
            #expect(try await recorder.ensureUser(unixUID: 4242, username: "sbxt-session") == user)
            let session = try await recorder.createSession(userID: user, name: "analysis")
            let owner = try await recorder.sessionOwner(session.id)
            #expect(owner == .some(4242))
            let missing = try await recorder.sessionOwner(UUID())
            #expect(missing == nil)
        }
    }
}
