#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import DaemonMetrics
import Logging
import SandboxCore
import Store

/// Execution records through the Store with group commit.
///
/// Every record goes into one queue. A single writer takes everything queued (at most
/// `maxBatch`), keeps only the newest version of each id (a `running` row whose final row is
/// already queued is never written), and upserts the batch in one pipelined round trip. While a
/// batch is in flight the next one gathers, so under load many execs share a round trip and when
/// idle a record is written at once. Callers of `recordFinished` wait for their batch's commit.
/// If the database is down the batch stays queued and is retried with backoff; a waiter gives up
/// once the database has failed, or made no progress at all, for `commitTimeout` (the record stays
/// queued and is written when the database returns, as long as the daemon lives). A database that
/// is merely busy — still committing batches — keeps its waiters: load makes them slower, not failed.
public actor StoreRecorder: ExecutionRecorder {
    let store: RecordStore
    private let logger: Logger
    private let detail: String
    private let maxBatch: Int
    private let commitTimeout: Duration
    private let metrics: DaemonMetrics?
    private let runningRowDelay: Duration
    /// `running` rows not yet queued: an exec that ends within `runningRowDelay` never writes one
    /// (its final row is the only commit), a longer one gets it queued when the delay passes.
    private var deferredStarts: [UUID: (record: ExecutionRecord, due: ContinuousClock.Instant)] = [:]
    /// One task queues the deferred `running` rows that come due, alive only while some wait (a
    /// sleeping task per exec cost a timer and a wake-up each, most for execs long finished).
    private var deferredStartTicker = false
    /// One task expires stalled waiters, alive only while some wait (instead of a timer per commit).
    private var commitWatchdog = false
    /// When each waiter started waiting, for the watchdog.
    private var waitingSince: [UInt64: (record: UUID, since: ContinuousClock.Instant)] = [:]

    private struct Pending {
        var record: ExecutionRecord
        /// Keys into `waiters` of the callers waiting for this record's commit.
        var waiters: [UInt64]
    }
    /// Each waiter is resumed exactly once: by its batch's commit, its failure, or its timeout,
    /// whichever removes it from here first.
    private var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    private var nextWaiter: UInt64 = 0
    /// Queued records in arrival order, one entry per id.
    private var queue: [UUID: Pending] = [:]
    private var order: [UUID] = []
    private var writing = false
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var lastError: String?
    /// When the writer last committed a batch or went idle with nothing queued: how a waiter tells a
    /// busy database from a stalled one.
    private var lastProgress = ContinuousClock.now
    /// Round trips made and records written so far (group commit makes the first much smaller).
    public private(set) var batchesWritten = 0
    public private(set) var recordsWritten = 0

    /// - Parameters:
    ///   - detail: where the database is, without secrets (for `/v1/info`).
    ///   - metrics: where write latency, records written and failed writes are counted.
    ///   - runningRowDelay: how long an exec runs before its `running` row is queued. Most execs
    ///     (a tool call, a short script) end sooner and commit once instead of twice; a daemon killed
    ///     in that window leaves no row for the exec (its caller got no result either).
    public init(store: RecordStore, detail: String, logger: Logger, maxBatch: Int = 500, commitTimeout: Duration = .seconds(15),
                metrics: DaemonMetrics? = nil, runningRowDelay: Duration = .milliseconds(200)) {
        self.store = store
        self.metrics = metrics
        self.runningRowDelay = runningRowDelay
        self.detail = detail
        self.logger = logger
        self.maxBatch = maxBatch
        self.commitTimeout = commitTimeout
    }

    public func recordStarted(_ record: ExecutionRecord) {
        guard runningRowDelay > .zero else {
            enqueue(record, waiter: nil)
            return
        }
        deferredStarts[record.id] = (record, ContinuousClock.now + runningRowDelay)
        guard !deferredStartTicker else { return }
        deferredStartTicker = true
        let delay = runningRowDelay
        Task { [weak self] in
            var next: ContinuousClock.Instant? = .now + delay
            while let due = next {
                try? await Task.sleep(until: due, clock: .continuous)
                guard let self else { return }
                next = await self.queueDueStarts()
            }
        }
    }

    /// Queues every deferred `running` row that is due; returns when the next one is due, or nil
    /// (the ticker stops) when none waits.
    private func queueDueStarts() -> ContinuousClock.Instant? {
        let now = ContinuousClock.now
        var next: ContinuousClock.Instant?
        for (id, entry) in deferredStarts {
            if entry.due <= now {
                queueDeferredStart(id)
            } else if next == nil || entry.due < next! {
                next = entry.due
            }
        }
        if next == nil { deferredStartTicker = false }
        return next
    }

    private func queueDeferredStart(_ id: UUID) {
        guard let entry = deferredStarts.removeValue(forKey: id) else { return }
        enqueue(entry.record, waiter: nil)
    }

    public func recordFinished(_ record: ExecutionRecord) async throws {
        let id = record.id
        deferredStarts[id] = nil
        let waiter = nextWaiter
        nextWaiter += 1
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            waiters[waiter] = continuation
            waitingSince[waiter] = (id, .now)
            startCommitWatchdog()
            enqueue(record, waiter: waiter)
        }
    }

    /// Checks the waiters every quarter of `commitTimeout` while any wait: one that has waited
    /// `commitTimeout` is given up on when the database failed or committed nothing for that long.
    private func startCommitWatchdog() {
        guard !commitWatchdog else { return }
        commitWatchdog = true
        let period = commitTimeout / 4
        Task { [weak self] in
            while true {
                try? await Task.sleep(for: period)
                guard let self, await self.expireStalledWaiters() else { return }
            }
        }
    }

    /// Returns whether the watchdog goes on (some waiter remains).
    private func expireStalledWaiters() -> Bool {
        let now = ContinuousClock.now
        for (waiter, entry) in waitingSince where now - entry.since >= commitTimeout {
            _ = expireIfStalled(waiter, record: entry.record, after: commitTimeout)
        }
        if waitingSince.isEmpty { commitWatchdog = false }
        return commitWatchdog
    }

    public func flush(timeout: Duration) async -> Int {
        // Everything known is written, deferred `running` rows included.
        for id in Array(deferredStarts.keys) { queueDeferredStart(id) }
        let deadline = ContinuousClock.now + timeout
        while !queue.isEmpty || writing, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return queue.count
    }

    private func enqueue(_ record: ExecutionRecord, waiter: UInt64?) {
        if var pending = queue[record.id] {
            // A later version of the same execution replaces the queued one (running → final).
            pending.record = record
            if let waiter { pending.waiters.append(waiter) }
            queue[record.id] = pending
        } else {
            queue[record.id] = Pending(record: record, waiters: waiter.map { [$0] } ?? [])
            order.append(record.id)
        }
        if !writing {
            writing = true
            Task { await self.writeLoop() }
        }
    }

    /// Gives up on a waiter when the database failed or committed nothing for `stall`: its record
    /// stays queued, the caller learns it is not durable yet. Returns whether to keep checking.
    private func expireIfStalled(_ waiter: UInt64, record id: UUID, after stall: Duration) -> Bool {
        guard waiters[waiter] != nil else { return false }
        if lastError == nil, ContinuousClock.now - lastProgress < stall { return true }
        guard let continuation = waiters.removeValue(forKey: waiter) else { return false }
        waitingSince[waiter] = nil
        let reason = lastError ?? "the database did not answer"
        continuation.resume(throwing: APIError(.unavailable, "execution record \(id.uuidString.lowercased()) is not yet committed: \(reason)"))
        return false
    }

    private func resume(_ keys: [UInt64], throwing error: (any Error)? = nil) {
        for key in keys {
            guard let continuation = waiters.removeValue(forKey: key) else { continue }
            waitingSince[key] = nil
            if let error { continuation.resume(throwing: error) } else { continuation.resume() }
        }
    }

    private func writeLoop() async {
        var backoff: Duration = .milliseconds(100)
        while !order.isEmpty {
            let ids = Array(order.prefix(maxBatch))
            let batch = ids.compactMap { queue[$0] }
            let started = ContinuousClock.now
            do {
                try await store.upsert(batch.map(\.record))
                metrics?.recordsWritten(batch.count, seconds: (ContinuousClock.now - started).seconds)
                batchesWritten += 1
                recordsWritten += batch.count
                lastError = nil
                lastProgress = .now
                backoff = .milliseconds(100)
                order.removeFirst(ids.count)
                for (id, written) in zip(ids, batch) {
                    // A newer version queued meanwhile stays queued; only the written waiters finish.
                    if let current = queue[id], current.record == written.record {
                        queue[id] = nil
                    } else if var current = queue[id] {
                        // Waiters that came with the newer version stay for its own write.
                        current.waiters.removeFirst(min(written.waiters.count, current.waiters.count))
                        queue[id] = current
                        order.append(id)
                    }
                    resume(written.waiters)
                }
            } catch {
                metrics?.recordWriteFailed()
                lastError = "\(error)"
                logger.error("writing \(batch.count) execution records failed; retrying in \(backoff)", metadata: ["error": "\(error)"])
                if let storeError = error as? StoreError, !storeError.isRetryable {
                    // The batch itself is bad (e.g. a value a column refuses): fail its waiters, drop it.
                    order.removeFirst(ids.count)
                    for (id, written) in zip(ids, batch) {
                        queue[id] = nil
                        resume(written.waiters, throwing: error)
                    }
                    continue
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
        writing = false
        lastProgress = .now
    }

    public func executions(_ filter: ExecutionRecordFilter) async throws -> [ExecutionRecord] {
        try await store.list(ExecutionFilter(sandboxID: filter.sandboxID, sessionID: filter.sessionID,
                                             ownerUID: filter.ownerUID, limit: filter.limit))
    }

    public func execution(id: UUID) async throws -> ExecutionRecord? {
        try await store.record(id: id)
    }

    public func markRunningAborted() async throws -> Int {
        try await store.markRunningAborted()
    }

    public func ensureUser(unixUID: UInt32, username: String) async throws -> UUID {
        try await store.ensureUser(unixUID: unixUID, username: username)
    }

    public func createSession(userID: UUID, name: String?) async throws -> SessionRecord {
        try await store.createSession(userID: userID, name: name)
    }

    public func sessionOwner(_ id: UUID) async throws -> UInt32?? {
        try await store.sessionOwnerUID(id)
    }

    public func databaseState() async -> InfoResponse.Database {
        .init(state: lastError == nil ? "connected" : "unavailable", detail: detail)
    }
}
