#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SandboxCore

/// One loaded policy as `GET /v1/policies` lists it.
public struct PolicyView: Codable, Sendable, Hashable {
    /// The name requests use (`"policy": "web-scraper"`): the file's stem.
    public var name: String
    /// SHA-256 of the file's text, lower-case hex: which exact policy a record ran under.
    public var digest: String
    public var loadedAt: Date
    /// The file it was read from (`bundled/NAME.yaml` for a built-in preset).
    public var source: String
    /// The file's `description:`.
    public var description: String?
    /// The parsed rules, with every default filled in.
    public var rules: JSONValue?

    public init(name: String, digest: String, loadedAt: Date, source: String, description: String?, rules: JSONValue?) {
        self.name = name
        self.digest = digest
        self.loadedAt = loadedAt
        self.source = source
        self.description = description
        self.rules = rules
    }

    enum CodingKeys: String, CodingKey {
        case name, digest, source, description, rules
        case loadedAt = "loaded_at"
    }
}

/// `GET /v1/policies` and the answer to a successful `POST /v1/policies/reload`.
public struct PolicyList: Codable, Sendable, Hashable {
    /// When the set in force was loaded (all its policies were loaded together).
    public var loadedAt: Date?
    /// Where reloads read from (`policy_directory`), or nil when only the bundled presets exist.
    public var directory: String?
    /// By name.
    public var policies: [PolicyView]

    public init(loadedAt: Date?, directory: String?, policies: [PolicyView]) {
        self.loadedAt = loadedAt
        self.directory = directory
        self.policies = policies
    }

    enum CodingKeys: String, CodingKey {
        case loadedAt = "loaded_at"
        case directory, policies
    }
}

extension APIError {
    /// A policy set that did not load: 422 `invalid_policy`, every diagnostic in `details.diagnostics`
    /// as `{file, line, key, message}`.
    public static func invalidPolicies(_ error: SandboxCoreError) -> APIError {
        let diagnostics: [JSONValue] = error.diagnostics.map { diagnostic in
            var fields: [String: JSONValue] = ["message": .string(diagnostic.message)]
            fields["file"] = diagnostic.file.map(JSONValue.string) ?? .null
            fields["line"] = diagnostic.line.map { .integer(Int64($0)) } ?? .null
            fields["key"] = diagnostic.key.map(JSONValue.string) ?? .null
            return .object(fields)
        }
        return APIError(.invalidPolicy, error.description + "; the policies in force are unchanged",
                        details: ["diagnostics": .array(diagnostics)])
    }

    /// A request environment the policy refuses: 400 `environment_refused` naming every variable.
    public static func environmentRefused(_ error: SandboxCoreError, field: String, policy: String) -> APIError {
        let names = error.diagnostics.compactMap(\.key)
        let reasons = error.diagnostics.map(\.description).joined(separator: "; ")
        return APIError(.environmentRefused, "\"\(field)\" refused by policy \"\(policy)\": \(reasons)",
                        details: ["field": .string(field), "variables": .array(names.map(JSONValue.string)),
                                  "policy": .string(policy)])
    }
}
