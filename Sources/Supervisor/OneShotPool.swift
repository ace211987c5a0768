import DaemonMetrics
import Logging
import SandboxCore
import Synchronization

/// Level-1 sandboxes built while the daemon is idle, each taken by one one-shot run and destroyed
/// after it: the run pays an exec into a ready sandbox instead of building one (namespaces, the
/// root's mounts, `pivot_root`, the cgroup).
///
/// A pooled sandbox is built from the same spec the run would have built (its "shape": every field
/// but the id), never runs anything before it is taken, and is never used twice, so a run sees
/// exactly what a freshly built sandbox shows. The shapes kept ready are the `maxShapes` most
/// recently run (a policy reload changes the rules in the shape, so sandboxes of the old rules are
/// no longer taken; ``clear()`` drops them). Only sandboxes with nothing of the daemon's attached
/// (no egress proxy, no database role) are pooled: those tools belong to one sandbox id.
///
/// Building happens only when no exec is in flight (the caller checks, and checks again between
/// builds), so the pool never competes with a run for the CPU. Pooled sandboxes are not counted by
/// admission: they belong to no caller until taken. A daemon killed with some ready leaves them to
/// the next start's reaper, like any other sandbox.
final class OneShotPool: Sendable {
    /// What a sandbox is built from, without its id (and so its host name, cgroup and state directory).
    struct Shape: Hashable, Sendable {
        let spec: EngineSandboxSpec
        init(_ spec: EngineSandboxSpec) {
            var spec = spec
            spec.id = ""
            self.spec = spec
        }
    }

    struct Ready: Sendable {
        let id: String
        let sandbox: any EngineSandbox
    }

    private struct State {
        var ready: [Shape: [Ready]] = [:]
        /// Shapes of recent runs, most recent last.
        var wanted: [Shape] = []
        /// Shapes whose build failed: not tried again until a reload clears the pool.
        var failed: Set<Shape> = []
        var filling = false
        /// A refill asked for while a fill ran: its idle test (a newer idle moment) continues that fill.
        var requested: (@Sendable () -> Bool)?
        var stopped = false
    }

    private let engine: any SandboxEngine
    /// Sandboxes kept ready per shape.
    let size: Int
    private let maxShapes: Int
    private let logger: Logger
    private let metrics: DaemonMetrics?
    private let state = Mutex(State())

    init(engine: any SandboxEngine, size: Int, maxShapes: Int = 4, logger: Logger, metrics: DaemonMetrics?) {
        self.engine = engine
        self.size = size
        self.maxShapes = maxShapes
        self.logger = logger
        self.metrics = metrics
    }

    /// A ready sandbox of `spec`'s shape (with its own id), or nil when none is ready. One that
    /// died while it waited (its init killed from the host) is destroyed, not handed out.
    func take(_ spec: EngineSandboxSpec) -> Ready? {
        let shape = Shape(spec)
        var dead: [Ready] = []
        let taken: Ready? = state.withLock { state in
            guard !state.stopped else { return nil }
            while var ready = state.ready[shape], !ready.isEmpty {
                let first = ready.removeFirst()
                state.ready[shape] = ready
                if first.sandbox.failure == nil { return first }
                dead.append(first)
            }
            return nil
        }
        destroy(dead)
        metrics?.oneShotPool(taken: taken != nil)
        if taken != nil || !dead.isEmpty { publish() }
        return taken
    }

    /// Puts back a sandbox taken for a run that was then refused before it ran anything.
    func giveBack(_ ready: Ready, shape spec: EngineSandboxSpec) {
        let kept = state.withLock { state in
            guard !state.stopped, state.wanted.contains(Shape(spec)) else { return false }
            state.ready[Shape(spec), default: []].insert(ready, at: 0)
            return true
        }
        if !kept { destroy([ready]) }
        publish()
    }

    /// Notes that a run of `spec`'s shape just happened: that shape is kept ready from now on
    /// (dropping the least recently run one beyond `maxShapes`).
    func remember(_ spec: EngineSandboxSpec) {
        let shape = Shape(spec)
        let dropped: [Ready] = state.withLock { state in
            guard !state.stopped, !state.failed.contains(shape) else { return [] }
            if state.wanted.last == shape { return [] }
            state.wanted.removeAll { $0 == shape }
            state.wanted.append(shape)
            guard state.wanted.count > maxShapes else { return [] }
            let oldest = state.wanted.removeFirst()
            return state.ready.removeValue(forKey: oldest) ?? []
        }
        if !dropped.isEmpty { publish() }
        destroy(dropped)
    }

    /// Whether some remembered shape has fewer than `size` ready and alive.
    var isShort: Bool {
        state.withLock { state in
            !state.stopped
                && state.wanted.contains { shape in state.ready[shape, default: []].count { $0.sandbox.failure == nil } < size }
        }
    }

    /// Takes the ready sandboxes that died while they waited out of the pool and destroys them.
    private func removeDead() async {
        let dead: [Ready] = state.withLock { state in
            var dead: [Ready] = []
            for (shape, ready) in state.ready {
                let alive = ready.filter { $0.sandbox.failure == nil }
                if alive.count != ready.count {
                    dead += ready.filter { $0.sandbox.failure != nil }
                    state.ready[shape] = alive
                }
            }
            return dead
        }
        guard !dead.isEmpty else { return }
        publish()
        await destroyNow(dead)
    }

    /// When some shape is short: after `delay`, builds what is missing while nothing entered
    /// `inFlight` since `generation` (checked before each build).
    func refill(while inFlight: InFlightCount, idleSince generation: UInt64, after delay: Duration = .zero) {
        guard isShort else { return }
        Task {
            if delay > .zero { try? await Task.sleep(for: delay) }
            await fill { inFlight.isIdle(since: generation) }
        }
    }

    /// Builds the missing sandboxes one at a time, while `idle()` holds before each. One fill at a
    /// time: one asked for meanwhile is not dropped, the running fill goes on with its idle test
    /// (the running one's may have turned false for good: a run came and went since).
    func fill(idle: @escaping @Sendable () -> Bool) async {
        guard state.withLock({ state in
            guard !state.stopped else { return false }
            if state.filling {
                state.requested = idle
                return false
            }
            state.filling = true
            return true
        }) else { return }
        var idle = idle
        while true {
            await removeDead()
            await build(while: idle)
            let next: (@Sendable () -> Bool)? = state.withLock { state in
                defer { state.requested = nil }
                guard !state.stopped, let requested = state.requested else {
                    state.filling = false
                    return nil
                }
                return requested
            }
            guard let next else { return }
            idle = next
        }
    }

    private func build(while idle: () -> Bool) async {
        while idle() {
            let next: Shape? = state.withLock { state in
                guard !state.stopped else { return nil }
                return state.wanted.last { state.ready[$0, default: []].count < size }
            }
            guard let shape = next else { return }
            var spec = shape.spec
            spec.id = Supervisor.newSandboxID()
            let sandbox: any EngineSandbox
            do {
                sandbox = try await engine.createSandbox(spec)
            } catch {
                // Not kept ready from now on; runs of this shape build their own (and report the error).
                logger.warning("building a pooled one-shot sandbox failed; that policy's runs build their own until the next reload",
                               metadata: ["policy": "\(spec.policy)", "error": "\(error)"])
                state.withLock { state in
                    state.wanted.removeAll { $0 == shape }
                    state.failed.insert(shape)
                }
                continue
            }
            let kept = state.withLock { state in
                guard !state.stopped, state.wanted.contains(shape) else { return false }
                state.ready[shape, default: []].append(Ready(id: spec.id, sandbox: sandbox))
                return true
            }
            if kept { publish() } else { await sandbox.destroy() }
        }
    }

    /// Destroys every ready sandbox and forgets the shapes (a policy reload); the pool goes on.
    func clear() async {
        let dropped = state.withLock { state in
            let all = state.ready.values.flatMap { $0 }
            state.ready = [:]
            state.wanted = []
            state.failed = []
            return all
        }
        publish()
        await destroyNow(dropped)
    }

    /// Destroys every ready sandbox and takes no more; waits for a build in progress to end.
    func stop() async {
        let dropped = state.withLock { state in
            state.stopped = true
            let all = state.ready.values.flatMap { $0 }
            state.ready = [:]
            return all
        }
        publish()
        await destroyNow(dropped)
        let deadline = ContinuousClock.now + .seconds(10)
        while state.withLock({ $0.filling }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    var readyCount: Int { state.withLock { $0.ready.values.reduce(0) { $0 + $1.count } } }

    private func publish() {
        metrics?.setOneShotPoolReady(readyCount)
    }

    private func destroy(_ sandboxes: [Ready]) {
        guard !sandboxes.isEmpty else { return }
        Task { await destroyNow(sandboxes) }
    }

    private func destroyNow(_ sandboxes: [Ready]) async {
        await withTaskGroup(of: Void.self) { group in
            for ready in sandboxes { group.addTask { await ready.sandbox.destroy() } }
        }
    }
}
