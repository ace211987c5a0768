import ArgumentParser
import ControlAPI

/// `sandboxctl inspect ID`.
struct SandboxInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show one sandbox.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Sandbox id.")
    var sandboxID: String

    func run() async throws {
        try await runReporting {
            let sandbox = try await global.client.call(SandboxDescription.self, .GET, "/v1/sandboxes/\(sandboxID)")
            if global.output == .json {
                try printJSON(sandbox)
            } else {
                printTable(["FIELD", "VALUE"], [
                    ["sandbox_id", sandbox.sandboxID], ["owner_uid", String(sandbox.ownerUID)], ["state", sandbox.state],
                    ["isolation_level", String(sandbox.isolationLevel)], ["policy", sandbox.policy],
                    ["agent_type", sandbox.agentType], ["session_id", sandbox.sessionID?.uuidString.lowercased() ?? "-"],
                    ["created_at", shortDate(sandbox.createdAt)], ["exec_count", String(sandbox.execCount)],
                    ["limits_enforced", String(sandbox.limitsEnforced)],
                ])
            }
            return 0
        }
    }
}
