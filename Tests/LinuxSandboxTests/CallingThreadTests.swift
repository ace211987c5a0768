import Foundation
import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs blocking work on a thread of its own, never on the cooperative pool.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

extension LinuxSandboxTests {
    /// The level-3 guest's way of using the engine: the seccomp program exported on the host and
    /// checked before use, and the engine's calls made on the caller's own thread.
    @Suite("exported seccomp program and calling-thread calls")
    struct CallingThreadTests {
        /// The program with its last instruction (a return) replaced by a load.
        static func withoutFinalReturn(_ program: [UInt8]) -> [UInt8] {
            var damaged = program
            damaged.replaceSubrange((program.count - 8)..<program.count, with: [0x20, 0, 0, 0, 0, 0, 0, 0])
            return damaged
        }

        @Test("the exported program is accepted; damaged or foreign ones are refused before any sandbox starts")
        func exportedProgramChecked() throws {
            let exported = try SeccompProgram.exportStandard()
            #expect(exported.count % 8 == 0 && exported.count / 8 > 100 && exported.count / 8 <= 4096)
            _ = try SeccompProgram(validating: exported)
            func refused(_ bytes: [UInt8], _ why: Comment) {
                let error = #expect(throws: LinuxSandboxError.self, why) { try SeccompProgram(validating: bytes) }
                #expect(error?.code == .seccomp, why)
            }
            refused([], "empty")
            refused(Array(exported.dropLast(3)), "not whole instructions")
            refused(exported + Array(repeating: 0, count: 8 * 4096), "over 4096 instructions")
            var prefix = exported
            prefix[4] ^= 0x01  // instruction 0's k: the architecture compared
            refused(prefix, "another ioctl prefix")
            refused(Self.withoutFinalReturn(exported), "no return at the end")
            // An unconditional jump (BPF_JMP|BPF_JA) far past the end, after the prefix.
            var jump = exported
            let at = 9 * 8
            jump.replaceSubrange(at..<(at + 8), with: [0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00])
            refused(jump, "a jump past the end")
        }

        @Test("an engine refuses to start with a damaged program, and leaves no cgroup or state directory")
        func engineRefusesDamagedProgram() throws {
            guard Host.canRunSandboxes else { return }
            let tag = "\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
            var configuration = LinuxSandboxConfiguration(
                cgroupRoot: Host.cgroupRoot!, cgroupSubtree: "sandboxd-test-\(tag)", stateDirectory: "/tmp/sandboxd-test-\(tag)",
                idBase: TestEngine.idRanges.next(), idCount: TestEngine.idRangeSize)
            configuration.seccompProgram = Self.withoutFinalReturn(try SeccompProgram.exportStandard())
            let error = #expect(throws: LinuxSandboxError.self) { try LinuxSandboxEngine(configuration: configuration) }
            #expect(error?.code == .seccomp)
            #expect(access(Host.cgroupRoot! + "/sandboxd-test-\(tag)", F_OK) != 0)
            #expect(access("/tmp/sandboxd-test-\(tag)", F_OK) != 0)
        }

        @Test("a sandbox built on the calling thread with the exported program is filtered and locked down, and leaves nothing")
        func callingThreadSandbox() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine(seccompProgram: try SeccompProgram.exportStandard())
            let engine = t.engine
            let outcome: Result<[String], LinuxSandboxError> = await onOwnThread {
                Result { () throws(LinuxSandboxError) -> [String] in
                    let sandbox = try engine.createOnCallingThread(TestEngine.spec())
                    defer { sandbox.destroyOnCallingThread() }
                    try sandbox.writeWorkspaceFileOnCallingThread("in.txt", contents: Array("hello".utf8))
                    let status = try sandbox.execOnCallingThread(ExecRequest(["/bin/sh", "-c",
                        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '; cat in.txt > out.txt; unshare -U true; echo unshare=$?"]))
                    let copied = try sandbox.readWorkspaceFileOnCallingThread("out.txt")
                    return [String(decoding: status.stdout, as: UTF8.self), String(decoding: status.stderr, as: UTF8.self),
                            String(decoding: copied, as: UTF8.self)]
                }
            }
            let lines = try outcome.get()
            #expect(lines[0] == "CapEff: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\nunshare=1\n", "\(lines)")
            #expect(lines[1].contains("Operation not permitted"), "\(lines[1])")
            #expect(lines[2] == "hello")
            #expect(await t.finish())
        }

        @Test("an exec on the calling thread answers before its tidy-up, which then removes the exec's cgroup, unless a background process still runs in it")
        func answerBeforeTidyUp() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let engine = t.engine
            struct Seen: Sendable { var answered: ExecResult?, returned: ExecResult?, cgroupLeftAfterReturn: Bool }
            let outcome: Result<[Seen], LinuxSandboxError> = await onOwnThread {
                Result { () throws(LinuxSandboxError) -> [Seen] in
                    let sandbox = try engine.createOnCallingThread(TestEngine.spec())
                    defer { sandbox.destroyOnCallingThread() }
                    var seen: [Seen] = []
                    for (number, script) in [(1, "echo out; echo err >&2; exit 7"), (2, "sleep 60 > /dev/null 2>&1 & echo started")] {
                        var answered: ExecResult?
                        let returned = try sandbox.execOnCallingThread(ExecRequest(["/bin/sh", "-c", script]), answer: { answered = $0 })
                        seen.append(Seen(answered: answered, returned: returned,
                                         cgroupLeftAfterReturn: access(sandbox.cgroupPath + "/exec-\(number)", F_OK) == 0))
                    }
                    return seen
                }
            }
            let seen = try outcome.get()
            #expect(seen.count == 2)
            // The answer is the result the call returns.
            #expect(seen[0].answered?.exitCode == 7 && seen[0].returned?.exitCode == 7)
            #expect(seen[0].answered.map { String(decoding: $0.stdout, as: UTF8.self) } == "out\n")
            #expect(seen[0].answered.map { String(decoding: $0.stderr, as: UTF8.self) } == "err\n")
            #expect(seen[0].answered?.signal == nil && seen[0].answered?.timedOut == false)
            // Nothing left running: the tidy-up removed the exec's cgroup.
            #expect(!seen[0].cgroupLeftAfterReturn)
            // A background process keeps its exec's cgroup until the sandbox is destroyed.
            #expect(seen[1].answered?.exitCode == 0 && seen[1].cgroupLeftAfterReturn)
            #expect(await t.finish())
        }
    }
}
