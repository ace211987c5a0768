import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    @Suite("language runtimes run under the filter")
    struct RuntimeTests {
        @Test("python3 runs a script, with threads and subprocesses")
        func python() async throws {
            guard Host.canRunSandboxes else { return }
            guard access("/usr/bin/python3", X_OK) == 0 else { print("skipping: no /usr/bin/python3"); return }
            let t = try TestEngine()
            let script = """
            import threading, subprocess, os
            t = threading.Thread(target=lambda: print('thread'))
            t.start(); t.join()
            print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())
            print(os.getuid(), os.getcwd())
            """
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["python3", "-c", script]))
            #expect(r.out == "thread\nchild\n0 /workspace\n", "\(r.err)")
            #expect(await t.finish())
        }

        @Test("java runs a single-file program")
        func java() async throws {
            guard Host.canRunSandboxes else { return }
            guard access("/usr/bin/java", X_OK) == 0 else { print("skipping: no /usr/bin/java"); return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            try await sandbox.writeWorkspaceFile("Hello.java", contents: Array("""
                public class Hello { public static void main(String[] a) { System.out.println("hello from java"); } }
                """.utf8))
            let r = try await sandbox.exec(ExecRequest(["java", "Hello.java"], timeout: 60))
            #expect(r.out == "hello from java\n", "\(r.err)")
            #expect(r.exitCode == 0)
            await sandbox.destroy()
            #expect(await t.finish())
        }
    }
}
