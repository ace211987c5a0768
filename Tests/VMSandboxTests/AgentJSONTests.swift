import Foundation
import SandboxCore
import Testing
import VMAgentProtocol

/// The agent's own JSON coder (no Foundation in the guest): the same values as Foundation's coder,
/// both ways, and hostile input refused with an error instead of a crash.
@Suite("VMAgentProtocol JSON (no QEMU)")
struct AgentJSONTests {
    static let awkward = "quote \" backslash \\ slash / newline \n tab \t nul \u{0} bell \u{7} del \u{7f} é 漢字 🦀 \u{10FFFF}"

    static let spec = SandboxSpec(
        id: "spec-1", hostname: nil,
        limits: ResourceLimits(memory: nil, cpu: 1.5, pids: 64, executionTimeout: 0.1, outputLimit: .mebibytes(2),
                               tmpfsSize: ByteCount(bytes: UInt64.max), openFiles: 7),
        enforcement: .bestEffort, environment: ["A": awkward, "EMPTY": "", awkward: "key"],
        mounts: [MountSpec(hostPath: "/srv/data", sandboxPath: "/data", readOnly: false, refuseSymlinks: true)],
        maskedPaths: ["/etc/shadow"], workspacePath: "/work space")

    static let result = ExecResult(
        exitCode: nil, signal: 9, stdout: Array(0...255) + Array(repeating: 0, count: 3), stderr: [],
        stdoutTruncated: true, stderrTruncated: false, wallTime: 1e-5, timedOut: false, oomKilled: true,
        usage: ResourceUsage(cpuMicroseconds: UInt64.max, memoryPeakBytes: nil), limitsEnforced: false)

    static let request = ExecRequest(["sh", "-c", awkward], environment: [:], stdin: Array("in\u{0}put".utf8), timeout: 12.25,
                                     workingDirectory: nil)

    @Test("specs, exec requests and results survive a round trip exactly")
    func roundTrip() throws {
        #expect(try AgentFrame(.configure, json: Self.spec).decode(SandboxSpec.self) == Self.spec)
        #expect(try AgentFrame(.execResult, json: Self.result).decode(ExecResult.self) == Self.result)
        #expect(try AgentFrame(.exec, json: Self.request).decode(ExecRequest.self) == Self.request)
        let hello = AgentHello(kernelRelease: "6.1.0-56-amd64", controllers: ["cpu", "memory", "pids"])
        #expect(try AgentFrame(.hello, json: hello).decode(AgentHello.self) == hello)
        let put = try AgentFilePut(path: Self.awkward).frame(contents: [1, 2, 3])
        let (header, contents) = try AgentFilePut.parse(put.payload)
        #expect(header.path == Self.awkward && contents == [1, 2, 3])
    }

    @Test("Foundation's JSON decoder reads what the agent writes, and the agent reads Foundation's")
    func foundationCompatible() throws {
        let ours = try AgentFrame(.configure, json: Self.spec).payload
        #expect(try JSONDecoder().decode(SandboxSpec.self, from: Data(ours)) == Self.spec)
        let theirs = try JSONEncoder().encode(Self.result)
        #expect(try AgentFrame(.execResult, Array(theirs)).decode(ExecResult.self) == Self.result)
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        #expect(try AgentFrame(.exec, Array(try pretty.encode(Self.request))).decode(ExecRequest.self) == Self.request)
        // Escapes Foundation does not write but JSON allows, surrogate pairs included.
        let escaped = #"{"path":"\u0041\/\b\f\ud83e\udd80","limit":1.0E+3}"#
        let get = try AgentFrame(.getFile, Array(escaped.utf8)).decode(AgentFileGet.self)
        #expect(get.path == "A/\u{8}\u{c}🦀" && get.limit == 1000)
    }

    @Test("malformed or hostile JSON is refused with an error", arguments: [
        "", " ", "{", "}", "[1,]", "{\"code\":\"x\",}", "{\"code\":\"x\" \"message\":\"y\"}",
        "{\"code\":\"x\",\"code\":\"y\",\"message\":\"z\"}", "{\"code\":\"x\",\"message\":\"y\"} trailing",
        "{\"code\":\"\\ud800\",\"message\":\"y\"}", "{\"code\":\"\\udc00\",\"message\":\"y\"}",
        "{\"code\":\"\\x\",\"message\":\"y\"}", "{\"code\":\"\\u12\",\"message\":\"y\"}", "{\"code\":\"a\u{1}b\",\"message\":\"y\"}",
        "{\"code\":\"unterminated", "{\"code\":tru,\"message\":\"y\"}", "{\"code\":01,\"message\":\"y\"}",
        "{\"code\":1.,\"message\":\"y\"}", "{\"code\":-,\"message\":\"y\"}", "{\"code\":1e,\"message\":\"y\"}",
        "{\"code\":null,\"message\":\"y\"}", "{\"code\":1,\"message\":\"y\"}", "{\"message\":\"y\"}", "[\"x\",\"y\"]",
        String(repeating: "[", count: 200) + String(repeating: "]", count: 200),
    ])
    func refused(text: String) {
        #expect(throws: (any Error).self) { try AgentFrame(.error, Array(text.utf8)).decode(AgentFailure.self) }
    }

    @Test("numbers out of range for their field and bytes above 255 are refused")
    func numbersOutOfRange() throws {
        var json = String(decoding: try AgentFrame(.execResult, json: Self.result).payload, as: UTF8.self)
        #expect(json.contains("\"signal\":9"))
        for bad in ["\"signal\":99999999999", "\"signal\":9.5", "\"signal\":\"9\""] {
            let text = json.replacingOccurrences(of: "\"signal\":9", with: bad)
            #expect(throws: (any Error).self) { try AgentFrame(.execResult, Array(text.utf8)).decode(ExecResult.self) }
        }
        json = json.replacingOccurrences(of: "[0,1,2,", with: "[256,1,2,")
        #expect(throws: (any Error).self) { try AgentFrame(.execResult, Array(json.utf8)).decode(ExecResult.self) }
    }

    @Test("a value JSON cannot carry is an error, not invalid output")
    func nonFinite() {
        var request = Self.request
        request.timeout = .infinity
        #expect(throws: (any Error).self) { try AgentFrame(.exec, json: request) }
        request.timeout = .nan
        #expect(throws: (any Error).self) { try AgentFrame(.exec, json: request) }
    }
}
