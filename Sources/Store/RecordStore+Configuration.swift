import Foundation
import Logging
import SandboxCore

/// The daemon's database once opened: the record store and, for the embedded default, the
/// private server behind it.
public struct OpenedDatabase: Sendable {
    public let store: RecordStore
    /// The embedded server when the daemon runs its own; `nil` for an external PostgreSQL.
    public let embedded: EmbeddedPostgres?
    /// Where the store connects (password redacted when printed).
    public let settings: DatabaseSettings

    /// Closes the pool, then stops the embedded server if there is one (`pg_ctl stop -m fast`).
    public func close() async throws {
        await store.pool.close()
        try await embedded?.stop()
    }
}

extension RecordStore {
    /// Opens the configured database: starts (or adopts) the embedded cluster under
    /// `dataDirectory` when no server is configured, reads a password file when one is named,
    /// and applies pending migrations.
    /// - Parameters:
    ///   - embeddedSystemUser: the unprivileged account that owns and runs the embedded cluster
    ///     (created with `useradd --system` when missing).
    public static func open(
        _ database: DaemonConfiguration.Database,
        poolSize: Int = DatabaseTarget.defaultPoolSize,
        embeddedSystemUser: String = "sandboxd-db",
        logger: Logger = Logger(label: "sandboxd.store")
    ) async throws -> OpenedDatabase {
        var embedded: EmbeddedPostgres? = nil
        let settings: DatabaseSettings
        switch database {
        case .embedded(let dataDirectory):
            let server = EmbeddedPostgres(
                configuration: .init(directory: dataDirectory, systemUser: embeddedSystemUser, poolSize: poolSize), logger: logger)
            settings = try await server.start()
            embedded = server
        case .external(var target):
            if target.password == nil, let file = target.passwordFile {
                guard let contents = FileManager.default.contents(atPath: file) else {
                    throw StoreError(.invalidSettings, "cannot read the database password file \(file)")
                }
                target = target.withPassword(fromFileContents: String(decoding: contents, as: UTF8.self))
            }
            settings = try DatabaseSettings(target: target)
        }
        do {
            let store = try RecordStore(settings: settings, logger: logger)
            let applied = try await store.migrate()
            if !applied.isEmpty { logger.notice("applied schema migrations", metadata: ["versions": "\(applied)"]) }
            logger.info("records database ready", metadata: ["database": "\(settings.redactedDescription)"])
            return OpenedDatabase(store: store, embedded: embedded, settings: settings)
        } catch {
            try? await embedded?.stop()
            throw error
        }
    }
}
