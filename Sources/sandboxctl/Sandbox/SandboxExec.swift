import ArgumentParser
import ControlAPI

/// `sandboxctl exec ID -- COMMAND`: exits with the command's status.
struct SandboxExec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exec", abstract: "Run a command in an existing sandbox.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Sandbox id.")
    var sandboxID: String

    @OptionGroup var exec: ExecOptions

    func run() async throws {
        try await runReporting {
            let request = SandboxExecRequest(payload: try exec.payload())
            return try await performExec(global.client, path: "/v1/sandboxes/\(sandboxID)/exec", body: request,
                                         timeout: exec.timeout, format: global.output)
        }
    }
}
