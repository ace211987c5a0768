#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser

/// `sandboxctl`: the operator's command line for sandboxd, over its Unix socket.
@main
struct SandboxCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandboxctl",
        abstract: "Run and inspect sandboxes through sandboxd.",
        subcommands: [
            SandboxRun.self, SandboxCreate.self, SandboxExec.self, SandboxList.self, SandboxInspect.self,
            SandboxRemove.self, SandboxCopy.self, ExecutionHistory.self, SystemInfo.self, PolicyCommand.self, ImageCommand.self,
        ])
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The sandboxd socket (default: $SANDBOXD_SOCKET or /run/sandboxd/sandboxd.sock).")
    var socket: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    var client: DaemonClient {
        DaemonClient(socketPath: socket ?? getenv("SANDBOXD_SOCKET").map { String(cString: $0) } ?? "/run/sandboxd/sandboxd.sock")
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// Runs a command body, printing failures the way operators expect and exiting with the right code.
func runReporting(_ body: () async throws -> Int32) async throws {
    let code: Int32
    do {
        code = try await body()
    } catch let error as ClientError {
        printError("sandboxctl: \(error.description)")
        throw ExitCode(error.exitCode)
    } catch let error as DaemonError {
        printError(error.description)
        throw ExitCode(125)
    }
    if code != 0 { throw ExitCode(code) }
}

func printError(_ text: String) {
    var line = text
    if !line.hasSuffix("\n") { line += "\n" }
    writeAll(line.utf8, to: 2)
}
