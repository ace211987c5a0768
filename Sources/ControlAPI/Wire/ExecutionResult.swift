#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SandboxCore

/// The answer to `POST /v1/run` and `POST /v1/sandboxes/{id}/exec` (and the last NDJSON line).
public struct ExecutionResult: Codable, Sendable, Hashable {
    /// The record id, chosen before the run; `GET /v1/executions/{id}` reads it back.
    public var executionID: UUID
    public var sandboxID: String
    /// `ok` (exited, any code), `error`, `timeout`, `oom`, `killed`.
    public var status: ExecutionStatus
    public var exitCode: Int32?
    public var signal: Int32?
    public var stdout: String
    public var stderr: String
    public var stdoutTruncated: Bool
    public var stderrTruncated: Bool
    /// Wall-clock seconds from start to end of the exec.
    public var executionTime: Double
    public var isolationLevel: Int
    public var policy: String
    /// False when the host could not enforce the resource limits (best-effort mode).
    public var limitsEnforced: Bool
    public var resourceUsage: ResourceUsage
    /// Set when `status` is `error`: why the exec could not run.
    public var errorMessage: String?
    /// The level the request asked for (1 when it named none); `isolation_level` is the level it ran at.
    public var requestedIsolationLevel: Int?
    /// The policy rule that raised the level above the requested one (`isolation.minimum_level`,
    /// `isolation.agent_types.scraper`); nil when the requested level stood.
    public var levelRaisedBy: String?
    /// SHA-256 of the policy file the sandbox was created under (`GET /v1/policies` lists digests).
    public var policyDigest: String?

    public init(executionID: UUID, sandboxID: String, status: ExecutionStatus, exitCode: Int32?, signal: Int32?,
                stdout: String, stderr: String, stdoutTruncated: Bool, stderrTruncated: Bool,
                executionTime: Double, isolationLevel: Int, policy: String, limitsEnforced: Bool,
                resourceUsage: ResourceUsage, errorMessage: String? = nil,
                requestedIsolationLevel: Int? = nil, levelRaisedBy: String? = nil, policyDigest: String? = nil) {
        self.policyDigest = policyDigest
        self.requestedIsolationLevel = requestedIsolationLevel
        self.levelRaisedBy = levelRaisedBy
        self.executionID = executionID
        self.sandboxID = sandboxID
        self.status = status
        self.exitCode = exitCode
        self.signal = signal
        self.stdout = stdout
        self.stderr = stderr
        self.stdoutTruncated = stdoutTruncated
        self.stderrTruncated = stderrTruncated
        self.executionTime = executionTime
        self.isolationLevel = isolationLevel
        self.policy = policy
        self.limitsEnforced = limitsEnforced
        self.resourceUsage = resourceUsage
        self.errorMessage = errorMessage
    }

    enum CodingKeys: String, CodingKey {
        case executionID = "execution_id"
        case sandboxID = "sandbox_id"
        case status
        case exitCode = "exit_code"
        case signal, stdout, stderr
        case stdoutTruncated = "stdout_truncated"
        case stderrTruncated = "stderr_truncated"
        case executionTime = "execution_time"
        case isolationLevel = "isolation_level"
        case policy
        case limitsEnforced = "limits_enforced"
        case resourceUsage = "resource_usage"
        case errorMessage = "error_message"
        case requestedIsolationLevel = "requested_isolation_level"
        case levelRaisedBy = "level_raised_by"
        case policyDigest = "policy_digest"
    }

    enum UsageKeys: String, CodingKey {
        case cpuMicroseconds = "cpu_usec"
        case memoryPeakBytes = "memory_peak_bytes"
    }

    // Explicit nulls keep the response shape the same whatever happened.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(executionID.uuidString.lowercased(), forKey: .executionID)
        try c.encode(sandboxID, forKey: .sandboxID)
        try c.encode(status, forKey: .status)
        try c.encode(exitCode, forKey: .exitCode)
        try c.encode(signal, forKey: .signal)
        try c.encode(stdout, forKey: .stdout)
        try c.encode(stderr, forKey: .stderr)
        try c.encode(stdoutTruncated, forKey: .stdoutTruncated)
        try c.encode(stderrTruncated, forKey: .stderrTruncated)
        try c.encode(executionTime, forKey: .executionTime)
        try c.encode(isolationLevel, forKey: .isolationLevel)
        try c.encode(policy, forKey: .policy)
        try c.encode(limitsEnforced, forKey: .limitsEnforced)
        var usage = c.nestedContainer(keyedBy: UsageKeys.self, forKey: .resourceUsage)
        try usage.encode(resourceUsage.cpuMicroseconds, forKey: .cpuMicroseconds)
        try usage.encode(resourceUsage.memoryPeakBytes, forKey: .memoryPeakBytes)
        try c.encodeIfPresent(errorMessage, forKey: .errorMessage)
        try c.encodeIfPresent(requestedIsolationLevel, forKey: .requestedIsolationLevel)
        try c.encode(levelRaisedBy, forKey: .levelRaisedBy)
        try c.encodeIfPresent(policyDigest, forKey: .policyDigest)
    }
}

/// One chunk of a running exec's output, as streamed (`?stream=ndjson`).
public struct OutputChunk: Sendable, Hashable {
    public enum Stream: String, Sendable, Codable { case stdout, stderr }
    public var stream: Stream
    public var bytes: [UInt8]

    public init(stream: Stream, bytes: [UInt8]) {
        self.stream = stream
        self.bytes = bytes
    }
}

/// Receives output while an exec runs. Called from any thread; must not block.
public typealias OutputSink = @Sendable (OutputChunk) -> Void
