import CLinuxSandbox

#if canImport(Glibc)
import Glibc
#endif

/// What the report pipe said before it closed.
enum ChildReport {
    /// EOF: the command was exec'd (or the child died silently). `payloadPID` for execs.
    case started(payloadPID: Int32?)
    case failed(sbx_report, payloadPID: Int32?)
    case timedOut(payloadPID: Int32?)

    /// Reads records until EOF or `timeout` seconds.
    static func read(from fd: Int32, timeout: Double) -> ChildReport {
        let deadline = Sys.monotonicNow() + timeout
        var payload: Int32?
        var record = sbx_report()
        var failure: sbx_report?
        while true {
            let remaining = deadline - Sys.monotonicNow()
            if remaining <= 0 {
                if let failure { return .failed(failure, payloadPID: payload) }
                return .timedOut(payloadPID: payload)
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(remaining * 1000 + 1, 60_000)))
            if ready < 0 && Sys.errno == EINTR { continue }
            if ready <= 0 { continue }
            let n = withUnsafeMutableBytes(of: &record) { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && (Sys.errno == EINTR || Sys.errno == EAGAIN) { continue }
            if n <= 0 {
                if let failure { return .failed(failure, payloadPID: payload) }
                return .started(payloadPID: payload)
            }
            if n != MemoryLayout<sbx_report>.size { continue }
            if record.step == Int32(SBX_STEP_NONE.rawValue) {
                payload = record.value
            } else if failure == nil {
                // Keep reading to EOF: the payload's pid may come after its failure, and an
                // unreaped payload would keep the cgroup populated.
                failure = record
            }
        }
    }

    static let stepNames: [Int32: String] = [
        Int32(SBX_STEP_WAIT_PARENT.rawValue): "wait for the parent",
        Int32(SBX_STEP_SETGROUPS.rawValue): "setgroups",
        Int32(SBX_STEP_SETRESGID.rawValue): "setresgid",
        Int32(SBX_STEP_SETRESUID.rawValue): "setresuid",
        Int32(SBX_STEP_MAKE_PRIVATE.rawValue): "make mounts private",
        Int32(SBX_STEP_ROOT_TMPFS.rawValue): "mount root tmpfs",
        Int32(SBX_STEP_MKDIR.rawValue): "mkdir",
        Int32(SBX_STEP_MOUNT.rawValue): "mount",
        Int32(SBX_STEP_MOUNT_SETATTR.rawValue): "mount_setattr",
        Int32(SBX_STEP_SYMLINK.rawValue): "symlink",
        Int32(SBX_STEP_WRITE_FILE.rawValue): "write",
        Int32(SBX_STEP_PIVOT_ROOT.rawValue): "pivot_root",
        Int32(SBX_STEP_DETACH_OLD_ROOT.rawValue): "detach old root",
        Int32(SBX_STEP_ROOT_READONLY.rawValue): "make root read-only",
        Int32(SBX_STEP_SETHOSTNAME.rawValue): "sethostname",
        Int32(SBX_STEP_LOOPBACK.rawValue): "bring up lo",
        Int32(SBX_STEP_SETNS.rawValue): "setns",
        Int32(SBX_STEP_FORK.rawValue): "fork into the sandbox",
        Int32(SBX_STEP_SETSID.rawValue): "setsid",
        Int32(SBX_STEP_DUP_STDIO.rawValue): "set up stdio",
        Int32(SBX_STEP_CHDIR.rawValue): "chdir",
        Int32(SBX_STEP_RLIMIT.rawValue): "setrlimit",
        Int32(SBX_STEP_CLOSE_FDS.rawValue): "close_range",
        Int32(SBX_STEP_SECUREBITS.rawValue): "set securebits",
        Int32(SBX_STEP_CAPBSET_DROP.rawValue): "drop bounding capabilities",
        Int32(SBX_STEP_CAP_AMBIENT.rawValue): "clear ambient capabilities",
        Int32(SBX_STEP_CAPSET.rawValue): "capset",
        Int32(SBX_STEP_NO_NEW_PRIVS.rawValue): "no_new_privs",
        Int32(SBX_STEP_SECCOMP.rawValue): "load seccomp filter",
        Int32(SBX_STEP_EXEC.rawValue): "exec",
        Int32(SBX_STEP_DUMPABLE.rawValue): "set dumpable",
        Int32(SBX_STEP_SIGNALS.rawValue): "reset signals",
    ]

    /// The typed error for a failure record: `mount /usr: EACCES (Permission denied)`.
    /// - Parameters:
    ///   - path: the object the record's index names (mount target, exec candidate), if any.
    static func error(_ record: sbx_report, path: String?, detail: String? = nil) -> LinuxSandboxError {
        let step = stepNames[record.step] ?? "step \(record.step)"
        var message = step
        if let path { message += " " + path }
        if let detail { message += " (\(detail))" }
        message += ": " + errnoName(record.error)
        return LinuxSandboxError(.childSetup, message, step: step, path: path, errno: record.error)
    }
}
