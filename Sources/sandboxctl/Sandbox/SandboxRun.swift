import ArgumentParser
import ControlAPI

/// `sandboxctl run -- COMMAND`: one-shot sandbox; exits with the command's status.
struct SandboxRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run one command in a fresh sandbox, then destroy it.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var spec: SpecOptions
    @OptionGroup var exec: ExecOptions

    func run() async throws {
        try await runReporting {
            let request = RunRequest(payload: try exec.payload(), sandbox: SandboxCreateRequest(
                policy: spec.policy, isolationLevel: spec.level, agentType: spec.agentType, sessionID: try spec.sessionID()))
            return try await performExec(global.client, path: "/v1/run", body: request, timeout: exec.timeout, format: global.output)
        }
    }
}
