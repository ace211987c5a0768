#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import ControlAPI
import SandboxCore

/// `sandboxctl policy validate|list|reload`.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Validate policy files, list the policies in force, reload them.",
        subcommands: [PolicyValidate.self, PolicyListCommand.self, PolicyReload.self])
}

/// `sandboxctl policy validate FILE...`: offline, no daemon needed.
struct PolicyValidate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check policy files the way sandboxd loads them (no daemon needed).",
        discussion: "Exit status 0 when every file is valid, 1 when any is not; each problem is printed as FILE:LINE: KEY: WHY.")

    @Argument(help: "Policy files (NAME.yaml). Files given together are checked as one set (no two with the same name).")
    var files: [String]

    @Option(name: .long, help: "Host cores for the cpu_limit check (default: this host's).")
    var cores: Int?

    func run() throws {
        var sources: [PolicySource] = []
        var unreadable: [String] = []
        for file in files {
            do {
                sources.append(PolicySource(file: file, text: try String(contentsOfFile: file, encoding: .utf8)))
            } catch {
                unreadable.append("\(file): cannot read: \(String(cString: strerror(errno)))")
            }
        }
        let hostCores = cores ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        var problems = unreadable
        do {
            let set = try PolicySet(loading: sources, hostCores: hostCores, requireDefault: false)
            if problems.isEmpty {
                for name in set.names { print("\(set[name]!.source): valid (policy \(name))") }
            }
        } catch {
            problems += error.diagnostics.map(\.description)
            if error.diagnostics.isEmpty { problems.append(error.message) }
        }
        guard problems.isEmpty else {
            for problem in problems { printError(problem) }
            throw ExitCode(1)
        }
    }
}

/// `sandboxctl policy list`.
struct PolicyListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the policies in force: name, digest, load time, source.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await runReporting {
            let list = try await global.client.call(ControlAPI.PolicyList.self, .GET, "/v1/policies")
            printPolicies(list, json: global.output == .json)
            return 0
        }
    }
}

/// `sandboxctl policy reload`.
struct PolicyReload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Reload every policy file (root or sandboxd-admin). All load or nothing changes; running sandboxes keep theirs.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await runReporting {
            do {
                let list = try await global.client.call(ControlAPI.PolicyList.self, .POST, "/v1/policies/reload")
                printPolicies(list, json: global.output == .json)
                return 0
            } catch let error as DaemonError where error.body.code == APIError.Code.invalidPolicy.rawValue {
                // The message already lists every diagnostic, one per line.
                printError("sandboxd: \(error.body.message)")
                return 1
            }
        }
    }
}

private func printPolicies(_ list: ControlAPI.PolicyList, json: Bool) {
    if json {
        try? printJSON(list)
        return
    }
    printTable(["NAME", "DIGEST", "LOADED", "SOURCE"], list.policies.map {
        [$0.name, String($0.digest.prefix(12)), shortDate($0.loadedAt), $0.source]
    })
}
