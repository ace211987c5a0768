import Foundation
import Glibc

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
        let out = try capture(), err = try capture()
        defer { try? out.close(); try? err.close() }
        // posix_spawn + waitpid on this pid: Foundation's Process.waitUntilExit was seen to hang
        // here while other suites ran long-lived children of the same process.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out.fileDescriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, err.fileDescriptor, 2)
        let argv = [executable] + arguments
        var cArgv = argv.map { strdup($0) } + [nil]
        let environment: [String] = ["PATH=/usr/bin:/bin", "LC_ALL=C"]
        var cEnv = environment.map { strdup($0) } + [nil]
        defer { cArgv.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, &cArgv, &cEnv)
        guard rc == 0 else { throw HostileTestError("posix_spawn(\(executable)): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw HostileTestError("waitpid(\(pid)): \(errnoText())") }
        }
        let stdout = try contents(out), stderr = try contents(err)
        guard status == 0 else {
            throw HostileTestError("\(executable) \(arguments.joined(separator: " ")) failed "
                + "(wait status \(status)): \(String(decoding: stderr, as: UTF8.self))")
        }
        return String(decoding: stdout, as: UTF8.self)
    }

    private static func capture() throws -> FileHandle {
        var template = Array("/tmp/sandboxd-hostile-output-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw HostileTestError("mkstemp: \(errnoText())") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        unlink(String(cString: template))
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    private static func contents(_ handle: FileHandle) throws -> Data {
        try handle.seek(toOffset: 0)
        return try handle.readToEnd() ?? Data()
    }
}
