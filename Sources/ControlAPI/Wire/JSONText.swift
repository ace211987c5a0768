import SandboxCore

/// Compact JSON text of a `JSONValue` with object keys sorted (the same form `jsonEncoder` gives).
///
/// The answer to every run and exec goes through here: Foundation's `JSONEncoder` (and the
/// encode-then-decode it took to turn a result into a record) cost more CPU per `/bin/true` than
/// the rest of the daemon's share of the request.
enum JSONText {
    static func bytes(_ value: JSONValue) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(512)
        append(value, to: &output)
        return output
    }

    static func append(_ value: JSONValue, to output: inout [UInt8]) {
        switch value {
        case .null: output += "null".utf8
        case .bool(let flag): output += (flag ? "true" : "false").utf8
        case .integer(let number): output += String(number).utf8
        // Swift prints the shortest text that reads back as the same Double ("0.1", "1e-05");
        // JSON has no infinities or NaN.
        case .number(let number): output += (number.isFinite ? "\(number)" : "null").utf8
        case .string(let text): appendString(text, to: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                append(element, to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                appendString(key, to: &output)
                output.append(UInt8(ascii: ":"))
                append(members[key]!, to: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A string is valid UTF-8 already: only quotes, backslashes and control characters need escapes.
    static func appendString(_ text: String, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output += #"\""#.utf8
            case UInt8(ascii: "\\"): output += #"\\"#.utf8
            case 0x0A: output += #"\n"#.utf8
            case 0x0D: output += #"\r"#.utf8
            case 0x09: output += #"\t"#.utf8
            case 0x08: output += #"\b"#.utf8
            case 0x0C: output += #"\f"#.utf8
            case 0x00..<0x20:
                output += #"\u00"#.utf8
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0xF)])
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}

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
