import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    @Suite("one-shot runs")
    struct OneShotTests {
        @Test("echo hi prints hi and exits 0")
        func echo() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let result = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/echo", "hi"]))
            #expect(result.out == "hi\n")
            #expect(result.exitCode == 0)
            #expect(result.signal == nil)
            #expect(!result.timedOut)
            #expect(result.limitsEnforced)
            #expect(await t.finish())
        }

        @Test("a command is found through PATH")
        func pathLookup() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let result = try await t.engine.run(TestEngine.spec(), ExecRequest(["echo", "via", "path"]))
            #expect(result.out == "via path\n")
            #expect(await t.finish())
        }

        @Test("the exit code is reported", arguments: [0, 1, 7, 255])
        func exitCode(code: Int32) async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let result = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "exit \(code)"]))
            #expect(result.exitCode == code)
            #expect(result.signal == nil)
            #expect(await t.finish())
        }

        @Test("a terminating signal is reported instead of an exit code")
        func signal() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let result = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "kill -TERM $$; sleep 5"]))
            #expect(result.exitCode == nil)
            #expect(result.signal == SIGTERM)
            #expect(result.status == .killed)
            #expect(await t.finish())
        }

        @Test("stdin bytes are delivered and then closed")
        func stdin() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let input = Array("line one\nline two\n".utf8)
            let result = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/cat"], stdin: input))
            #expect(result.stdout == input)
            #expect(result.exitCode == 0)
            #expect(await t.finish())
        }

        @Test("large stdin is fed while output is drained (no deadlock)")
        func largeStdin() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let input = [UInt8](repeating: 0x61, count: 3 << 20)
            var spec = TestEngine.spec()
            spec.limits.outputLimit = .mebibytes(4)
            let result = try await t.engine.run(spec, ExecRequest(["/bin/cat"], stdin: input))
            #expect(result.stdout.count == input.count)
            #expect(!result.stdoutTruncated)
            #expect(await t.finish())
        }

        @Test("stdout and stderr are captured separately")
        func stderr() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let result = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "echo out; echo err >&2"]))
            #expect(result.out == "out\n")
            #expect(result.err == "err\n")
            #expect(await t.finish())
        }

        @Test("output beyond the cap is dropped and flagged; the command is not blocked")
        func outputCap() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            var spec = TestEngine.spec()
            spec.limits.outputLimit = .kibibytes(1)
            let result = try await t.engine.run(spec, ExecRequest(["/bin/sh", "-c", "head -c 20000000 /dev/zero; head -c 10 /dev/zero >&2; echo done >&2"]))
            #expect(result.stdout.count == 1024)
            #expect(result.stdoutTruncated)
            #expect(!result.stderrTruncated)
            #expect(result.stderr.count == 15)
            #expect(result.exitCode == 0)
            #expect(await t.finish())
        }

        @Test("streamed chunks add up to the captured output")
        func streaming() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            final class Collector: @unchecked Sendable {
                let lock = NSLockLike()
                var out: [UInt8] = []
                var err: [UInt8] = []
            }
            let collector = Collector()
            let result = try await t.engine.run(
                TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "for i in 1 2 3; do echo o$i; echo e$i >&2; done"])
            ) { chunk in
                collector.lock.locked {
                    if chunk.stream == .stdout { collector.out += chunk.bytes } else { collector.err += chunk.bytes }
                }
            }
            collector.lock.locked {
                #expect(collector.out == result.stdout)
                #expect(collector.err == result.stderr)
            }
            #expect(result.out == "o1\no2\no3\n")
            #expect(await t.finish())
        }

        @Test("a one-shot timeout kills detached descendants too and reports timedOut")
        func timeout() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let script = "setsid sh -c 'sleep 1011 & sleep 1012 &' ; echo detached; exec sleep 1013"
            // 3 s: slow machines (the TCG guest) need a while to start the detached shells.
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", script], timeout: 3))
            #expect(r.timedOut)
            #expect(r.status == .timeout)
            #expect(r.out == "detached\n")
            #expect(r.wallTime >= 3 && r.wallTime < 8)
            #expect(t.engine.listCgroups().isEmpty)
            #expect(processesInIDRange(t.engine.configuration).isEmpty)
            #expect(await t.finish())
        }

        @Test("a bad working directory is a typed chdir error naming it")
        func badWorkingDirectory() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/true"], workingDirectory: "/nonexistent"))
            }
            #expect(error?.step == "chdir")
            #expect(error?.path == "/nonexistent")
            #expect(error?.message == "chdir /nonexistent: ENOENT (No such file or directory)")
            #expect(await t.finish())
        }

        @Test("a missing command is a typed exec error naming it")
        func missingCommand() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(TestEngine.spec(), ExecRequest(["no-such-command-xyz"]))
            }
            #expect(error?.code == .childSetup)
            #expect(error?.step == "exec")
            #expect(error?.path == "no-such-command-xyz")
            #expect(error?.message.contains("ENOENT") == true)
            #expect(await t.finish())
        }

        @Test("a mount the sandbox may not read fails in the child with step and path named")
        func childSetupFailure() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            // Readable only by host root: the child binds it as the sandbox's unprivileged uid.
            let secret = t.stateDirectory + "/secret"
            #expect(mkdir(secret, 0o700) == 0)
            #expect(mkdir(secret + "/data", 0o755) == 0)
            defer { rmdir(secret + "/data"); rmdir(secret) }
            let spec = TestEngine.spec(mounts: [MountSpec(hostPath: secret + "/data", sandboxPath: "/data")])
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(spec, ExecRequest(["/bin/true"]))
            }
            #expect(error?.code == .childSetup)
            #expect(error?.step == "mount")
            #expect(error?.path == "/data")
            #expect(error?.errno == EACCES)
            #expect(error?.message.hasPrefix("mount /data") == true)
            rmdir(secret + "/data"); rmdir(secret)
            #expect(await t.finish())
        }

        @Test("a missing mount source is refused before anything starts")
        func missingMountSource() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let spec = TestEngine.spec(mounts: [MountSpec(hostPath: "/nonexistent/sandboxd-test", sandboxPath: "/data")])
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(spec, ExecRequest(["/bin/true"]))
            }
            #expect(error?.code == .invalidRequest)
            #expect(error?.message.contains("/nonexistent/sandboxd-test") == true)
            #expect(await t.finish())
        }

        @Test("invalid ids and paths are refused with the offending value named", arguments: ["../x", "", "a b", "init"])
        func invalidID(id: String) async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.create(SandboxSpec(id: id, limits: .unlimited))
            }
            #expect(error?.code == .invalidRequest)
            #expect(await t.finish())
        }

        @Test("an extra read-only mount is visible and not writable")
        func extraMount() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            // World-readable, outside the daemon's (private) state directory.
            let dir = "/tmp/sandboxd-shared-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
            #expect(mkdir(dir, 0o755) == 0)
            chmod(dir, 0o755)
            let fd = open(dir + "/hello.txt", O_WRONLY | O_CREAT, 0o644)
            _ = write(fd, "shared\n", 7)
            close(fd)
            defer { unlink(dir + "/hello.txt"); rmdir(dir) }
            let spec = TestEngine.spec(mounts: [MountSpec(hostPath: dir, sandboxPath: "/data", readOnly: true)])
            let result = try await t.engine.run(spec, ExecRequest(["/bin/sh", "-c", "cat /data/hello.txt; echo x > /data/new 2>/dev/null && echo wrote"]))
            #expect(result.out == "shared\n")
            #expect(access(dir + "/new", F_OK) != 0)
            unlink(dir + "/hello.txt"); rmdir(dir)
            #expect(await t.finish())
        }
    }
}

/// A tiny lock for test collectors (no Foundation).
final class NSLockLike: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
