import Foundation
import ProcessSpawn

/// Runs a host program to completion and collects what it printed. Blocking: call it from a
/// dedicated thread, never from the cooperative pool.
public enum HostTool {
    /// What a finished program printed, and how it ended.
    public struct Output: Sendable {
        /// The exit status.
        public var status: Int32
        /// Everything it printed on stdout, as UTF-8.
        public var standardOutput: String
        /// Everything it printed on stderr, as UTF-8.
        public var standardError: String
    }

    /// Finds `name` in `$PATH` (plus the sbin directories, which a non-login root shell may lack).
    public static func find(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        for directory in directories where !directory.isEmpty {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `arguments[0]` (looked up in `$PATH`) with the rest as its arguments.
    /// - Parameters:
    ///   - package: the Debian package that provides the tool, named in the error when it is missing.
    ///   - directory: the working directory, or the caller's when nil.
    ///   - requireSuccess: throw when the program exits non-zero, with the tail of its stderr.
    @discardableResult
    public static func run(
        _ arguments: [String], package: String, directory: String? = nil, requireSuccess: Bool = true
    ) throws(QEMUGuestError) -> Output {
        guard let name = arguments.first, let executable = find(name) else {
            throw QEMUGuestError(.toolFailed, "\(arguments.first ?? "(empty command)") not found: install the Debian package \(package) (make test-deps)")
        }
        var command = SpawnCommand([executable] + arguments.dropFirst())
        command.workingDirectory = directory
        let finished: SpawnOutput
        do {
            finished = try command.run()
        } catch {
            throw QEMUGuestError(.toolFailed, "starting \(executable): \(error)")
        }
        let output = Output(status: finished.termination.status, standardOutput: finished.outputText,
                            standardError: finished.errorText)
        if requireSuccess, !finished.termination.succeeded {
            let tail = output.standardError.split(separator: "\n").suffix(8).joined(separator: "\n")
            throw QEMUGuestError(.toolFailed, "\(arguments.joined(separator: " ")) failed with status \(output.status): \(tail)")
        }
        return output
    }
}
