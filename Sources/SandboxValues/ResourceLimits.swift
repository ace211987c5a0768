/// Resource limits a sandbox runs under, already derived from its policy.
public struct ResourceLimits: Hashable, Sendable, Codable {
    /// `memory.max`; swap is always 0. `nil`: no memory limit.
    public var memory: ByteCount?
    /// Cores, `cpu.max` = `cpu × period` per period. `nil`: no CPU limit.
    public var cpu: Double?
    /// `pids.max`. `nil`: no limit on processes.
    public var pids: Int?
    /// Wall-clock limit of one exec, in seconds. When it passes, every process that exec started
    /// is killed (its cgroup), however it detached; in a one-shot run that is the whole sandbox.
    /// A persistent sandbox's init and workspace survive a timed-out exec.
    public var executionTimeout: Double
    /// Bytes kept of each of stdout and stderr; the rest is dropped and flagged `truncated`.
    public var outputLimit: ByteCount
    /// Size cap of each private tmpfs (`/tmp`, the workspace).
    public var tmpfsSize: ByteCount
    /// `RLIMIT_NOFILE` inside the sandbox.
    public var openFiles: Int

    public init(
        memory: ByteCount? = .mebibytes(512),
        cpu: Double? = 0.5,
        pids: Int? = 256,
        executionTimeout: Double = 30,
        outputLimit: ByteCount = .mebibytes(1),
        tmpfsSize: ByteCount = .mebibytes(64),
        openFiles: Int = 1024
    ) {
        self.memory = memory
        self.cpu = cpu
        self.pids = pids
        self.executionTimeout = executionTimeout
        self.outputLimit = outputLimit
        self.tmpfsSize = tmpfsSize
        self.openFiles = openFiles
    }

    /// True when any limit needs a cgroup v2 controller to be enforced.
    public var needsControllers: Bool { memory != nil || cpu != nil || pids != nil }
}

/// What to do when the host has no cgroup v2 controllers (design.md, "Hosts without cgroup v2").
public enum LimitEnforcement: String, Hashable, Sendable, Codable {
    /// Refuse to create a sandbox whose limits cannot be enforced.
    case strict
    /// Fall back to rlimits and record `limits_enforced: false` in every result.
    case bestEffort = "best-effort"
}
