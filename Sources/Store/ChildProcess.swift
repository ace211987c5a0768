import Foundation
import ProcessSpawn

#if canImport(Glibc)
import Glibc
#endif

/// Runs a helper program (initdb, pg_ctl, useradd) to completion and collects its output.
///
/// Blocking: call only from a dedicated thread (EmbeddedPostgres uses its own queue). Output goes
/// to an unlinked temporary file rather than a pipe (`SpawnCommand.run`), so a daemon the child
/// leaves behind (pg_ctl's postmaster) cannot keep us waiting for end-of-file; nothing else of
/// ours crosses (another thread's pipe would otherwise stay open in the server for its lifetime).
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
        // env -C: the working directory is entered as the target user (runuser changes user
        // first), who may not be able to enter ours.
        var argv = ["/usr/bin/env", "-C", workingDirectory, executable] + arguments
        if let user, geteuid() == 0 {
            argv = ["/usr/sbin/runuser", "-u", user, "--"] + argv
        }
        let command = SpawnCommand(argv, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "LANG=C"])
        do {
            let output = try command.run(mergingStandardError: true)
            return Outcome(exitStatus: output.termination.status, output: output.outputText)
        } catch {
            throw StoreError(.embeddedServerFailed, "\(argv.joined(separator: " ")): \(error)")
        }
    }
}
