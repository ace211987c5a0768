import SandboxCore
import ArgumentParser
import ControlAPI

/// `sandboxctl history`: recorded executions, newest first.
struct ExecutionHistory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "Show recorded executions, newest first.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Only this sandbox's executions.")
    var sandbox: String?

    @Option(name: .long, help: "Only this session's executions.")
    var session: String?

    @Option(name: .long, help: "At most this many (1-1000).")
    var limit: Int = 20

    @Argument(help: "Show one execution in full.")
    var executionID: String?

    func run() async throws {
        try await runReporting {
            if let executionID {
                let record = try await global.client.call(ExecutionRecordView.self, .GET, "/v1/executions/\(executionID)")
                try printJSON(record)
                return 0
            }
            var query: [(String, String)] = [("limit", String(limit))]
            if let sandbox { query.append(("sandbox_id", sandbox)) }
            if let session { query.append(("session_id", session)) }
            let list = try await global.client.call(ExecutionList.self, .GET, "/v1/executions", query: query)
            if global.output == .json {
                try printJSON(list)
            } else {
                printTable(["EXECUTION ID", "SANDBOX", "STATUS", "EXIT", "TIME", "CREATED", "COMMAND"], list.executions.map { record in
                    [record.executionID.uuidString.lowercased(), record.sandboxID ?? "-", record.status,
                     record.exitCode.map(String.init) ?? (record.signal.map { "sig\($0)" } ?? "-"),
                     record.executionTime.map { String(format3($0)) + "s" } ?? "-",
                     shortDate(record.createdAt ?? record.startedAt), summary(record.input)]
                })
            }
            return 0
        }
    }

    private func summary(_ input: JSONValue?) -> String {
        if case .array(let parts)? = input?["command"] {
            let words = parts.compactMap { if case .string(let word) = $0 { word } else { nil } }
            let text = words.joined(separator: " ")
            return text.count > 60 ? String(text.prefix(57)) + "..." : text
        }
        if case .string(let language)? = input?["code"]?["language"] { return "<\(language) code>" }
        return "-"
    }
}

func format3(_ value: Double) -> String {
    let scaled = (value * 1000).rounded() / 1000
    return String(scaled)
}
