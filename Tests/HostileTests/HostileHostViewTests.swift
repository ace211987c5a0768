import Foundation
import Glibc
import SandboxCore
import Testing

// MARK: - /proc, /sys, /dev

extension HostileSandboxTests {
    @Test("writes to /proc/sys are refused and the host's kernel settings are unchanged")
    func procSysIsReadOnly() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("proc-sys", HostFiles.hostname())
            run.expectCompleted()
            #expect(run.observed("uts") == nil, "the sandbox shares the host's UTS namespace: \(run.transcript)")
            run.expectRefused(["procsys_hostname", "procsys_core_pattern", "procsys_modprobe", "procsys_sysrq",
                               "procsys_panic", "procsys_overcommit", "procsys_drop_caches", "procsys_ip_forward"],
                              with: Errno.unwritable)
        }
    }

    @Test("/proc/sysrq-trigger cannot be written")
    func sysrqTriggerIsUnwritable() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("sysrq")
            run.expectCompleted()
            run.expectRefused("sysrq_open", with: Errno.unwritable)
        }
    }

    @Test("/proc/kcore, /dev/mem and the kernel log cannot be read")
    func kernelMemoryIsUnreadable() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("kcore")
            run.expectCompleted()
            // runc masks /proc/kcore with /dev/null: opening may succeed, but nothing comes out.
            if run["kcore"] == "OK" {
                #expect(run.observed("kcore_content") == "", "ESCAPE: /proc/kcore returned data: \(run.transcript)")
            } else {
                run.expectRefused("kcore", with: Errno.unwritable)
            }
            run.expectRefused(["dev_mem", "dev_kmem"], with: Errno.absent)
            if run["proc_kmsg"] == "OK" {
                #expect(run.observed("proc_kmsg_content") == "", "/proc/kmsg returned data: \(run.transcript)")
            }
            run.expectRefused("syslog_read", with: Errno.seccomp)
            if let address = run.observed("kallsyms_first_address") {
                #expect(address.allSatisfy { $0 == "0" }, "kernel addresses are visible in /proc/kallsyms (KASLR leak): \(address)")
            }
        }
    }

    @Test("host files are not reachable via /proc/1/root, /proc/<host pid>/root or /proc/<host pid>/environ")
    func hostFilesAreUnreachableThroughProc() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("proc-host", String(s.victim.pid), s.secretPath)
            run.expectCompleted()
            run.expectNotLeaked(s.secret, what: "the host secret file")
            run.expectNotLeaked(s.victim.secret, what: "the environment of a host process")
            run.expectRefused(["prochost_root_secret", "prochost_environ", "prochost_cmdline", "prochost_cwd_secret"],
                              with: Errno.absent)
            run.expectRefused("direct_secret", with: Errno.absent)
            // /proc/1/root of a non-dumpable init is closed to the sandbox (EACCES); behind it there is only the sandbox's root.
            run.expectRefused("proc1_root_secret", with: ["ENOENT", "EACCES"])
            let pids = Int(run.observed("proc_pids") ?? "") ?? .max
            #expect(pids <= 8, "the sandbox sees \(pids) processes in /proc: \(run.transcript)")
        }
    }

    @Test("the sandbox's init exposes nothing of the host: environment, memory, executable, descriptors, cwd")
    func sandboxInitLeaksNothing() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("proc-host", String(s.victim.pid), s.secretPath)
            run.expectCompleted()
            run.expectNotLeaked(s.secret, what: "the host secret file (through the init's descriptors)")
            // The engine gives every sandbox its own environment; none of this test process's should show up.
            let ownSandboxVariables: Set<String> = ["PATH", "HOME", "TERM", "LANG", "LC_ALL", "PWD", "SHLVL", "_", "HOSTNAME", "USER"]
            for (key, value) in ProcessInfo.processInfo.environment where !ownSandboxVariables.contains(key) && value.count >= 6 {
                #expect(!run.stdout.contains("\(key)=\(value)"), "the host environment variable \(key) is visible inside")
            }
            run.expectRefused("proc1_mem_open", with: Errno.denied)
            run.expectRefused("proc1_exe_write", with: ["EACCES", "EPERM", "ETXTBSY", "EROFS", "ENOENT"])
            let cwd = run.observed("cwd") ?? ""
            #expect(!cwd.hasPrefix("(unreachable)"), "the payload's cwd is outside its root (CVE-2024-21626 shape): \(cwd)")
            let initCwd = run.observed("proc1_cwd") ?? "/"
            #expect(!initCwd.hasPrefix("(unreachable)") && !initCwd.hasPrefix("/work") && !initCwd.hasPrefix("/root"),
                    "the init's cwd points at the host: \(initCwd)")
            let listing = run.observed("proc1_cwd_listing") ?? ""
            #expect(!listing.contains("wt-hostile") && !listing.contains("sandboxd-hostile-"),
                    "the init's cwd lists host directories: \(listing)")
        }
    }

    @Test("a one-shot payload never sees the daemon in PID 1: not its command line, name, environment or memory")
    func oneShotInitHidesTheDaemonFromTheStart() async throws {
        try await HostileScenario.run { s in
            // The payload reads /proc/1 first thing. Several at once, so some start while PID 1 is
            // still getting ready (the window between the payload's exec and PID 1 hiding itself).
            let daemonArguments = CommandLine.arguments.joined(separator: " ")
            var runs: [PayloadRun] = []
            for _ in 0..<8 {
                try await withThrowingTaskGroup(of: PayloadRun.self) { group in
                    for _ in 0..<6 { group.addTask { try await s.hostile("early-proc1") } }
                    for try await run in group { runs.append(run) }
                }
            }
            var leaks: [String] = []
            for run in runs {
                let cmdline = run.observed("early_proc1_cmdline") ?? ""
                let comm = run.observed("early_proc1_comm") ?? ""
                if !cmdline.hasPrefix("sandboxd-init") { leaks.append("cmdline: \(cmdline.prefix(160))") }
                if !comm.hasPrefix("sandboxd-init") { leaks.append("comm: \(comm)") }
                run.expectRefused(["early_proc1_environ", "early_proc1_mem"], with: Errno.denied)
            }
            #expect(leaks.isEmpty, "PID 1 showed the daemon (\(daemonArguments.prefix(80))…) to \(leaks.count) of \(runs.count) payloads:\n\(leaks.prefix(5).joined(separator: "\n"))")
        }
    }

    @Test("/sys is absent or read-only: no uevent_helper, no cgroup writes")
    func sysIsReadOnly() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("sys", "hostile-\(s.tag)")
            run.expectCompleted()
            run.expectRefused(["sys_uevent_helper", "sys_thp", "sys_power_state", "sys_cgroup_procs",
                               "sys_cgroup_unified_procs", "sys_cgroup_mkdir", "sys_cgroup_unified_mkdir"],
                              with: Errno.unwritable)
        }
    }

    @Test("/dev holds only the minimal device set: no /dev/mem, disks, kvm, kmsg or loop devices")
    func devIsMinimal() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("devices")
            run.expectCompleted()
            run.expectRefused(["dev_mem", "dev_kmem", "dev_port", "dev_kmsg", "dev_sda", "dev_vda", "dev_loop0",
                               "dev_loop_control", "dev_kvm", "dev_fuse", "dev_net_tun", "dev_msr", "dev_tty0", "dev_tty1",
                               "dev_btrfs_control", "dev_autofs", "dev_hwrng"], with: Errno.absent)
            let allowed: Set<String> = [".", "..", "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx",
                                        "shm", "fd", "stdin", "stdout", "stderr", "core", "console", "mqueue"]
            let entries = Set((run.observed("dev_dir_entries") ?? "").split(separator: ",").map(String.init))
            #expect(!entries.isEmpty, "no /dev listing: \(run.transcript)")
            #expect(entries.subtracting(allowed).isEmpty, "unexpected entries in the sandbox's /dev: \(entries.subtracting(allowed).sorted())")
        }
    }

    @Test("mknod of character and block devices is refused")
    func mknodIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("mknod")
            run.expectCompleted()
            run.expectRefused(["mknod_char_null", "mknod_char_mem", "mknod_block_sda", "mknod_block_vda"], with: Errno.seccomp)
            run.expectRefused("mknod_dev_char", with: ["EPERM", "EROFS"])
        }
    }
}

// MARK: - Files

extension HostileSandboxTests {
    @Test("/usr, /bin, /lib and /sbin are read-only and the host's files are unchanged")
    func hostRuntimeIsReadOnly() async throws {
        let marker = "hostile-\(UUID().uuidString.prefix(8))"
        let hostPaths = ["/usr", "/usr/bin", "/usr/lib", "/bin", "/lib", "/sbin", "/usr/local"].map { "\($0)/\(marker)" }
            + ["/usr/lib/\(marker)-dir"]
        defer { for path in hostPaths { try? FileManager.default.removeItem(atPath: path) } } // only if it escaped
        try await HostileScenario.run(watching: hostPaths) { s in
            let run = try await s.hostile("usr-write", marker)
            run.expectCompleted()
            run.expectRefused(["usr_create", "usr_bin_create", "usr_lib_create", "bin_create", "lib_create", "sbin_create",
                               "usr_local_create", "usr_mkdir"], with: ["EROFS"])
            run.expectRefused("usr_bin_ls_truncate", with: ["EROFS", "EACCES", "ETXTBSY"])
            for path in hostPaths { #expect(!FileManager.default.fileExists(atPath: path), "ESCAPE: \(path) was created on the host") }
        }
    }

    @Test("the writable places (/tmp, the workspace, /dev/shm, /dev) are size-capped: filling them stops at ENOSPC")
    func writablePlacesAreCapped() async throws {
        try await HostileScenario.run { s in
            // The spec caps each private tmpfs at 16 MiB (HostileScenario.sandboxSpec); try to write 64 MiB.
            // On this host no memory controller charges tmpfs pages: the caps are what keeps host RAM safe.
            let run = try await s.hostile("fill", String(64 << 20), "/tmp", "/workspace", "/dev/shm", "/dev", "/")
            run.expectCompleted()
            for place in ["tmp", "workspace", "dev_shm"] {
                #expect(run["fill_end_\(place)"] == "ENOSPC", "/\(place) did not fill up: \(run.transcript)")
                let bytes = UInt64(run.observed("fill_bytes_\(place)") ?? "") ?? .max
                #expect(bytes <= 16 << 20, "/\(place) took \(bytes) bytes, over its 16 MiB cap")
            }
            // /dev is a tiny tmpfs; the root is read-only.
            if run["fill_open_dev"] == "OK" {
                #expect(run["fill_end_dev"] == "ENOSPC" && (UInt64(run.observed("fill_bytes_dev") ?? "") ?? .max) <= 1 << 20,
                        "/dev is not capped: \(run.transcript)")
            }
            run.expectRefused("fill_open_root", with: ["EROFS"])
        }
    }

    @Test("the writable tmpfs mounts cap their inode count, not only their size")
    func writablePlacesCapInodes() async throws {
        try await HostileScenario.run { s in
            // Empty files take no space, so `size=` does not bound them; each costs an inode and a dentry
            // of unreclaimable kernel memory (~1 KiB). Where no memory controller charges that to the
            // sandbox (best-effort hosts like this one) only `nr_inodes` stops a sandbox from pinning
            // gigabytes of host kernel memory. 262144 inodes ≈ 256 MiB at worst, per mount.
            let run = try await s.hostile("inodes", "/tmp", "/workspace", "/dev/shm", "/dev")
            run.expectCompleted()
            for place in ["tmp", "workspace", "dev_shm", "dev"] {
                let inodes = UInt64(run.observed("inodes_\(place)") ?? "") ?? .max
                #expect(inodes <= 262_144, "/\(place.replacingOccurrences(of: "_", with: "/")) allows \(inodes) inodes (no nr_inodes cap)")
            }
        }
    }

    @Test("chmod and chown of a read-only bind (/usr/bin/ls) fail and the host file is unchanged")
    func chmodOfReadOnlyBindFails() async throws {
        try await HostileScenario.run { s in
            let before = FileStamp(path: "/usr/bin/ls")
            let run = try await s.hostile("chmod", "/usr/bin/ls")
            run.expectCompleted()
            run.expectRefused(["chmod_same_mode", "chown_noop", "utimes_now", "setxattr"], with: ["EROFS", "EPERM"])
            run.expectRefused("open_write", with: ["EROFS", "EACCES", "ETXTBSY"])
            #expect(FileStamp(path: "/usr/bin/ls") == before, "/usr/bin/ls changed on the host")
        }
    }

    @Test("/etc/shadow, /root, /home, /var, /run and /work are not visible")
    func hostPrivateDirectoriesAreInvisible() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("invisible")
            run.expectCompleted()
            run.expectRefused(["etc_shadow", "etc_gshadow", "etc_sudoers", "ssh_host_key", "sandboxd_socket"], with: Errno.absent)
            for dir in ["root_dir", "home_dir", "var_dir", "run_dir", "work_dir"] {
                // Absent, or an empty placeholder: nothing of the host's directory.
                if run[dir] == "OK" {
                    let entries = Set((run.observed("\(dir)_entries") ?? "").split(separator: ",").map(String.init))
                    #expect(entries.subtracting([".", ".."]).isEmpty, "\(dir) shows host entries: \(entries.sorted())")
                } else {
                    run.expectRefused(dir, with: Errno.absent)
                }
            }
            let etc = Set((run.observed("etc_dir_entries") ?? "").split(separator: ",").map(String.init))
            #expect(!etc.contains("shadow") && !etc.contains("ssh") && !etc.contains("postgresql"),
                    "/etc inside looks like the host's /etc: \(etc.sorted())")
        }
    }

    @Test("chroot + chdir(\"..\") cannot climb out of the sandbox")
    func chrootEscapeFails() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("chroot", s.secretPath)
            run.expectCompleted()
            run.expectRefused("chroot", with: Errno.seccomp)
            #expect(run["chroot_secret"] == nil && run.observed("chroot_root_listing") == nil, "\(run.transcript)")
            run.expectNotLeaked(s.secret, what: "the host secret file")
        }
    }
}

// MARK: - Privileges

extension HostileSandboxTests {
    @Test("the sandbox runs with every capability set empty, no_new_privs, seccomp mode 2 and locked securebits")
    func privilegeStateIsMinimal() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("status")
            run.expectCompleted()
            for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                #expect(run.observed("status_\(set)") == "0000000000000000", "\(set) is not empty: \(run.transcript)")
            }
            #expect(run.observed("status_NoNewPrivs") == "1", "no_new_privs is not set")
            #expect(run.observed("status_Seccomp") == "2", "not in seccomp filter mode")
            let bits = Int(run.observed("securebits") ?? "") ?? 0
            // SECBIT_NOROOT (1) and its lock (2), SECBIT_NO_SETUID_FIXUP (4) and its lock (8).
            #expect(bits & 0x0f == 0x0f, "securebits are not set and locked: \(bits)")
            let core = run.observed("rlimit_core") ?? ""
            #expect(core.hasPrefix("0/"), "RLIMIT_CORE is not 0: \(core)")
            #expect(!(run.observed("cgroup") ?? "").contains("hostile-"), "the host's cgroup path is visible: \(run.observed("cgroup") ?? "")")
        }
    }

    @Test("raising capabilities, switching uid, clearing securebits or raising rlimits is refused")
    func privilegeRaisingIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("status")
            run.expectCompleted()
            run.expectRefused(["capset_raise", "ambient_raise", "securebits_clear", "setgroups"], with: Errno.seccomp)
            run.expectRefused(["setuid_other", "setgid_other"], with: ["EPERM", "EINVAL"])
            run.expectRefused("rlimit_nofile_raise", with: Errno.seccomp)
            run.expectRefused("oom_score_adj_lower", with: Errno.denied)
        }
    }

    @Test("a set-user-ID root binary gains no privilege")
    func setuidBinaryGainsNothing() async throws {
        try await HostileScenario.run { s in
            let dir = s.scratchDirectory + "/suid"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o755])
            let probe = dir + "/suidprobe"
            try Payloads.copyExecutable(from: s.payloads.hostDirectory + "/suidprobe", to: probe)
            #expect(chown(probe, 0, 0) == 0 && chmod(probe, 0o4755) == 0, "cannot make \(probe) set-user-ID root")
            chmod(s.scratchDirectory, 0o755)
            let mount = MountSpec(hostPath: dir, sandboxPath: "/opt/suid", readOnly: true)

            let p = try await s.runInSandbox([s.payloads.suidprobe], mounts: [mount])
            let u = try await s.runInSandbox(["/opt/suid/suidprobe"], mounts: [mount])
            u.expectCompleted()
            let baseline = try #require(p.observed("euid"), "no baseline: \(p.transcript)")
            #expect(u.observed("euid") == baseline, "the set-user-ID binary changed the effective uid: \(u.transcript)")
            #expect(u.observed("suid") == baseline, "the set-user-ID binary changed the saved uid: \(u.transcript)")
            #expect(u.observed("status_CapEff") == "0000000000000000", "capabilities gained: \(u.transcript)")
            #expect(u.observed("status_NoNewPrivs") == "1", "no_new_privs is not set: \(u.transcript)")
            // /usr/bin/passwd is set-user-ID root on the host. Inside, its owner (host root) is unmapped and
            // /usr is mounted nosuid, so the bit cannot take effect whatever no_new_privs says.
            let passwd = try await s.runInSandbox(["/bin/sh", "-c", "stat -c '%u %A' /usr/bin/passwd; grep ' /usr ' /proc/self/mountinfo"])
            let lines = passwd.stdout.split(separator: "\n")
            #expect(lines.first?.hasPrefix("65534 ") == true, "/usr/bin/passwd is owned by a mapped uid inside: \(passwd.transcript)")
            #expect(lines.dropFirst().first?.contains("nosuid") == true, "/usr is not mounted nosuid: \(passwd.transcript)")
        }
    }

    @Test("file capabilities on a binary are not granted")
    func fileCapabilitiesAreNotGranted() async throws {
        try await HostileScenario.run { s in
            let dir = s.scratchDirectory + "/fcaps"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o755])
            let probe = dir + "/suidprobe"
            try Payloads.copyExecutable(from: s.payloads.hostDirectory + "/suidprobe", to: probe)
            // struct vfs_cap_data, revision 2, effective: CAP_SYS_ADMIN (21) and CAP_DAC_OVERRIDE (1) permitted.
            let caps: [UInt32] = [0x0200_0001, (1 << 21) | (1 << 1), 0, 0, 0]
            let rc = setExtendedAttribute(probe, "security.capability", caps.flatMap { value in
                (0..<4).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
            })
            try #require(rc == 0, "setxattr(security.capability, \(probe)): \(errnoText())")
            chmod(s.scratchDirectory, 0o755)
            let run = try await s.runInSandbox(["/opt/fcaps/suidprobe"],
                                               mounts: [MountSpec(hostPath: dir, sandboxPath: "/opt/fcaps", readOnly: true)])
            run.expectCompleted()
            #expect(run.observed("status_CapEff") == "0000000000000000", "file capabilities were granted: \(run.transcript)")
            #expect(run.observed("status_CapPrm") == "0000000000000000", "file capabilities were granted: \(run.transcript)")
        }
    }

    @Test("root inside the sandbox is an unprivileged uid on the host")
    func sandboxRootIsUnprivilegedOnHost() async throws {
        try await HostileScenario.run { s in
            let marker = "hostile-uid-\(s.tag)"
            async let running = s.hostile("linger", marker, "wait", timeout: 5)
            var hostPids: [pid_t] = []
            for _ in 0..<80 where hostPids.isEmpty {
                try await Task.sleep(for: .milliseconds(50))
                hostPids = HostFiles.processes(withMarker: marker)
            }
            var uids: [String] = []
            for pid in hostPids {
                let line = (HostFiles.read("/proc/\(pid)/status") ?? "").split(separator: "\n").first { $0.hasPrefix("Uid:") }
                uids.append(line.map(String.init) ?? "?")
            }
            let run = try await running
            #expect(!hostPids.isEmpty, "the sandboxed processes were not found on the host: \(run.transcript)")
            for line in uids {
                let ids = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().compactMap { UInt32($0) }
                #expect(ids.count == 4 && !ids.contains(0), "a sandboxed process runs as host root: \(line)")
            }
        }
    }
}
