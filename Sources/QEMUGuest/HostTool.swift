import Foundation

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
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(arguments.dropFirst())
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw QEMUGuestError(.toolFailed, "starting \(executable): \(error)")
        }
        // Read stderr on its own thread so that neither pipe can fill up and stall the program.
        let errorBox = DataBox()
        let errorReader = Thread { errorBox.data = stderr.fileHandleForReading.readDataToEndOfFile() }
        errorReader.start()
        let outData = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errorBox.isSet { usleep(1000) }
        let output = Output(
            status: process.terminationStatus,
            standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errorBox.data ?? Data(), as: UTF8.self))
        if requireSuccess, process.terminationReason != .exit || output.status != 0 {
            let tail = output.standardError.split(separator: "\n").suffix(8).joined(separator: "\n")
            throw QEMUGuestError(.toolFailed, "\(arguments.joined(separator: " ")) failed with status \(output.status): \(tail)")
        }
        return output
    }
}

/// Data handed from a reader thread to the thread that waits for it.
private final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Data?
    var data: Data? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
    var isSet: Bool { lock.withLock { stored != nil } }
}
