import ArgumentParser
import ControlAPI

/// `sandboxctl ps`.
struct SandboxList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List the sandboxes you may see.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await runReporting {
            let list = try await global.client.call(ControlAPI.SandboxList.self, .GET, "/v1/sandboxes")
            if global.output == .json {
                try printJSON(list)
            } else {
                printTable(["SANDBOX ID", "OWNER", "LEVEL", "POLICY", "EXECS", "STATE", "CREATED"], list.sandboxes.map {
                    [$0.sandboxID, String($0.ownerUID), String($0.isolationLevel), $0.policy, String($0.execCount), $0.state,
                     shortDate($0.createdAt)]
                })
            }
            return 0
        }
    }
}
