import CLibPQ
import Dispatch
import Foundation
import Logging

/// A statement prepared once per connection under a fixed name and then run with parameters only.
public struct PreparedStatement: Sendable, Hashable {
    /// Unique within the process; the server-side name of the prepared statement.
    public let name: String
    /// The SQL text with `$1`, `$2`, … placeholders.
    public let sql: String

    public init(name: String, sql: String) {
        self.name = name
        self.sql = sql
    }
}

/// The rows of a result, every value in PostgreSQL's text format (`nil` is SQL NULL).
public struct QueryResult: Sendable {
    public var columns: [String]
    public var rows: [[String?]]
    /// Rows inserted, updated or deleted (`PQcmdTuples`), 0 for other statements.
    public var affectedRows: Int

    /// The value in `column` of row `row`, or `nil` when NULL or when no such column exists.
    public func value(_ row: Int, _ column: String) -> String? {
        guard let index = columns.firstIndex(of: column) else { return nil }
        return rows[row][index]
    }
}

/// One libpq connection.
///
/// Threading: every call into libpq for this connection runs on the connection's own serial
/// `DispatchQueue`, never on Swift's cooperative thread pool. We use blocking libpq calls on
/// these dedicated threads instead of the non-blocking API driven from an event loop because
/// connection setup blocks anyway (name resolution, authentication, TLS), and because the pool
/// bounds the number of such threads to its size: at most `poolSize` threads ever wait in libpq.
/// The pool leases a connection to one caller at a time, which is what makes the
/// `@unchecked Sendable` sound: the handle is only touched on `queue` by the current lessee.
public final class PostgresConnection: @unchecked Sendable {
    public let settings: DatabaseSettings
    private let handle: OpaquePointer
    private let queue: DispatchQueue
    private var preparedNames: Set<String> = []
    /// Set once a call found the connection broken; the pool then discards it.
    private(set) var isBroken = false
    private var isClosed = false

    private init(settings: DatabaseSettings, handle: OpaquePointer, queue: DispatchQueue) {
        self.settings = settings
        self.handle = handle
        self.queue = queue
    }

    deinit {
        if !isClosed { PQfinish(handle) }
    }

    /// Opens a connection on a new dedicated queue; the blocking connect happens there.
    static func open(_ settings: DatabaseSettings) async throws -> PostgresConnection {
        try settings.validate()
        let queue = DispatchQueue(label: "sandboxd.store.connection")
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { () throws(StoreError) in
                    try PostgresConnection.connectBlocking(settings, queue: queue)
                })
            }
        }
    }

    /// Runs `body` with this connection on its dedicated queue.
    func run<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body(self) })
            }
        }
    }

    /// Closes the connection on its queue, without waiting.
    func closeInBackground() {
        queue.async { self.closeNow() }
    }

    func closeNow() {
        guard !isClosed else { return }
        isClosed = true
        PQfinish(handle)
    }

    // MARK: - Connecting

    static func connectBlocking(_ settings: DatabaseSettings, queue: DispatchQueue) throws(StoreError) -> PostgresConnection {
        var parameters: [(String, String)] = [
            ("host", settings.host),
            ("port", String(settings.port)),
            ("dbname", settings.database),
            ("user", settings.user),
            ("connect_timeout", String(settings.connectTimeoutSeconds)),
            ("application_name", settings.applicationName),
            ("client_encoding", "UTF8"),
            // Timestamps without time zone (the original plan's created_at columns) are read and
            // written as UTC, whatever the server's default.
            ("options", "-c TimeZone=UTC"),
        ]
        if let password = settings.password { parameters.append(("password", password)) }
        if let sslMode = settings.sslMode { parameters.append(("sslmode", sslMode)) }
        if !settings.isUnixSocket {
            // A peer that vanishes without closing (host down, network cut) would otherwise hold a
            // connection thread in a blocking read for hours; keepalives notice within about a minute.
            let keepalives = [("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3")]
            for (key, value) in keepalives where settings.libpqParameters[key] == nil { parameters.append((key, value)) }
        }
        for (key, value) in settings.libpqParameters.sorted(by: { $0.key < $1.key }) {
            if key == "options" {
                parameters[parameters.firstIndex { $0.0 == "options" }!].1 += " " + value
            } else if !parameters.contains(where: { $0.0 == key }) {
                parameters.append((key, value))
            }
        }

        let handle: OpaquePointer? = withCStringArray(parameters.map(\.0)) { keywords in
            withCStringArray(parameters.map(\.1)) { values in
                PQconnectdbParams(keywords, values, 0)
            }
        }
        guard let handle else {
            throw StoreError(.connectionFailed, "cannot connect to \(settings.endpointDescription): out of memory")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let reason = scrub(String(cString: PQerrorMessage(handle)), settings: settings)
            PQfinish(handle)
            let lowered = reason.lowercased()
            let isAuthentication = lowered.contains("authentication failed") || lowered.contains("no password supplied")
                || lowered.contains("password is required")
            throw StoreError(
                isAuthentication ? .authenticationFailed : .connectionFailed,
                "cannot connect to \(settings.endpointDescription): \(reason)",
                sqlState: isAuthentication ? "28P01" : nil)
        }
        // Notices ("relation already exists, skipping") would go to stderr; they carry nothing we act on.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        return PostgresConnection(settings: settings, handle: handle, queue: queue)
    }

    // MARK: - Running statements (call only on `queue`, i.e. inside `run`)

    /// Runs one or more statements without parameters (simple query protocol). For fixed SQL
    /// such as migrations; never put values into `sql`.
    @discardableResult
    public func execute(_ sql: String) throws(StoreError) -> QueryResult {
        let result = PQexec(handle, sql)
        return try consume(result, what: "statement")
    }

    /// Runs one statement with `$n` parameters in text format (`nil` is NULL).
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws(StoreError) -> QueryResult {
        try Self.checkParameters(parameters, for: "statement")
        let result = withParameterPointers(parameters) { values in
            PQexecParams(handle, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return try consume(result, what: "statement")
    }

    /// Runs a prepared statement, preparing it on this connection first if needed.
    @discardableResult
    public func execute(_ statement: PreparedStatement, _ parameters: [String?]) throws(StoreError) -> QueryResult {
        try Self.checkParameters(parameters, for: statement.name)
        try prepareIfNeeded(statement)
        let result = withParameterPointers(parameters) { values in
            PQexecPrepared(handle, statement.name, Int32(parameters.count), values, nil, nil, 0)
        }
        return try consume(result, what: "statement \(statement.name)")
    }

    /// Sends every statement in one libpq pipeline followed by a single sync, so the whole batch
    /// costs one round trip and runs as one implicit transaction: if any statement fails, none
    /// of them takes effect. Returns the affected-row count of each statement.
    public func pipeline(_ items: [(PreparedStatement, [String?])]) throws(StoreError) -> [Int] {
        guard !items.isEmpty else { return [] }
        for (statement, parameters) in items { try Self.checkParameters(parameters, for: statement.name) }
        for statement in Set(items.map(\.0)) { try prepareIfNeeded(statement) }

        guard PQenterPipelineMode(handle) == 1 else { throw failure("entering pipeline mode", result: nil) }
        var firstError: StoreError? = nil
        var counts: [Int] = []
        counts.reserveCapacity(items.count)
        defer {
            if PQexitPipelineMode(handle) != 1 { isBroken = true }
        }

        for (statement, parameters) in items {
            let sent = withParameterPointers(parameters) { values in
                PQsendQueryPrepared(handle, statement.name, Int32(parameters.count), values, nil, nil, 0)
            }
            guard sent == 1 else { throw failure("sending \(statement.name) in a pipeline", result: nil) }
        }
        guard PQpipelineSync(handle) == 1 else { throw failure("syncing the pipeline", result: nil) }

        for (statement, _) in items {
            guard let result = PQgetResult(handle) else {
                throw failure("reading the result of \(statement.name) in a pipeline", result: nil)
            }
            let status = PQresultStatus(result)
            if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK {
                counts.append(Int(String(cString: PQcmdTuples(result))) ?? 0)
            } else if status == PGRES_PIPELINE_ABORTED {
                counts.append(0)
            } else {
                if firstError == nil { firstError = failure("statement \(statement.name) in a pipeline", result: result) }
                counts.append(0)
            }
            PQclear(result)
            // Each statement's results end with a NULL.
            while let extra = PQgetResult(handle) { PQclear(extra) }
        }
        guard let sync = PQgetResult(handle) else { throw failure("reading the pipeline sync", result: nil) }
        let syncStatus = PQresultStatus(sync)
        PQclear(sync)
        guard syncStatus == PGRES_PIPELINE_SYNC else { throw failure("reading the pipeline sync", result: nil) }
        if let firstError { throw firstError }
        return counts
    }

    /// Text parameters travel as C strings: a NUL byte would silently cut the value short.
    private static func checkParameters(_ parameters: [String?], for what: String) throws(StoreError) {
        if let index = parameters.firstIndex(where: { $0?.utf8.contains(0) == true }) {
            throw StoreError(.encodingFailed, "parameter $\(index + 1) of \(what) contains a NUL byte, which PostgreSQL text cannot hold")
        }
    }

    private func prepareIfNeeded(_ statement: PreparedStatement) throws(StoreError) {
        guard !preparedNames.contains(statement.name) else { return }
        let result = PQprepare(handle, statement.name, statement.sql, 0, nil)
        _ = try consume(result, what: "preparing \(statement.name)")
        preparedNames.insert(statement.name)
    }

    /// The SCRAM-SHA-256 verifier of `password` for role `user`, computed here by libpq so that
    /// the password itself never reaches the server (nor its log or `pg_stat_activity`):
    /// `ALTER ROLE … PASSWORD` given a verifier stores it as it is.
    public func scramVerifier(password: String, user: String) throws(StoreError) -> String {
        guard let verifier = PQencryptPasswordConn(handle, password, user, "scram-sha-256") else {
            throw failure("computing a SCRAM verifier for role \(user)", result: nil)
        }
        defer { PQfreemem(verifier) }
        return String(cString: verifier)
    }

    // MARK: - Results and errors

    private func consume(_ result: OpaquePointer?, what: String) throws(StoreError) -> QueryResult {
        guard let result else { throw failure(what, result: nil) }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY else {
            throw failure(what, result: result)
        }
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        var columns: [String] = []
        columns.reserveCapacity(columnCount)
        for column in 0..<columnCount { columns.append(String(cString: PQfname(result, Int32(column)))) }
        var rows: [[String?]] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, Int32(row), Int32(column))))
                }
            }
            rows.append(values)
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return QueryResult(columns: columns, rows: rows, affectedRows: affected)
    }

    /// Builds the error for a failed call and marks the connection broken when it is.
    private func failure(_ what: String, result: OpaquePointer?) -> StoreError {
        var sqlState: String? = nil
        var message: String
        if let result, let field = PQresultErrorField(result, Int32(UInt8(ascii: "C"))) {
            sqlState = String(cString: field)
        }
        if let result, let text = PQresultErrorMessage(result), text.pointee != 0 {
            message = String(cString: text)
        } else {
            message = String(cString: PQerrorMessage(handle))
        }
        message = Self.scrub(message, settings: settings).trimmingTrailingWhitespace()
        let lost = PQstatus(handle) != CONNECTION_OK
            || sqlState.map { $0.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains($0) } == true
        if lost {
            isBroken = true
            return StoreError(
                .connectionLost, "connection to \(settings.endpointDescription) lost during \(what): \(message)",
                sqlState: sqlState)
        }
        return StoreError(.queryFailed, "\(what) failed on \(settings.endpointDescription): \(message)", sqlState: sqlState)
    }

    /// Removes the password from a server or libpq message, should one ever echo it.
    static func scrub(_ message: String, settings: DatabaseSettings) -> String {
        var text = message.trimmingTrailingWhitespace()
        if let password = settings.password, password.count >= 3 {
            text = text.replacingAll(password, with: "***")
        }
        return text
    }
}

// MARK: - C string helpers

/// Calls `body` with a NULL-terminated array of C strings that live for the call.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { body($0) }
    }
}

/// Calls `body` with an array of parameter values (`nil` = SQL NULL) as libpq expects them.
private func withParameterPointers<R>(_ parameters: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    if parameters.isEmpty { return body(nil) }
    let pointers: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.map { strdup($0) } ?? nil }
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { body($0) }
    }
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }

    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var output = ""
        var rest = Substring(self)
        while let range = rest.range(of: target) {
            output += rest[..<range.lowerBound]
            output += replacement
            rest = rest[range.upperBound...]
        }
        output += rest
        return output
    }
}

// MARK: - JSONB as Codable values

extension PostgresConnection {
    /// `value` as JSON text for a `$n::jsonb` parameter.
    public static func jsonb<T: Encodable>(_ value: T) throws -> String {
        try Parameter.json(encoding: value)
    }
}

extension QueryResult {
    /// Decodes the JSON(B) in `column` of row `row` as `T`; `nil` when the value is NULL.
    public func decodeJSON<T: Decodable>(_ type: T.Type, row: Int, column: String) throws -> T? {
        guard columns.contains(column) else { throw StoreError(.decodingFailed, "no column \(column) in the result") }
        guard let text = value(row, column) else { return nil }
        return try Decode.json(T.self, text, column)
    }
}
