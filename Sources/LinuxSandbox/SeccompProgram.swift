import CSeccomp
import CLinuxSandbox

#if canImport(Glibc)
import Glibc
#endif

/// The compiled seccomp filter every process in a sandbox runs under.
///
/// An allowlist modelled on Docker's default profile: the syscalls ordinary programs use are
/// allowed, everything else (namespace creation, `setns`, the mount family, `pivot_root`,
/// `chroot`, `ptrace`, `process_vm_*`, `bpf`, `perf_event_open`, `kexec_*`, module loading,
/// keyrings, `userfaultfd`, `open_by_handle_at`, `iopl`/`ioperm`, clock setting, `reboot`,
/// `swapon`/`swapoff`, `acct`, `io_uring_*`, and any syscall added to the kernel later) fails
/// with EPERM, so programs fail cleanly instead of crashing. `clone` is allowed only without
/// namespace flags; `clone3`, whose flags live in memory a filter cannot read, answers ENOSYS
/// so libc falls back to `clone`. `socket` is allowed for AF_UNIX, AF_INET, AF_INET6 and
/// AF_NETLINK only (no AF_VSOCK). `ioctl` is allowed except `TIOCSTI` and `TIOCLINUX`. Any
/// other ABI (i386 via `int 0x80`, x32) kills the process.
///
/// Built once with libseccomp and exported as BPF; the same program is loaded by every exec.
/// Where compiling costs (a level-3 guest, where libseccomp's first run under TCG is tens of
/// milliseconds on every cold create), the program exported on the host (`exportStandard`) is
/// taken instead (`init(validating:)`).
public final class SeccompProgram: @unchecked Sendable {
    /// Points at a `struct sock_fprog` whose filter array lives as long as this object.
    let program: UnsafeMutablePointer<sock_fprog>
    private let filter: UnsafeMutablePointer<sock_filter>
    let instructionCount: Int

    deinit {
        filter.deallocate()
        program.deallocate()
    }

    static let allowed: [String] = [
        "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "cachestat", "capget", "capset",
        "chdir", "chmod", "chown", "clock_getres", "clock_gettime", "clock_nanosleep", "close", "close_range",
        "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
        "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve", "execveat",
        "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir", "fchmod",
        "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock",
        "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futex_requeue",
        "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
        "getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
        "getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "get_robust_list",
        "getrusage", "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getxattr",
        "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
        "io_getevents", "io_pgetevents", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "kill",
        "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lgetxattr", "link",
        "linkat", "listen", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise",
        "map_shadow_stack", "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
        "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
        "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
        "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "open",
        "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
        "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
        "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
        "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
        "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo",
        "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
        "semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid",
        "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid",
        "setreuid", "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_tid_address", "setuid",
        "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
        "splice", "stat", "statfs", "statx", "symlink", "symlinkat", "sync",
        "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
        "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime",
        "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime",
        "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
    ]

    /// The socket families a sandbox may create: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.
    static let socketFamilies: [UInt64] = [1, 2, 10, 16]

    /// Namespace flags `clone` must not carry.
    static let namespaceFlags: UInt64 = 0x0002_0000 /* NEWNS */ | 0x0200_0000 /* NEWCGROUP */
        | 0x0400_0000 /* NEWUTS */ | 0x0800_0000 /* NEWIPC */ | 0x1000_0000 /* NEWUSER */
        | 0x2000_0000 /* NEWPID */ | 0x4000_0000 /* NEWNET */ | 0x80 /* NEWTIME */

    static let actAllow: UInt32 = 0x7fff_0000
    static let actKillProcess: UInt32 = 0x8000_0000
    static func actErrno(_ e: Int32) -> UInt32 { 0x0005_0000 | (UInt32(e) & 0xffff) }

    /// The default profile, built on first use and shared.
    static let standard: Result<SeccompProgram, LinuxSandboxError> = Result(catching: { () throws(LinuxSandboxError) in
        try SeccompProgram()
    })

    /// Refuses `ioctl(fd, TIOCSTI | TIOCLINUX, …)` before libseccomp's program runs. The kernel
    /// reads an ioctl command as 32 bits, so only the low word of the argument is compared: a
    /// value with junk in the high bits gets no way around the check.
    static let ioctlPrefix: [sock_filter] = {
        let ldAbs: UInt16 = 0x20, jeq: UInt16 = 0x15, ja: UInt16 = 0x05, ret: UInt16 = 0x06
        let auditArchX86_64: UInt32 = 0xC000_003E, nrIoctl: UInt32 = 16
        let tiocsti: UInt32 = 0x5412, tioclinux: UInt32 = 0x541C
        return [
            sock_filter(code: ldAbs, jt: 0, jf: 0, k: 4),                  // 0: A = arch
            sock_filter(code: jeq, jt: 0, jf: 7, k: auditArchX86_64),      // 1: other ABI → libseccomp
            sock_filter(code: ldAbs, jt: 0, jf: 0, k: 0),                  // 2: A = nr
            sock_filter(code: jeq, jt: 0, jf: 5, k: nrIoctl),              // 3: not ioctl → libseccomp
            sock_filter(code: ldAbs, jt: 0, jf: 0, k: 24),                 // 4: A = low word of args[1]
            sock_filter(code: jeq, jt: 2, jf: 0, k: tiocsti),              // 5: → deny
            sock_filter(code: jeq, jt: 1, jf: 0, k: tioclinux),            // 6: → deny
            sock_filter(code: ja, jt: 0, jf: 0, k: 1),                     // 7: → libseccomp
            sock_filter(code: ret, jt: 0, jf: 0, k: actErrno(EPERM)),      // 8: deny
        ]
    }()

    /// The standard program's instructions as the kernel reads them (8 bytes each, host order):
    /// what `init(validating:)` takes, e.g. in a level-3 guest image.
    public static func exportStandard() throws(LinuxSandboxError) -> [UInt8] {
        let compiled = try standard.get()
        return [UInt8](UnsafeRawBufferPointer(start: compiled.filter, count: compiled.instructionCount * MemoryLayout<sock_filter>.size))
    }

    /// A program exported by `exportStandard` (on the host, for a guest). Checked before use: a
    /// whole number of 8-byte instructions, 1–4096 of them (the kernel's limit), beginning with
    /// this build's own `TIOCSTI`/`TIOCLINUX` prefix, every jump landing inside the program and
    /// the last instruction a return. The kernel checks the rest when each sandbox loads it.
    /// Throws `seccomp` for anything else: a sandbox never starts without its filter.
    public init(validating bytes: [UInt8]) throws(LinuxSandboxError) {
        let size = MemoryLayout<sock_filter>.size
        guard !bytes.isEmpty, bytes.count % size == 0 else {
            throw LinuxSandboxError(.seccomp, "the seccomp program is \(bytes.count) bytes, not a whole number of \(size)-byte BPF instructions")
        }
        let count = bytes.count / size
        guard count <= 4096 else { throw LinuxSandboxError(.seccomp, "the seccomp program's \(count) instructions exceed the kernel's 4096") }
        var instructions = [sock_filter](repeating: sock_filter(), count: count)
        instructions.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: bytes, count: bytes.count)) }
        let prefix = Self.ioctlPrefix
        guard count > prefix.count, zip(prefix, instructions).allSatisfy({ $0.code == $1.code && $0.jt == $1.jt && $0.jf == $1.jf && $0.k == $1.k }) else {
            throw LinuxSandboxError(.seccomp, "the seccomp program does not begin with this build's ioctl checks: it was not exported by this version")
        }
        let classMask: UInt16 = 0x07, jumpClass: UInt16 = 0x05, returnClass: UInt16 = 0x06, jumpAlways: UInt16 = 0x05
        for (index, instruction) in instructions.enumerated() where instruction.code & classMask == jumpClass {
            let furthest = instruction.code == jumpAlways ? Int(instruction.k) : Int(max(instruction.jt, instruction.jf))
            guard index + 1 + furthest < count else {
                throw LinuxSandboxError(.seccomp, "the seccomp program's instruction \(index) jumps past its end")
            }
        }
        guard instructions[count - 1].code & classMask == returnClass else {
            throw LinuxSandboxError(.seccomp, "the seccomp program does not end with a return")
        }
        filter = .allocate(capacity: count)
        filter.initialize(from: instructions, count: count)
        program = .allocate(capacity: 1)
        program.initialize(to: sock_fprog(len: UInt16(count), filter: filter))
        instructionCount = count
    }

    init() throws(LinuxSandboxError) {
        guard let ctx = seccomp_init(Self.actErrno(EPERM)) else {
            throw LinuxSandboxError(.seccomp, "seccomp_init failed")
        }
        defer { seccomp_release(ctx) }
        func check(_ rc: Int32, _ what: String) throws(LinuxSandboxError) {
            if rc < 0 { throw LinuxSandboxError(.seccomp, "libseccomp: \(what): \(errnoName(-rc))", errno: -rc) }
        }
        // Native ABI only; i386 and x32 calls kill the process rather than being looked up in
        // a table they were not written for.
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, Self.actKillProcess), "bad-arch action")
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "no_new_privs attribute")
        // A binary tree over the syscall numbers instead of one comparison after another: the
        // same rules, but every load of the filter is far cheaper. The kernel runs the filter
        // once per syscall number and ABI when it is attached (to cache the always-allowed
        // ones), so attaching a 335-step chain cost ~1 ms of CPU per sandbox on this host.
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2), "binary-tree optimization")

        func rule(_ action: UInt32, _ name: String, _ conditions: [scmp_arg_cmp] = []) throws(LinuxSandboxError) {
            let nr = seccomp_syscall_resolve_name(name)
            if nr < 0 { return }   // not a syscall on this architecture / libseccomp version
            let rc = conditions.withUnsafeBufferPointer {
                seccomp_rule_add_array(ctx, action, nr, UInt32($0.count), $0.baseAddress)
            }
            try check(rc, "rule for \(name)")
        }
        for name in Self.allowed { try rule(Self.actAllow, name) }

        // clone: allowed only without namespace flags (arg 0 on x86_64 is the flags word).
        try rule(Self.actAllow, "clone", [scmp_arg_cmp(arg: 0, op: SCMP_CMP_MASKED_EQ, datum_a: Self.namespaceFlags, datum_b: 0)])
        // clone3 keeps its flags in memory: answer ENOSYS so glibc falls back to clone.
        try rule(Self.actErrno(ENOSYS), "clone3")

        // socket: only the families ordinary programs use (Unix, IPv4, IPv6, and netlink, which
        // glibc's getaddrinfo asks for the host's addresses). Everything else answers EPERM: above
        // all AF_VSOCK, which no network namespace confines and which leads to the hypervisor, and
        // AF_ALG, AF_BLUETOOTH, AF_RDS … (old, rarely used kernel code). The kernel reads the
        // family as an int, so only the low 32 bits are compared: `(1 << 32) | AF_VSOCK` is no way
        // around the check. socketpair exists for AF_UNIX only.
        for family in Self.socketFamilies {
            try rule(Self.actAllow, "socket", [scmp_arg_cmp(arg: 0, op: SCMP_CMP_MASKED_EQ, datum_a: 0xffff_ffff, datum_b: family)])
        }
        try rule(Self.actAllow, "socketpair", [scmp_arg_cmp(arg: 0, op: SCMP_CMP_MASKED_EQ, datum_a: 0xffff_ffff, datum_b: 1)])

        // ioctl is allowed here; TIOCSTI and TIOCLINUX are refused by a hand-written prefix (below):
        // libseccomp cannot combine an unconditional allow with a conditional errno.
        try rule(Self.actAllow, "ioctl")

        // personality: only the values Docker allows (query, PER_LINUX, ADDR_NO_RANDOMIZE variants).
        for value: UInt64 in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            try rule(Self.actAllow, "personality", [scmp_arg_cmp(arg: 0, op: SCMP_CMP_EQ, datum_a: value, datum_b: 0)])
        }

        // Export the BPF through a memfd (libseccomp 2.5 exports to a file descriptor only).
        let fd = sbx_memfd("sandboxd-seccomp")
        if fd < 0 { throw .system("memfd_create", nil, -fd) }
        defer { close(fd) }
        try check(seccomp_export_bpf(ctx, fd), "export BPF")
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0, size % Int(MemoryLayout<sock_filter>.size) == 0 else {
            throw LinuxSandboxError(.seccomp, "libseccomp exported \(size) bytes, not a BPF program")
        }
        let exported = Int(size) / MemoryLayout<sock_filter>.size
        let prefix = Self.ioctlPrefix
        let count = prefix.count + exported
        guard count <= 4096 else { throw LinuxSandboxError(.seccomp, "BPF program of \(count) instructions exceeds the kernel's 4096") }
        filter = .allocate(capacity: count)
        for (i, instruction) in prefix.enumerated() { (filter + i).initialize(to: instruction) }
        let got = pread(fd, filter + prefix.count, Int(size), 0)
        guard got == size else {
            filter.deallocate()
            throw LinuxSandboxError(.seccomp, "reading the exported BPF: short read")
        }
        program = .allocate(capacity: 1)
        program.initialize(to: sock_fprog(len: UInt16(count), filter: filter))
        instructionCount = count
    }
}
