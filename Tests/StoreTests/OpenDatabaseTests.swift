import Foundation
import SandboxCore
import Testing
@testable import Store

struct OpenDatabaseTests {
    @Test("the embedded default is started, migrated and stopped again by close()")
    func embeddedDefault() async throws {
        var template = Array("/tmp/sdpg-XXXXXX".utf8CString)
        _ = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) })
        let directory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let opened = try await RecordStore.open(
            .embedded(dataDirectory: directory), poolSize: 2, embeddedSystemUser: TestPostgres.systemUser)
        do {
            #expect(opened.settings.host == directory + "/socket")
            #expect(opened.settings.database == "sandboxd")
            #expect(opened.settings.user == "sandboxd")
            #expect(opened.settings.poolSize == 2)
            let record = ExecutionRecord(agentType: "embedded", status: .ok)
            #expect(try await opened.store.insert(record))
            #expect(try await opened.store.record(id: record.id)?.agentType == "embedded")
            #expect(opened.embedded?.isRunning() == true)
        } catch {
            try? await opened.close()
            throw error
        }
        try await opened.close()
        #expect(opened.embedded?.isRunning() == false)
    }

    @Test("an external server is reached through a configuration target with a password file")
    func externalWithPasswordFile() async throws {
        try await TestPostgres.with { server in
            let passwordFile = server.directory + "/external.password"
            try (server.settings.password! + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
            let target = DatabaseTarget(
                host: server.settings.host, port: server.settings.port, database: server.settings.database,
                user: server.settings.user, passwordFile: passwordFile, poolSize: 2)
            let opened = try await RecordStore.open(.external(target))
            #expect(opened.embedded == nil)
            #expect(try await opened.store.pool.migrate() == [])
            #expect(try await opened.store.markRunningAborted() == 0)
            try await opened.close()
        }
    }
}
