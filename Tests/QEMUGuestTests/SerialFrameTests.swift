import Testing
@testable import QEMUGuest

struct SerialFrameTests {
    let frame = SerialFrame(nonce: "0123456789abcdef0123456789abcdef")

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("output and exit status are read between this run's markers")
    func finished() {
        let port = "kernel noise\n\(frame.beginMarker)\nhello\nworld\n\(frame.endMarkerPrefix)42@@\n"
        #expect(frame.progress(in: bytes(port)) == .finished(output: bytes("hello\nworld"), exitCode: 42))
    }

    @Test("markers with another nonce are output, not a frame")
    func otherNonce() {
        let other = SerialFrame(nonce: "ffffffffffffffffffffffffffffffff")
        let port = "\(frame.beginMarker)\n\(other.endMarkerPrefix)0@@\nmore\n\(frame.endMarkerPrefix)7@@\n"
        #expect(frame.progress(in: bytes(port)) == .finished(output: bytes("\(other.endMarkerPrefix)0@@\nmore"), exitCode: 7))
        #expect(other.progress(in: bytes(port)) == .notStarted)
    }

    @Test("an end line still arriving means the command is still running")
    func partialEnd() {
        #expect(frame.progress(in: bytes("\(frame.beginMarker)\nx\n\(frame.endMarkerPrefix)1")) == .running(output: bytes("x")))
        #expect(frame.progress(in: bytes("\(frame.beginMarker)\npartial")) == .running(output: bytes("partial")))
        #expect(frame.progress(in: bytes("booting...")) == .notStarted)
    }

    @Test("empty output is framed as empty")
    func emptyOutput() {
        #expect(frame.progress(in: bytes("\(frame.beginMarker)\n\n\(frame.endMarkerPrefix)0@@\n")) == .finished(output: [], exitCode: 0))
    }

    @Test("random frames get distinct 32-digit nonces")
    func randomNonces() {
        let a = SerialFrame.random(), b = SerialFrame.random()
        #expect(a.nonce.count == 32 && a.nonce.allSatisfy(\.isHexDigit))
        #expect(a != b)
    }

    @Test("shell quoting keeps every byte of a word", arguments: ["plain", "it's", "'", "", "a b\n$x `y` \\ \""])
    func quoting(word: String) async throws {
        let output = try HostTool.run(["/bin/sh", "-c", "printf %s " + SerialFrame.shellQuoted(word)], package: "dash")
        #expect(output.standardOutput == word)
    }

    @Test("the frame script a shell runs is read back by the parser")
    func shellRoundTrip() throws {
        let port = "/tmp/serial-frame-test-\(frame.nonce)"
        defer { unlink(port) }
        let script = frame.shellScript(running: "echo one; echo two >&2; exit 5", to: port)
        try HostTool.run(["/bin/sh", "-c", script], package: "dash")
        let written = try #require(FileManagerShim.contents(port))
        #expect(frame.progress(in: written) == .finished(output: bytes("one\ntwo\n"), exitCode: 5))
    }
}

import Foundation
enum FileManagerShim {
    static func contents(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }
}

struct ConsoleTailTests {
    func outcome(console: String) -> FramedBoot.Outcome {
        FramedBoot.Outcome(ending: .guestEnded(.exited(0)), output: [], bootSeconds: nil, commandSeconds: nil,
                           totalSeconds: 1, console: console, qemuLog: "")
    }

    @Test("the console tail keeps the kernel's panic line even when a long trace follows it")
    func panicLineSurvivesLongTrace() {
        let trace = (1...100).map { "trace line \($0)" }
        let console = (["boot", "Kernel panic - not syncing: sysrq triggered crash"] + trace).joined(separator: "\n")
        let tail = outcome(console: console).consoleTail(lines: 40)
        let lines = tail.split(separator: "\n").map(String.init)
        #expect(lines.first == "Kernel panic - not syncing: sysrq triggered crash")
        #expect(lines.contains("…"))
        #expect(lines.last == "trace line 100")
        #expect(!lines.contains("boot"))
        #expect(lines.count == 40 + 1 + 40)
    }

    @Test("without a panic the console tail is just the last lines; a panic near the end is kept whole")
    func plainTail() {
        let plain = (1...100).map { "line \($0)" }.joined(separator: "\n")
        #expect(outcome(console: plain).consoleTail(lines: 3) == "line 98\nline 99\nline 100")
        let near = (["early"] + (1...10).map { "x\($0)" } + ["Kernel panic - not syncing: oops", "a", "b", "c", "d"]).joined(separator: "\n")
        #expect(outcome(console: near).consoleTail(lines: 3) == "Kernel panic - not syncing: oops\na\nb\nc\nd")
    }
}
