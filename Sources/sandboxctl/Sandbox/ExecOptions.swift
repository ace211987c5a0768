#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AsyncHTTPClient
import ControlAPI
import NIOCore

/// What to run: a command after `--`, or source code with `--language`.
struct ExecOptions: ParsableArguments {
    @Option(name: [.customShort("e"), .long], help: "Set an environment variable (NAME=VALUE); repeatable.")
    var env: [String] = []

    @Option(name: .long, help: "Wall-clock limit in seconds.")
    var timeout: Double?

    @Flag(name: [.customShort("i"), .long], help: "Send standard input to the command.")
    var interactive = false

    @Option(name: .long, help: "Run source code in this language (python, java, sh, bash) instead of a command.")
    var language: String?

    @Option(name: .long, help: "File holding the source code for --language ('-' reads standard input).")
    var sourceFile: String?

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.")
    var command: [String] = []

    var environment: [String: String]? {
        get throws {
            guard !env.isEmpty else { return nil }
            var result: [String: String] = [:]
            for item in env {
                guard let equals = item.firstIndex(of: "="), equals != item.startIndex else {
                    throw ValidationError("--env takes NAME=VALUE, got \"\(item)\"")
                }
                result[String(item[..<equals])] = String(item[item.index(after: equals)...])
            }
            return result
        }
    }

    func payload() throws -> ExecPayload {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        var code: CodeSpec?
        if let language {
            guard argv.isEmpty else { throw ValidationError("give either --language with --source-file, or a command, not both") }
            guard let sourceFile else { throw ValidationError("--language needs --source-file") }
            let bytes = sourceFile == "-" ? readStandardInput() : try readFile(sourceFile)
            code = CodeSpec(language: language, source: String(decoding: bytes, as: UTF8.self))
        } else if argv.isEmpty {
            throw ValidationError("no command given: sandboxctl run [options] -- COMMAND [ARGS...]")
        }
        let stdin = interactive && sourceFile != "-" ? String(decoding: readStandardInput(), as: UTF8.self) : nil
        return ExecPayload(command: code == nil ? argv : nil, code: code, stdin: stdin, env: try environment, timeout: timeout)
    }
}

/// How the sandbox is made: policy, level, agent type, session.
struct SpecOptions: ParsableArguments {
    @Option(name: .long, help: "Policy name (default: the daemon's default policy).")
    var policy: String?

    @Option(name: .long, help: "Isolation level 1-4.")
    var level: Int?

    @Option(name: .long, help: "Agent type recorded with each execution.")
    var agentType: String?

    @Option(name: .long, help: "Session id (from POST /v1/sessions) the executions belong to.")
    var session: String?

    func sessionID() throws -> UUID? {
        guard let session else { return nil }
        guard let id = UUID(uuidString: session) else { throw ValidationError("--session must be a UUID, got \"\(session)\"") }
        return id
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ClientError(description: "cannot open \(path): \(String(cString: strerror(errno)))", exitCode: 1) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if count < 0, errno == EINTR { continue }
        if count < 0 { throw ClientError(description: "cannot read \(path): \(String(cString: strerror(errno)))", exitCode: 1) }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[..<count])
    }
    return bytes
}

/// Runs an exec request. Text mode streams output as it happens; JSON mode prints the result.
/// Returns the exit status sandboxctl should end with.
func performExec(_ client: DaemonClient, path: String, body: some Encodable, timeout: Double?, format: OutputFormat) async throws -> Int32 {
    // The daemon enforces the exec's own limit; the client only needs to outlast it.
    let deadline = TimeAmount.seconds(Int64((timeout ?? 3600) + 120))
    if format == .json {
        let result = try await client.call(ExecutionResult.self, .POST, path, json: body, timeout: deadline)
        try printJSON(result)
        return exitStatus(of: result)
    }
    let response = try await client.send(.POST, path, query: [("stream", "ndjson")], json: body, timeout: deadline)
    guard response.status.code < 300 else {
        let bytes = try await client.collect(response)
        try DaemonClient.checkStatus(response, bytes)
        return 125
    }
    var pending: [UInt8] = []
    var final: Int32 = 125
    do {
        for try await buffer in response.body {
            pending.append(contentsOf: buffer.readableBytesView)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(pending[..<newline])
                pending.removeSubrange(...newline)
                switch try DaemonClient.decoder.decode(StreamLine.self, from: Data(line)) {
                case .output(.stdout, let text): writeAll(text.utf8, to: 1)
                case .output(.stderr, let text): writeAll(text.utf8, to: 2)
                case .result(let result):
                    final = exitStatus(of: result)
                    if result.stdoutTruncated || result.stderrTruncated {
                        printError("sandboxctl: output was truncated at the daemon's output limit")
                    }
                    if result.status != .ok {
                        printError("sandboxctl: execution \(result.executionID.uuidString.lowercased()) ended with status \(result.status.rawValue)"
                                   + (result.errorMessage.map { ": \($0)" } ?? ""))
                    }
                case .error(let error):
                    printError("sandboxd: \(error.message) [\(error.code)]")
                    final = 125
                }
            }
        }
    } catch let error as DecodingError {
        throw ClientError(description: "sandboxd sent a stream line sandboxctl does not understand: \(error)")
    } catch {
        throw client.explain(error)
    }
    return final
}
