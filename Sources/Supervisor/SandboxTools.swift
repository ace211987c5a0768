#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import EgressProxy
import Logging
import SandboxCore
import Store
import Synchronization

/// The daemon's per-sandbox tools: the egress proxy (policy `network.allowed_hosts`) and the
/// read-only database role (policy `database`). Set up at admission, before the engine builds the
/// sandbox; released on every path that ends it (destroy, one-shot end, failed create, shutdown).
final class SandboxTools: Sendable {
    private struct Entry: Sendable {
        var egress: SandboxEgress?
        var databaseGranted = false
    }

    private let writer: EgressEventWriter?
    private let eventSource: (any EgressEventRecorder)?
    private let database: DatabaseToolWiring
    private let logger: Logger
    private let entries = Mutex<[String: Entry]>([:])

    init(records: (any ExecutionRecorder)?, database: DatabaseToolState, logger: Logger) {
        let events = records as? any EgressEventRecorder
        self.eventSource = events
        if let records, let events {
            writer = EgressEventWriter(events: events, executions: records, logger: logger)
        } else {
            writer = nil
        }
        self.database = DatabaseToolWiring(state: database, logger: logger)
        self.logger = logger
    }

    /// Whether a sandbox under `rules` gets tools of the daemon's (a database role, an egress
    /// proxy): such sandboxes belong to one id and are never built ahead.
    static func attachesTools(_ rules: Policy) -> Bool {
        rules.database != nil || !rules.network.allowedHosts.isEmpty
    }

    /// Grants what the policy asks for and returns what the engine must add to the sandbox.
    /// Refuses (with the reason) what this daemon or level cannot provide; nothing is left
    /// granted when it throws.
    func attach(sandboxID: String, policy: String, rules: Policy, level: IsolationLevel) async throws -> SandboxAttachments {
        let wantsEgress = !rules.network.allowedHosts.isEmpty
        if level != .native {
            if rules.database != nil {
                throw APIError(.levelUnavailable,
                               "policy \"\(policy)\" has a database section, which isolation level \(level.rawValue) cannot provide: "
                                   + "the database socket is mounted into level-1 sandboxes only (a VM guest has no way to it yet); use isolation level 1",
                               details: ["isolation_level": .integer(Int64(level.rawValue)), "policy": .string(policy)])
            }
            if wantsEgress {
                throw APIError(.levelUnavailable,
                               "policy \"\(policy)\" allows egress to listed hosts, which isolation level \(level.rawValue) cannot provide: "
                                   + "the egress proxy listens inside level-1 sandboxes only (a VM guest has no transport to it yet); use isolation level 1",
                               details: ["isolation_level": .integer(Int64(level.rawValue)), "policy": .string(policy)])
            }
            return SandboxAttachments()
        }
        var attachments = SandboxAttachments()
        if let access = rules.database {
            let connection = try await database.grant(access, sandboxID: sandboxID, policy: policy)
            entries.withLock { $0[sandboxID, default: Entry()].databaseGranted = true }
            attachments.readOnlyDirectories.append(.init(hostPath: connection.hostSocketDirectory, sandboxPath: connection.mountPoint))
            attachments.environment.merge(connection.environment) { _, new in new }
        }
        if wantsEgress {
            guard let writer else {
                await release(sandboxID)
                throw APIError(.unavailable, "no database is available to record egress events; sandboxd refuses egress it cannot record")
            }
            let egress = SandboxEgress(sandboxID: sandboxID, network: rules.network, writer: writer, logger: logger)
            entries.withLock { $0[sandboxID, default: Entry()].egress = egress }
            attachments.beforeWorkload = .init { pid in try egress.start(inNetworkNamespaceOf: pid) }
            attachments.environment.merge(EgressListener.sandboxEnvironment()) { _, new in new }
        }
        return attachments
    }

    /// Closes the sandbox's proxy (writing its last events) and drops its database role. Idempotent.
    func release(_ sandboxID: String) async {
        guard let entry = entries.withLock({ $0.removeValue(forKey: sandboxID) }) else { return }
        if let egress = entry.egress {
            await egress.close()
            _ = await writer?.drain(timeout: .seconds(5))
        }
        if entry.databaseGranted {
            await database.revoke(sandboxID: sandboxID)
        }
    }

    func releaseAll() async {
        let ids = entries.withLock { Array($0.keys) }
        for id in ids { await release(id) }
    }

    func close() async {
        await releaseAll()
        _ = await writer?.drain(timeout: .seconds(10))
        await database.close()
    }

    /// An exec starts in the sandbox: the proxy's events from now on belong to it.
    func begin(sandboxID: String, executionID: UUID) {
        entries.withLock { $0[sandboxID]?.egress }?.begin(executionID)
    }

    /// The exec ended: for a one-shot sandbox the proxy closes now (its connections' events are
    /// emitted); then the events so far are written, so the execution's record shows them.
    func end(sandboxID: String, executionID: UUID, oneShot: Bool) async {
        guard let egress = entries.withLock({ $0[sandboxID]?.egress }) else { return }
        egress.end(executionID)
        if oneShot {
            await egress.close()
        } else {
            // A connection's event is emitted when it closes, just after the client's end: give
            // the closes of the exec's own connections a moment (a process left running may hold one).
            let deadline = ContinuousClock.now + .seconds(1)
            while egress.openConnections > 0, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        }
        _ = await writer?.drain(timeout: .seconds(5))
    }

    func egressEvents(executionID: UUID, limit: Int) async throws -> [EgressEventRecord] {
        guard let eventSource else { return [] }
        _ = await writer?.drain(timeout: .seconds(2))
        return try await eventSource.egressEvents(executionID: executionID, limit: limit)
    }
}
