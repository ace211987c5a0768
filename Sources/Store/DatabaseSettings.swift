import Foundation
import SandboxCore

/// Where and how to reach PostgreSQL.
///
/// `host` follows libpq: a name or address for TCP, or an absolute path naming the directory
/// that holds the server's Unix socket. `description` and `redactedDescription` never contain
/// the password, so settings can be logged.
public struct DatabaseSettings: Sendable, Hashable {
    /// Host name, IP address, or the absolute path of a Unix-socket directory.
    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    public var password: String?
    /// Most connections the pool opens at once.
    public var poolSize: Int
    /// Seconds to wait for a connection to be established (libpq `connect_timeout`).
    public var connectTimeoutSeconds: Int
    /// libpq `sslmode` (`disable`, `prefer`, `require`, `verify-full`, …); `nil` keeps libpq's default.
    public var sslMode: String?
    /// Shown in `pg_stat_activity`.
    public var applicationName: String
    /// Further libpq connection parameters (`keepalives`, `sslrootcert`, `target_session_attrs`, …).
    public var libpqParameters: [String: String] = [:]

    /// Debian's default socket directory, used when a URL names no host.
    public static let defaultSocketDirectory = "/var/run/postgresql"

    public init(
        host: String = DatabaseSettings.defaultSocketDirectory,
        port: Int = 5432,
        database: String,
        user: String,
        password: String? = nil,
        poolSize: Int = 8,
        connectTimeoutSeconds: Int = 10,
        sslMode: String? = nil,
        applicationName: String = "sandboxd"
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self.poolSize = poolSize
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.sslMode = sslMode
        self.applicationName = applicationName
    }

    /// Whether `host` names a Unix-socket directory rather than a TCP host.
    public var isUnixSocket: Bool { host.hasPrefix("/") }

    /// `postgresql://user@host:port/database`, password left out (shown as `***` when one is set).
    public var redactedDescription: String {
        let credentials = password == nil ? user : "\(user):***"
        if isUnixSocket {
            return "postgresql://\(credentials)@/\(database)?host=\(host)&port=\(port)"
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "postgresql://\(credentials)@\(hostPart):\(port)/\(database)"
    }

    /// `database "d" as user "u" on host h port p` — for error messages.
    var endpointDescription: String {
        let place = isUnixSocket ? "socket directory \(host)" : "host \(host)"
        return "database \"\(database)\" as user \"\(user)\" on \(place) port \(port)"
    }

    /// Checks the values libpq cannot check for us.
    public func validate() throws(StoreError) {
        func bad(_ message: String) -> StoreError { StoreError(.invalidSettings, message) }
        if host.isEmpty { throw bad("host is empty") }
        if !(1...65535).contains(port) { throw bad("port \(port) is not between 1 and 65535") }
        if database.isEmpty { throw bad("database name is empty") }
        if user.isEmpty { throw bad("user name is empty") }
        if poolSize < 1 { throw bad("pool size \(poolSize) must be at least 1") }
        if connectTimeoutSeconds < 1 { throw bad("connect timeout \(connectTimeoutSeconds)s must be at least 1 second") }
        let values = [("host", host), ("database", database), ("user", user), ("password", password ?? "")]
            + libpqParameters.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        for (name, value) in values where value.utf8.contains(0) {
            throw bad("\(name) contains a NUL byte")
        }
    }
}

extension DatabaseSettings: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { redactedDescription }
    public var debugDescription: String { "DatabaseSettings(\(redactedDescription), pool \(poolSize))" }
    // Keeps the password out of dump(), Mirror-based loggers and test failure output.
    public var customMirror: Mirror {
        Mirror(self, children: ["redacted": redactedDescription, "poolSize": poolSize], displayStyle: .struct)
    }
}

extension DatabaseSettings {
    /// Settings for a target resolved from `POSTGRES_URL`, `POSTGRES_*` or `sandboxd.yaml`.
    ///
    /// `sslmode`, `connect_timeout` and `application_name` get their own fields; other libpq
    /// parameters pass through unchanged. A password file must have been read already
    /// (`DatabaseTarget.withPassword(fromFileContents:)`).
    public init(target: DatabaseTarget) throws(StoreError) {
        func bad(_ message: String) -> StoreError { StoreError(.invalidSettings, "database \(target): \(message)") }
        guard target.passwordFile == nil || target.password != nil else {
            throw bad("the password file \(target.passwordFile ?? "") has not been read")
        }
        var parameters = target.parameters
        var timeout = 10
        if let text = parameters.removeValue(forKey: "connect_timeout") {
            guard let seconds = Int(text), seconds >= 1 else { throw bad("connect_timeout \"\(text)\" is not a whole number of seconds ≥ 1") }
            timeout = seconds
        }
        self.init(
            host: target.host, port: target.port, database: target.database, user: target.user,
            password: target.password?.revealed, poolSize: target.poolSize, connectTimeoutSeconds: timeout,
            sslMode: parameters.removeValue(forKey: "sslmode"),
            applicationName: parameters.removeValue(forKey: "application_name") ?? "sandboxd")
        libpqParameters = parameters
        do { try validate() } catch { throw bad(error.message) }
    }

    /// Parses `postgresql://[user[:password]@][host][:port][/database][?param=value&…]` (also
    /// `postgres://`) with the same rules as `POSTGRES_URL` (`DatabaseTarget(url:)`): a Unix-socket
    /// directory is a percent-encoded host (`%2Fvar%2Frun%2Fpostgresql`) or `?host=/dir`; no host
    /// means Debian's socket directory. Errors never echo the URL (it may hold the password).
    public init(url: String, poolSize: Int = DatabaseTarget.defaultPoolSize) throws(StoreError) {
        let target: DatabaseTarget
        do {
            target = try DatabaseTarget(url: url, poolSize: poolSize)
        } catch {
            throw StoreError(.invalidSettings, error.message)
        }
        try self.init(target: target)
    }
}
