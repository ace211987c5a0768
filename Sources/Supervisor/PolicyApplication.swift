import ControlAPI
import SandboxCore

/// A sandbox's policy as applied: the rules it was created with (kept for its whole life, whatever
/// a reload does later), the level it runs at and why, its limits and starting environment.
struct AppliedPolicy: Sendable, Hashable {
    var name: String
    /// SHA-256 of the policy file; nil when no policy set is loaded (built-in defaults).
    var digest: String?
    var rules: Policy
    var requestedLevel: IsolationLevel
    var level: Policy.LevelDecision
    /// Limits of the sandbox; `executionTimeout` is the default of its execs.
    var limits: ResourceLimits
    /// `PATH`, `HOME` and the create request's allowed variables.
    var environment: [String: String]
}

/// How a request's policy becomes limits, environment, level and mounts. Pure functions of the
/// request and the rules, so every rule is applied in one place and tested without a daemon.
enum PolicyApplication {
    /// Everything a new sandbox gets from its policy, or the refusal naming what the policy forbids.
    static func apply(_ loaded: LoadedPolicy?, name: String, to request: SandboxCreateRequest,
                      maxTimeout: Double) throws(APIError) -> AppliedPolicy {
        let rules = loaded?.policy ?? Policy()
        let requested = IsolationLevel(rawValue: request.isolationLevel ?? 1) ?? .native
        let decision = rules.effectiveLevel(requested: requested, agentType: request.agentType)
        var limits = rules.resourceLimits
        limits.executionTimeout = try timeout(request.timeout, field: "timeout", rules: rules, policy: name, maxTimeout: maxTimeout)
            ?? rules.resources.executionTimeout
        let environment = try self.environment(request.env, field: "env", rules: rules, policy: name).environment
        return AppliedPolicy(name: name, digest: loaded?.digest, rules: rules, requestedLevel: requested, level: decision,
                             limits: limits, environment: environment)
    }

    /// A requested timeout checked against the policy's `execution_timeout` (and the daemon's
    /// ceiling). Above the policy's: refused, not capped — a caller asking for 600 s must not get
    /// a silent 30 s kill. `nil` stays nil (the default applies).
    static func timeout(_ requested: Double?, field: String, rules: Policy, policy: String,
                        maxTimeout: Double) throws(APIError) -> Double? {
        guard let requested else { return nil }
        let limit = min(rules.resources.executionTimeout, maxTimeout)
        guard requested <= limit else {
            let which = rules.resources.executionTimeout <= maxTimeout
                ? "policy \"\(policy)\"'s resources.execution_timeout" : "sandboxd's maximum timeout"
            throw APIError(.invalidField, "\"\(field)\" \(format(requested)) s is above \(which) of \(format(limit)) s",
                           details: ["field": .string(field), "limit": .number(limit), "policy": .string(policy)])
        }
        return requested
    }

    /// The request's variables under the policy: blocked and daemon-set ones refused (400
    /// `environment_refused` naming each), unlisted ones dropped, allowed ones kept, on top of
    /// the daemon's `PATH` and `HOME`.
    static func environment(_ requested: [String: String]?, field: String, rules: Policy,
                            policy: String) throws(APIError) -> (environment: [String: String], dropped: [String]) {
        do {
            return try rules.filterEnvironment(requested: requested ?? [:], unlisted: .drop)
        } catch {
            throw APIError.environmentRefused(error, field: field, policy: policy)
        }
    }

    /// The variables an exec adds to its sandbox's environment: the allowed ones of its `env`.
    static func execEnvironment(_ requested: [String: String]?, rules: Policy, policy: String) throws(APIError) -> [String: String] {
        guard let requested, !requested.isEmpty else { return [:] }
        var allowed = try environment(requested, field: "env", rules: rules, policy: policy).environment
        // PATH and HOME are the sandbox's already; only what the request brought is added.
        allowed["PATH"] = nil
        allowed["HOME"] = nil
        return allowed
    }

    /// The refusal when the effective level cannot run here: the host's reason, and when the
    /// policy raised the level, the rule that did (never lowered to what the host has).
    static func levelUnavailable(_ applied: AppliedPolicy, reason: String?) -> APIError {
        let level = applied.level.level
        var message = "isolation level \(level.rawValue) is not available on this host: \(reason ?? "unknown level")"
        if let raisedBy = applied.level.raisedBy {
            message += "; the request asked for level \(applied.requestedLevel.rawValue) but policy \"\(applied.name)\" raised it to \(level.rawValue) (\(raisedBy)), and a level is never lowered"
        }
        var details: [String: JSONValue] = [
            "isolation_level": .integer(Int64(level.rawValue)),
            "requested_isolation_level": .integer(Int64(applied.requestedLevel.rawValue)),
            "policy": .string(applied.name),
        ]
        details["level_raised_by"] = applied.level.raisedBy.map(JSONValue.string) ?? .null
        if let reason { details["reason"] = .string(reason) }
        return APIError(.levelUnavailable, message, details: details)
    }

    /// `filesystem.allowed_paths` as binds at the same place: read-only when `filesystem.read_only`,
    /// no symbolic link anywhere in the host path. `/tmp` is the sandbox's own tmpfs, never the host's.
    static func mounts(_ rules: Policy) -> [MountSpec] {
        rules.filesystem.allowedPaths.filter { $0 != "/tmp" }.map { path in
            MountSpec(hostPath: path, sandboxPath: path, readOnly: rules.filesystem.readOnly, refuseSymlinks: true)
        }
    }

    /// `filesystem.blocked_paths`, masked inside the sandbox whatever else provides them.
    static func maskedPaths(_ rules: Policy) -> [String] {
        rules.filesystem.blockedPaths
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() && abs(seconds) < 1e15 ? String(Int64(seconds)) : String(seconds)
    }
}
