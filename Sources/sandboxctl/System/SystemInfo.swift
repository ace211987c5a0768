import ArgumentParser
import ControlAPI

/// `sandboxctl info`.
struct SystemInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show what sandboxd can do on this host.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await runReporting {
            let info = try await global.client.call(InfoResponse.self, .GET, "/v1/info")
            if global.output == .json {
                try printJSON(info)
                return 0
            }
            print("sandboxd \(info.version)")
            print("caller: uid \(info.caller.uid)\(info.caller.admin ? " (admin)" : "")")
            print("database: \(info.database.state)\(info.database.detail.map { " (\($0))" } ?? "")")
            print("sandboxes: \(info.sandboxes) of \(info.limits.maxSandboxes) (per uid \(info.limits.maxSandboxesPerUID))")
            print("limits: \(info.limits.limitEnforcement), timeout default \(info.limits.defaultTimeout) s, max \(info.limits.maxTimeout) s")
            print("isolation levels:")
            for level in info.levels {
                print("  \(level.level): \(level.available ? "available" : "unavailable — \(level.reason ?? "")")")
                if let detail = level.detail { print("     \(detail)") }
            }
            print("languages:")
            for language in info.languages {
                print("  \(language.language) (\(language.runtime)): \(language.available ? "available" : "not installed")")
            }
            return 0
        }
    }
}
