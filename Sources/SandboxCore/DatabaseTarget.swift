import SandboxValues

/// Where the daemon's PostgreSQL is and how to log in: everything the Store needs to build its
/// connection settings, already resolved from `POSTGRES_URL`, `POSTGRES_*` and `sandboxd.yaml`.
public struct DatabaseTarget: Hashable, Sendable, CustomStringConvertible, CustomReflectable {
    /// Host name or IP address, or — as in libpq — an absolute directory holding the server's Unix socket.
    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    /// `nil`: no password (peer or trust authentication, or a password file still to be read).
    public var password: Secret?
    /// A file whose first line is the password; the daemon reads it at start (SandboxCore does no I/O)
    /// and calls ``withPassword(fromFileContents:)``.
    public var passwordFile: String?
    /// Further libpq connection parameters from the URL's query (`sslmode`, `connect_timeout`, …).
    public var parameters: [String: String]
    /// Connections in the daemon's pool.
    public var poolSize: Int

    public static let defaultHost = "localhost"
    public static let defaultPort = 5432
    public static let defaultDatabase = "sandboxd"
    public static let defaultUser = "sandboxd"
    public static let defaultPoolSize = 8
    /// Where a URL without a host (`postgresql:///db`) connects, as Debian's libpq does.
    public static let localSocketDirectory = "/var/run/postgresql"

    public init(
        host: String = DatabaseTarget.defaultHost,
        port: Int = DatabaseTarget.defaultPort,
        database: String = DatabaseTarget.defaultDatabase,
        user: String = DatabaseTarget.defaultUser,
        password: Secret? = nil,
        passwordFile: String? = nil,
        parameters: [String: String] = [:],
        poolSize: Int = DatabaseTarget.defaultPoolSize
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self.passwordFile = passwordFile
        self.parameters = parameters
        self.poolSize = poolSize
    }

    /// Connection parameters whose values are secrets (`sslpassword`).
    static func isSecretParameter(_ name: String) -> Bool { name.lowercased().contains("password") }

    /// True when ``host`` names a Unix socket directory rather than a network host.
    public var isSocketDirectory: Bool { host.hasPrefix("/") }

    /// The same target with the password taken from a password file's contents (first line, without
    /// its line ending), and ``passwordFile`` cleared.
    public func withPassword(fromFileContents contents: String) -> DatabaseTarget {
        var copy = self
        // By scalars: "\r\n" is one Character, so a Character split would keep the rest of the file.
        let firstLine = contents.unicodeScalars.prefix { $0 != "\n" && $0 != "\r" }
        copy.password = Secret(String(String.UnicodeScalarView(firstLine)))
        copy.passwordFile = nil
        return copy
    }

    /// Reflection (`dump`, default `print` of containing values) with secret parameters redacted.
    public var customMirror: Mirror {
        let shownParameters = parameters.reduce(into: [String: String]()) {
            $0[$1.key] = Self.isSecretParameter($1.key) ? "<redacted>" : $1.value
        }
        return Mirror(self, children: [
            "host": host, "port": port, "database": database, "user": user, "password": password as Any,
            "passwordFile": passwordFile as Any, "parameters": shownParameters, "poolSize": poolSize,
        ], displayStyle: .struct)
    }

    /// `user@host:port/database`, with ` (password set)` when there is one — never the password.
    public var description: String {
        var text = "\(user)@\(host):\(port)/\(database)"
        if password != nil { text += " (password set)" } else if let passwordFile { text += " (password file \(passwordFile))" }
        if !parameters.isEmpty {
            text += "?" + parameters.sorted { $0.key < $1.key }
                .map { "\($0.key)=\(Self.isSecretParameter($0.key) ? "<redacted>" : $0.value)" }
                .joined(separator: "&")
        }
        return text
    }
}

// MARK: - POSTGRES_URL

extension DatabaseTarget {
    /// libpq connection parameters accepted in a URL query, besides those that have their own field.
    static let passThroughParameters: Set<String> = [
        "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "requiressl",
        "connect_timeout", "application_name", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "target_session_attrs", "options", "gssencmode", "channel_binding",
    ]

    /// Parses a libpq connection URI: `postgresql://user:password@host:port/database?param=value`.
    ///
    /// Fields the URL leaves out get the defaults above (not libpq's environment lookups); an empty
    /// host means ``localSocketDirectory``.
    /// Error messages never repeat the URL, since it may hold the password.
    /// - Parameter poolSize: the pool size to carry (URLs have no such parameter).
    public init(url text: String, poolSize: Int = DatabaseTarget.defaultPoolSize) throws(SandboxCoreError) {
        do { self = try Self.parse(url: text, poolSize: poolSize) } catch {
            throw SandboxCoreError(code: .invalidConfiguration, message: "invalid PostgreSQL URL: \(error.message)",
                                   diagnostics: [Diagnostic(key: "url", message: error.message)])
        }
    }

    static func parse(url text: String, poolSize: Int) throws(ValueError) -> DatabaseTarget {
        var rest = Substring(text.trimmingWhitespace())
        if rest.hasPrefix("postgresql://") { rest = rest.dropFirst("postgresql://".count) }
        else if rest.hasPrefix("postgres://") { rest = rest.dropFirst("postgres://".count) }
        else { throw ValueError("must start with postgresql:// or postgres://") }

        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") { query = rest[rest.index(after: mark)...]; rest = rest[..<mark] }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") { path = rest[rest.index(after: slash)...]; rest = rest[..<slash] }

        var target = DatabaseTarget(poolSize: poolSize)
        // userinfo ends at the last "@": an unescaped "@" in a password is common enough to allow.
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                target.user = try Self.percentDecoded(userinfo[..<colon], what: "user name")
                let password = try Self.percentDecoded(userinfo[userinfo.index(after: colon)...], what: "password")
                if !password.isEmpty { target.password = Secret(password) }
            } else if !userinfo.isEmpty {
                target.user = try Self.percentDecoded(userinfo, what: "user name")
            }
        }

        // host[:port], host may be [IPv6] or a percent-encoded socket directory.
        var hostPart = rest
        var portPart: Substring?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw ValueError("unterminated [ in host") }
            let after = hostPart[hostPart.index(after: close)...]
            if after.hasPrefix(":") { portPart = after.dropFirst() } else if !after.isEmpty { throw ValueError("unexpected text after ]") }
            hostPart = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
        } else if let colon = hostPart.lastIndex(of: ":") {
            portPart = hostPart[hostPart.index(after: colon)...]
            hostPart = hostPart[..<colon]
        }
        if hostPart.contains(",") { throw ValueError("several hosts are not supported; name one") }
        // As in libpq, no host means the local Unix socket (Debian's libpq looks in /var/run/postgresql).
        target.host = hostPart.isEmpty ? Self.localSocketDirectory : try Self.percentDecoded(hostPart, what: "host")
        if let portPart, !portPart.isEmpty { target.port = try Self.port(String(portPart)) }
        if !path.isEmpty { target.database = try Self.percentDecoded(path, what: "database name") }

        for pair in query.split(separator: "&") where !pair.isEmpty {
            guard let equals = pair.firstIndex(of: "=") else { throw ValueError("query parameter \"\(pair)\" has no value") }
            let name = try Self.percentDecoded(pair[..<equals], what: "query parameter name")
            let value = try Self.percentDecoded(pair[pair.index(after: equals)...], what: "value of \(name)")
            switch name {
            case "host": target.host = value
            case "port": target.port = try Self.port(value)
            case "dbname": target.database = value
            case "user": target.user = value
            case "password": target.password = value.isEmpty ? nil : Secret(value)
            case _ where Self.passThroughParameters.contains(name): target.parameters[name] = value
            default:
                var message = "unknown connection parameter \"\(name)\""
                if let guess = closestMatch(to: name, among: ["host", "port", "dbname", "user", "password"] + Self.passThroughParameters.sorted()) {
                    message += " (did you mean \(guess)?)"
                }
                throw ValueError(message)
            }
        }
        guard !target.host.isEmpty else { throw ValueError("empty host") }
        guard !target.database.isEmpty else { throw ValueError("empty database name") }
        guard !target.user.isEmpty else { throw ValueError("empty user name") }
        return target
    }

    static func port(_ text: String) throws(ValueError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            throw ValueError("port \"\(text)\" is not a number in 1…65535")
        }
        return port
    }

    static func percentDecoded(_ text: Substring, what: String) throws(ValueError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else { bytes.append(byte); continue }
            guard let high = iterator.next(), let low = iterator.next(),
                  let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else {
                throw ValueError("bad %-escape in \(what)")
            }
            bytes.append(value)
        }
        guard !bytes.contains(0), let decoded = String(validating: bytes, as: UTF8.self) else {
            throw ValueError("\(what) is not valid UTF-8 text")
        }
        return decoded
    }
}
