import LinuxSandbox
import SandboxCore
import Testing

@Suite("one-shot runs", .serialized)
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
        #expect(await t.finish())
    }
}
