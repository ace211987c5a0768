#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import SandboxCore

/// Filter of a history query; `ownerUID` nil means every owner (admins).
public struct ExecutionRecordFilter: Sendable, Hashable {
    public var sandboxID: String?
    public var sessionID: UUID?
    public var ownerUID: UInt32?
    public var limit: Int

    public init(sandboxID: String?, sessionID: UUID?, ownerUID: UInt32?, limit: Int) {
        self.sandboxID = sandboxID
        self.sessionID = sessionID
        self.ownerUID = ownerUID
        self.limit = limit
    }
}

/// Where the Supervisor's records go (implemented over the Store by `StoreRecorder`).
///
/// Durability contract the Supervisor relies on: `recordStarted` only enqueues (never waits for
/// the database); `recordFinished` returns once the row is committed — group commit: records of
/// concurrent execs share one round trip.
public protocol ExecutionRecorder: Sendable {
    /// Enqueues the `running` row (possibly after a short delay, see `StoreRecorder`); never waits for the database.
    func recordStarted(_ record: ExecutionRecord) async
    /// Writes the final row (idempotent upsert by id) and returns once it is committed.
    func recordFinished(_ record: ExecutionRecord) async throws
    /// Waits until everything enqueued is written (or `timeout` passes); returns how many were left unwritten.
    func flush(timeout: Duration) async -> Int
    func executions(_ filter: ExecutionRecordFilter) async throws -> [ExecutionRecord]
    func execution(id: UUID) async throws -> ExecutionRecord?
    /// Marks rows a dead daemon left `running` as `aborted`; returns how many.
    func markRunningAborted() async throws -> Int
    /// The `users` row of a socket peer, created on first use.
    func ensureUser(unixUID: UInt32, username: String) async throws -> UUID
    func createSession(userID: UUID, name: String?) async throws -> SessionRecord
    /// The unix uid owning a session: `nil` when there is no such session, `.some(nil)` when it has no user.
    func sessionOwner(_ id: UUID) async throws -> UInt32??
    /// `connected`/`unavailable` and a password-free description for `/v1/info`.
    func databaseState() async -> InfoResponse.Database
}

extension ExecutionRecordView {
    /// The API view of a stored record.
    init(_ record: ExecutionRecord) {
        self.init(
            executionID: record.id, sandboxID: record.sandboxID, sessionID: record.sessionID, agentType: record.agentType,
            status: record.status.rawValue, exitCode: record.exitCode, signal: record.signal,
            isolationLevel: record.isolationLevel?.rawValue, policy: record.policy, executionTime: record.executionTime,
            ownerUID: record.ownerUID, createdAt: record.createdAt, startedAt: record.startedAt, finishedAt: record.finishedAt,
            limitsEnforced: record.limitsEnforced, cpuMicroseconds: record.usage.cpuMicroseconds,
            memoryPeakBytes: record.usage.memoryPeakBytes, input: record.inputData, output: record.outputData)
    }
}
