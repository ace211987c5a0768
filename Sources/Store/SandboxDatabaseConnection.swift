import SandboxCore

/// What a sandbox needs to reach its read-only database role: a directory to bind-mount and the
/// libpq environment variables that point at it. Made by ``ReadOnlyDatabaseAccess/grant(_:sandboxID:)``.
///
/// The password is the role's only credential; `description` never shows it.
public struct SandboxDatabaseConnection: Sendable, Hashable, CustomStringConvertible {
    /// The sandbox's role (`sbx_ro_…`).
    public var role: String
    /// The role's generated password (passed to the sandbox as `PGPASSWORD`).
    public var password: Secret
    public var database: String
    /// The number in the socket's name (`.s.PGSQL.<port>`).
    public var port: Int
    /// Host directory holding the server's Unix socket: bind-mount it (read-only is enough) at
    /// ``mountPoint`` inside the sandbox.
    public var hostSocketDirectory: String
    /// Where the socket directory appears inside the sandbox (`PGHOST`).
    public var mountPoint: String
    /// `statement_timeout` of the role, in milliseconds.
    public var statementTimeoutMilliseconds: Int
    /// The relations the role may read, as `schema.table`, sorted.
    public var readableTables: [String]

    /// The sandbox's libpq environment: `PGHOST` (the mount point), `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGPASSWORD`. All are in `Policy.daemonSetVariables`, so a request cannot
    /// override them.
    public var environment: [String: String] {
        [
            "PGHOST": mountPoint,
            "PGPORT": String(port),
            "PGUSER": role,
            "PGDATABASE": database,
            "PGPASSWORD": password.revealed,
        ]
    }

    /// Settings for connecting as the sandbox's role from the host (through ``hostSocketDirectory``),
    /// for checks and tests.
    public func hostSettings(poolSize: Int = 1) -> DatabaseSettings {
        DatabaseSettings(
            host: hostSocketDirectory, port: port, database: database, user: role, password: password.revealed,
            poolSize: poolSize, applicationName: "sandboxd-dbtool-check")
    }

    public var description: String {
        "role \(role) on database \(database) (socket \(hostSocketDirectory) → \(mountPoint), port \(port)); "
            + "SELECT on \(readableTables.joined(separator: ", "))"
    }
}
