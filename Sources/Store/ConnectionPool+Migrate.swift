extension ConnectionPool {
    /// Key of the session-level advisory lock that serialises migrations across daemons
    /// sharing one database ("sandboxd" in ASCII).
    static let migrationLockKey: Int64 = 0x73616e_64626f78

    /// Applies every migration in `migrations` not yet recorded in `schema_migrations`, in
    /// version order, each in its own transaction, while holding an advisory lock so that two
    /// daemons starting together do not race. Running it again is a no-op.
    /// - Returns: the versions applied by this call (empty when the schema was current).
    @discardableResult
    public func migrate(_ migrations: [Migration] = Migration.all) async throws -> [Int] {
        let ordered = migrations.sorted { $0.version < $1.version }
        return try await withConnection { connection in
            try connection.query("SELECT pg_advisory_lock($1::bigint)", [String(Self.migrationLockKey)])
            defer { _ = try? connection.query("SELECT pg_advisory_unlock($1::bigint)", [String(Self.migrationLockKey)]) }

            let ledger = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
            var applied: Set<Int> = []
            if ledger.rows.first?.first == "t" {
                let versions = try connection.query("SELECT version FROM schema_migrations")
                applied = Set(versions.rows.compactMap { $0.first.flatMap { $0.flatMap { Int($0) } } })
            }
            var appliedNow: [Int] = []
            for migration in ordered where !applied.contains(migration.version) {
                do {
                    try connection.execute("BEGIN")
                    try connection.execute(migration.sql)
                    try connection.query(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2) ON CONFLICT (version) DO NOTHING",
                        [String(migration.version), migration.name])
                    try connection.execute("COMMIT")
                } catch let error as StoreError {
                    if error.code != .connectionLost { _ = try? connection.execute("ROLLBACK") }
                    if error.isRetryable { throw error }
                    throw StoreError(
                        .migrationFailed,
                        "migration \(migration.version) (\(migration.name)) was rolled back: \(error.message)",
                        sqlState: error.sqlState)
                }
                appliedNow.append(migration.version)
            }
            return appliedNow
        }
    }
}
