import Foundation
import QEMUGuest
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

    @Test("a guest that floods frames nobody asked for loses its connection; the hello and one answer wait")
    func unaskedFramesAreBounded() async throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let connection = AgentConnection(fd: pair[0])
        func send(_ frame: AgentFrame) {
            let bytes = frame.encoded()
            _ = bytes.withUnsafeBytes { write(pair[1], $0.baseAddress, $0.count) }
        }
        // What a cold guest sends unasked: its hello, then the answer to its boot spec.
        send(try AgentFrame(.hello, json: AgentHello(kernelRelease: "test", controllers: [])))
        send(AgentFrame(.ok))
        try await Task.sleep(for: .milliseconds(100))
        #expect(connection.closed == nil)
        let kinds = NSLockedValue<[AgentFrame.Kind]>([])
        for _ in 0..<2 {
            try await connection.request(nil, timeout: 5) { frame in kinds.withLock { $0.append(frame.kind) }; return true }
        }
        #expect(kinds.withLock { $0 } == [.hello, .ok])
        // Then a flood of output frames that no exec asked for.
        for _ in 0..<(AgentConnection.pendingLimit + 1) { send(AgentFrame(.stdout, [UInt8](repeating: 65, count: 100))) }
        var reason: String?
        for _ in 0..<100 where reason == nil {
            try await Task.sleep(for: .milliseconds(20))
            reason = connection.closed
        }
        #expect(reason?.contains("no request asked for") == true, "\(reason ?? "still open")")
    }

    @Test("streamed output is kept up to the output limit per stream, and marked truncated beyond it")
    func streamedOutputIsBounded() {
        var stdout = CapturedOutput(limit: 10), stderr = CapturedOutput(limit: 10)
        #expect(Array(stdout.take(Array(0..<6))) == Array(0..<6))
        #expect(Array(stdout.take(Array(6..<16))) == Array(6..<10))
        #expect(stdout.take([1]).isEmpty)
        #expect(stderr.take(Array(0..<10)).count == 10)
        #expect(stdout.kept == Array(0..<10) && stdout.truncated)
        #expect(stderr.kept.count == 10 && !stderr.truncated)
    }

    @Test("a boot spec is appended to the initramfs as its own archive, in a file that is already unlinked")
    func bootSpecInitramfs() throws {
        let directory = NSTemporaryDirectory() + "bootspec-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var base = CPIOArchive()
        try base.addFile("init", contents: Array("#!/bin/sh\n".utf8), mode: 0o755)
        let baseBytes = base.finished()
        #expect(FileManager.default.createFile(atPath: directory + "/base.cpio", contents: Data(baseBytes)))
        let spec = Array(try JSONEncoder().encode(SandboxSpec(id: "boot-spec-test", environment: ["A": "1"])))
        let fd = try JailedQEMU.initramfs(directory + "/base.cpio", withBootSpec: spec, in: directory)
        defer { close(fd) }
        #expect(access(directory + "/initramfs.cpio", F_OK) != 0, "the file is unlinked")
        var info = stat()
        #expect(fstat(fd, &info) == 0 && info.st_mode & 0o777 == 0o644, "readable through /proc/self/fd by QEMU's uid")
        let size = Int(lseek(fd, 0, SEEK_END))
        var bytes = [UInt8](repeating: 0, count: size)
        #expect(pread(fd, &bytes, size, 0) == size)
        #expect(Array(bytes.prefix(baseBytes.count)) == baseBytes, "the image's archive comes first, unchanged")
        let appended = Array(bytes.dropFirst(baseBytes.count))
        let text = String(decoding: appended, as: UTF8.self)
        #expect(appended.starts(with: Array("070701".utf8)), "a newc archive follows")
        #expect(text.contains("boot-spec.json") && text.contains("boot-spec-test"))
    }

    @Test("a statically linked agent is told from a dynamic one by its program headers")
    func staticAgentDetected() throws {
        // busybox-static (the image's own init) has no PT_INTERP; dash names the dynamic loader.
        #expect(GuestImageBuilder.isStaticExecutable(path: GuestImageBuilder.busyboxPath))
        #expect(!GuestImageBuilder.isStaticExecutable(path: "/bin/sh"))
        let busybox = try #require(FileManager.default.contents(atPath: GuestImageBuilder.busyboxPath).map { [UInt8]($0) })
        #expect(GuestImageBuilder.isStaticExecutable(busybox))
        // Not ELF, cut short, or program headers pointing past the end: never taken for static
        // (the image builder then asks ldd, which reports the problem).
        #expect(!GuestImageBuilder.isStaticExecutable(Array("#!/bin/sh\necho hi\n".utf8)))
        #expect(!GuestImageBuilder.isStaticExecutable(Array(busybox.prefix(40))))
        var moved = busybox
        moved.replaceSubrange(0x20..<0x28, with: [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0])
        #expect(!GuestImageBuilder.isStaticExecutable(moved))
        #expect(!GuestImageBuilder.isStaticExecutable(path: "/nonexistent/agent"))
    }
}
