#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The text of one policy file, as the caller read it.
public struct PolicySource: Hashable, Sendable {
    /// The file's path or name; the policy's name is its stem (`/etc/sandboxd/policies/web-scraper.yaml` → `web-scraper`).
    public var file: String
    public var text: String

    public init(file: String, text: String) {
        self.file = file
        self.text = text
    }
}

/// A policy with the name it is requested by and where it came from.
public struct LoadedPolicy: Hashable, Sendable {
    /// The file stem, as requests name it (`"policy": "web-scraper"`).
    public var name: String
    public var policy: Policy
    /// SHA-256 of the file's text (UTF-8), lower-case hex: which exact policy a record ran under.
    public var digest: String
    public var loadedAt: Date
    /// The file it was read from (`bundled:default.yaml` for a built-in preset).
    public var source: String
}

/// All policies in force, loaded together: either every file is valid and the whole set is
/// replaced, or nothing changes and every problem of every file is reported.
public struct PolicySet: Hashable, Sendable {
    /// The policy used when a request names none.
    public static let defaultName = "default"

    /// Policies by name.
    public private(set) var policies: [String: LoadedPolicy]
    public let loadedAt: Date

    /// The policy called `name`.
    public subscript(name: String) -> LoadedPolicy? { policies[name] }

    /// Names in alphabetical order.
    public var names: [String] { policies.keys.sorted() }

    /// Validates every source and builds the set, or throws with every problem found.
    ///
    /// - Parameters:
    ///   - sources: the `*.yaml` / `*.yml` files of the policy directory, read by the caller.
    ///   - hostCores: CPUs of this host, for the `cpu_limit` check; `nil`: not checked.
    ///   - requireDefault: refuse a set without a policy named `default`.
    ///   - time: the load time recorded on every policy.
    /// - Throws: ``SandboxCoreError`` `.invalidPolicy` carrying the diagnostics of all files.
    public init(loading sources: [PolicySource], hostCores: Int?, requireDefault: Bool = true,
                at time: Date = Date()) throws(SandboxCoreError) {
        var loaded: [String: LoadedPolicy] = [:]
        var diagnostics: [Diagnostic] = []
        var badFiles = 0
        for source in sources.sorted(by: { $0.file < $1.file }) {
            let name = Self.policyName(fromFile: source.file)
            var problems: [Diagnostic] = []
            if !Self.isValidName(name) {
                problems.append(Diagnostic(file: source.file, message: "\"\(name)\" is not a policy name (letters, digits, ., _ and -, at most 64, starting with a letter or digit)"))
            }
            if let earlier = loaded[name] {
                problems.append(Diagnostic(file: source.file, message: "a policy named \(name) is already defined by \(earlier.source)"))
            }
            let (policy, parseProblems) = Policy.parse(yaml: source.text, file: source.file, hostCores: hostCores)
            problems += parseProblems
            if let policy, problems.isEmpty {
                loaded[name] = LoadedPolicy(name: name, policy: policy, digest: SHA256.hex(of: source.text), loadedAt: time, source: source.file)
            } else {
                badFiles += 1
                diagnostics += problems
            }
        }
        if requireDefault, badFiles == 0, loaded[Self.defaultName] == nil {
            diagnostics.append(Diagnostic(message: "no policy named \(Self.defaultName) (\(Self.defaultName).yaml); requests that name no policy need one"))
        }
        guard diagnostics.isEmpty else {
            let summary = badFiles == 0 ? "policies not loaded" : "policies not loaded: \(diagnostics.count) \(diagnostics.count == 1 ? "problem" : "problems") in \(badFiles) of \(sources.count) \(sources.count == 1 ? "file" : "files")"
            throw SandboxCoreError(code: .invalidPolicy, message: summary, diagnostics: diagnostics)
        }
        self.policies = loaded
        self.loadedAt = time
    }

    /// The presets built into the daemon (the same text as `policies/*.yaml`), for hosts without a
    /// policy directory.
    public static func bundled(hostCores: Int?, at time: Date = Date()) throws(SandboxCoreError) -> PolicySet {
        try PolicySet(loading: bundledSources, hostCores: hostCores, at: time)
    }

    /// The built-in presets as sources named `bundled/NAME.yaml` (for `sandboxctl policy show`, or
    /// to seed a policy directory).
    public static var bundledSources: [PolicySource] { BundledPolicies.sources }

    /// `web-scraper.yaml` → `web-scraper`; other extensions are kept in the name (and then refused).
    public static func policyName(fromFile file: String) -> String {
        let base = file.split(separator: "/").last.map(String.init) ?? file
        for suffix in [".yaml", ".yml"] where base.hasSuffix(suffix) { return String(base.dropLast(suffix.count)) }
        return base
    }

    static func isValidName(_ name: String) -> Bool {
        guard (1...64).contains(name.count), let first = name.unicodeScalars.first,
              first.isASCII, first.properties.isAlphabetic || ("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "." || $0 == "_" || $0 == "-")
        }
    }
}
