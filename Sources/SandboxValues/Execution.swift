/// How an execution ended, as recorded in `agent_executions.status`.
public enum ExecutionStatus: String, Hashable, Sendable, Codable, CaseIterable {
    case running
    /// Exited (any exit code).
    case ok
    /// Could not be started or failed inside sandboxd.
    case error
    /// Killed by the wall-clock limit.
    case timeout
    /// Killed by the memory limit.
    case oom
    /// Killed by a signal (from inside, or by a destroy).
    case killed
    /// Left `running` by a daemon that died; set by the next start.
    case aborted
}

/// Resources one exec used, read from its cgroup (or rusage where no cgroup controller exists).
public struct ResourceUsage: Hashable, Sendable, Codable {
    public var cpuMicroseconds: UInt64?
    public var memoryPeakBytes: UInt64?

    public init(cpuMicroseconds: UInt64? = nil, memoryPeakBytes: UInt64? = nil) {
        self.cpuMicroseconds = cpuMicroseconds
        self.memoryPeakBytes = memoryPeakBytes
    }

    enum CodingKeys: String, CodingKey {
        case cpuMicroseconds = "cpu_usec"
        case memoryPeakBytes = "memory_peak_bytes"
    }
}
