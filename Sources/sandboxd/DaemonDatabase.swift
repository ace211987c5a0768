#if canImport(Glibc)
import Glibc
#endif
import DaemonMetrics
import Logging
import SandboxCore
import Store
import Supervisor

/// The record store the daemon writes to: the configured PostgreSQL, or the embedded private
/// cluster under the state directory. Migrations are applied before anything is served.
struct DaemonDatabase {
    let recorder: StoreRecorder
    /// Set when the daemon started the embedded cluster (stopped on shutdown).
    let embedded: EmbeddedPostgres?
    /// Where the store connects (the read-only database tool administers the same database).
    let settings: DatabaseSettings

    static func open(_ configuration: DaemonConfiguration, logger: Logger, metrics: DaemonMetrics? = nil) async throws -> DaemonDatabase {
        let settings: DatabaseSettings
        var embedded: EmbeddedPostgres?
        switch configuration.database {
        case .embedded(let dataDirectory):
            let cluster = EmbeddedPostgres(configuration: .init(directory: dataDirectory, poolSize: configuration.databasePoolSize),
                                           logger: Logger(label: "sandboxd.store.embedded"))
            logger.info("starting the embedded PostgreSQL cluster", metadata: ["directory": "\(dataDirectory)"])
            // A cluster already running (left by a daemon that was killed) is adopted, and stopped
            // by this daemon on its way out like one it started.
            settings = try await cluster.start()
            embedded = cluster
        case .external(var target):
            if let file = target.passwordFile {
                target = target.withPassword(fromFileContents: try readSmallFile(file))
            }
            settings = DatabaseSettings(host: target.host, port: target.port, database: target.database, user: target.user,
                                        password: target.password?.revealed, poolSize: target.poolSize,
                                        sslMode: target.parameters["sslmode"])
        }
        let store = try RecordStore(settings: settings, logger: Logger(label: "sandboxd.store"))
        let applied = try await store.migrate()
        if !applied.isEmpty { logger.notice("applied schema migrations \(applied)") }
        logger.info("execution records go to \(settings.redactedDescription) (\(configuration.databaseSource.rawValue))")
        let recorder = StoreRecorder(store: store, detail: settings.redactedDescription, logger: Logger(label: "sandboxd.records"),
                                     metrics: metrics)
        return DaemonDatabase(recorder: recorder, embedded: embedded, settings: settings)
    }

    func close(logger: Logger) async {
        guard let embedded else { return }
        do { try await embedded.stop() } catch { logger.error("stopping the embedded PostgreSQL failed: \(error)") }
    }
}

/// Reads a small text file (a password file) completely.
func readSmallFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else {
        throw SandboxDaemonError("cannot read \(path): \(String(cString: strerror(errno)))")
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes.append(contentsOf: buffer[..<count])
        if bytes.count > 1 << 20 { throw SandboxDaemonError("\(path) is larger than 1 MiB") }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A start-up failure of the daemon, said in one line.
struct SandboxDaemonError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
