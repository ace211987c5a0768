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

    @Test("the guest's own readers of a spec and an exec request read exactly what Codable reads")
    func requestReadersMatchCodable() throws {
        let specs = [
            Self.spec, SandboxSpec(id: "defaults"),
            SandboxSpec(id: "x", hostname: "h", limits: ResourceLimits(memory: .gibibytes(3), cpu: nil, pids: nil), enforcement: .strict,
                        environment: [:], mounts: [MountSpec(hostPath: "/a"), MountSpec(hostPath: Self.awkward, sandboxPath: "/b")],
                        maskedPaths: [], workspacePath: "/tmp"),
        ]
        for spec in specs {
            let frame = try AgentFrame(.configure, json: spec)
            #expect(try frame.decodeSandboxSpec() == spec)
            #expect(try frame.decodeSandboxSpec() == frame.decode(SandboxSpec.self))
            // Foundation's output (other key order, escaped slashes) reads the same.
            #expect(try AgentFrame(.configure, Array(JSONEncoder().encode(spec))).decodeSandboxSpec() == spec)
        }
        for request in [Self.request, ExecRequest(["true"]), ExecRequest(["a"], environment: ["K": Self.awkward], workingDirectory: "/w")] {
            let frame = try AgentFrame(.exec, json: request)
            #expect(try frame.decodeExecRequest() == request)
            #expect(try frame.decodeExecRequest() == frame.decode(ExecRequest.self))
        }
        // What Codable also accepts: null or absent optionals, sizes as text, exact integers as
        // 1e3, unknown keys.
        let text = #"{"id":"t","hostname":null,"limits":{"memory":"512MiB","pids":1e3,"executionTimeout":5,"outputLimit":1024,"#
            + #""tmpfsSize":"1GiB","openFiles":64.0},"enforcement":"best-effort","environment":{},"mounts":[],"maskedPaths":[],"#
            + #""workspacePath":"/w","network":"loopback-only","extra":[1,{"a":null}]}"#
        let frame = AgentFrame(.configure, Array(text.utf8))
        let read = try frame.decodeSandboxSpec()
        #expect(read == (try frame.decode(SandboxSpec.self)))
        #expect(read.limits.memory == .mebibytes(512) && read.limits.cpu == nil && read.limits.pids == 1000
                && read.limits.tmpfsSize == .gibibytes(1) && read.limits.openFiles == 64 && read.hostname == nil)
    }

    @Test("the guest's readers refuse what Codable refuses, naming the field", arguments: [
        (#""id":"s","#, #""id":7,"#, "spec.id"),
        (#""enforcement":"strict""#, #""enforcement":"lenient""#, "spec.enforcement"),
        (#""network":"loopback-only""#, #""network":"host""#, "spec.network"),
        (#""openFiles":1024"#, #""openFiles":1024.5"#, "spec.limits.openFiles"),
        (#""openFiles":1024"#, #""openFiles":99999999999999999999"#, "spec.limits.openFiles"),
        (#""memory":536870912"#, #""memory":"lots""#, "spec.limits.memory"),
        (#""memory":536870912"#, #""memory":-1"#, "spec.limits.memory"),
        (#""workspacePath":"/workspace","#, "", "workspacePath"),
        (#""maskedPaths":[]"#, #""maskedPaths":[1]"#, "spec.maskedPaths[0]"),
        (#""environment":{}"#, #""environment":{"A":1}"#, "spec.environment.A"),
    ])
    func requestReadersRefuse(valid: String, invalid: String, named: String) throws {
        let good = String(decoding: try AgentFrame(.configure, json: SandboxSpec(id: "s")).payload, as: UTF8.self)
        #expect(good.contains(valid))
        let bad = AgentFrame(.configure, Array(good.replacingOccurrences(of: valid, with: invalid).utf8))
        #expect(throws: (any Error).self) { try bad.decode(SandboxSpec.self) }
        let error = #expect(throws: AgentProtocolError.self) { try bad.decodeSandboxSpec() }
        #expect(error?.description.contains(named) == true, "\(String(describing: error))")
        let request = AgentFrame(.exec, Array(#"{"arguments":["a"],"environment":{},"stdin":[256]}"#.utf8))
        #expect(throws: AgentProtocolError.self) { try request.decodeExecRequest() }
    }
}
