import LinuxSandbox
import SandboxCore
import Synchronization
import Testing

extension LinuxSandboxTests {
    @Suite("one-shot runs answered at the command's end")
    struct AnswerAtEndTests {
        /// Counts `tornDown` calls (made on the engine's thread).
        final class TornDown: Sendable {
            private let calls = Mutex(0)
            func call() { calls.withLock { $0 += 1 } }
            var count: Int { calls.withLock { $0 } }

            /// Waits until at least one call arrived (the teardown goes on after the answer).
            func waitForFirst(seconds: Double = 10) async -> Bool {
                let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
                while count == 0, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
                return count > 0
            }
        }

        @Test("the result comes with the command's end; tornDown is called once, and then no cgroup is left")
        func answeredThenTornDown() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tornDown = TornDown()
            let result = try await t.engine.runAnsweringAtEnd(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "echo hi; exit 3"]),
                                                              tornDown: { tornDown.call() })
            #expect(result.out == "hi\n")
            #expect(result.exitCode == 3)
            #expect(await tornDown.waitForFirst())
            try await Task.sleep(for: .milliseconds(100))
            #expect(tornDown.count == 1)
            #expect(t.engine.listCgroups().isEmpty)
            #expect(await t.finish())
        }

        @Test("a command that times out is answered once it is killed; tornDown is still called once")
        func timeout() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tornDown = TornDown()
            let result = try await t.engine.runAnsweringAtEnd(TestEngine.spec(), ExecRequest(["/bin/sleep", "30"], timeout: 0.5),
                                                              tornDown: { tornDown.call() })
            #expect(result.status == .timeout)
            #expect(await tornDown.waitForFirst())
            try await Task.sleep(for: .milliseconds(100))
            #expect(tornDown.count == 1)
            #expect(await t.finish())
        }

        @Test("a request refused before anything starts throws and calls tornDown once, at once")
        func refused() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tornDown = TornDown()
            var spec = TestEngine.spec()
            spec.id = "not a valid id!"
            await #expect(throws: LinuxSandboxError.self) {
                try await t.engine.runAnsweringAtEnd(spec, ExecRequest(["/bin/true"]), tornDown: { tornDown.call() })
            }
            #expect(tornDown.count == 1)
            #expect(await t.finish())
        }
    }
}
