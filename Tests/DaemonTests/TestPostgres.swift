import Foundation
import Logging
import Store

/// A throwaway PostgreSQL 15 cluster (initdb in a temporary directory as an unprivileged user,
/// Unix socket only), the same way the Store's tests make one; torn down after the body.
enum TestPostgres {
    static func with<T>(_ body: (RecordStore) async throws -> T) async throws -> T {
        try await withServer { store, _ in try await body(store) }
    }

    /// Like ``with(_:)``, also handing over the server so a test can stop and restart it.
    static func withServer<T>(_ body: (RecordStore, EmbeddedPostgres) async throws -> T) async throws -> T {
        var template = Array("/tmp/sdpg-daemon-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw TestError("mkdtemp failed")
        }
        let directory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let user = geteuid() == 0 ? "postgres" : String(cString: getpwuid(geteuid()).pointee.pw_name)
        let embedded = EmbeddedPostgres(
            configuration: .init(directory: directory, systemUser: user, createSystemUser: false, database: "sandboxd_test",
                                 role: "sandboxd_test",
                                 serverSettings: ["fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"],
                                 poolSize: 8, initdbArguments: ["--no-sync"]),
            logger: Logger(label: "test.postgres"))
        func tearDown() async {
            try? await embedded.stop()
            try? FileManager.default.removeItem(atPath: directory)
        }
        do {
            let settings = try await embedded.start()
            let store = try RecordStore(settings: settings)
            try await store.migrate()
            let result = try await body(store, embedded)
            await store.pool.close()
            await tearDown()
            return result
        } catch {
            await tearDown()
            throw error
        }
    }

    /// Rows of a query, as text.
    static func query(_ store: RecordStore, _ sql: String, _ parameters: [String?] = []) async throws -> [[String?]] {
        try await store.pool.withConnection { try $0.query(sql, parameters).rows }
    }
}
