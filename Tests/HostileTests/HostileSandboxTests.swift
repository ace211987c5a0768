import Foundation
import Glibc
import SandboxCore
import Testing

/// Hostile programs run for real in level-1 sandboxes on this host (issue 3, item 10).
///
/// Every test runs a real attack from `Payloads/hostile.c` (or a shell/Python one-liner) in a fresh
/// sandbox, checks the attack was stopped (and how: EPERM from seccomp, a missing capability, SIGSYS,
/// or nothing there to reach), and checks the host did not change (`HostileScenario`). Serialized:
/// the host checks compare global state (mount table, cgroups, this process's descriptors).
///
/// The destructive cases (fork and memory bombs) are not here: they run only inside the QEMU test guest.
/// `kill -9 -1` is here because the same test first proves the sandbox has its own pid namespace.
@Suite("Hostile programs in a level-1 sandbox", .serialized,
       .enabled(if: getuid() == 0, "level-1 sandboxes need root (user namespaces with a uid range, cgroups, pivot_root)"),
       .enabled(if: ScenarioEngine.cgroupRoot != nil, "no cgroup2 mount on this host: level-1 sandboxes cannot be created"))
struct HostileSandboxTests {}

// MARK: - Mounts and namespaces

extension HostileSandboxTests {
    @Test("mount(2) is refused inside the sandbox")
    func mountIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("mount")
            run.expectCompleted()
            run.expectRefused(["mount_tmpfs", "mount_bind_usr", "remount_usr_rw", "mount_proc", "mount_make_shared"],
                              with: Errno.seccomp)
            // The new mount API: EPERM from the filter (ENOSYS would also mean "not available here").
            run.expectRefused(["fsopen", "open_tree", "mount_setattr"], with: ["EPERM", "ENOSYS"])
        }
    }

    @Test("mounting a cgroup hierarchy for a release_agent escape (CVE-2022-0492) is refused")
    func cgroupReleaseAgentIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("cgroup-release-agent")
            run.expectCompleted()
            run.expectRefused(["mount_cgroup_v1", "mount_cgroup_v1_memory", "mount_cgroup2"], with: Errno.seccomp)
            run.expectRefused(["release_agent_open", "sys_release_agent_open"], with: Errno.unwritable)
        }
    }

    @Test("umount of / and of the masking mounts is refused")
    func umountIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("umount-root")
            run.expectCompleted()
            run.expectRefused(["umount_root", "umount_proc", "umount_usr"], with: Errno.seccomp)
        }
    }

    @Test("pivot_root is refused inside the sandbox")
    func pivotRootIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("pivot-root")
            run.expectCompleted()
            run.expectRefused(["pivot_root", "pivot_root_dot"], with: Errno.seccomp)
        }
    }

    @Test("unshare of new user, mount, network and other namespaces is refused")
    func unshareIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("unshare")
            run.expectCompleted()
            run.expectRefused(["unshare_user", "unshare_mount", "unshare_net", "unshare_pid", "unshare_ipc",
                               "unshare_uts", "unshare_cgroup", "unshare_time"], with: Errno.seccomp)
        }
    }

    @Test("clone and clone3 cannot create new namespaces")
    func cloneNamespacesAreRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("unshare")
            run.expectCompleted()
            run.expectRefused(["clone_newuser", "clone_newnet", "clone_newns", "clone_newpid"], with: Errno.seccomp)
            // clone3 cannot be filtered by flag (they sit behind a pointer): Docker answers ENOSYS so libc falls back to clone.
            run.expectRefused(["clone3_newuser", "clone3_newnet"], with: ["EPERM", "ENOSYS"])
        }
    }

    @Test("setns into /proc/1/ns/* is refused and the host's namespaces are not visible")
    func setnsIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("setns", String(s.victim.pid))
            run.expectCompleted()
            for kind in ["mnt", "net", "user", "pid", "uts", "ipc", "cgroup"] {
                // Opening the sandbox's own namespace files is harmless; joining them is not allowed.
                if run["open_ns1_\(kind)"] == "OK" { run.expectRefused("setns_ns1_\(kind)", with: Errno.seccomp) }
                run.expectRefused("open_nshost_\(kind)", with: Errno.absent)
                #expect(run["setns_nshost_\(kind)"] == nil, "a host namespace was opened: \(run.transcript)")
            }
            for kind in ["mnt", "net", "user", "pid", "uts", "ipc", "cgroup"] where run["open_nsself_\(kind)"] == "OK" {
                // Joining the namespace one is already in: only setns itself stands in the way.
                run.expectRefused("setns_nsself_\(kind)", with: Errno.seccomp)
            }
            if run["pidfd_open_init"] == "OK" { run.expectRefused("setns_pidfd_init", with: Errno.seccomp) }
            run.expectRefused("pidfd_open_host", with: ["ESRCH", "EPERM"])
        }
    }
}

// MARK: - Other processes

extension HostileSandboxTests {
    @Test("ptrace of a host pid fails: the host process is not even visible")
    func ptraceHostPidFails() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("ptrace", String(s.victim.pid))
            run.expectCompleted()
            run.expectRefused(["ptrace_attach_host", "ptrace_seize_host"], with: ["EPERM", "ESRCH"])
        }
    }

    @Test("ptrace of a sibling and of the sandbox's init is refused")
    func ptraceSiblingIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("ptrace", String(s.victim.pid))
            run.expectCompleted()
            run.expectRefused(["ptrace_attach_sibling", "ptrace_attach_init", "ptrace_traceme"], with: Errno.seccomp)
        }
    }

    @Test("process_vm_readv and process_vm_writev are refused; the init's memory cannot be opened")
    func processVMIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("process-vm", String(s.victim.pid))
            run.expectCompleted()
            run.expectRefused(["vm_readv_sibling", "vm_writev_sibling", "vm_readv_init"], with: Errno.seccomp)
            run.expectRefused("vm_readv_host", with: ["EPERM", "ESRCH"])
            run.expectRefused("proc_mem_init", with: Errno.denied)
        }
    }

    @Test("kill of a host process does not reach it")
    func killHostProcessFails() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("kill", String(s.victim.pid))
            run.expectCompleted()
            run.expectRefused(["kill0_host", "kill_host"], with: ["ESRCH", "EPERM"])
            run.expectRefused("pidfd_open_host", with: ["ESRCH", "EPERM"])
            #expect(s.victim.isAliveAndUntouched, "the host victim \(s.victim.pid) was killed")
        }
    }

    @Test("the sandbox's init cannot be killed or stopped from inside")
    func initSurvivesSignalsFromInside() async throws {
        try await HostileScenario.run { s in
            try await s.withSandbox { sandbox in
                let result = try await sandbox.exec(ExecRequest([s.payloads.hostile, "kill-init"]))
                let run = PayloadRun(arguments: ["hostile", "kill-init"], result: result)
                run.expectCompleted()
                #expect(run["init_alive"] == "OK", "the init died: \(run.transcript)")
                #expect(run.observed("init_state") != "T", "the init was stopped: \(run.transcript)")
                let after = try await sandbox.exec(ExecRequest(["/bin/true"]))
                #expect(after.exitCode == 0, "the sandbox no longer runs commands: \(after)")
            }
            // A one-shot sandbox's PID 1 is the engine's own small init: the same must hold.
            let oneShot = try await s.hostile("kill-init")
            oneShot.expectCompleted()
            #expect(oneShot["init_alive"] == "OK" && oneShot.observed("init_state") != "T", "one-shot init: \(oneShot.transcript)")
        }
    }

    @Test("kill -9 -1 reaches only the sandbox's own processes (after proving its pid namespace)")
    func killAllStaysInside() async throws {
        try await HostileScenario.run { s in
            try await s.withSandbox { sandbox in
                // The harmless proof first, in this very sandbox: pid 1 is the sandbox's init, few pids exist.
                let probe = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "cat /proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'"]))
                let lines = String(decoding: probe.stdout, as: UTF8.self).split(separator: "\n")
                try #require(probe.exitCode == 0 && lines.count == 2, "probe failed: \(probe)")
                let pids = try #require(Int(lines[1]))
                try #require(pids <= 8, "the sandbox sees \(pids) processes: not a private pid namespace, refusing to run kill -9 -1")
                try #require(!lines[0].contains("/sbin/init") && !lines[0].contains("systemd"),
                             "pid 1 in the sandbox is \(lines[0]): refusing to run kill -9 -1")

                let kill = try await sandbox.exec(ExecRequest([s.payloads.hostile, "killall"]))
                let run = PayloadRun(arguments: ["hostile", "killall"], result: kill)
                #expect(run.observed("precheck") == "ok", "\(run.transcript)")
                #expect(run["kill_all"] == "OK", "kill(-1, SIGKILL) inside: \(run.transcript)")
                #expect(run.observed("sibling") == "killed", "kill -1 must reach the sandbox's own processes: \(run.transcript)")

                // The sandbox still works afterwards: its init ignores the signal, as a pid-namespace init does.
                let after = try await sandbox.exec(ExecRequest(["/bin/true"]))
                #expect(after.exitCode == 0, "the sandbox no longer runs commands after kill -9 -1: \(after)")
            }
            #expect(s.victim.isAliveAndUntouched, "kill -9 -1 inside the sandbox killed host process \(s.victim.pid)")
        }
    }

    @Test("a process entering the sandbox cannot be hijacked through /proc/<pid>/exe or /proc/<pid>/fd (CVE-2019-5736 shape)")
    func enteringExecCannotBeHijacked() async throws {
        try await HostileScenario.run { s in
            try await s.withSandbox { sandbox in
                // The watcher runs inside while the host enters the sandbox again and again.
                async let watching = sandbox.exec(ExecRequest([s.payloads.hostile, "exe-watch", "3"], timeout: 20))
                try await Task.sleep(for: .milliseconds(300))
                for _ in 0..<30 {
                    let entered = try await sandbox.exec(ExecRequest(["/bin/true"]))
                    #expect(entered.exitCode == 0, "an exec into the sandbox failed: \(entered)")
                }
                let run = PayloadRun(arguments: ["hostile", "exe-watch", "3"], result: try await watching)
                run.expectCompleted()
                let seen = Int(run.observed("exe_processes_seen") ?? "") ?? 0
                #expect(seen >= 2, "the watcher saw \(seen) other processes: it cannot have watched the execs\n\(run.transcript)")
                for (name, result) in run.attempts(withPrefix: "exe_write_") + run.attempts(withPrefix: "exe_reopen_write_") {
                    #expect(result != "OK", "ESCAPE: \(name) opened a process's executable for writing\n\(run.transcript)")
                }
                // Descriptors of other processes the watcher could grab: only the sandbox's own kind of
                // files (pipes of execs, terminals, /dev/null, paths inside). Never a pidfd, a cgroup
                // directory, the init executable or anything else the daemon holds.
                for (name, result) in run.attempts(withPrefix: "fdgrab_") where result == "OK" {
                    let target = run.observed(name.replacingOccurrences(of: "fdgrab_", with: "fdgrab_target_")) ?? "?"
                    let harmless = target.hasPrefix("pipe:[") || target.hasPrefix("/dev/") || target.hasPrefix("socket:[")
                        || ["/workspace", "/tmp", "/usr", "/opt/hostile", "/proc/"].contains { target.hasPrefix($0) }
                    #expect(harmless, "ESCAPE: \(name) grabbed \(target) from another process\n\(run.transcript)")
                }
            }
        }
    }
}

extension HostileSandboxTests {
    @Test("a process entering a persistent sandbox never shows the daemon's command line inside")
    func enteringExecHidesTheDaemon() async throws {
        try await HostileScenario.run { s in
            try await s.withSandbox { sandbox in
                async let watching = sandbox.exec(ExecRequest([s.payloads.hostile, "exe-watch", "2"], timeout: 20))
                try await Task.sleep(for: .milliseconds(300))
                for _ in 0..<20 { _ = try await sandbox.exec(ExecRequest(["/bin/true"])) }
                let run = PayloadRun(arguments: ["hostile", "exe-watch", "2"], result: try await watching)
                run.expectCompleted()
                // /proc/<pid>/cmdline is readable by anyone in the pid namespace: a clone of the daemon
                // that is not yet exec'd shows the daemon's arguments (paths, flags, maybe secrets).
                let daemon = CommandLine.arguments[0]
                let shown = run.observations(withPrefix: "exe_cmdline_").filter { $0.value.contains(daemon) }
                #expect(shown.isEmpty, "\(shown.count) processes entering the sandbox showed the daemon's command line inside, e.g. \(shown.first.map { "\($0.name): \($0.value.prefix(200))" } ?? "")")
            }
        }
    }
}

// MARK: - Forbidden kernel interfaces

extension HostileSandboxTests {
    @Test("bpf(2) is refused")
    func bpfIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("bpf")
            run.expectCompleted()
            run.expectRefused(["bpf_map_create", "bpf_prog_load"], with: Errno.seccomp)
        }
    }

    @Test("perf_event_open is refused, even for the caller's own software counters")
    func perfEventOpenIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("perf")
            run.expectCompleted()
            run.expectRefused(["perf_event_open_self", "perf_event_open_cpu"], with: Errno.seccomp)
        }
    }

    @Test("kexec_load and kexec_file_load are refused")
    func kexecIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("kexec")
            run.expectCompleted()
            // On this kernel (no CONFIG_KEXEC) the unfiltered answer would be ENOSYS: EPERM is the filter.
            run.expectRefused(["kexec_load", "kexec_file_load"], with: Errno.seccomp)
        }
    }

    @Test("init_module, finit_module and delete_module are refused")
    func moduleLoadingIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("module")
            run.expectCompleted()
            run.expectRefused(["init_module", "finit_module", "delete_module"], with: Errno.seccomp)
        }
    }

    @Test("keyctl, add_key and request_key are refused: no access to kernel keyrings")
    func keyringIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("keyring")
            run.expectCompleted()
            run.expectRefused(["add_key", "keyctl_join_session", "keyctl_get_user_keyring", "request_key"], with: Errno.seccomp)
        }
    }

    @Test("userfaultfd is refused, in every mode")
    func userfaultfdIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("userfaultfd")
            run.expectCompleted()
            run.expectRefused(["userfaultfd", "userfaultfd_user_mode_only"], with: Errno.seccomp)
            run.expectRefused("dev_userfaultfd", with: Errno.absent)
        }
    }

    @Test("open_by_handle_at (the shocker exploit) is refused")
    func openByHandleAtIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("shocker")
            run.expectCompleted()
            run.expectRefused("open_by_handle_at", with: Errno.seccomp)
            if run["name_to_handle_at"] == "OK" { run.expectRefused("open_by_handle_at_real", with: Errno.seccomp) }
            #expect(run.observed("escaped_root_listing") == nil, "ESCAPE: a guessed handle opened a directory: \(run.transcript)")
        }
    }

    @Test("io_uring_setup, io_uring_enter and io_uring_register are refused")
    func ioUringIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("iouring")
            run.expectCompleted()
            run.expectRefused(["io_uring_setup", "io_uring_enter", "io_uring_register"], with: Errno.seccomp)
        }
    }

    @Test("personality(READ_IMPLIES_EXEC) and personality(ADDR_NO_RANDOMIZE) are refused")
    func personalityIsFiltered() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("personality")
            run.expectCompleted()
            run.expectRefused(["personality_read_implies_exec", "personality_addr_no_randomize"], with: Errno.seccomp)
        }
    }

    @Test("setting the clock is refused (clock_settime, settimeofday, adjtimex, clock_adjtime)")
    func clockSettingIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("clock")
            run.expectCompleted()
            run.expectRefused(["clock_settime", "settimeofday", "adjtimex_set", "clock_adjtime_set"], with: Errno.seccomp)
        }
    }

    @Test("reboot(2) is refused")
    func rebootIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("reboot")
            run.expectCompleted()
            // The payload uses a wrong magic number: an unfiltered kernel would answer EINVAL, so EPERM is the filter.
            run.expectRefused("reboot", with: Errno.seccomp)
        }
    }

    @Test("swapon and swapoff are refused")
    func swapIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("swap")
            run.expectCompleted()
            run.expectRefused(["swapon", "swapoff"], with: Errno.seccomp)
        }
    }

    @Test("acct(2) is refused")
    func acctIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("acct")
            run.expectCompleted()
            run.expectRefused("acct", with: Errno.seccomp)
        }
    }

    @Test("iopl and ioperm are refused")
    func ioPortsAreRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("ioport")
            run.expectCompleted()
            run.expectRefused(["iopl", "ioperm"], with: Errno.seccomp)
        }
    }

    @Test("vhangup, quotactl and reading the kernel log are refused")
    func miscAdminCallsAreRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("misc")
            run.expectCompleted()
            run.expectRefused(["vhangup", "quotactl", "syslog_read"], with: Errno.seccomp)
        }
    }

    @Test("an i386 system call via int 0x80 kills the process with SIGSYS")
    func int80IsKilled() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("int80")
            #expect(run.observed("int80_start") == "1", "the payload did not start: \(run.transcript)")
            #expect(run["int80"] == nil, "ESCAPE: an i386 system call returned inside the sandbox: \(run.transcript)")
            #expect(run.result.signal == SIGSYS, "expected death by SIGSYS (\(SIGSYS)): \(run.transcript)")
        }
    }

    @Test("an x32 system call kills the process with SIGSYS")
    func x32IsKilled() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("x32")
            #expect(run.observed("x32_start") == "1", "the payload did not start: \(run.transcript)")
            #expect(run["x32"] == nil, "an x32 system call returned inside the sandbox: \(run.transcript)")
            #expect(run.result.signal == SIGSYS, "expected death by SIGSYS (\(SIGSYS)): \(run.transcript)")
        }
    }
}
