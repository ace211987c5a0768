import Logging

/// A bounded pool of libpq connections.
///
/// At most `settings.poolSize` connections exist; callers beyond that wait in FIFO order
/// (cancellable). Work runs on the leased connection's dedicated thread (see
/// `PostgresConnection`), never on the cooperative pool. A connection found broken is discarded
/// together with every idle one — after a server restart they are all dead — and idempotent work
/// is retried once on a newly opened connection, so a caller sees at most one retryable error
/// (`connection_failed` while the server is still down), and none once it is back.
public actor ConnectionPool {
    public nonisolated let settings: DatabaseSettings
    private let logger: Logger
    private var idle: [PostgresConnection] = []
    /// Connections that exist or are being opened; never more than `settings.poolSize`.
    private var slotsInUse = 0
    private var waiters: [(id: UInt64, continuation: CheckedContinuation<Grant, any Error>)] = []
    private var nextWaiterID: UInt64 = 0
    private var isClosed = false

    private enum Grant {
        /// An idle connection handed straight over.
        case connection(PostgresConnection)
        /// Permission to open a new connection in a freed slot.
        case slot
    }

    /// Creates the pool; connections are opened on first use.
    public init(settings: DatabaseSettings, logger: Logger = Logger(label: "sandboxd.store")) throws {
        try settings.validate()
        self.settings = settings
        self.logger = logger
    }

    /// Runs `body` on a leased connection's dedicated thread and returns its result.
    ///
    /// - Parameters:
    ///   - idempotent: when true (the default) and the connection turns out broken, `body` is run
    ///     once more on a newly opened connection. Pass false for work that must not run twice.
    ///   - body: blocking libpq work; runs off the cooperative thread pool.
    public func withConnection<T: Sendable>(
        idempotent: Bool = true,
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        do {
            return try await attempt(fresh: false, body)
        } catch let error as StoreError where idempotent && error.isRetryable && error.code != .connectionFailed {
            logger.notice("retrying on a new connection", metadata: ["error": "\(error)"])
            return try await attempt(fresh: true, body)
        }
    }

    /// Closes every connection; later calls fail with `pool_closed`.
    public func close() {
        isClosed = true
        for connection in idle { connection.closeInBackground() }
        slotsInUse -= idle.count
        idle.removeAll()
        let pending = waiters
        waiters.removeAll()
        for waiter in pending { waiter.continuation.resume(throwing: closedError) }
    }

    /// Number of open connections (idle and leased), for tests and metrics.
    public var openConnectionCount: Int { slotsInUse }

    /// Callers waiting for a connection, for tests and metrics.
    public var waitingCount: Int { waiters.count }

    // MARK: - Leasing

    private var closedError: StoreError {
        StoreError(.poolClosed, "the connection pool for \(settings.endpointDescription) is closed")
    }

    private func attempt<T: Sendable>(
        fresh: Bool, _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        let connection = try await lease(fresh: fresh)
        do {
            let value = try await connection.run(body)
            release(connection)
            return value
        } catch {
            release(connection)
            throw error
        }
    }

    private func lease(fresh: Bool) async throws -> PostgresConnection {
        guard !isClosed else { throw closedError }
        if let connection = idle.popLast() {
            if !fresh { return connection }
            // A retry must not land on another connection from before the failure.
            connection.closeInBackground()
            return try await openInOwnedSlot()
        }
        if slotsInUse < settings.poolSize {
            slotsInUse += 1
            return try await openInOwnedSlot()
        }
        switch try await waitForGrant() {
        case .connection(let connection):
            if !fresh { return connection }
            connection.closeInBackground()
            return try await openInOwnedSlot()
        case .slot:
            return try await openInOwnedSlot()
        }
    }

    /// Opens a connection in a slot the caller already counted; gives the slot back on failure.
    private func openInOwnedSlot() async throws -> PostgresConnection {
        do {
            let connection = try await PostgresConnection.open(settings)
            if isClosed {
                connection.closeInBackground()
                freeSlot()
                throw closedError
            }
            return connection
        } catch {
            freeSlot()
            throw error
        }
    }

    private func release(_ connection: PostgresConnection) {
        if connection.isBroken || isClosed {
            connection.closeInBackground()
            freeSlot()
            if connection.isBroken { discardIdle() }
            return
        }
        if !waiters.isEmpty {
            waiters.removeFirst().continuation.resume(returning: .connection(connection))
        } else {
            idle.append(connection)
        }
    }

    /// After one connection broke the others from the same server are suspect: close them so the
    /// next callers get new ones instead of one failure each.
    private func discardIdle() {
        guard !idle.isEmpty else { return }
        logger.info("discarding idle connections after a broken one", metadata: ["count": "\(idle.count)"])
        let stale = idle
        idle.removeAll()
        for connection in stale {
            connection.closeInBackground()
            freeSlot()
        }
    }

    private func freeSlot() {
        if !isClosed, !waiters.isEmpty {
            waiters.removeFirst().continuation.resume(returning: .slot)
        } else {
            slotsInUse -= 1
        }
    }

    private func waitForGrant() async throws -> Grant {
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiters.append((id, continuation))
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func cancelWaiter(_ id: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(throwing: CancellationError())
    }
}
