import Dispatch
import Foundation
import SandboxCore
import Testing
@testable import Store

struct ConnectionPoolTests {
    @Test("64 concurrent tasks insert 10,000 execution records through the pool, each exactly once")
    func concurrentInserts() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 8)
            let records = (0..<10_000).map { index in
                ExecutionRecord(
                    agentType: "load", inputData: ["index": .integer(Int64(index))], sandboxID: "sbx-\(index % 64)",
                    status: .ok, exitCode: 0, ownerUID: UInt32(index % 7))
            }
            let tasks = 64
            let peak = PeakCounter()
            var recordsetStore = store  // same pool, the other batch method
            recordsetStore.batchMethod = .jsonRecordset
            let batchStores = [store, recordsetStore]
            let written = try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<tasks {
                    let mine = stride(from: task, to: records.count, by: tasks).map { records[$0] }
                    group.addTask {
                        var count = 0
                        // Half the tasks write one record per call, half in small batches (both batch
                        // methods): every path shares the pool.
                        if task % 2 == 0 {
                            for record in mine where try await store.insert(record) { count += 1 }
                        } else {
                            let writer = batchStores[(task / 2) % 2]
                            for chunk in stride(from: 0, to: mine.count, by: 25) {
                                count += try await writer.insert(Array(mine[chunk..<min(chunk + 25, mine.count)]))
                            }
                        }
                        await peak.observe(await store.pool.openConnectionCount)
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(written == 10_000)
            let counts = try await store.pool.withConnection { connection in
                try connection.query("SELECT count(*), count(DISTINCT id), count(DISTINCT input_data->>'index') FROM agent_executions")
            }
            #expect(counts.rows.first == ["10000", "10000", "10000"])
            let stored = try await store.pool.withConnection { connection in
                try connection.query("SELECT id::text FROM agent_executions")
            }
            #expect(Set(stored.rows.compactMap { $0[0] }) == Set(records.map { $0.id.uuidString.lowercased() }))
            #expect(await peak.value <= 8)
            #expect(await store.pool.openConnectionCount <= 8)
            await store.pool.close()
        }
    }

    @Test("the pool never opens more connections than its size, as the server sees it")
    func boundedConnections() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 3)
            let admin = try ConnectionPool(settings: try server.embedded.superuserSettings(database: server.settings.database))
            let peak = PeakCounter()
            let user = server.settings.user
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<30 {
                    group.addTask {
                        _ = try await store.pool.withConnection { connection in
                            try connection.query("SELECT pg_sleep(0.02)")
                        }
                    }
                }
                group.addTask {
                    for _ in 0..<20 {
                        let seen = try await admin.withConnection { connection in
                            try connection.query(
                                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'",
                                [user])
                        }
                        await peak.observe(Int(seen.rows.first?.first.flatMap { $0 } ?? "0") ?? 0)
                        try await Task.sleep(for: .milliseconds(10))
                    }
                }
                try await group.waitForAll()
            }
            #expect(await peak.value >= 1)
            #expect(await peak.value <= 3)
            await store.pool.close()
            await admin.close()
        }
    }

    @Test("a waiter cancelled while the pool is exhausted leaves without taking a connection")
    func cancelledWaiter() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 1)
            let entered = DispatchSemaphore(value: 0)
            let release = DispatchSemaphore(value: 0)
            // The holder blocks its connection's own thread until released: no timing involved.
            let holder = Task {
                try await store.pool.withConnection { _ in
                    entered.signal()
                    release.wait()
                }
            }
            while entered.wait(timeout: .now()) == .timedOut { try await Task.sleep(for: .milliseconds(5)) }
            let waiter = Task { try await store.pool.withConnection { try $0.query("SELECT 1") } }
            while await store.pool.waitingCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
            waiter.cancel()
            await #expect(throws: CancellationError.self) { try await waiter.value }
            #expect(await store.pool.waitingCount == 0)
            release.signal()
            try await holder.value
            #expect(try await store.pool.withConnection { try $0.query("SELECT 2") }.rows == [["2"]])
            #expect(await store.pool.openConnectionCount == 1)
            await store.pool.close()
            await #expect(throws: StoreError.self) { try await store.pool.withConnection { try $0.query("SELECT 3") } }
        }
    }

    @Test("a server restart in the middle of a run costs the caller at most one retryable error")
    func recoversFromRestart() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 4)
            // Warm every connection so that all of them are broken by the restart.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 { group.addTask { _ = try await store.pool.withConnection { try $0.query("SELECT pg_sleep(0.05)") } } }
                try await group.waitForAll()
            }
            #expect(await store.pool.openConnectionCount == 4)

            // 1. Restart while idle: the next calls succeed without any error (retried internally).
            try await server.embedded.stop()
            server.settings = try await server.embedded.start()
            let afterRestart = (0..<8).map { _ in ExecutionRecord(agentType: "restart", status: .ok) }
            let inserted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for record in afterRestart { group.addTask { try await store.insert(record) } }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(inserted == 8)

            // 2. While the server is down, a call fails with one retryable, typed error naming the endpoint.
            try await server.embedded.stop()
            let down = try await #require(throws: StoreError.self) {
                try await store.insert(ExecutionRecord(agentType: "down", status: .ok))
            }
            #expect(down.isRetryable)
            #expect([.connectionFailed, .connectionLost].contains(down.code))
            #expect(down.message.contains(server.embedded.socketDirectory))
            #expect(down.message.contains(server.settings.database))

            // 3. A writer keeps going across a restart: each record is retried until it is in,
            //    every error it sees is retryable, and no record is written twice.
            server.settings = try await server.embedded.start()
            let restartDone = Flag()
            let writer = Task {
                var errors: [StoreError] = []
                var written = 0
                // Runs until the restart is over, so the restart surely falls in the middle of it.
                while !(await restartDone.isSet) || written < 50 {
                    let record = ExecutionRecord(agentType: "writer", inputData: ["n": .integer(Int64(written))], status: .ok)
                    while true {
                        do {
                            try await store.insert(record)
                            break
                        } catch let error as StoreError where error.isRetryable {
                            errors.append(error)
                            try await Task.sleep(for: .milliseconds(50))
                        }
                    }
                    written += 1
                }
                return (errors, written)
            }
            try await Task.sleep(for: .milliseconds(150))
            try await server.embedded.stop()
            try await Task.sleep(for: .milliseconds(300))
            server.settings = try await server.embedded.start()
            try await Task.sleep(for: .milliseconds(100))
            await restartDone.set()
            let (errors, written) = try await writer.value
            #expect(errors.allSatisfy { $0.isRetryable })
            let count = try await store.pool.withConnection { connection in
                try connection.query("SELECT count(*), count(DISTINCT input_data->>'n') FROM agent_executions WHERE agent_type = 'writer'")
            }
            #expect(count.rows.first == [String(written), String(written)])

            // 4. Once the server is back, a fresh burst of callers sees no error at all.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<16 { group.addTask { _ = try await store.pool.withConnection { try $0.query("SELECT 1") } } }
                try await group.waitForAll()
            }
            await store.pool.close()
        }
    }

    @Test("a wrong password is a clear authentication error naming host, port, database and user — not the password")
    func wrongPassword() async throws {
        try await TestPostgres.with { server in
            let secret = "Wr0ng-Pa55word-\(UUID().uuidString)"
            var settings = server.settings
            settings.password = secret
            let pool = try ConnectionPool(settings: settings)
            let error = try await #require(throws: StoreError.self) { try await pool.withConnection { try $0.query("SELECT 1") } }
            #expect(error.code == .authenticationFailed)
            #expect(!error.isRetryable)
            for text in [error.message, error.description, "\(error)", String(reflecting: error)] {
                #expect(!text.contains(secret), "\(text)")
                #expect(text.contains(server.embedded.socketDirectory))
                #expect(text.contains("port 5432"))
                #expect(text.contains("database \"\(settings.database)\""))
                #expect(text.contains("user \"\(settings.user)\""))
            }
            await pool.close()

            // No password at all is refused too (the socket requires scram-sha-256), and the right one works.
            settings.password = nil
            let without = try ConnectionPool(settings: settings)
            let missing = try await #require(throws: StoreError.self) { try await without.withConnection { try $0.query("SELECT 1") } }
            #expect(missing.code == .authenticationFailed)
            await without.close()
            let right = try ConnectionPool(settings: server.settings)
            #expect(try await right.withConnection { try $0.query("SELECT current_user") }.rows == [[server.settings.user]])
            await right.close()
        }
    }

    @Test("an unreachable server is a retryable connection error naming the endpoint")
    func unreachableServer() async throws {
        let settings = DatabaseSettings(host: "/nonexistent-sandboxd-socket-dir", port: 5999, database: "d", user: "u", password: "hunter2hunter2")
        let pool = try ConnectionPool(settings: settings)
        let error = try await #require(throws: StoreError.self) { try await pool.withConnection { try $0.query("SELECT 1") } }
        #expect(error.code == .connectionFailed)
        #expect(error.isRetryable)
        #expect(error.message.contains("/nonexistent-sandboxd-socket-dir"))
        #expect(error.message.contains("port 5999"))
        #expect(!error.message.contains("hunter2"))
        await pool.close()

        // Over TCP (nothing listens on port 1): refused, retryable, naming host and port.
        let tcp = try ConnectionPool(settings: DatabaseSettings(host: "127.0.0.1", port: 1, database: "d", user: "u", password: "hunter2hunter2"))
        let refused = try await #require(throws: StoreError.self) { try await tcp.withConnection { try $0.query("SELECT 1") } }
        #expect(refused.code == .connectionFailed)
        #expect(refused.message.contains("host 127.0.0.1 port 1"))
        #expect(!refused.message.contains("invalid connection option"))
        #expect(!refused.message.contains("hunter2"))
        await tcp.close()
    }
}

/// A one-way switch shared between tasks.
actor Flag {
    private(set) var isSet = false
    func set() { isSet = true }
}

/// Highest value observed, shared between tasks.
actor PeakCounter {
    private(set) var value = 0
    func observe(_ sample: Int) { value = max(value, sample) }
}
