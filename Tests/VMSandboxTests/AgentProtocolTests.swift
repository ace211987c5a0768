import Foundation
import SandboxCore
import Testing
import VMAgentProtocol
@testable import VMSandbox

@Suite("VMAgentProtocol framing and image layout (no QEMU)")
struct AgentProtocolTests {
    @Test("frames survive being split at every byte boundary")
    func framesRoundTrip() throws {
        let request = ExecRequest(["sh", "-c", "echo hi"], environment: ["A": "1"], stdin: [0, 1, 2, 255], timeout: 5)
        let frames = [try AgentFrame(.exec, json: request), AgentFrame(.stdout, Array("out".utf8)), AgentFrame(.shutdown)]
        let wire = frames.flatMap { $0.encoded() }
        for split in 0...wire.count {
            var decoder = AgentFrameDecoder()
            var decoded: [AgentFrame] = []
            decoder.append(wire[..<split])
            while let frame = try decoder.next() { decoded.append(frame) }
            decoder.append(wire[split...])
            while let frame = try decoder.next() { decoded.append(frame) }
            #expect(decoded == frames, "split at \(split)")
        }
        #expect(try frames[0].decode(ExecRequest.self) == request)
    }

    @Test("unknown kinds, empty and oversized frames are refused")
    func malformedFramesRefused() {
        for bytes: [UInt8] in [[0, 0, 0, 2, 99, 0], [0, 0, 0, 0], [0x7f, 0xff, 0xff, 0xff, 3]] {
            var decoder = AgentFrameDecoder()
            decoder.append(bytes)
            #expect(throws: AgentProtocolError.self, "\(bytes)") { _ = try decoder.next() }
        }
    }

    @Test("putFile carries its header and the file's bytes; a lying header length is refused")
    func putFileFraming() throws {
        let contents: [UInt8] = Array(0...255)
        let frame = try AgentFilePut(path: "dir/file.bin").frame(contents: contents)
        let (header, body) = try AgentFilePut.parse(frame.payload)
        #expect(header.path == "dir/file.bin")
        #expect(body == contents)
        #expect(throws: (any Error).self) { _ = try AgentFilePut.parse([0, 0, 1, 0, 1, 2]) }
    }

    @Test("the guest root shares only top-level runtime directories, never /")
    func runtimeLayoutNeverSharesRoot() throws {
        let builder = GuestImageBuilder(cacheDirectory: "/nonexistent", agentBinary: "/nonexistent", runtimePaths: ["/"])
        #expect(throws: VMSandboxError.self) { _ = try builder.runtimeLayout() }
        let (shares, links) = try GuestImageBuilder(cacheDirectory: "/nonexistent", agentBinary: "/nonexistent").runtimeLayout()
        #expect(shares.contains { $0.path == "/usr" })
        for share in shares { #expect(["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"].contains(share.path), "\(share)") }
        for (path, _) in links { #expect(!shares.contains { $0.path == path }) }
    }

    @Test("pooled sandboxes stand in only for specs that differ in id alone")
    func poolSpecMatching() {
        let pool = VMSandboxEngine.poolSpec(ResourceLimits())
        #expect(pool.matches(SandboxSpec(id: "a")))
        #expect(!pool.matches(SandboxSpec(id: "b", limits: ResourceLimits(memory: .mebibytes(128)))))
        #expect(!pool.matches(SandboxSpec(id: "c", environment: ["SECRET": "x"])))
        #expect(!pool.matches(SandboxSpec(id: "d", hostname: "other")))
    }

    @Test("the console log never grows beyond its limit and keeps the newest output")
    func consoleLogIsBounded() async throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let path = NSTemporaryDirectory() + "console-bound-\(getpid()).log"
        defer { unlink(path) }
        let console = ConsoleLog(fd: pair[0], path: path, limit: 4096)
        var maximum = 0
        for line in 0..<3000 {
            let text = Array("console line \(line)\n".utf8)
            _ = text.withUnsafeBytes { write(pair[1], $0.baseAddress, $0.count) }
            if line % 500 == 0 {
                try await Task.sleep(for: .milliseconds(20))
                maximum = max(maximum, (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
            }
        }
        close(pair[1])
        var tail = ""
        for _ in 0..<200 where !tail.hasSuffix("console line 2999\n") {
            try await Task.sleep(for: .milliseconds(20))
            tail = console.tail(maxBytes: 100)
        }
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
        #expect(size <= 4096 && maximum <= 4096, "size \(size), largest seen \(maximum)")
        #expect(tail.hasSuffix("console line 2999\n"), "\(tail)")
    }
}
