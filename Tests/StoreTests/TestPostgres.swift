import Foundation
import Logging
import Store

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL 15 cluster for one test: initdb in a fresh temporary directory as an
/// unprivileged user (the tests run as root, initdb refuses root), scram-sha-256 on a Unix socket
/// in that directory, no TCP. Built on `EmbeddedPostgres`, the type the daemon uses.
struct TestPostgres {
    let embedded: EmbeddedPostgres
    let directory: String
    /// The daemon role's settings (password authentication).
    var settings: DatabaseSettings

    /// The unprivileged account that owns test clusters.
    static var systemUser: String {
        if geteuid() == 0 { return "postgres" }
        return String(cString: getpwuid(geteuid()).pointee.pw_name)
    }

    /// Starts a cluster, runs `body`, then stops the server and deletes the directory — also when
    /// `body` throws.
    static func with<T>(
        poolSize: Int = 8, systemUser: String = TestPostgres.systemUser, createSystemUser: Bool = false,
        _ body: (inout TestPostgres) async throws -> T
    ) async throws -> T {
        var template = Array("/tmp/sdpg-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        let directory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let embedded = EmbeddedPostgres(
            configuration: .init(
                directory: directory,
                systemUser: systemUser,
                createSystemUser: createSystemUser,
                database: "sandboxd_test",
                role: "sandboxd_test",
                // Durability is not what these tests check; speed is welcome.
                serverSettings: ["fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"],
                poolSize: poolSize,
                initdbArguments: ["--no-sync"]),
            logger: Logger(label: "test.postgres"))
        do {
            let settings = try await embedded.start()
            var server = TestPostgres(embedded: embedded, directory: directory, settings: settings)
            let result = try await body(&server)
            await tearDown(embedded, directory)
            return result
        } catch {
            await tearDown(embedded, directory)
            throw error
        }
    }

    private static func tearDown(_ embedded: EmbeddedPostgres, _ directory: String) async {
        do {
            try await embedded.stop()
        } catch {
            print("test cluster in \(directory) did not stop cleanly: \(error)")
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A record store over a new pool for this cluster, with the schema applied.
    func makeStore(poolSize: Int? = nil) async throws -> RecordStore {
        var settings = settings
        if let poolSize { settings.poolSize = poolSize }
        let store = try RecordStore(settings: settings)
        try await store.migrate()
        return store
    }
}
