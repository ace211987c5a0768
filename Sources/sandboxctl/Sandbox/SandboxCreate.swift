import ArgumentParser
import ControlAPI

/// `sandboxctl create`: a persistent sandbox; prints its id.
struct SandboxCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a persistent sandbox and print its id.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var spec: SpecOptions

    @Option(name: [.customShort("e"), .long], help: "Environment every exec starts with (NAME=VALUE); repeatable.")
    var env: [String] = []

    @Option(name: .long, help: "Default wall-clock limit of each exec, in seconds.")
    var timeout: Double?

    func run() async throws {
        try await runReporting {
            var environment: [String: String]?
            for item in env {
                guard let equals = item.firstIndex(of: "="), equals != item.startIndex else {
                    throw ValidationError("--env takes NAME=VALUE, got \"\(item)\"")
                }
                environment = environment ?? [:]
                environment![String(item[..<equals])] = String(item[item.index(after: equals)...])
            }
            let request = SandboxCreateRequest(env: environment, policy: spec.policy, isolationLevel: spec.level,
                                               agentType: spec.agentType, sessionID: try spec.sessionID(), timeout: timeout)
            let sandbox = try await global.client.call(SandboxDescription.self, .POST, "/v1/sandboxes", json: request)
            if global.output == .json { try printJSON(sandbox) } else { print(sandbox.sandboxID) }
            return 0
        }
    }
}
