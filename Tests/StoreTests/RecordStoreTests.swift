import Foundation
import SandboxCore
import Testing
@testable import Store

struct RecordStoreTests {
    static func finishedRecord(sandbox: String = "sbx-1", session: UUID? = nil, owner: UInt32? = 1000) -> ExecutionRecord {
        ExecutionRecord(
            sessionID: session, agentType: "code_interpreter",
            inputData: ["argv": ["python3", "-c", "print(1)"], "env": ["LANG": "C.UTF-8"]],
            outputData: ["stdout": "1\n", "truncated": false],
            executionTime: 0.25, sandboxID: sandbox, status: .ok, isolationLevel: .native, policy: "default",
            exitCode: 0, startedAt: Date(timeIntervalSince1970: 1_764_000_000.123456),
            finishedAt: Date(timeIntervalSince1970: 1_764_000_000.373456),
            usage: ResourceUsage(cpuMicroseconds: 12_345, memoryPeakBytes: 9_000_000_000), limitsEnforced: true,
            ownerUID: owner)
    }

    @Test("JSONB round-trips nested values, 64-bit integers, Korean text, emoji and control characters")
    func jsonRoundTrip() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 2)
            let tricky = "안녕하세요, 세계! 🧑‍💻🚀 \u{1}\u{7}\u{1B}[0m\t\r\n \"quoted\" \\back\\slash / \u{7F} \u{FEFF} 𝄞"
            let value: JSONValue = [
                "text": .string(tricky),
                "한국어 키": "값",
                "nested": ["deeper": ["deepest": [1, 2.5, nil, true, false, ["x": []]]]],
                "limits": [.integer(Int64.max), .integer(Int64.min), .integer(0), .number(0.1), .number(-1.5e300)],
                "empty": [:],
            ]
            var record = Self.finishedRecord()
            record.inputData = value
            record.outputData = .string(tricky)
            record.code = CodeRun(code: "print('안녕 🚀')", language: "python", result: ["exit_code": 0, "out": .string(tricky)])
            try await store.insert(record)
            let fetched = try #require(try await store.record(id: record.id))
            #expect(fetched.inputData == value)
            #expect(fetched.outputData == .string(tricky))
            #expect(fetched.code == record.code)

            // Any Codable value goes in and out as JSONB through the generic helpers.
            struct Payload: Codable, Equatable { var name: String; var tags: [String]; var sizes: [String: Int64] }
            let payload = Payload(name: tricky, tags: ["🚀", "한"], sizes: ["big": Int64.max])
            let parameter = try PostgresConnection.jsonb(payload)
            let result = try await store.pool.withConnection { try $0.query("SELECT $1::jsonb AS doc", [parameter]) }
            #expect(try result.decodeJSON(Payload.self, row: 0, column: "doc") == payload)
            await store.pool.close()
        }
    }

    @Test("a record is written running, finished by upsert, and never set back to running")
    func upsertLifecycle() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 2)
            let userID = try await store.ensureUser(unixUID: 1000, username: "alice")
            #expect(try await store.ensureUser(unixUID: 1000, username: "alice") == userID)
            let session = try await store.createSession(userID: userID, name: "analysis 분석")
            #expect(session.userID == userID)
            #expect(session.name == "analysis 분석")
            #expect(session.status == "active")

            var record = ExecutionRecord(
                sessionID: session.id, agentType: "code_interpreter", inputData: ["code": "print(1)"], sandboxID: "sbx-1",
                status: .running, isolationLevel: .native, startedAt: Date(), ownerUID: 1000,
                code: CodeRun(code: "print(1)", language: "python"))
            #expect(try await store.insert(record))
            #expect(try await store.insert(record) == false)  // same id: nothing written twice
            let running = try #require(try await store.record(id: record.id))
            #expect(running.status == .running)
            #expect(running.createdAt != nil)

            record.status = .ok
            record.exitCode = 0
            record.finishedAt = Date()
            record.executionTime = 0.5
            record.outputData = ["stdout": "1\n"]
            record.usage = ResourceUsage(cpuMicroseconds: 800, memoryPeakBytes: 4096)
            record.code?.result = ["stdout": "1\n"]
            #expect(try await store.upsert(record))
            let finished = try #require(try await store.record(id: record.id))
            #expect(finished.status == .ok)
            #expect(finished.exitCode == 0)
            #expect(finished.usage == record.usage)
            #expect(finished.code?.result == ["stdout": "1\n"])
            #expect(finished.createdAt == running.createdAt)
            #expect(abs(finished.startedAt!.timeIntervalSince(record.startedAt!)) < 0.000_01)

            var late = record
            late.status = .running
            #expect(try await store.upsert(late) == false)
            #expect(try await store.record(id: record.id)?.status == .ok)

            let recordID = record.id.uuidString
            let codeRows = try await store.pool.withConnection { connection in
                try connection.query(
                    "SELECT execution_mode, agent_execution_id::text, session_id::text, language FROM code_executions WHERE id = $1::uuid",
                    [recordID])
            }
            #expect(codeRows.rows == [["sandbox", record.id.uuidString.lowercased(), session.id.uuidString.lowercased(), "python"]])
            await store.pool.close()
        }
    }

    @Test("every field of a finished record survives the round trip")
    func fullRoundTrip() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 1)
            var record = Self.finishedRecord()
            record.signal = 9
            record.status = .killed
            record.exitCode = nil
            try await store.insert(record)
            var fetched = try #require(try await store.record(id: record.id))
            #expect(fetched.createdAt != nil)
            #expect(abs(fetched.startedAt!.timeIntervalSince(record.startedAt!)) < 0.000_001)
            #expect(abs(fetched.finishedAt!.timeIntervalSince(record.finishedAt!)) < 0.000_001)
            fetched.createdAt = nil
            fetched.startedAt = record.startedAt
            fetched.finishedAt = record.finishedAt
            #expect(fetched == record)
            #expect(try await store.record(id: UUID()) == nil)
            await store.pool.close()
        }
    }

    @Test("list filters by sandbox, session and owner, newest first, with a limit")
    func listFilters() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 2)
            let user = try await store.ensureUser(unixUID: 1001, username: "bob")
            let session = try await store.createSession(userID: user, name: nil)
            var ids: [UUID] = []
            for index in 0..<6 {
                let record = Self.finishedRecord(
                    sandbox: index % 2 == 0 ? "even" : "odd", session: index < 3 ? session.id : nil,
                    owner: index == 5 ? 2000 : 1000)
                ids.append(record.id)
                try await store.insert(record)  // one transaction each, so created_at increases
            }
            #expect(try await store.list().map(\.id) == ids.reversed())
            #expect(try await store.list(ExecutionFilter(sandboxID: "even")).map(\.id) == [ids[4], ids[2], ids[0]])
            #expect(try await store.list(ExecutionFilter(sessionID: session.id)).map(\.id) == [ids[2], ids[1], ids[0]])
            #expect(try await store.list(ExecutionFilter(ownerUID: 2000)).map(\.id) == [ids[5]])
            #expect(try await store.list(ExecutionFilter(sandboxID: "odd", ownerUID: 1000)).map(\.id) == [ids[3], ids[1]])
            #expect(try await store.list(ExecutionFilter(limit: 2)).map(\.id) == [ids[5], ids[4]])
            #expect(try await store.list(ExecutionFilter(sandboxID: "none")).isEmpty)
            await store.pool.close()
        }
    }

    @Test("markRunningAborted marks only running records and counts them")
    func markAborted() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 2)
            let running = (0..<3).map { _ in ExecutionRecord(agentType: "shell", status: .running) }
            let done = Self.finishedRecord()
            #expect(try await store.insert(running + [done]) == 4)
            #expect(try await store.markRunningAborted() == 3)
            #expect(try await store.markRunningAborted() == 0)
            for record in running {
                let fetched = try #require(try await store.record(id: record.id))
                #expect(fetched.status == .aborted)
                #expect(fetched.finishedAt != nil)
            }
            #expect(try await store.record(id: done.id)?.status == .ok)
            await store.pool.close()
        }
    }

    @Test("a batch is one transaction: a bad record writes none of it, and the error names the field")
    func batchValidationAndAtomicity() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 1)
            var tooLong = Self.finishedRecord()
            tooLong.agentType = String(repeating: "에", count: 51)
            let error = try await #require(throws: StoreError.self) { try await store.insert([Self.finishedRecord(), tooLong]) }
            #expect(error.code == .invalidRecord)
            #expect(error.message.contains("agent_executions.agent_type"))
            #expect(error.message.contains("51"))

            // Rejected by the server (unknown session: foreign key) in the middle of a pipeline.
            let good = Self.finishedRecord()
            var orphan = Self.finishedRecord()
            orphan.sessionID = UUID()
            let serverError = try await #require(throws: StoreError.self) { try await store.insert([good, orphan]) }
            #expect(serverError.code == .queryFailed)
            #expect(serverError.sqlState == "23503")
            #expect(try await store.record(id: good.id) == nil)
            // The connection is still usable after the aborted pipeline.
            #expect(try await store.insert([good]) == 1)
            await store.pool.close()
        }
    }
}

struct BatchMethodTests {
    @Test("both batch methods store exactly what a single insert stores", arguments: RecordStore.BatchMethod.allCases)
    func batchMethodsAgree(method: RecordStore.BatchMethod) async throws {
        try await TestPostgres.with { server in
            var store = try await server.makeStore(poolSize: 2)
            store.batchMethod = method
            store.batchChunkSize = 3  // several chunks
            let user = try await store.ensureUser(unixUID: 77, username: "u77")
            let session = try await store.createSession(userID: user, name: "batch")
            var samples: [ExecutionRecord] = [
                RecordStoreTests.finishedRecord(session: session.id),
                ExecutionRecord(agentType: "minimal"),
                ExecutionRecord(agentType: "json-null", inputData: .null, outputData: [nil, ["k": nil]], status: .error),
                ExecutionRecord(
                    agentType: "code", inputData: "한국어 🚀", sandboxID: "sbx", status: .timeout, isolationLevel: .virtualMachine,
                    signal: 9, code: CodeRun(code: "while True: pass", language: "python", result: .null)),
                ExecutionRecord(agentType: "code-no-result", executionTime: 1.5, code: CodeRun(code: "ls", language: "sh")),
            ]
            samples[0].code = CodeRun(code: "print('x')", language: "python", result: ["stdout": "x\n"])
            samples.append(contentsOf: (0..<6).map { RecordStoreTests.finishedRecord(sandbox: "bulk-\($0)") })

            #expect(try await store.insert(samples) == samples.count)
            #expect(try await store.insert(samples) == 0)  // idempotent
            for sample in samples {
                var fetched = try #require(try await store.record(id: sample.id))
                #expect(fetched.createdAt != nil)
                fetched.createdAt = nil
                if let started = sample.startedAt {
                    #expect(abs(fetched.startedAt!.timeIntervalSince(started)) < 0.000_001)
                    fetched.startedAt = started
                }
                if let finished = sample.finishedAt {
                    #expect(abs(fetched.finishedAt!.timeIntervalSince(finished)) < 0.000_001)
                    fetched.finishedAt = finished
                }
                #expect(fetched == sample)
            }
            let codeRows = try await store.pool.withConnection { try $0.query("SELECT count(*) FROM code_executions WHERE execution_mode = 'sandbox'") }
            #expect(codeRows.rows == [["3"]])
            await store.pool.close()
        }
    }
}

struct RejectedValueTests {
    @Test("values PostgreSQL cannot hold are refused with an error naming them, and nothing is written")
    func rejectedValues() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 1)
            let nulName = try await #require(throws: StoreError.self) { try await store.ensureUser(unixUID: 5, username: "a\u{0}b") }
            #expect(nulName.code == .encodingFailed)
            #expect(nulName.message.contains("NUL"))

            var nulJSON = RecordStoreTests.finishedRecord()
            nulJSON.inputData = ["bad": "a\u{0}b"]
            let jsonError = try await #require(throws: StoreError.self) { try await store.insert(nulJSON) }
            #expect(jsonError.code == .queryFailed)
            #expect(jsonError.sqlState == "22P05")

            var infinite = RecordStoreTests.finishedRecord()
            infinite.executionTime = .infinity
            let numberError = try await #require(throws: StoreError.self) { try await store.insert([infinite]) }
            #expect(numberError.code == .invalidRecord)
            #expect(numberError.message.contains("execution_time"))

            #expect(try await store.list().isEmpty)
            await store.pool.close()
        }
    }
}
