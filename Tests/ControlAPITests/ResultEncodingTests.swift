import Foundation
import SandboxCore
import Testing
@testable import ControlAPI

/// The run/exec answer is written without JSONEncoder; it must say exactly what the Codable form says.
struct ResultEncodingTests {
    private func codable(_ result: ExecutionResult) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: jsonEncoder.encode(result))
    }

    private func fast(_ result: ExecutionResult) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(result.jsonBytes))
    }

    /// Numbers compared as numbers: the Codable form may write 2.0 as 2.
    private func normalized(_ value: JSONValue) -> JSONValue {
        switch value {
        case .integer(let number): return .number(Double(number))
        case .array(let elements): return .array(elements.map(normalized))
        case .object(let members): return .object(members.mapValues(normalized))
        default: return value
        }
    }

    @Test("a finished exec: every field, explicit nulls and the nested usage as the Codable encoding has them")
    func finished() throws {
        let result = ExecutionResult(
            executionID: UUID(), sandboxID: "sbx-0123456789abcdef", status: .ok, exitCode: 3, signal: nil,
            stdout: "line \"one\"\n\ttab \\ back\u{1}\u{1F} é ✓ 😀", stderr: "", stdoutTruncated: false, stderrTruncated: true,
            executionTime: 0.001234567, isolationLevel: 1, policy: "default", limitsEnforced: false,
            resourceUsage: ResourceUsage(cpuMicroseconds: 1925, memoryPeakBytes: nil),
            requestedIsolationLevel: 1, levelRaisedBy: nil, policyDigest: String(repeating: "ab", count: 32))
        #expect(normalized(try fast(result)) == normalized(try codable(result)))
        // Keys sorted, no spaces: what clients and the benchmark match on.
        let text = String(decoding: result.jsonBytes, as: UTF8.self)
        #expect(text.hasPrefix(#"{"execution_id":""#))
        #expect(text.contains(#""exit_code":3,"#))
        #expect(text.contains(#""signal":null"#))
    }

    @Test("a failed exec: error_message present, exit code null, signal and large numbers kept")
    func failed() throws {
        let result = ExecutionResult(
            executionID: UUID(), sandboxID: "sbx-1", status: .error, exitCode: nil, signal: 9, stdout: "", stderr: "x",
            stdoutTruncated: true, stderrTruncated: false, executionTime: 2, isolationLevel: 3, policy: "p/o\"l",
            limitsEnforced: true, resourceUsage: ResourceUsage(cpuMicroseconds: UInt64(Int64.max), memoryPeakBytes: 1 << 40),
            errorMessage: "spawn failed: \"x\"", requestedIsolationLevel: nil, levelRaisedBy: "isolation.minimum_level")
        #expect(normalized(try fast(result)) == normalized(try codable(result)))
    }
}
