/// One command to run in a sandbox.
public struct ExecRequest: Hashable, Sendable, Codable {
    /// `argv[0]` is looked up in `PATH` when it has no `/`.
    public var arguments: [String]
    /// Added to (and overriding) the sandbox's environment.
    public var environment: [String: String]
    /// Bytes written to the command's standard input, which is then closed.
    public var stdin: [UInt8]
    /// Wall-clock limit in seconds; `nil` uses the sandbox's `limits.executionTimeout`.
    public var timeout: Double?
    /// Absolute path inside the sandbox; `nil` is the workspace.
    public var workingDirectory: String?

    public init(
        _ arguments: [String],
        environment: [String: String] = [:],
        stdin: [UInt8] = [],
        timeout: Double? = nil,
        workingDirectory: String? = nil
    ) {
        self.arguments = arguments
        self.environment = environment
        self.stdin = stdin
        self.timeout = timeout
        self.workingDirectory = workingDirectory
    }
}

/// How one exec ended and what it produced.
public struct ExecResult: Hashable, Sendable, Codable {
    /// Exit status when the command exited; `nil` when a signal ended it.
    public var exitCode: Int32?
    /// The signal that ended the command, if any.
    public var signal: Int32?
    /// Captured standard output, at most `limits.outputLimit` bytes.
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    /// True when more output was produced than kept.
    public var stdoutTruncated: Bool
    public var stderrTruncated: Bool
    /// Seconds from start to the end of the command.
    public var wallTime: Double
    /// True when the wall-clock limit killed the exec.
    public var timedOut: Bool
    /// True when the kernel's OOM killer killed a process of the exec.
    public var oomKilled: Bool
    public var usage: ResourceUsage
    /// False when the host could not enforce a requested limit (best-effort mode).
    public var limitsEnforced: Bool

    public init(
        exitCode: Int32?, signal: Int32?, stdout: [UInt8], stderr: [UInt8],
        stdoutTruncated: Bool, stderrTruncated: Bool, wallTime: Double, timedOut: Bool,
        oomKilled: Bool, usage: ResourceUsage, limitsEnforced: Bool
    ) {
        self.exitCode = exitCode
        self.signal = signal
        self.stdout = stdout
        self.stderr = stderr
        self.stdoutTruncated = stdoutTruncated
        self.stderrTruncated = stderrTruncated
        self.wallTime = wallTime
        self.timedOut = timedOut
        self.oomKilled = oomKilled
        self.usage = usage
        self.limitsEnforced = limitsEnforced
    }

    /// The record status this result maps to.
    public var status: ExecutionStatus {
        if timedOut { return .timeout }
        if oomKilled { return .oom }
        if signal != nil { return .killed }
        return .ok
    }
}

/// A piece of output delivered while an exec runs.
public struct OutputChunk: Hashable, Sendable {
    public enum Stream: String, Hashable, Sendable, Codable { case stdout, stderr }
    public var stream: Stream
    public var bytes: [UInt8]

    public init(stream: Stream, bytes: [UInt8]) {
        self.stream = stream
        self.bytes = bytes
    }
}

/// Output kept from one stream of an exec: at most `limit` bytes, the rest counted as truncated
/// and dropped. Level 1 fills it from the command's pipes, level 3 from the guest's stream frames.
public struct CapturedOutput: Hashable, Sendable {
    public let limit: Int
    public private(set) var kept: [UInt8] = []
    public private(set) var truncated = false

    public init(limit: Int) { self.limit = limit }

    /// Keeps what fits; returns the kept part (for streaming).
    public mutating func take(_ chunk: UnsafeRawBufferPointer) -> ArraySlice<UInt8> {
        let room = limit - kept.count
        if chunk.count > room { truncated = true }
        guard room > 0 else { return [] }
        let from = kept.count
        kept.append(contentsOf: chunk.prefix(room))
        return kept[from...]
    }

    /// `take` for bytes in an array.
    public mutating func take(_ chunk: [UInt8]) -> ArraySlice<UInt8> {
        chunk.withUnsafeBytes { take($0) }
    }
}
