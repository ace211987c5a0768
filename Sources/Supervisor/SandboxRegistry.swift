#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ControlAPI
import DaemonMetrics

/// Every live sandbox, who owns it, and the admission counts. One actor owns all of it so that
/// "check the limit, then take the slot" is one step.
actor SandboxRegistry {
    struct Entry {
        var id: String
        var ownerUID: UInt32
        /// Nil while the engine is still building it (the slot is already taken).
        var sandbox: (any EngineSandbox)?
        var description: SandboxDescription
        /// One-shot sandboxes are not listed and cannot be reached by id.
        var persistent: Bool
        /// What the sandbox was created with: defaults for each exec (env, timeout).
        var defaults: SandboxCreateRequest
        /// The policy it was created under (kept across reloads), its level and limits.
        var applied: AppliedPolicy?
        var destroying = false
        var runningExecs = 0
    }

    private var entries: [String: Entry] = [:]
    private var accepting = true
    private let maxSandboxes: Int
    private let maxPerUID: Int
    private let metrics: DaemonMetrics?

    init(maxSandboxes: Int, maxPerUID: Int, metrics: DaemonMetrics? = nil) {
        self.maxSandboxes = maxSandboxes
        self.maxPerUID = maxPerUID
        self.metrics = metrics
    }

    /// Takes a slot for a new sandbox or throws `too_many_requests` / `shutting_down`.
    func reserve(_ description: SandboxDescription, persistent: Bool, defaults: SandboxCreateRequest,
                 applied: AppliedPolicy? = nil) throws(APIError) {
        guard accepting else {
            metrics?.admissionRejected(reason: "shutting_down")
            throw APIError(.shuttingDown, "sandboxd is shutting down; no new sandboxes")
        }
        guard entries.count < maxSandboxes else {
            metrics?.admissionRejected(reason: "global_limit")
            throw APIError(.tooManyRequests, "sandboxd is at its limit of \(maxSandboxes) concurrent sandboxes; retry later or destroy one",
                           details: ["limit": .integer(Int64(maxSandboxes)), "scope": "global"])
        }
        let owned = entries.values.count { $0.ownerUID == description.ownerUID }
        guard owned < maxPerUID else {
            metrics?.admissionRejected(reason: "uid_limit")
            throw APIError(.tooManyRequests,
                           "uid \(description.ownerUID) already has \(owned) sandboxes, the per-user limit is \(maxPerUID); destroy one first",
                           details: ["limit": .integer(Int64(maxPerUID)), "scope": "uid"])
        }
        entries[description.sandboxID] = Entry(id: description.sandboxID, ownerUID: description.ownerUID, sandbox: nil,
                                               description: description, persistent: persistent, defaults: defaults,
                                               applied: applied)
        metrics?.setSandboxesAlive(entries.count)
    }

    /// Attaches the built sandbox to its reserved slot. Returns false when the slot was released
    /// meanwhile (shutdown): the caller then destroys the sandbox itself.
    func attach(_ id: String, sandbox: any EngineSandbox, limitsEnforced: Bool) -> Bool {
        guard entries[id] != nil, !entries[id]!.destroying else { return false }
        entries[id]!.sandbox = sandbox
        entries[id]!.description.limitsEnforced = limitsEnforced
        return true
    }

    /// Frees a slot whose sandbox was never built or has been destroyed.
    func release(_ id: String) {
        entries[id] = nil
        metrics?.setSandboxesAlive(entries.count)
    }

    /// The sandbox `id` if `caller` may use it; otherwise the same `not_found` a missing id gets.
    func lookup(_ id: String, caller: Caller) throws(APIError) -> Entry {
        guard let entry = entries[id], entry.persistent, caller.mayAccess(ownerUID: entry.ownerUID), entry.sandbox != nil else {
            throw APIError.notFound("sandbox", id: id)
        }
        return entry.withCurrentState
    }

    /// Marks an exec as running in `id`, so destroy and shutdown know about it.
    func beginExec(_ id: String, caller: Caller, persistentOnly: Bool = true) throws(APIError) -> (any EngineSandbox, SandboxDescription) {
        guard var entry = entries[id], !persistentOnly || entry.persistent, caller.mayAccess(ownerUID: entry.ownerUID),
              let sandbox = entry.sandbox else {
            throw APIError.notFound("sandbox", id: id)
        }
        guard !entry.destroying else { throw APIError(.conflict, "sandbox \(id) is being destroyed", details: ["sandbox_id": .string(id)]) }
        guard accepting else { throw APIError(.shuttingDown, "sandboxd is shutting down; no new execs") }
        entry.runningExecs += 1
        entry.description.execCount += 1
        entries[id] = entry
        return (sandbox, entry.description)
    }

    func endExec(_ id: String) {
        entries[id]?.runningExecs -= 1
    }

    /// Takes a sandbox out of service for destruction; nil when already going or gone.
    func beginDestroy(_ id: String, caller: Caller) throws(APIError) -> (any EngineSandbox)? {
        guard let entry = entries[id], entry.persistent, caller.mayAccess(ownerUID: entry.ownerUID) else {
            throw APIError.notFound("sandbox", id: id)
        }
        guard !entry.destroying else { return nil }
        entries[id]!.destroying = true
        entries[id]!.description.state = "destroying"
        return entry.sandbox
    }

    func list(caller: Caller) -> [SandboxDescription] {
        entries.values.filter { $0.persistent && $0.sandbox != nil && caller.mayAccess(ownerUID: $0.ownerUID) }
            .map(\.withCurrentState.description)
            .sorted { $0.createdAt < $1.createdAt }
    }

    var count: Int { entries.count }
    var runningExecCount: Int { entries.values.reduce(0) { $0 + $1.runningExecs } }

    /// Stops admitting sandboxes and execs.
    func stopAccepting() { accepting = false }

    /// Every sandbox, marked destroying; the registry is empty afterwards.
    func drainAll() -> [any EngineSandbox] {
        let sandboxes = entries.values.compactMap(\.sandbox)
        for id in entries.keys { entries[id]!.destroying = true }
        entries.removeAll()
        metrics?.setSandboxesAlive(0)
        return sandboxes
    }
}

extension SandboxRegistry.Entry {
    /// The description with `state: failed` once the engine says the sandbox died (a level-3 guest panic).
    var withCurrentState: Self {
        guard !destroying, sandbox?.failure != nil else { return self }
        var copy = self
        copy.description.state = "failed"
        return copy
    }
}
