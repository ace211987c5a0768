#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import EgressProxy
import Logging
import SandboxCore
import Store
import Synchronization

/// Where egress events go (implemented over the Store by `StoreRecorder`).
public protocol EgressEventRecorder: Sendable {
    /// Writes events (idempotent by id). An event naming an execution not yet written fails its chunk.
    func recordEgress(_ events: [EgressEventRecord]) async throws
    /// The events of one execution, oldest first.
    func egressEvents(executionID: UUID, limit: Int) async throws -> [EgressEventRecord]
}

extension StoreRecorder: EgressEventRecorder {
    public func recordEgress(_ events: [EgressEventRecord]) async throws {
        try await store.insert(events)
    }

    public func egressEvents(executionID: UUID, limit: Int) async throws -> [EgressEventRecord] {
        try await store.egressEvents(executionID: executionID, limit: limit)
    }
}

/// Writes egress events in batches off the proxy's event loops. `enqueue` never blocks; `drain`
/// waits until everything enqueued so far is written (or the timeout passes).
///
/// An event names its execution, whose `running` row may still be queued in the execution
/// recorder (the foreign key): a failed batch is retried once after flushing the recorder, and
/// then without execution ids (the sandbox id stays), so no event is lost to ordering.
final class EgressEventWriter: Sendable {
    private struct State {
        var pending: [EgressEventRecord] = []
        var writing = false
        var dropped = 0
    }
    private let state = Mutex(State())
    private let events: any EgressEventRecorder
    private let executions: any ExecutionRecorder
    private let logger: Logger
    /// Beyond this many unwritten events (database down) the oldest are dropped, and counted.
    private let maxPending = 100_000

    init(events: any EgressEventRecorder, executions: any ExecutionRecorder, logger: Logger) {
        self.events = events
        self.executions = executions
        self.logger = logger
    }

    /// Called on an event-loop thread: appends and makes sure a writer runs.
    func enqueue(_ event: EgressEventRecord) {
        let start = state.withLock { state -> Bool in
            state.pending.append(event)
            if state.pending.count > maxPending {
                state.pending.removeFirst()
                state.dropped += 1
            }
            if state.writing { return false }
            state.writing = true
            return true
        }
        if start { Task { await self.writeLoop() } }
    }

    /// Waits until nothing is pending (or `timeout`); returns how many events are still unwritten.
    func drain(timeout: Duration) async -> Int {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (count, busy) = state.withLock { ($0.pending.count, $0.writing) }
            if (count == 0 && !busy) || ContinuousClock.now >= deadline { return count }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private func writeLoop() async {
        var backoff: Duration = .milliseconds(100)
        while true {
            let batch: [EgressEventRecord] = state.withLock { state in
                let batch = Array(state.pending.prefix(500))
                if batch.isEmpty { state.writing = false }
                return batch
            }
            if batch.isEmpty { return }
            if await write(batch) {
                state.withLock { $0.pending.removeFirst(min(batch.count, $0.pending.count)) }
                backoff = .milliseconds(100)
            } else {
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }

    /// True once the batch is stored (possibly without execution ids); false to retry later.
    private func write(_ batch: [EgressEventRecord]) async -> Bool {
        do {
            try await events.recordEgress(batch)
            return true
        } catch {
            // Most likely an execution's running row is still queued: let it reach the database.
            _ = await executions.flush(timeout: .seconds(5))
        }
        do {
            try await events.recordEgress(batch)
            return true
        } catch let error as StoreError where !error.isRetryable {
            var detached = batch
            for index in detached.indices { detached[index].executionID = nil }
            do {
                try await events.recordEgress(detached)
                logger.warning("egress events written without their execution ids", metadata: ["count": "\(batch.count)", "error": "\(error)"])
                return true
            } catch {
                logger.error("writing \(batch.count) egress events failed; dropped", metadata: ["error": "\(error)"])
                return true
            }
        } catch {
            logger.error("writing \(batch.count) egress events failed; retrying", metadata: ["error": "\(error)"])
            return false
        }
    }
}

/// One sandbox's egress proxy and the executions its events belong to.
///
/// The listener is created inside the sandbox's network namespace by the engine's hook (before
/// the workload runs) and served from the daemon's namespace. An event belongs to the execution
/// that was running in the sandbox when its request arrived; when several ran at once (concurrent
/// execs in one persistent sandbox) or none did (a process left running between execs), its
/// execution id stays empty and only its sandbox id says where it came from.
final class SandboxEgress: Sendable {
    private struct Run {
        var id: UUID
        var started: Date
        var ended: Date?
    }
    private struct State {
        var proxy: EgressProxy?
        var closed = false
        var runs: [Run] = []
    }

    let sandboxID: String
    private let network: Policy.Network
    private let writer: EgressEventWriter
    private let logger: Logger
    private let state = Mutex(State())

    init(sandboxID: String, network: Policy.Network, writer: EgressEventWriter, logger: Logger) {
        self.sandboxID = sandboxID
        self.network = network
        self.writer = writer
        self.logger = logger
    }

    /// The engine's hook, on its launching thread (never a cooperative-pool thread): creates the
    /// listener in the namespace of `initPID` and starts serving it. Throws (refusing the sandbox)
    /// when either fails.
    func start(inNetworkNamespaceOf initPID: Int32) throws {
        let fd = try EgressListener.make(inNetworkNamespaceOf: initPID)
        let configuration = EgressProxy.Configuration(sandboxID: sandboxID, network: network)
        let result = Self.waitFor {
            try await EgressProxy.start(listeningSocket: fd, configuration: configuration, logger: self.logger) { [weak self] event in
                self?.received(event)
            }
        }
        let proxy: EgressProxy
        switch result {
        case .success(let started): proxy = started
        case .failure(let error):
            Glibc.close(fd)
            throw error
        }
        let closedAlready = state.withLock { state -> Bool in
            if state.closed { return true }
            state.proxy = proxy
            return false
        }
        if closedAlready { _ = Self.waitFor { await proxy.close() } }
    }

    /// Runs async work to completion from a thread that may block (the engine's launching thread).
    private static func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = ResultBox<T>()
        Task {
            do { box.set(.success(try await body())) } catch { box.set(.failure(error)) }
        }
        return box.wait()
    }

    func begin(_ executionID: UUID) {
        state.withLock { $0.runs.append(Run(id: executionID, started: Date())) }
    }

    func end(_ executionID: UUID) {
        state.withLock { state in
            let now = Date()
            if let index = state.runs.lastIndex(where: { $0.id == executionID }) { state.runs[index].ended = now }
            // Keep what later events (reported when their connection closes) may still need.
            state.runs.removeAll { run in run.ended.map { now.timeIntervalSince($0) > 3600 } ?? false }
        }
    }

    /// On an event-loop thread: must not block.
    private func received(_ event: EgressEventRecord) {
        let arrived = event.occurredAt
        let execution = state.withLock { state -> UUID? in
            let running = state.runs.filter { run in
                run.started <= arrived && (run.ended.map { arrived <= $0 } ?? true)
            }
            return running.count == 1 ? running[0].id : nil
        }
        var event = event
        event.executionID = execution
        writer.enqueue(event)
    }

    /// Connections open through the proxy now.
    var openConnections: Int { state.withLock { $0.proxy?.openConnections ?? 0 } }

    /// Stops listening and closes every connection (their last events are emitted). Idempotent.
    func close() async {
        let proxy = state.withLock { state -> EgressProxy? in
            state.closed = true
            defer { state.proxy = nil }
            return state.proxy
        }
        await proxy?.close()
    }
}

/// One result handed from a task to a thread that blocks for it.
private final class ResultBox<T: Sendable>: Sendable {
    private let value = Mutex<Result<T, any Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    func set(_ result: Result<T, any Error>) {
        value.withLock { $0 = result }
        done.signal()
    }

    func wait() -> Result<T, any Error> {
        done.wait()
        return value.withLock { $0! }
    }
}
