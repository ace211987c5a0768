/// The one error type of SandboxCore: a stable code, a message, and the individual problems found.
///
/// Parsing collects every problem in a document before failing, so one error can carry many
/// ``Diagnostic``s; `description` lists them one per line.
public struct SandboxCoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; the raw value is stable and reaches API clients.
    public enum Code: String, Hashable, Sendable, Codable {
        /// `sandboxd.yaml` or a `POSTGRES_*` variable is invalid.
        case invalidConfiguration = "invalid_configuration"
        /// A policy file is invalid (or one of a set of policy files is).
        case invalidPolicy = "invalid_policy"
        /// A request asked for environment variables its policy does not let through.
        case environmentRefused = "environment_refused"
    }

    public var code: Code
    /// One-line summary (`policies: 2 problems in 1 file`).
    public var message: String
    /// Every problem found, in document order.
    public var diagnostics: [Diagnostic]

    public init(code: Code, message: String, diagnostics: [Diagnostic] = []) {
        self.code = code
        self.message = message
        self.diagnostics = diagnostics
    }

    public var description: String {
        diagnostics.isEmpty ? message : ([message] + diagnostics.map(\.description)).joined(separator: "\n")
    }
}

/// One problem: where it is (file, line, key) and why it was refused.
///
/// Rendered as `sandboxd.yaml:7: resources.enforcment: unknown key (did you mean enforcement?)`.
public struct Diagnostic: Hashable, Sendable, Codable, CustomStringConvertible {
    /// File name as the caller named it (`sandboxd.yaml`, `/etc/sandboxd/policies/web.yaml`), or
    /// `environment` for process environment variables; `nil` when there is no file.
    public var file: String?
    /// Line number starting at 1, when known.
    public var line: Int?
    /// Column number starting at 1, when known.
    public var column: Int?
    /// Dotted key path (`resources.cpu_limit`, `network.allowed_hosts[2]`) or variable name.
    public var key: String?
    /// Why the value was refused.
    public var message: String

    public init(file: String? = nil, line: Int? = nil, column: Int? = nil, key: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.message = message
    }

    public var description: String {
        var location = file ?? ""
        if let line { location += location.isEmpty ? "line \(line)" : ":\(line)" }
        var parts: [String] = []
        if !location.isEmpty { parts.append(location) }
        if let key { parts.append(key) }
        parts.append(message)
        return parts.joined(separator: ": ")
    }
}
