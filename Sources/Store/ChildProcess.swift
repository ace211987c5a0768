import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a helper program (initdb, pg_ctl, useradd) to completion and collects its output.
///
/// Blocking: call only from a dedicated thread (EmbeddedPostgres uses its own queue). Output goes
/// to an unlinked temporary file rather than a pipe, so a daemon the child leaves behind
/// (pg_ctl's postmaster) cannot keep us waiting for end-of-file.
struct ChildProcess {
    struct Outcome {
        var exitStatus: Int32
        var output: String
        var succeeded: Bool { exitStatus == 0 }
    }

    /// Runs `executable` with `arguments`, as `user` (through runuser) when given and we are root.
    static func run(
        _ executable: String, _ arguments: [String], asUser user: String? = nil, workingDirectory: String = "/"
    ) throws -> Outcome {
        // env -C: posix_spawn_file_actions_addchdir_np is not visible to Swift without _GNU_SOURCE,
        // and the child must not inherit a working directory its user cannot enter.
        var path = "/usr/bin/env"
        var argv = [path, "-C", workingDirectory, executable] + arguments
        if let user, geteuid() == 0 {
            path = "/usr/sbin/runuser"
            argv = [path, "-u", user, "--"] + argv
        }
        let environment = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "LANG=C"]

        var template = Array("/tmp/sandboxd-child-XXXXXX".utf8CString)
        let outputFD = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard outputFD >= 0 else { throw spawnError(argv, "mkstemp(/tmp/sandboxd-child-XXXXXX)", errno) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(outputFD) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)

        let cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        let cEnvironment: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in cArgv { free(pointer) }
            for pointer in cEnvironment { free(pointer) }
        }
        // The calling thread (a Dispatch worker) blocks most signals and the mask is inherited
        // through exec: without a reset, pg_ctl or the server could not be stopped by signals.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var pid: pid_t = 0
        let spawnResult = posix_spawn(&pid, path, &actions, &attributes, cArgv, cEnvironment)
        guard spawnResult == 0 else { throw spawnError(argv, "posix_spawn(\(path))", spawnResult) }

        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw spawnError(argv, "waitpid(\(pid))", errno) }
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift cannot import.
        let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)

        var output = [UInt8]()
        lseek(outputFD, 0, SEEK_SET)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(outputFD, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            output += buffer[0..<count]
        }
        return Outcome(exitStatus: exitStatus, output: String(decoding: output, as: UTF8.self))
    }

    private static func spawnError(_ argv: [String], _ call: String, _ code: Int32) -> StoreError {
        StoreError(.embeddedServerFailed, "\(call) for \(argv.joined(separator: " ")): \(String(cString: strerror(code)))")
    }
}
