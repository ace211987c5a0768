import ArgumentParser
import ControlAPI

/// `sandboxctl rm ID...`.
struct SandboxRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Destroy sandboxes.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Sandbox ids.")
    var sandboxIDs: [String]

    func run() async throws {
        try await runReporting {
            var failed = false
            for id in sandboxIDs {
                do {
                    let response = try await global.client.send(.DELETE, "/v1/sandboxes/\(id)")
                    let body = try await global.client.collect(response)
                    try DaemonClient.checkStatus(response, body)
                    if global.output == .text { print(id) }
                } catch let error as DaemonError {
                    printError("\(id): \(error.description)")
                    failed = true
                }
            }
            return failed ? 1 : 0
        }
    }
}
