#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import Logging
import SandboxCore

extension Supervisor {
    public func policies(caller: Caller) async throws -> PolicyList {
        Self.policyList(await policyStore.current, directory: policyStore.directory)
    }

    public func reloadPolicies(caller: Caller) async throws -> PolicyList {
        guard caller.isAdmin else {
            throw APIError(.forbidden, "reloading policies needs root or membership in the admin group (sandboxd-admin)")
        }
        do {
            let set = try await reloadPolicies(trigger: "POST /v1/policies/reload by \(caller)")
            return Self.policyList(set, directory: policyStore.directory)
        } catch {
            throw APIError.invalidPolicies(error)
        }
    }

    /// Reloads every policy file (`SIGHUP`, the reload endpoint). On failure nothing changes and
    /// every diagnostic is logged; running sandboxes keep their policy either way.
    @discardableResult
    public func reloadPolicies(trigger: String) async throws(SandboxCoreError) -> PolicySet {
        do {
            let set = try await policyStore.reload()
            let digests = set.names.compactMap { set[$0] }.map { "\($0.name)=\($0.digest.prefix(12))" }
            policyLogger.notice("policies reloaded (\(trigger)): \(digests.joined(separator: " "))")
            // Sandboxes built ahead under the old rules would no longer be taken (the rules are part of their shape).
            await pool?.clear()
            await warmOneShotPool()
            return set
        } catch {
            policyLogger.error("policy reload (\(trigger)) refused, the policies in force are unchanged: \(error.message)")
            for diagnostic in error.diagnostics { policyLogger.error("  \(diagnostic)") }
            throw error
        }
    }

    static func policyList(_ set: PolicySet?, directory: PolicyDirectory?) -> PolicyList {
        let views = (set?.names ?? []).compactMap { set?[$0] }.map { loaded in
            PolicyView(name: loaded.name, digest: loaded.digest, loadedAt: loaded.loadedAt, source: loaded.source,
                       description: loaded.policy.summary, rules: try? JSONValue.encoding(loaded.policy))
        }
        return PolicyList(loadedAt: set?.loadedAt, directory: directory?.path, policies: views)
    }
}
