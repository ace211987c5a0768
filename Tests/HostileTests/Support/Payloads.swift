import Foundation
import Glibc
import ProcessSpawn

/// The hostile C programs, compiled with the host's `cc` on first use.
///
/// They are built into `.build/hostile-payloads/<source hash>/` (a build artifact, reused while the
/// sources are unchanged); each scenario copies them into its own temporary directory, which is
/// bind-mounted read-only into its sandboxes at `Payloads.sandboxDirectory`.
/// Neither program is set-user-ID there: the set-user-ID and file-capability copies the privilege
/// tests need are made per test in a temporary directory and removed after it.
struct Payloads: Sendable {
    /// Where the payload directory appears inside every sandbox.
    static let sandboxDirectory = "/opt/hostile"

    /// Host directory holding `hostile` and `suidprobe`.
    let hostDirectory: String

    /// `hostile` as seen from inside the sandbox.
    var hostile: String { Self.sandboxDirectory + "/hostile" }
    /// `suidprobe` as seen from inside the sandbox.
    var suidprobe: String { Self.sandboxDirectory + "/suidprobe" }

    /// Compiles once per test process; every test awaits the same build.
    static func shared() async throws -> Payloads { try await build.value }

    private static let build = Task { try compile() }

    /// Folder with the C sources: next to this file's parent.
    static var sourceDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Payloads")
    }

    private static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    private static func compile() throws -> Payloads {
        let sources = ["hostile", "suidprobe"]
        var hash = Hasher64()
        for name in sources {
            hash.add(try Data(contentsOf: sourceDirectory.appendingPathComponent(name + ".c")))
        }
        let directory = packageRoot.appendingPathComponent(".build/hostile-payloads/\(hash.hex)")
        let fm = FileManager.default
        let ready = sources.allSatisfy { fm.isExecutableFile(atPath: directory.appendingPathComponent($0).path) }
        if !ready {
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
            for name in sources {
                let output = directory.appendingPathComponent(name).path
                let partial = output + ".partial-\(getpid())"
                try HostCommand.run("/usr/bin/cc", ["-O1", "-Wall", "-o", partial,
                                                    sourceDirectory.appendingPathComponent(name + ".c").path])
                guard rename(partial, output) == 0 else {
                    throw HostileTestError("rename(\(partial) → \(output)): \(String(cString: strerror(errno)))")
                }
            }
        }
        // The sandbox's root maps to an unprivileged host uid: it needs to read and execute, nothing more.
        chmod(directory.path, 0o755)
        for name in sources { chmod(directory.appendingPathComponent(name).path, 0o755) }
        return Payloads(hostDirectory: directory.path)
    }
}

extension Payloads {
    /// A copy of the programs in `directory` (created 0755), for one scenario to mount.
    func copy(into directory: String) throws -> Payloads {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        for name in ["hostile", "suidprobe"] {
            try Self.copyExecutable(from: hostDirectory + "/" + name, to: directory + "/" + name)
        }
        return Payloads(hostDirectory: directory)
    }

    /// Copies in a child process (`install`): a process forked by another thread of this test
    /// process while a write descriptor of the copy is open inherits it until its own exec (even
    /// close-on-exec), and executing the copy meanwhile fails with ETXTBSY. `install` holds the
    /// only write descriptor, and has closed it when it exits.
    static func copyExecutable(from source: String, to destination: String) throws {
        guard access(destination, F_OK) != 0 else { throw HostileTestError("\(destination) exists already") }
        try HostCommand.run("/usr/bin/install", ["-m", "0755", source, destination])
    }
}

/// FNV-1a, enough to key the build cache by source contents.
struct Hasher64 {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ data: Data) {
        for byte in data { value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    }
    var hex: String { String(value, radix: 16) }
}

/// A failure of the test scaffolding itself (not of the sandbox under test).
struct HostileTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a host command to completion (compiler, helpers); throws with its stderr when it fails.
///
/// Output goes to unlinked temporary files, not pipes: a process another suite spawns at the same
/// moment (PostgreSQL, daemonized by pg_ctl) can inherit the write end of a pipe and keep it open
/// for its whole life, and reading to EOF would then wait forever. An inherited file descriptor
/// blocks nothing.
enum HostCommand {
    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        // SpawnCommand reaps this pid itself: Foundation's Process.waitUntilExit was seen to hang
        // here while other suites ran long-lived children of the same process.
        let output = try SpawnCommand([executable] + arguments, environment: ["PATH=/usr/bin:/bin", "LC_ALL=C"]).run()
        guard output.termination.succeeded else {
            throw HostileTestError("\(executable) \(arguments.joined(separator: " ")) failed "
                + "(\(output.termination)): \(output.errorText)")
        }
        return output.outputText
    }
}
