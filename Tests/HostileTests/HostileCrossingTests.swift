import Foundation
import Glibc
import LinuxSandbox
import SandboxCore
import Testing

// MARK: - The daemon's own file access

extension HostileSandboxTests {
    @Test("symlinks, .. and FIFOs planted in the workspace cannot make the daemon read or write host files")
    func plantedWorkspaceLinksStayInside() async throws {
        try await HostileScenario.run { s in
            let hostTarget = s.scratchDirectory + "/written-by-daemon"
            try await s.withSandbox { sandbox in
                let relativeSecret = String(repeating: "../", count: 8) + s.secretPath.dropFirst()
                let plant = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", """
                    set -e
                    ln -s '\(s.secretPath)' abs-secret
                    ln -s '\(relativeSecret)' rel-secret
                    ln -s /proc/1/root'\(s.secretPath)' magic-secret
                    ln -s /proc/self/root/etc/passwd magic-self
                    ln -s '\(hostTarget)' abs-target
                    mkfifo fifo
                    echo planted
                    """]))
                try #require(plant.exitCode == 0, "planting failed: \(String(decoding: plant.stderr, as: UTF8.self))")

                for name in ["abs-secret", "rel-secret", "magic-secret", "magic-self", relativeSecret, "fifo"] {
                    do {
                        let bytes = try await sandbox.readWorkspaceFile(name)
                        #expect(!String(decoding: bytes, as: UTF8.self).contains(s.secret),
                                "ESCAPE: readWorkspaceFile(\(name)) returned the host secret")
                        Issue.record("readWorkspaceFile(\(name)) succeeded (\(bytes.count) bytes): it must not resolve outside the workspace")
                    } catch {
                        // Refused, as it must be (ENOENT inside the workspace root, ELOOP on magic links, not a regular file).
                    }
                }
                for name in ["abs-target", "../../../..\(hostTarget)"] {
                    try? await sandbox.writeWorkspaceFile(name, contents: Array("daemon wrote this".utf8))
                    #expect(!FileManager.default.fileExists(atPath: hostTarget), "ESCAPE: writeWorkspaceFile(\(name)) created \(hostTarget) on the host")
                }
            }
            #expect(!FileManager.default.fileExists(atPath: hostTarget))
        }
    }
}

extension HostileSandboxTests {
    @Test("a command that ignores its stdin, or floods stdout before reading it, cannot wedge the exec")
    func stdinCannotWedgeTheExec() async throws {
        try await HostileScenario.run { s in
            let stdin = [UInt8](repeating: 0x41, count: 8 << 20)
            try await s.withSandbox { sandbox in
                // Never reads: the daemon must stop feeding stdin when the command is gone.
                let ignoring = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "sleep 0.3; echo done"], stdin: stdin, timeout: 15))
                #expect(!ignoring.timedOut && ignoring.exitCode == 0, "an unread 8 MiB stdin wedged the exec: \(ignoring)")
                #expect(String(decoding: ignoring.stdout, as: UTF8.self) == "done\n")
                // Writes 4 MiB before reading: stdin and stdout must be pumped at the same time.
                let flooding = try await sandbox.exec(ExecRequest(
                    ["/bin/sh", "-c", "head -c 4194304 /dev/zero; wc -c >&2"], stdin: stdin, timeout: 15))
                #expect(!flooding.timedOut && flooding.exitCode == 0, "stdout flood before reading stdin wedged the exec: timedOut=\(flooding.timedOut)")
                #expect(String(decoding: flooding.stderr, as: UTF8.self).contains("\(8 << 20)"),
                        "the command did not receive all of stdin: \(String(decoding: flooding.stderr, as: UTF8.self))")
            }
        }
    }

    @Test("a sparse 1 TiB file planted in the workspace is refused by readWorkspaceFile, and the daemon stays small")
    func sparseWorkspaceFileIsRefused() async throws {
        try await HostileScenario.run { s in
            try await s.withSandbox { sandbox in
                let plant = try await sandbox.exec(ExecRequest(["/usr/bin/truncate", "-s", "1T", "huge"]))
                try #require(plant.exitCode == 0, "truncate failed: \(String(decoding: plant.stderr, as: UTF8.self))")
                let before = HostFiles.residentBytes()
                do {
                    let bytes = try await sandbox.readWorkspaceFile("huge")
                    Issue.record("readWorkspaceFile returned \(bytes.count) bytes of a 1 TiB file instead of refusing it")
                } catch {
                    // Refused: more than the read limit.
                }
                let growth = Int64(HostFiles.residentBytes()) - Int64(before)
                #expect(growth < 64 << 20, "the test process grew by \(growth >> 10) KiB reading a planted sparse file")
            }
        }
    }
}

// MARK: - Sandbox to sandbox

extension HostileSandboxTests {
    @Test("a sandbox cannot reach another sandbox's processes, and each runs as its own host uid")
    func sandboxesAreIsolatedFromEachOther() async throws {
        try await HostileScenario.run { s in
            let marker = "hostile-neighbour-\(s.tag)"
            try await s.withSandbox { neighbour in
                // Long enough to outlive the attacker's whole run on a loaded machine; the checks below need it alive.
                async let lingering = neighbour.exec(ExecRequest([s.payloads.hostile, "linger", marker, "wait"], timeout: 25))
                // `linger` itself, then its two sleepers (a double-forked one in its own session and a
                // stubborn one): wait for all three, so the set compared below is the settled one.
                var neighbourPids: [pid_t] = []
                for _ in 0..<400 where neighbourPids.count < 3 {
                    try await Task.sleep(for: .milliseconds(50))
                    neighbourPids = HostFiles.processes(withMarker: marker)
                }
                try #require(neighbourPids.count == 3, "the neighbour's three processes did not appear: \(neighbourPids)")
                let target = String(neighbourPids[0])

                try await s.withSandbox { attacker in
                    #expect(attacker.hostID != neighbour.hostID, "two live sandboxes share host uid \(attacker.hostID)")
                    let kill = PayloadRun(arguments: ["hostile", "kill", target],
                                          result: try await attacker.exec(ExecRequest([s.payloads.hostile, "kill", target])))
                    kill.expectCompleted()
                    kill.expectRefused(["kill0_host", "kill_host"], with: ["ESRCH"])
                    let trace = PayloadRun(arguments: ["hostile", "ptrace", target],
                                           result: try await attacker.exec(ExecRequest([s.payloads.hostile, "ptrace", target])))
                    trace.expectRefused(["ptrace_attach_host", "ptrace_seize_host"], with: ["EPERM", "ESRCH"])
                    let vm = PayloadRun(arguments: ["hostile", "process-vm", target],
                                        result: try await attacker.exec(ExecRequest([s.payloads.hostile, "process-vm", target])))
                    vm.expectRefused("vm_readv_host", with: ["EPERM", "ESRCH"])
                }
                #expect(HostFiles.processes(withMarker: marker) == neighbourPids,
                        "the neighbour's processes changed while another sandbox attacked them")
                let uidLine = (HostFiles.read("/proc/\(target)/status") ?? "").split(separator: "\n").first { $0.hasPrefix("Uid:") }
                #expect(uidLine?.contains(String(neighbour.hostID)) == true, "the neighbour runs as \(uidLine ?? "?"), not its own uid \(neighbour.hostID)")
                let result = try await lingering
                #expect(result.timedOut)
            }
        }
    }
}

// MARK: - Controls: the attacks are real

/// Whether `nobody` may create a user namespace here (Debian: yes; some distributions restrict it).
let nobodyCanCreateUserNamespaces: Bool = {
    (try? HostCommand.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                               "/usr/bin/unshare", "--user", "--map-root-user", "/bin/true"])) != nil
}()

/// The same payloads outside any sandbox, in a throwaway user namespace as `nobody` (so nothing they do
/// can touch the host): there these attempts succeed. This shows the hostile tests measure the sandbox,
/// not a payload that fails on its own.
@Suite("Hostile payload controls (outside a sandbox)", .serialized,
       .enabled(if: getuid() == 0, "needs root to drop to nobody in a private user namespace"),
       .enabled(if: nobodyCanCreateUserNamespaces,
                "unprivileged user namespaces are disabled on this host (sysctl or LSM): the controls cannot run"))
struct HostilePayloadControls {

    /// One payload run and the attempt that must succeed when nothing confines it.
    struct Control: Sendable, CustomTestStringConvertible {
        var arguments: [String]
        var attempt: String
        var testDescription: String { "hostile \(arguments.joined(separator: " ")) → \(attempt)=OK" }
    }

    static let controls: [Control] = [
        Control(arguments: ["mount"], attempt: "mount_tmpfs"),
        Control(arguments: ["unshare"], attempt: "unshare_user"),
        Control(arguments: ["unshare"], attempt: "clone_newnet"),
        Control(arguments: ["perf"], attempt: "perf_event_open_self"),
        Control(arguments: ["keyring"], attempt: "add_key"),
        Control(arguments: ["iouring"], attempt: "io_uring_setup"),
        Control(arguments: ["personality"], attempt: "personality_read_implies_exec"),
        Control(arguments: ["ptrace", "1"], attempt: "ptrace_attach_sibling"),
        Control(arguments: ["process-vm", "1"], attempt: "vm_readv_sibling"),
        Control(arguments: ["userfaultfd"], attempt: "userfaultfd_user_mode_only"),
        Control(arguments: ["rawsock"], attempt: "af_packet_raw"),
        Control(arguments: ["tiocsti"], attempt: "tiocsti_pty"),
        Control(arguments: ["tiocsti"], attempt: "tiocsti_pty_high_bits"),
        Control(arguments: ["setns", "1"], attempt: "setns_nsself_mnt"),
        Control(arguments: ["status"], attempt: "capset_raise"),
    ]

    @Test("without the sandbox, the payload's attempt succeeds", arguments: controls)
    func attemptSucceedsOutsideTheSandbox(control: Control) async throws {
        let (arguments, attempt) = (control.arguments, control.attempt)
        let built = try await Payloads.shared()
        var template = Array("/tmp/sandboxd-hostile-control-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o755)
        let payloads = try built.copy(into: dir + "/payloads")
        let output = try HostCommand.run("/usr/bin/setpriv", [
            "--reuid=65534", "--regid=65534", "--clear-groups", "--",
            "/usr/bin/unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--mount-proc",
            payloads.hostDirectory + "/hostile",
        ] + arguments)
        let line = output.split(separator: "\n").first { $0.hasPrefix(attempt + "=") }
        #expect(line == "\(attempt)=OK", "control \(arguments.joined(separator: " ")): expected \(attempt)=OK, got \(line.map(String.init) ?? "nothing")\n\(output)")
    }

    @Test("without the sandbox, an i386 system call returns normally")
    func int80ReturnsOutsideTheSandbox() async throws {
        let built = try await Payloads.shared()
        let output = try HostCommand.run(built.hostDirectory + "/hostile", ["int80"])
        #expect(output.contains("int80=RETURNED"), "\(output)")
    }
}
