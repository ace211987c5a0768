import SandboxCore

extension ExecutionResult {
    /// The result as a JSON value, field for field what `encode(to:)` writes (explicit nulls
    /// included), built directly: the record's `output_data` and the fast answer both start here.
    public var jsonValue: JSONValue {
        var fields: [String: JSONValue] = [
            "execution_id": .string(executionID.uuidString.lowercased()),
            "sandbox_id": .string(sandboxID),
            "status": .string(status.rawValue),
            "exit_code": exitCode.map { .integer(Int64($0)) } ?? .null,
            "signal": signal.map { .integer(Int64($0)) } ?? .null,
            "stdout": .string(stdout),
            "stderr": .string(stderr),
            "stdout_truncated": .bool(stdoutTruncated),
            "stderr_truncated": .bool(stderrTruncated),
            "execution_time": .number(executionTime),
            "isolation_level": .integer(Int64(isolationLevel)),
            "policy": .string(policy),
            "limits_enforced": .bool(limitsEnforced),
            "resource_usage": .object([
                "cpu_usec": resourceUsage.cpuMicroseconds.map { .integer(Int64(clamping: $0)) } ?? .null,
                "memory_peak_bytes": resourceUsage.memoryPeakBytes.map { .integer(Int64(clamping: $0)) } ?? .null,
            ]),
            "level_raised_by": levelRaisedBy.map(JSONValue.string) ?? .null,
        ]
        if let errorMessage { fields["error_message"] = .string(errorMessage) }
        if let requestedIsolationLevel { fields["requested_isolation_level"] = .integer(Int64(requestedIsolationLevel)) }
        if let policyDigest { fields["policy_digest"] = .string(policyDigest) }
        return .object(fields)
    }

    /// The answer body: `jsonValue` as compact JSON with sorted keys.
    public var jsonBytes: [UInt8] { JSONText.bytes(jsonValue) }
}
