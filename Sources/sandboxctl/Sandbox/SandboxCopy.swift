#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import ControlAPI

/// `sandboxctl cp LOCAL ID:PATH` and `sandboxctl cp ID:PATH LOCAL` ('-' is standard input/output).
struct SandboxCopy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp", abstract: "Copy a file into or out of a sandbox's workspace.",
        discussion: "One side is SANDBOX_ID:PATH (PATH relative to the workspace or absolute inside it); the other a local file or '-'.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Source.")
    var source: String

    @Argument(help: "Destination.")
    var destination: String

    func run() async throws {
        try await runReporting {
            let client = global.client
            if let (id, path) = remote(destination), remote(source) == nil {
                let bytes = source == "-" ? readStandardInput() : try readFile(source)
                let response = try await client.send(.PUT, "/v1/sandboxes/\(id)/files", query: [("path", path)], bytes: bytes)
                let body = try await client.collect(response)
                try DaemonClient.checkStatus(response, body)
                if global.output == .json { print(String(decoding: body, as: UTF8.self)) }
                return 0
            }
            if let (id, path) = remote(source), remote(destination) == nil {
                let response = try await client.send(.GET, "/v1/sandboxes/\(id)/files", query: [("path", path)])
                let body = try await client.collect(response)
                try DaemonClient.checkStatus(response, body)
                if destination == "-" {
                    writeAll(body, to: 1)
                } else {
                    let fd = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                    guard fd >= 0 else { throw ClientError(description: "cannot write \(destination): \(String(cString: strerror(errno)))", exitCode: 1) }
                    writeAll(body, to: fd)
                    close(fd)
                }
                return 0
            }
            throw ValidationError("exactly one of source and destination must be SANDBOX_ID:PATH")
        }
    }

    private func remote(_ argument: String) -> (String, String)? {
        guard let colon = argument.firstIndex(of: ":"), argument.hasPrefix("sbx-") else { return nil }
        return (String(argument[..<colon]), String(argument[argument.index(after: colon)...]))
    }
}
