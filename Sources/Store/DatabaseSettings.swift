import Foundation

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
        for (name, value) in [("host", host), ("database", database), ("user", user), ("password", password ?? "")]
        where value.utf8.contains(0) {
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
    /// Parses `postgresql://[user[:password]@][host][:port][/database][?param=value&…]`
    /// (also `postgres://`). A Unix-socket directory is given percent-encoded as the host
    /// (`postgresql://u@%2Fvar%2Frun%2Fpostgresql/db`) or as `?host=/var/run/postgresql`.
    /// Recognised parameters: `host`, `port`, `dbname`, `user`, `password`, `sslmode`,
    /// `connect_timeout`, `application_name`, `pool_size`; any other is an error naming it.
    /// Errors never echo the password.
    public init(url: String, defaultUser: String = "postgres") throws(StoreError) {
        func bad(_ message: String) -> StoreError { StoreError(.invalidSettings, "POSTGRES_URL: \(message)") }

        var rest = Substring(url)
        guard let schemeEnd = rest.range(of: "://") else { throw bad("missing scheme; expected postgresql://…") }
        let scheme = rest[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "postgresql" || scheme == "postgres" else {
            throw bad("scheme \"\(scheme)\" is not postgresql:// or postgres://")
        }
        rest = rest[schemeEnd.upperBound...]

        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var userInfo: Substring? = nil
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }

        var user: String? = nil
        var password: String? = nil
        if let userInfo {
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.percentDecoded(userInfo[..<colon], what: "user")
                password = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...], what: "password")
            } else {
                user = try Self.percentDecoded(userInfo, what: "user")
            }
        }

        var host: String? = nil
        var port: Int? = nil
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad("unterminated [ in IPv6 host") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("unexpected text after IPv6 host") }
                port = try Self.parsePort(after.dropFirst())
            }
        } else if !rest.isEmpty {
            if let colon = rest.lastIndex(of: ":") {
                host = try Self.percentDecoded(rest[..<colon], what: "host")
                port = try Self.parsePort(rest[rest.index(after: colon)...])
            } else {
                host = try Self.percentDecoded(rest, what: "host")
            }
            if host?.isEmpty == true { host = nil }
        }

        var database: String? = path.isEmpty ? nil : try Self.percentDecoded(path, what: "database name")
        var sslMode: String? = nil
        var connectTimeout = 10
        var poolSize = 8
        var applicationName = "sandboxd"

        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let key: String
            let value: String
            if let equals = pair.firstIndex(of: "=") {
                key = try Self.percentDecoded(pair[..<equals], what: "parameter name")
                value = try Self.percentDecoded(pair[pair.index(after: equals)...], what: "parameter \(key)")
            } else {
                key = try Self.percentDecoded(pair, what: "parameter name")
                value = ""
            }
            switch key {
            case "host": host = value
            case "port": port = try Self.parsePort(Substring(value))
            case "dbname": database = value
            case "user": user = value
            case "password": password = value
            case "sslmode": sslMode = value
            case "application_name": applicationName = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds >= 1 else {
                    throw bad("connect_timeout \"\(value)\" is not a whole number of seconds ≥ 1")
                }
                connectTimeout = seconds
            case "pool_size":
                guard let size = Int(value), size >= 1 else { throw bad("pool_size \"\(value)\" is not a number ≥ 1") }
                poolSize = size
            default:
                throw bad("unknown parameter \"\(key)\" (known: host, port, dbname, user, password, sslmode, connect_timeout, application_name, pool_size)")
            }
        }

        let resolvedUser = user ?? defaultUser
        self.init(
            host: host ?? Self.defaultSocketDirectory,
            port: port ?? 5432,
            database: database ?? resolvedUser,
            user: resolvedUser,
            password: password,
            poolSize: poolSize,
            connectTimeoutSeconds: connectTimeout,
            sslMode: sslMode,
            applicationName: applicationName)
        do {
            try validate()
        } catch {
            throw bad(error.message)
        }
    }

    private static func parsePort(_ text: Substring) throws(StoreError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            throw StoreError(.invalidSettings, "POSTGRES_URL: port \"\(text)\" is not a number between 1 and 65535")
        }
        return port
    }

    /// RFC 3986 percent-decoding; the error names the part but never shows its text (it may be a password).
    private static func percentDecoded(_ text: Substring, what: String) throws(StoreError) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw StoreError(.invalidSettings, "POSTGRES_URL: bad percent-encoding in the \(what)")
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw StoreError(.invalidSettings, "POSTGRES_URL: the \(what) is not valid UTF-8 after percent-decoding")
        }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
