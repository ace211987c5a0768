#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import DaemonMetrics
import Logging
import SandboxCore
import Synchronization

/// The daemon's brain: admission, the sandbox registry, the exec lifecycle and its records.
///
/// Records: the id of every exec is chosen before it starts and returned as `execution_id`. A
/// `running` row is enqueued on the Store's batched path as the exec starts (no wait), and the final
/// row is written before the response is sent (group commit shared by concurrent execs). So when a
/// caller has its result, the record is durable; a daemon killed mid-exec leaves a `running` row
/// (if its batch was flushed) that the next start marks `aborted`.
public final class Supervisor: SandboxService {
    private let configuration: SupervisorConfiguration
    /// One engine per isolation level it serves (level 1: LinuxSandbox, level 3: VMSandbox).
    private let engines: [IsolationLevel: any SandboxEngine]
    private let records: (any ExecutionRecorder)?
    private let registry: SandboxRegistry
    private let runtimes: RuntimeCatalog
    private let users = UserDirectory()
    private let logger: Logger
    var policyLogger: Logger { logger }
    private let startedAt = ContinuousClock.now
    private let state = ShutdownState()
    /// Every exec (persistent or one-shot) from its start to its record: shutdown waits for them.
    private let inFlight = InFlightCount()
    /// The policies in force; replaced whole by ``reloadPolicies(caller:)`` and `SIGHUP`.
    public let policyStore: PolicyStore
    /// Egress proxies and database roles of live sandboxes.
    private let tools: SandboxTools
    private let metrics: DaemonMetrics?
    /// Level-1 sandboxes built while idle for one-shot runs (nil: `oneShotPoolSize` 0 or no level 1).
    let pool: OneShotPool?

    /// - Parameters:
    ///   - engines: the engine serving each isolation level; a level without one is refused with
    ///     `configuration.levelProblems[level]` as the reason.
    ///   - records: the Store; nil when no database is available (execs are refused: nothing runs unrecorded).
    ///   - databaseTool: the read-only database tool (started and swept), or why there is none.
    ///   - metrics: where execs, admission refusals and live sandboxes are counted (nil: not counted).
    public init(configuration: SupervisorConfiguration, engines: [IsolationLevel: any SandboxEngine], records: (any ExecutionRecorder)?,
                logger: Logger, databaseTool: DatabaseToolState = .unavailable("this sandboxd has no read-only database tool configured"),
                metrics: DaemonMetrics? = nil) {
        self.tools = SandboxTools(records: records, database: databaseTool, logger: logger)
        self.configuration = configuration
        self.engines = engines
        self.records = records
        self.metrics = metrics
        self.registry = SandboxRegistry(maxSandboxes: configuration.maxSandboxes, maxPerUID: configuration.maxSandboxesPerUID, metrics: metrics)
        self.runtimes = RuntimeCatalog(searchPath: configuration.runtimeSearchPath)
        self.logger = logger
        self.policyStore = PolicyStore(initial: configuration.policies, directory: configuration.policyDirectory)
        if configuration.oneShotPoolSize > 0, let native = engines[.native] {
            let pool = OneShotPool(engine: native, size: configuration.oneShotPoolSize, logger: logger, metrics: metrics)
            self.pool = pool
            let inFlight = self.inFlight
            // Only after a moment with nothing in flight: back-to-back runs keep the CPU.
            inFlight.whenIdle { generation in pool.refill(while: inFlight, idleSince: generation, after: .milliseconds(5)) }
        } else {
            self.pool = nil
        }
    }

    /// A Supervisor with at most a level-1 engine; nil when this build or host has none.
    public convenience init(configuration: SupervisorConfiguration, engine: (any SandboxEngine)?, records: (any ExecutionRecorder)?, logger: Logger,
                            databaseTool: DatabaseToolState = .unavailable("this sandboxd has no read-only database tool configured"),
                            metrics: DaemonMetrics? = nil) {
        self.init(configuration: configuration, engines: engine.map { [.native: $0] } ?? [:], records: records, logger: logger,
                  databaseTool: databaseTool, metrics: metrics)
    }

    /// The engine that runs `level` here, or `level_unavailable` naming why not (no engine for
    /// it, or the engine says it cannot run now: image still building, QEMU missing, …).
    public func engine(for level: IsolationLevel) async throws(APIError) -> any SandboxEngine {
        guard let engine = engines[level], await unavailability(of: level) == nil else {
            throw APIError(.levelUnavailable,
                           "isolation level \(level.rawValue) is not available on this host: \(await unavailability(of: level) ?? "it stopped serving")",
                           details: ["isolation_level": .integer(Int64(level.rawValue))])
        }
        return engine
    }

    /// Why `level` cannot run here now, or nil when its engine serves it.
    func unavailability(of level: IsolationLevel) async -> String? {
        guard let engine = engines[level] else { return unavailableReason(level) }
        guard let availability = await engine.availability().first(where: { $0.level == level.rawValue }) else {
            return "the engine does not serve it"
        }
        return availability.available ? nil : availability.reason ?? "the engine gives no reason"
    }

    /// Why a level with no engine cannot run.
    private func unavailableReason(_ level: IsolationLevel) -> String {
        if let problem = configuration.levelProblems[level] { return problem }
        switch level {
        case .native: return configuration.engineProblem ?? "no isolation engine is built into this sandboxd"
        case .kubernetes: return "no Kubernetes cluster is configured"
        case .virtualMachine: return "the QEMU engine (level 3) is not enabled in this sandboxd"
        case .hardware: return "no SEV-SNP or TDX hardware support on this host"
        }
    }

    /// The engines, lowest level first (each serves one level).
    private var allEngines: [any SandboxEngine] { IsolationLevel.allCases.compactMap { engines[$0] } }

    // MARK: Start and stop

    /// Reaps what a previous daemon left: engine leftovers, and `running` rows become `aborted`.
    public func reapLeftovers() async {
        for engine in allEngines {
            do {
                let reaped = try await engine.reapLeftovers()
                if reaped > 0 { logger.notice("reaped \(reaped) sandboxes left by a previous run") }
            } catch {
                logger.error("reaping leftover sandboxes failed: \(error)")
            }
        }
        if let records {
            do {
                let aborted = try await records.markRunningAborted()
                if aborted > 0 { logger.notice("marked \(aborted) executions left running by a previous run as aborted") }
            } catch {
                logger.error("marking leftover executions aborted failed: \(error)")
            }
        }
    }

    /// Has the pool build sandboxes for one-shot runs under the default policy (at start and after
    /// a reload), so that the first such run already finds one. Nothing when the default policy
    /// needs tools of the daemon's (egress proxy, database role) or is not level 1.
    public func warmOneShotPool() async {
        guard let pool else { return }
        let name = configuration.defaultPolicy
        guard let loaded = try? await policyStore.policy(named: name),
              let applied = try? PolicyApplication.apply(loaded, name: name, to: SandboxCreateRequest(), maxTimeout: configuration.maxTimeout),
              applied.level.level == .native, !SandboxTools.attachesTools(applied.rules),
              await unavailability(of: .native) == nil else { return }
        pool.remember(engineSpec(id: "", policy: name, applied: applied))
        if let generation = inFlight.idleGeneration { pool.refill(while: inFlight, idleSince: generation) }
    }

    /// Graceful stop: no new sandboxes or execs; running execs get the grace period, then every
    /// sandbox is destroyed (which kills what still runs) and every record is flushed.
    /// Safe to call more than once: later callers wait for the first shutdown to finish.
    public func shutdown() async {
        await state.shutdown { await self.performShutdown() }
    }

    private func performShutdown() async {
        await registry.stopAccepting()
        let deadline = ContinuousClock.now + .milliseconds(Int64(configuration.gracePeriodSeconds * 1000))
        // Every exec (persistent or one-shot) counts from its start to its record.
        while inFlight.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let remaining = inFlight.count
        if remaining > 0 {
            logger.warning("grace period of \(configuration.gracePeriodSeconds) s over; killing \(remaining) running execs")
        }
        await pool?.stop()
        let sandboxes = await registry.drainAll()
        await withTaskGroup(of: Void.self) { group in
            for sandbox in sandboxes { group.addTask { await sandbox.destroy() } }
        }
        // One-shot runs have no registry entry to destroy: the engine's reap kills whatever is left.
        if remaining > 0 {
            for engine in allEngines { _ = try? await engine.reapLeftovers() }
        }
        // Engines drop what they keep besides sandboxes (the level-3 warm pool).
        for engine in allEngines { await engine.shutdown() }
        // Every sandbox is gone: close their proxies (last events written) and drop their database roles.
        await tools.close()
        // Execs killed above finish and write their records; wait for them before the final flush.
        let settle = ContinuousClock.now + .seconds(5)
        while inFlight.count > 0, ContinuousClock.now < settle {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if let records {
            let unwritten = await records.flush(timeout: .seconds(30))
            if unwritten > 0 { logger.error("\(unwritten) execution records could not be written before exit") }
        }
        logger.info("supervisor stopped: destroyed \(sandboxes.count) sandboxes")
    }

    // MARK: SandboxService

    public func health() async -> HealthResponse {
        HealthResponse(status: await state.stopping ? "stopping" : "ok",
                       uptimeSeconds: (ContinuousClock.now - startedAt).seconds)
    }

    public func info(caller: Caller) async -> InfoResponse {
        var levels: [InfoResponse.Level] = []
        for level in IsolationLevel.allCases {
            let reported = await engines[level]?.availability().first { $0.level == level.rawValue }
            levels.append(reported ?? .init(level: level.rawValue, available: false, reason: unavailableReason(level)))
        }
        let database = await records?.databaseState() ?? .init(state: "not_configured", detail: nil)
        return InfoResponse(
            version: configuration.version, levels: levels, languages: runtimes.languages,
            limits: .init(maxBodyBytes: 0, maxSandboxes: configuration.maxSandboxes,
                          maxSandboxesPerUID: configuration.maxSandboxesPerUID, maxOutputBytes: configuration.maxOutputBytes,
                          defaultTimeout: configuration.defaultTimeout, maxTimeout: configuration.maxTimeout,
                          limitEnforcement: configuration.limitEnforcement.rawValue),
            database: database,
            caller: .init(uid: caller.uid, gid: caller.gid, pid: caller.pid, admin: caller.isAdmin),
            sandboxes: await registry.count)
    }

    public func run(_ request: RunRequest, caller: Caller, output: OutputSink?) async throws -> ExecutionResult {
        let language = try request.payload.code.map { code throws(APIError) in try runtimes.resolve(code.language) }
        try checkPayload(request.payload)
        let inline = request.payload.code.flatMap { code in language?.inlineArgv(source: code.source) }
        let prepared = try await prepare(request.sandbox, caller: caller, persistent: false, exec: request.payload)
        if prepared.pooled == nil, request.payload.code == nil || inline != nil {
            // The engine's one-shot path: no separate init, no namespace entry, torn down by itself.
            let description = prepared.description
            do {
                let result = try await execute(request.payload, language: language, target: .oneShot(prepared.engine, prepared.spec),
                                               description: description, applied: prepared.applied, caller: caller, output: output)
                await releaseSandbox(description.sandboxID)
                return result
            } catch {
                await releaseSandbox(description.sandboxID)
                throw error
            }
        }
        // A pre-built sandbox, or code that needs a file written first: a sandbox, one exec, destroyed after the answer.
        let (sandbox, description, applied) = try await build(prepared)
        let id = description.sandboxID
        do {
            _ = try await registry.beginExec(id, caller: caller, persistentOnly: false)
            let result = try await execute(request.payload, language: language, target: .sandbox(sandbox), description: description,
                                           applied: applied, caller: caller, output: output)
            await finishOneShot(id, sandbox)
            return result
        } catch {
            await finishOneShot(id, sandbox)
            throw error
        }
    }

    /// Frees the admission slot and the sandbox's tools (proxy, database role): every path that
    /// ends a sandbox, or fails to build one, comes through here.
    private func releaseSandbox(_ id: String) async {
        await tools.release(id)
        await registry.release(id)
    }

    /// Ends a one-shot run's sandbox: its admission slot is freed now, as the answer goes out; the
    /// sandbox is destroyed (and its tools closed) after that, counted in flight until it is gone.
    private func finishOneShot(_ id: String, _ sandbox: any EngineSandbox) async {
        await registry.endExec(id)
        await registry.release(id)
        inFlight.enter()
        let (tools, inFlight) = (self.tools, self.inFlight)
        Task {
            await sandbox.destroy()
            await tools.release(id)
            inFlight.leave()
        }
    }

    public func createSandbox(_ request: SandboxCreateRequest, caller: Caller) async throws -> SandboxDescription {
        if let timeout = request.timeout { try checkTimeout(timeout) }
        let (_, description, _) = try await build(request, caller: caller, persistent: true)
        logger.info("sandbox created", metadata: ["sandbox_id": "\(description.sandboxID)", "owner_uid": "\(caller.uid)"])
        return description
    }

    public func listSandboxes(caller: Caller) async throws -> [SandboxDescription] {
        await registry.list(caller: caller)
    }

    public func sandbox(id: String, caller: Caller) async throws -> SandboxDescription {
        try await registry.lookup(id, caller: caller).description
    }

    public func destroySandbox(id: String, caller: Caller) async throws {
        guard let sandbox = try await registry.beginDestroy(id, caller: caller) else { return }
        await sandbox.destroy()
        await releaseSandbox(id)
        logger.info("sandbox destroyed", metadata: ["sandbox_id": "\(id)", "by_uid": "\(caller.uid)"])
    }

    public func exec(sandboxID: String, _ request: SandboxExecRequest, caller: Caller, output: OutputSink?) async throws -> ExecutionResult {
        let language = try request.payload.code.map { code throws(APIError) in try runtimes.resolve(code.language) }
        try checkPayload(request.payload)
        let entry = try await registry.lookup(sandboxID, caller: caller)
        // The rules the sandbox was created with, whatever was reloaded since.
        guard let applied = entry.applied else { throw APIError.notFound("sandbox", id: sandboxID) }
        try checkExec(request.payload, applied: applied)
        let (sandbox, description) = try await registry.beginExec(sandboxID, caller: caller)
        do {
            let result = try await execute(request.payload, language: language, target: .sandbox(sandbox), description: description,
                                           applied: applied, caller: caller, output: output)
            await registry.endExec(sandboxID)
            return result
        } catch {
            await registry.endExec(sandboxID)
            throw error
        }
    }

    public func writeFile(sandboxID: String, path: String, contents: [UInt8], caller: Caller) async throws -> FileWriteResult {
        let entry = try await registry.lookup(sandboxID, caller: caller)
        guard let sandbox = entry.sandbox else { throw APIError.notFound("sandbox", id: sandboxID) }
        do {
            let written = try await sandbox.writeFile(path, contents: contents)
            return FileWriteResult(path: written, size: contents.count)
        } catch {
            throw Self.apiError(error, doing: "writing \(path)")
        }
    }

    public func readFile(sandboxID: String, path: String, limit: Int, caller: Caller) async throws -> [UInt8] {
        let entry = try await registry.lookup(sandboxID, caller: caller)
        guard let sandbox = entry.sandbox else { throw APIError.notFound("sandbox", id: sandboxID) }
        do {
            return try await sandbox.readFile(path, limit: limit)
        } catch {
            throw Self.apiError(error, doing: "reading \(path)")
        }
    }

    public func executions(_ query: ExecutionQuery, caller: Caller) async throws -> [ExecutionRecordView] {
        let records = try requireRecords()
        return try await records.executions(.init(sandboxID: query.sandboxID, sessionID: query.sessionID,
                                                  ownerUID: caller.isAdmin ? nil : caller.uid, limit: query.limit))
            .map(ExecutionRecordView.init)
    }

    public func execution(id: UUID, caller: Caller) async throws -> ExecutionRecordView {
        let records = try requireRecords()
        guard let record = try await records.execution(id: id), caller.mayAccess(ownerUID: record.ownerUID) else {
            throw APIError.notFound("execution", id: id.uuidString.lowercased())
        }
        return ExecutionRecordView(record)
    }

    public func egressEvents(executionID: UUID, caller: Caller) async throws -> EgressEventList {
        _ = try await execution(id: executionID, caller: caller)
        return EgressEventList(executionID: executionID, events: try await tools.egressEvents(executionID: executionID, limit: 10_000))
    }

    public func createSession(_ request: SessionCreateRequest, caller: Caller) async throws -> SessionDescription {
        let records = try requireRecords()
        let username = await users.name(of: caller.uid)
        let userID = try await records.ensureUser(unixUID: caller.uid, username: username)
        let session = try await records.createSession(userID: userID, name: request.sessionName)
        return SessionDescription(sessionID: session.id, userID: userID, sessionName: session.name,
                                  status: session.status ?? "active", createdAt: session.createdAt)
    }

    // MARK: Internals

    private func requireRecords() throws(APIError) -> any ExecutionRecorder {
        guard let records else {
            throw APIError(.unavailable, "no database is configured, so execution records cannot be read or written")
        }
        return records
    }

    private func checkTimeout(_ timeout: Double) throws(APIError) {
        guard timeout <= configuration.maxTimeout else {
            throw APIError(.invalidField, "\"timeout\" \(timeout) s is above the limit of \(configuration.maxTimeout) s",
                           details: ["field": "timeout", "limit": .number(configuration.maxTimeout)])
        }
    }

    private func checkPayload(_ payload: ExecPayload) throws(APIError) {
        if let timeout = payload.timeout { try checkTimeout(timeout) }
        if let stdin = payload.stdin, stdin.utf8.count > configuration.maxStdinBytes {
            throw APIError(.payloadTooLarge, "\"stdin\" is \(stdin.utf8.count) bytes, above the limit of \(configuration.maxStdinBytes)",
                           details: ["field": "stdin", "limit_bytes": .integer(Int64(configuration.maxStdinBytes))])
        }
    }

    /// Admission, then the engine builds the sandbox (or the pool had it built). The slot is released whatever fails.
    private func build(_ request: SandboxCreateRequest, caller: Caller, persistent: Bool) async throws
        -> (any EngineSandbox, SandboxDescription, AppliedPolicy) {
        try await build(try await prepare(request, caller: caller, persistent: persistent))
    }

    private func build(_ prepared: Prepared) async throws -> (any EngineSandbox, SandboxDescription, AppliedPolicy) {
        let id = prepared.description.sandboxID
        let sandbox: any EngineSandbox
        if let pooled = prepared.pooled {
            sandbox = pooled
        } else {
            do {
                sandbox = try await prepared.engine.createSandbox(prepared.spec)
            } catch {
                await releaseSandbox(id)
                throw Self.apiError(error, doing: "creating the sandbox")
            }
        }
        guard await registry.attach(id, sandbox: sandbox, limitsEnforced: sandbox.limitsEnforced) else {
            await sandbox.destroy()
            throw APIError(.shuttingDown, "sandboxd is shutting down; the new sandbox was destroyed")
        }
        var built = prepared.description
        built.limitsEnforced = sandbox.limitsEnforced
        return (sandbox, built, prepared.applied)
    }

    /// A sandbox about to be built (or taken from the pool), its admission slot already held.
    struct Prepared {
        var engine: any SandboxEngine
        var spec: EngineSandboxSpec
        var description: SandboxDescription
        var applied: AppliedPolicy
        /// Built ahead by the pool for this one-shot run (its id is the sandbox's id).
        var pooled: (any EngineSandbox)?
    }

    /// Every check before a sandbox is built, and its admission slot (released by the caller on failure).
    /// `exec`: a one-shot run's payload, checked against the same policy before anything is reserved.
    private func prepare(_ request: SandboxCreateRequest, caller: Caller, persistent: Bool, exec: ExecPayload? = nil) async throws
        -> Prepared {
        guard records != nil else {
            throw APIError(.unavailable, "no database is available; sandboxd refuses to run anything it cannot record")
        }
        let policy = request.policy ?? configuration.defaultPolicy
        let loaded: LoadedPolicy?
        do {
            loaded = try await policyStore.policy(named: policy)
        } catch {
            throw APIError(.invalidField, "unknown policy \"\(policy)\" (loaded: \(error.loaded.joined(separator: ", ")))",
                           details: ["field": "policy", "policy": .string(policy)])
        }
        let applied = try PolicyApplication.apply(loaded, name: policy, to: request, maxTimeout: configuration.maxTimeout)
        if let exec { try checkExec(exec, applied: applied) }
        let level = applied.level.level
        if let reason = await unavailability(of: level) {
            throw PolicyApplication.levelUnavailable(applied, reason: reason)
        }
        let engine = try await self.engine(for: level)
        if let sessionID = request.sessionID {
            try await checkSession(sessionID, caller: caller)
        }
        var spec = engineSpec(id: Self.newSandboxID(), policy: policy, applied: applied)
        // A one-shot run at level 1 takes a sandbox of its exact spec if one was built ahead.
        let poolable = !persistent && level == .native ? pool : nil
        let pooled = poolable?.take(spec)
        if let pooled { spec.id = pooled.id }
        let description = SandboxDescription(
            sandboxID: spec.id, ownerUID: caller.uid, state: "running", isolationLevel: level.rawValue, policy: policy,
            agentType: request.agentType ?? "default", sessionID: request.sessionID, createdAt: Date(), execCount: 0,
            limitsEnforced: false)
        do {
            try await registry.reserve(description, persistent: persistent, defaults: request, applied: applied)
        } catch {
            if let pooled { poolable?.giveBack(pooled, shape: spec) }
            throw error
        }
        do {
            spec.attachments = try await tools.attach(sandboxID: spec.id, policy: policy, rules: applied.rules, level: level)
        } catch {
            if let pooled { poolable?.giveBack(pooled, shape: spec) }
            await releaseSandbox(spec.id)
            throw Self.apiError(error, doing: "preparing the sandbox's tools")
        }
        var prepared = Prepared(engine: engine, spec: spec, description: description, applied: applied, pooled: pooled?.sandbox)
        if let poolable {
            if spec.attachments.isEmpty {
                poolable.remember(spec)
            } else if let pooled {
                // Built without the tools this run needs (the tools' configuration changed): not usable.
                await pooled.sandbox.destroy()
                prepared.pooled = nil
            }
        }
        return prepared
    }

    /// What the engine builds for a sandbox under `applied` (the policy named `policy`).
    private func engineSpec(id: String, policy: String, applied: AppliedPolicy) -> EngineSandboxSpec {
        EngineSandboxSpec(id: id, isolationLevel: applied.level.level, policy: policy, rules: applied.rules, limits: applied.limits,
                          environment: applied.environment, enforcement: configuration.limitEnforcement)
    }

    /// An exec's own timeout and environment against its sandbox's policy (before it is recorded).
    private func checkExec(_ payload: ExecPayload, applied: AppliedPolicy) throws(APIError) {
        _ = try PolicyApplication.timeout(payload.timeout, field: "timeout", rules: applied.rules, policy: applied.name,
                                          maxTimeout: configuration.maxTimeout)
        _ = try PolicyApplication.execEnvironment(payload.env, rules: applied.rules, policy: applied.name)
    }

    /// Engine errors reach the caller as API errors when they are the caller's to fix; otherwise by message.
    static func apiError(_ error: any Error, doing what: String) -> APIError {
        if let error = error as? APIError { return error }
        if let convertible = error as? any APIErrorConvertible { return convertible.apiError }
        return APIError(.internalError, "\(what) failed: \(error)")
    }

    private func checkSession(_ id: UUID, caller: Caller) async throws {
        let records = try requireRecords()
        guard let owner = try await records.sessionOwner(id), caller.mayAccess(ownerUID: owner ?? nil) else {
            throw APIError(.invalidField, "\"session_id\" \(id.uuidString.lowercased()) is not a session of this caller; create one with POST /v1/sessions",
                           details: ["field": "session_id"])
        }
    }

    /// Where an exec runs: in a persistent sandbox, or in a one-shot sandbox the engine builds for it.
    enum ExecTarget {
        case sandbox(any EngineSandbox)
        case oneShot(any SandboxEngine, EngineSandboxSpec)
    }

    /// Runs one exec and records it: `running` row first (enqueued), final row before returning.
    private func execute(_ payload: ExecPayload, language: CodeLanguage?, target: ExecTarget,
                         description: SandboxDescription, applied: AppliedPolicy, caller: Caller,
                         output: OutputSink?) async throws -> ExecutionResult {
        let records = try requireRecords()
        inFlight.enter()
        // Set when the exec's one-shot sandbox is torn down after the answer: it leaves the
        // in-flight count itself once gone.
        var leavesAtTeardown = false
        do {
            let result = try await executeRecorded(payload, language: language, target: target, description: description,
                                                   applied: applied, caller: caller, output: output, records: records,
                                                   leavesAtTeardown: &leavesAtTeardown)
            if !leavesAtTeardown { inFlight.leave() }
            return result
        } catch {
            if !leavesAtTeardown { inFlight.leave() }
            throw error
        }
    }

    private func executeRecorded(_ payload: ExecPayload, language: CodeLanguage?, target: ExecTarget,
                                 description: SandboxDescription, applied: AppliedPolicy, caller: Caller,
                                 output: OutputSink?, records: any ExecutionRecorder,
                                 leavesAtTeardown: inout Bool) async throws -> ExecutionResult {
        let executionID = UUID()
        let startedAt = Date()
        let clock = ContinuousClock.now
        let draft = ExecutionRecord(
            id: executionID, sessionID: description.sessionID, agentType: description.agentType,
            inputData: Self.recordedInput(payload, applied: applied), sandboxID: description.sandboxID, status: .running,
            isolationLevel: IsolationLevel(rawValue: description.isolationLevel), policy: description.policy,
            startedAt: startedAt, ownerUID: caller.uid,
            code: payload.code.map { CodeRun(code: $0.source, language: $0.language) })
        await records.recordStarted(draft)
        tools.begin(sandboxID: description.sandboxID, executionID: executionID)

        /// The final row and the answer from a result; returns once the row is committed.
        @Sendable func finish(_ outcome: ExecResult, errorMessage: String?) async throws -> ExecutionResult {
            // An exec the engine could not run has no result of its own: status `error`.
            let status = errorMessage == nil ? outcome.status : .error
            let result = ExecutionResult(
                executionID: executionID, sandboxID: description.sandboxID, status: status, exitCode: outcome.exitCode,
                signal: outcome.signal, stdout: String(decoding: outcome.stdout, as: UTF8.self),
                stderr: String(decoding: outcome.stderr, as: UTF8.self), stdoutTruncated: outcome.stdoutTruncated,
                stderrTruncated: outcome.stderrTruncated, executionTime: outcome.wallTime,
                isolationLevel: description.isolationLevel, policy: description.policy, limitsEnforced: outcome.limitsEnforced,
                resourceUsage: outcome.usage, errorMessage: errorMessage,
                requestedIsolationLevel: applied.requestedLevel.rawValue, levelRaisedBy: applied.level.raisedBy,
                policyDigest: applied.digest)
            metrics?.execFinished(status: status.rawValue, isolationLevel: description.isolationLevel, seconds: outcome.wallTime)

            var final = draft
            final.status = status
            final.exitCode = outcome.exitCode
            final.signal = outcome.signal
            final.finishedAt = Date()
            final.executionTime = outcome.wallTime
            final.usage = outcome.usage
            final.limitsEnforced = outcome.limitsEnforced
            final.outputData = Self.recordedOutput(result)
            final.code?.result = final.outputData
            do {
                try await records.recordFinished(final)
            } catch {
                // The result exists but its record could not be made durable: say so rather than pretend.
                logger.error("recording execution failed", metadata: ["execution_id": "\(executionID)", "error": "\(error)"])
                throw APIError(.unavailable, "the exec ran but its record could not be written: \(error)",
                               details: ["execution_id": .string(executionID.uuidString.lowercased())])
            }
            return result
        }

        var outcome: ExecResult
        var errorMessage: String?
        // One-shot level 1: the engine reports the command's end before its sandbox is torn down;
        // the final row is committed during the teardown instead of after it.
        let early = EarlyCommit()
        do {
            var argv = payload.command ?? []
            if let language, let code = payload.code {
                if let inline = language.inlineArgv(source: code.source) {
                    argv = inline
                } else if case .sandbox(let sandbox) = target {
                    // Per exec, so concurrent code runs in one sandbox do not overwrite each other's source.
                    let name = ".sandboxd-\(executionID.uuidString.prefix(8).lowercased())-\(language.fileName)"
                    argv = language.argv(sourcePath: try await sandbox.writeFile(name, contents: Array(code.source.utf8)))
                }
            }
            // The sandbox already has PATH, HOME and its create request's allowed variables.
            let environment = try PolicyApplication.execEnvironment(payload.env, rules: applied.rules, policy: applied.name)
            let exec = EngineExec(
                argv: argv, stdin: Array((payload.stdin ?? "").utf8), environment: environment,
                timeout: payload.timeout ?? applied.limits.executionTimeout,
                outputLimit: Int(clamping: applied.limits.outputLimit.bytes))
            switch target {
            case .sandbox(let sandbox):
                outcome = try await sandbox.exec(exec, output: output)
            case .oneShot(let engine, let spec) where output == nil && spec.attachments.isEmpty:
                // Nothing of the daemon's is attached to the sandbox (no proxy, no database role),
                // so nothing is left to close after the command: the engine answers at the
                // command's end, the record is committed and the answer sent while the engine's
                // thread tears the sandbox down. It counts as in flight until it is gone.
                let inFlight = self.inFlight
                leavesAtTeardown = true
                outcome = try await engine.runOnce(spec, exec, tornDown: { inFlight.leave() })
            case .oneShot(let engine, let spec):
                outcome = try await engine.runOnce(spec, exec, output: output) { ended in
                    early.start { try await finish(ended, errorMessage: nil) }
                }
            }
        } catch {
            errorMessage = Self.apiError(error, doing: "the exec").message
            outcome = ExecResult(exitCode: nil, signal: nil, stdout: [], stderr: [], stdoutTruncated: false, stderrTruncated: false,
                                 wallTime: (ContinuousClock.now - clock).seconds, timedOut: false, oomKilled: false,
                                 usage: .init(), limitsEnforced: false)
            logger.warning("exec failed", metadata: ["execution_id": "\(executionID)", "error": "\(error)"])
        }
        var oneShot = false
        if case .oneShot = target { oneShot = true }
        await tools.end(sandboxID: description.sandboxID, executionID: executionID, oneShot: oneShot)
        if let committing = early.task {
            // The engine never fails after reporting the end; its record is the one being committed.
            return try await committing.value
        }
        return try await finish(outcome, errorMessage: errorMessage)
    }

    /// The request as recorded in `input_data`: environment values are dropped (they are where
    /// callers put tokens); names stay so the record still says what was set.
    static func recordedInput(_ payload: ExecPayload, applied: AppliedPolicy? = nil) -> JSONValue {
        var fields: [String: JSONValue] = [:]
        if let applied {
            // How the level was decided, next to what was asked (the result says the same).
            fields["requested_isolation_level"] = .integer(Int64(applied.requestedLevel.rawValue))
            fields["isolation_level"] = .integer(Int64(applied.level.level.rawValue))
            fields["level_raised_by"] = applied.level.raisedBy.map(JSONValue.string) ?? .null
            fields["level_reason"] = .string(applied.level.reason)
            if let digest = applied.digest { fields["policy_digest"] = .string(digest) }
        }
        if let command = payload.command { fields["command"] = .array(command.map { .string($0) }) }
        if let code = payload.code { fields["code"] = .object(["language": .string(code.language), "source": .string(code.source)]) }
        if let stdin = payload.stdin { fields["stdin"] = .string(stdin) }
        if let env = payload.env { fields["env"] = .object(env.mapValues { _ in .string("<redacted>") }) }
        if let timeout = payload.timeout { fields["timeout"] = .number(timeout) }
        return .object(fields)
    }

    /// Bytes of each of stdout and stderr kept in a record's `output_data`. A policy may let an
    /// exec return megabytes (ml-model: 16 MiB); the caller gets all of it, the record a prefix
    /// (with `stdout_recorded_truncated` / `stderr_recorded_truncated`), so one large output
    /// cannot hold up the shared record queue.
    static let recordedOutputBytes = 64 << 10

    /// The result as recorded in `output_data`.
    static func recordedOutput(_ result: ExecutionResult) -> JSONValue? {
        var recorded = result
        let stdoutCut = recorded.stdout.utf8.count > recordedOutputBytes
        let stderrCut = recorded.stderr.utf8.count > recordedOutputBytes
        if stdoutCut { recorded.stdout = prefix(recorded.stdout, bytes: recordedOutputBytes) }
        if stderrCut { recorded.stderr = prefix(recorded.stderr, bytes: recordedOutputBytes) }
        guard case .object(var fields) = recorded.jsonValue else { return nil }
        if stdoutCut { fields["stdout_recorded_truncated"] = .bool(true) }
        if stderrCut { fields["stderr_recorded_truncated"] = .bool(true) }
        return .object(fields)
    }

    /// At most `bytes` UTF-8 bytes of `text`, cut at a character boundary.
    static func prefix(_ text: String, bytes: Int) -> String {
        let utf8 = Array(text.utf8.prefix(bytes + 1))
        guard utf8.count > bytes else { return text }
        var end = bytes
        // Back off continuation bytes (10xxxxxx) so the cut falls between characters.
        while end > 0, utf8[end] & 0xC0 == 0x80 { end -= 1 }
        return String(decoding: utf8[..<end], as: UTF8.self)
    }

    /// `sbx-` + 16 hex digits from the system's random source.
    static func newSandboxID() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return "sbx-" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// The final row's commit, started from the engine's thread when a one-shot command's end is known.
final class EarlyCommit: Sendable {
    private let started = Mutex<Task<ExecutionResult, any Error>?>(nil)

    /// Starts `commit` once; later calls are ignored.
    func start(_ commit: @escaping @Sendable () async throws -> ExecutionResult) {
        started.withLock { task in
            if task == nil { task = Task { try await commit() } }
        }
    }

    var task: Task<ExecutionResult, any Error>? { started.withLock { $0 } }
}

/// Execs between their start and their record (and, for a one-shot sandbox torn down after
/// its answer, until it is gone): what shutdown waits for.
final class InFlightCount: Sendable {
    private struct State {
        var count = 0
        /// Counts every `enter`: "idle since generation g" means nothing entered after g.
        var generation: UInt64 = 0
    }
    private let state = Mutex(State())
    private let onIdle = Mutex<(@Sendable (UInt64) -> Void)?>(nil)

    func enter() { state.withLock { $0.count += 1; $0.generation &+= 1 } }

    func leave() {
        let idleAt: UInt64? = state.withLock { state in
            state.count -= 1
            return state.count == 0 ? state.generation : nil
        }
        if let idleAt, let body = onIdle.withLock({ $0 }) { body(idleAt) }
    }

    var count: Int { state.withLock { $0.count } }

    /// The generation now when nothing is in flight, else nil.
    var idleGeneration: UInt64? {
        state.withLock { $0.count == 0 ? $0.generation : nil }
    }

    /// Whether nothing is in flight and nothing entered since `generation`.
    func isIdle(since generation: UInt64) -> Bool {
        state.withLock { $0.count == 0 && $0.generation == generation }
    }

    /// Calls `body` (on the leaving thread, so it must be quick) each time the count drops to 0, with the generation then.
    func whenIdle(_ body: @escaping @Sendable (UInt64) -> Void) {
        onIdle.withLock { $0 = body }
    }
}

/// Whether shutdown started.
actor ShutdownState {
    private(set) var stopping = false
    private var task: Task<Void, Never>?

    func shutdown(_ body: @escaping @Sendable () async -> Void) async {
        stopping = true
        if task == nil { task = Task { await body() } }
        await task!.value
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
