import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    @Suite("persistent sandboxes")
    struct PersistentSandboxTests {
        @Test("a file written by one exec is there for the next")
        func workspacePersists() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            let first = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "echo kept > notes.txt; echo tmp > /tmp/t; pwd"]))
            #expect(first.out == "/workspace\n")
            let second = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "cat /workspace/notes.txt /tmp/t"]))
            #expect(second.out == "kept\ntmp\n")
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("every exec sees the same init as PID 1 and its own pid namespace")
        func sharedInit() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            for _ in 0..<2 {
                let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"]))
                let lines = r.out.split(separator: "\n")
                #expect(lines.first == "sandboxd-init infinity ")
                #expect((Int(lines.last ?? "") ?? 0) > 1)
            }
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("the daemon reads and writes workspace files, confined to the workspace")
        func workspaceFiles() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            try await sandbox.writeWorkspaceFile("input.txt", contents: Array("from the daemon\n".utf8))
            let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "cat input.txt; echo appended >> input.txt; echo made > out.txt; ln -s /etc/passwd link; ln -s ../../../../etc/hostname up"]))
            #expect(r.out == "from the daemon\n")
            #expect(r.exitCode == 0)
            #expect(try await sandbox.readWorkspaceFile("input.txt") == Array("from the daemon\nappended\n".utf8))
            #expect(try await sandbox.readWorkspaceFile("/out.txt") == Array("made\n".utf8))
            // Escapes resolve inside the workspace and find nothing there.
            for path in ["../../../../etc/passwd", "link", "/proc/self/root/etc/passwd", "up"] {
                await #expect(throws: LinuxSandboxError.self) { _ = try await sandbox.readWorkspaceFile(path) }
            }
            await sandbox.destroy()
            await #expect(throws: LinuxSandboxError.self) { _ = try await sandbox.readWorkspaceFile("input.txt") }
            await #expect(throws: LinuxSandboxError.self) { _ = try await sandbox.exec(ExecRequest(["/bin/true"])) }
            #expect(await t.finish())
        }

        @Test("environment and working directory of an exec are applied; PATH and HOME are fixed")
        func environmentAndDirectory() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            var spec = TestEngine.spec()
            spec.environment = ["FROM_SPEC": "spec", "SHARED": "spec"]
            let sandbox = try await t.engine.create(spec)
            let r = try await sandbox.exec(ExecRequest(
                ["/bin/sh", "-c", "pwd; echo $FROM_SPEC $SHARED $FROM_REQUEST; echo $HOME; echo $PATH; env | wc -l"],
                environment: ["SHARED": "request", "FROM_REQUEST": "req"], workingDirectory: "/tmp"))
            #expect(r.out == "/tmp\nspec request req\n/workspace\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n6\n", "\(r.out)")
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("an exec into a sandbox whose init is gone fails as sandbox_gone")
        func initGone() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            #expect(kill(sandbox.initPID, SIGKILL) == 0)
            usleep(100_000)
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await sandbox.exec(ExecRequest(["/bin/true"]))
            }
            #expect(error?.code == .sandboxGone, "\(error?.message ?? "")")
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("concurrent execs in one sandbox each get their own output")
        func concurrentExecs() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            let outputs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for i in 0..<6 {
                    group.addTask { (i, try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "sleep 0.1; echo \(i)"])).out) }
                }
                var all: [Int: String] = [:]
                for try await (i, out) in group { all[i] = out }
                return all
            }
            for i in 0..<6 { #expect(outputs[i] == "\(i)\n") }
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("a timeout kills a setsid + double-forked sleeper and reports timedOut; the sandbox lives on")
        func timeoutKillsEverything() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            let script = "setsid sh -c 'sleep 1001 & sleep 1002 & echo started' ; sleep 1003"
            let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", script], timeout: 3))
            #expect(r.timedOut)
            #expect(r.status == .timeout)
            #expect(r.signal == SIGKILL)
            #expect(r.out == "started\n")
            #expect(r.wallTime >= 3 && r.wallTime < 8)
            // Nothing of that exec survives: only the init is left in the sandbox.
            let left = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]))
            #expect(left.out.contains("sandboxd-init"))
            #expect(!left.out.contains("100"), "\(left.out)")
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("background processes of an exec keep running until destroy, which kills them")
        func backgroundUntilDestroy() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let fdsBefore = engineDescriptors(of: t)
            var sandbox: LinuxSandbox? = try await t.engine.create(TestEngine.spec())
            let start = try await sandbox!.exec(ExecRequest(["/bin/sh", "-c", "sleep 1004 > /dev/null 2>&1 & echo bg"]))
            #expect(start.out == "bg\n")
            let check = try await sandbox!.exec(ExecRequest(["/bin/sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]))
            #expect(check.out.contains("sleep 1004"))
            let cgroup = sandbox!.cgroupPath
            let initPID = sandbox!.initPID
            await sandbox!.destroy()
            sandbox = nil
            #expect(access(cgroup, F_OK) != 0)
            #expect(kill(initPID, 0) != 0)
            #expect(await engineDescriptorsSettle(t, since: fdsBefore))
            #expect(await t.finish())
        }
    }
}
