/// Every error the Store module throws: a stable code, a message that names the database
/// endpoint (host, port, database, user — never the password), and PostgreSQL's SQLSTATE when
/// the server reported one.
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable, machine-readable error code.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The server could not be reached (down, restarting, wrong host/port/socket). Retryable.
        public static let connectionFailed = Code(rawValue: "connection_failed")
        /// The server rejected the user or password. Not retryable.
        public static let authenticationFailed = Code(rawValue: "authentication_failed")
        /// An open connection broke during a call (server restart, backend killed). Retryable.
        public static let connectionLost = Code(rawValue: "connection_lost")
        /// The server rejected a statement.
        public static let queryFailed = Code(rawValue: "query_failed")
        /// A row could not be turned into a value (unexpected NULL, bad JSON, bad number).
        public static let decodingFailed = Code(rawValue: "decoding_failed")
        /// A value could not be turned into a parameter (e.g. JSON encoding failed).
        public static let encodingFailed = Code(rawValue: "encoding_failed")
        /// A record field does not fit its column; nothing was written.
        public static let invalidRecord = Code(rawValue: "invalid_record")
        /// Connection settings or a connection URL are malformed.
        public static let invalidSettings = Code(rawValue: "invalid_settings")
        /// A schema migration failed; it was rolled back.
        public static let migrationFailed = Code(rawValue: "migration_failed")
        /// The pool was shut down.
        public static let poolClosed = Code(rawValue: "pool_closed")
        /// The embedded PostgreSQL cluster could not be created, started or stopped.
        public static let embeddedServerFailed = Code(rawValue: "embedded_server_failed")
        /// The read-only database tool cannot be offered with this database (e.g. PostgreSQL over
        /// TCP: there is no socket to mount into a sandbox).
        public static let databaseToolUnavailable = Code(rawValue: "database_tool_unavailable")
        /// A sandbox's read-only role could not be set up as the policy says (a listed table is
        /// missing, or the role would hold more than SELECT); nothing was granted.
        public static let databaseAccessRefused = Code(rawValue: "database_access_refused")
    }

    public var code: Code
    public var message: String
    /// PostgreSQL's five-character SQLSTATE, when the server sent one.
    public var sqlState: String?

    public init(_ code: Code, _ message: String, sqlState: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
    }

    /// Whether trying the same idempotent work again (on a new connection) may succeed.
    public var isRetryable: Bool {
        switch code {
        case .connectionFailed, .connectionLost: return true
        case .queryFailed:
            // serialization_failure, deadlock_detected, and the server going down under us.
            guard let sqlState else { return false }
            return ["40001", "40P01", "57P01", "57P02", "57P03"].contains(sqlState) || sqlState.hasPrefix("08")
        default: return false
        }
    }

    public var description: String {
        if let sqlState { return "\(code): \(message) (SQLSTATE \(sqlState))" }
        return "\(code): \(message)"
    }
}
