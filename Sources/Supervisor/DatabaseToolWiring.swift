import ControlAPI
import Logging
import SandboxCore
import Store

/// The read-only database tool as the daemon has it: available, or unavailable with the reason
/// a sandbox whose policy has a `database` section is refused with.
public enum DatabaseToolState: Sendable {
    case available(ReadOnlyDatabaseAccess)
    case unavailable(String)

    /// The tool for the daemon's database, swept of roles a previous daemon left, ready to serve.
    /// Never throws: what goes wrong becomes the reason sandboxes asking for it are refused.
    public static func start(settings: DatabaseSettings, embedded: EmbeddedPostgres?, logger: Logger) async -> DatabaseToolState {
        let tool: ReadOnlyDatabaseAccess
        do {
            tool = try ReadOnlyDatabaseAccess(settings: settings, embedded: embedded)
        } catch let error as StoreError {
            logger.notice("read-only database tool unavailable: \(error.message)")
            return .unavailable(error.message)
        } catch {
            logger.error("read-only database tool unavailable: \(error)")
            return .unavailable("the read-only database tool could not start: \(error)")
        }
        do {
            let dropped = try await tool.sweep()
            if !dropped.isEmpty { logger.notice("dropped \(dropped.count) database roles left by a previous run: \(dropped.joined(separator: ", "))") }
        } catch {
            // A role of a dead sandbox could stay usable: do not serve the tool at all.
            await tool.close()
            logger.error("read-only database tool unavailable: sweeping leftover roles failed: \(error)")
            return .unavailable("the read-only database tool is unavailable: dropping roles left by a previous run failed: \(error)")
        }
        return .available(tool)
    }
}

/// Grants and revocations of the database tool for the Supervisor's sandboxes.
struct DatabaseToolWiring: Sendable {
    let state: DatabaseToolState
    let logger: Logger

    /// The sandbox's role, or the reason it cannot have one (refusing the sandbox).
    func grant(_ access: Policy.DatabaseAccess, sandboxID: String, policy: String) async throws -> SandboxDatabaseConnection {
        switch state {
        case .unavailable(let reason):
            throw APIError(.unavailable, "policy \"\(policy)\" has a database section, but \(reason)")
        case .available(let tool):
            do {
                return try await tool.grant(access, sandboxID: sandboxID)
            } catch let error as StoreError where error.code == .databaseAccessRefused {
                throw APIError(.invalidField, "policy \"\(policy)\": database access refused: \(error.message)", details: ["field": "policy"])
            } catch let error as StoreError {
                throw APIError(.unavailable, "policy \"\(policy)\": granting database access failed: \(error.message)")
            }
        }
    }

    /// Drops the sandbox's role (ending its sessions). Errors are logged: the next start's sweep retries.
    func revoke(sandboxID: String) async {
        guard case .available(let tool) = state else { return }
        do {
            _ = try await tool.revoke(sandboxID: sandboxID)
        } catch {
            logger.error("revoking the database role of \(sandboxID) failed (the next start's sweep drops it)", metadata: ["error": "\(error)"])
        }
    }

    func close() async {
        if case .available(let tool) = state { await tool.close() }
    }
}
