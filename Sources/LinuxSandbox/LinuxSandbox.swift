import CLinuxSandbox
import SandboxValues
import SystemPackage
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A live level-1 sandbox: its init (PID 1 inside), cgroup, namespaces and workspace.
///
/// `exec` may be called any number of times, also concurrently; files written to the workspace
/// or `/tmp` stay for later execs. `destroy` kills everything and removes the cgroup.
public final class LinuxSandbox: Sendable {
    public let id: String
    public let spec: SandboxSpec
    /// The host uid and gid root inside runs as.
    public let hostID: UInt32
    /// Host pid of the sandbox's init.
    public let initPID: Int32
    /// False when a requested limit is only approximated with rlimits (best-effort).
    public let limitsEnforced: Bool
    /// The sandbox's cgroup directory on the host.
    public let cgroupPath: String

    let engine: LinuxSandboxEngine
    let slot: UInt32
    let initPidfd: Int32
    let workspaceFD: Int32
    let rlimits: [sbx_rlimit]

    private struct State {
        var destroyed = false
        var execCount = 0
    }
    private let state = Mutex(State())

    init(engine: LinuxSandboxEngine, spec: SandboxSpec, slot: UInt32, hostID: UInt32, initPID: Int32, initPidfd: Int32,
         cgroupPath: String, workspaceFD: Int32, limitsEnforced: Bool, rlimits: [sbx_rlimit]) {
        self.engine = engine
        self.id = spec.id
        self.spec = spec
        self.slot = slot
        self.hostID = hostID
        self.initPID = initPID
        self.initPidfd = initPidfd
        self.cgroupPath = cgroupPath
        self.workspaceFD = workspaceFD
        self.limitsEnforced = limitsEnforced
        self.rlimits = rlimits
    }

    deinit {
        // A sandbox dropped without destroy() must not outlive its handle.
        if !state.withLock({ $0.destroyed }) { destroyBlocking() }
        close(workspaceFD)
        close(initPidfd)
    }

    public var isDestroyed: Bool { state.withLock { $0.destroyed } }

    /// Runs a command inside the sandbox and waits for it.
    ///
    /// - Parameters:
    ///   - request: argv, environment, stdin bytes, timeout, working directory.
    ///   - onOutput: called on the exec's own thread with each chunk of kept output, in order.
    /// - Returns: exit code or signal, captured output (capped at `limits.outputLimit` each, with
    ///   `truncated` flags), wall time, usage, and whether the timeout fired. A timeout kills
    ///   every process the exec started (its cgroup), however it detached itself.
    /// - Throws: `childSetup` when the command could not be started (`exec python4: ENOENT`),
    ///   `sandboxGone` after `destroy`.
    public func exec(
        _ request: ExecRequest, onOutput: (@Sendable (OutputChunk) -> Void)? = nil
    ) async throws(LinuxSandboxError) -> ExecResult {
        let (number, timeout) = try startExec(request)
        let result: Result<ExecResult, LinuxSandboxError> = await onDedicatedThread {
            Result { () throws(LinuxSandboxError) in
                let (result, tidyUp) = try self.execBlocking(request, number: number, timeout: timeout, onOutput: onOutput)
                tidyUp()
                return result
            }
        }
        return try result.get()
    }

    /// An exec's checks and number (its cgroup is `exec-N`), and its timeout.
    func startExec(_ request: ExecRequest) throws(LinuxSandboxError) -> (number: Int, timeout: Double) {
        try Self.validate(request)
        let timeout = request.timeout ?? spec.limits.executionTimeout
        let number: Int = try state.withLock { (s: inout State) throws(LinuxSandboxError) -> Int in
            if s.destroyed { throw LinuxSandboxError(.sandboxGone, "sandbox \(id) was destroyed") }
            s.execCount += 1
            return s.execCount
        }
        return (number, timeout)
    }

    /// Kills every process of the sandbox (`cgroup.kill`), waits for them, removes its cgroup and
    /// frees its uid. Idempotent.
    public func destroy() async {
        guard markDestroyed() else { return }
        await onDedicatedThread { self.destroyBlocking() }
    }

    /// Marks the sandbox destroyed; true for the first caller, who tears it down.
    func markDestroyed() -> Bool {
        state.withLock { s in
            defer { s.destroyed = true }
            return !s.destroyed
        }
    }

    func destroyBlocking() {
        state.withLock { $0.destroyed = true }
        engine.destroySandbox(cgroupPath: cgroupPath, initPidfd: initPidfd, slot: slot)
    }

    // MARK: - Workspace files

    /// How a workspace file is opened.
    public enum WorkspaceFileMode: Sendable {
        case read
        /// Create or truncate; the file is owned by the sandbox's root.
        case write
    }

    /// Opens a regular file in the workspace. `path` is resolved inside the workspace only
    /// (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`): `..` and
    /// symlinks planted by the sandbox cannot lead out. The caller closes the descriptor.
    public func openWorkspaceFile(_ path: String, mode: WorkspaceFileMode) throws(LinuxSandboxError) -> FileDescriptor {
        if isDestroyed { throw LinuxSandboxError(.sandboxGone, "sandbox \(id) was destroyed") }
        guard !path.isEmpty, !path.utf8.contains(0) else {
            throw LinuxSandboxError(.workspacePath, "workspace path \"\(path)\" is empty or contains NUL", path: path)
        }
        let resolve: UInt64 = 0x10 /* IN_ROOT */ | 0x02 /* NO_MAGICLINKS */ | 0x01 /* NO_XDEV */
        // O_NONBLOCK: a FIFO planted in the workspace must not hang the daemon.
        let flags: Int32 = mode == .read ? (O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
            : (O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        // Open as the sandbox's root: files are created owned by it (the workspace tmpfs belongs
        // to the sandbox's user namespace, where host root has no id), and the daemon's DAC
        // capabilities do not apply (they leave the effective set while fsuid is not 0).
        // setfsuid is per thread, and nothing suspends between the two calls.
        let oldGID = sbx_setfsgid(hostID)
        let oldUID = sbx_setfsuid(hostID)
        let fd = sbx_openat2(workspaceFD, path, UInt64(flags), mode == .write ? 0o644 : 0, resolve)
        _ = sbx_setfsuid(UInt32(oldUID))
        _ = sbx_setfsgid(UInt32(oldGID))
        if fd < 0 {
            throw LinuxSandboxError(.workspacePath, "open \(spec.workspacePath)/\(path): \(errnoName(-fd))", path: path, errno: -fd)
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw LinuxSandboxError(.workspacePath, "\(spec.workspacePath)/\(path) is not a regular file", path: path)
        }
        // Back to blocking for ordinary reads and writes.
        _ = fcntl(fd, F_SETFL, 0)
        return FileDescriptor(rawValue: fd)
    }

    /// Reads a workspace file, at most `limit` bytes (more is an error, not a silent cut).
    public func readWorkspaceFile(_ path: String, limit: Int = 16 << 20) async throws(LinuxSandboxError) -> [UInt8] {
        let fd = try openWorkspaceFile(path, mode: .read)
        let result: Result<[UInt8], LinuxSandboxError> = await onDedicatedThread {
            Result { () throws(LinuxSandboxError) in try Self.readAll(fd, path: path, limit: limit) }
        }
        return try result.get()
    }

    /// Reads `fd` to its end (at most `limit` bytes) and closes it.
    static func readAll(_ fd: FileDescriptor, path: String, limit: Int) throws(LinuxSandboxError) -> [UInt8] {
        defer { try? fd.close() }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
            if n < 0 {
                if Sys.errno == EINTR { continue }
                throw .system("read", path, Sys.errno)
            }
            if n == 0 { return bytes }
            if bytes.count + n > limit {
                throw LinuxSandboxError(.workspacePath, "\(path) is larger than \(limit) bytes", path: path)
            }
            bytes.append(contentsOf: buffer[0..<n])
        }
    }

    /// Creates or replaces a workspace file with `contents`.
    public func writeWorkspaceFile(_ path: String, contents: [UInt8]) async throws(LinuxSandboxError) {
        let fd = try openWorkspaceFile(path, mode: .write)
        let result: Result<Void, LinuxSandboxError> = await onDedicatedThread {
            Result { () throws(LinuxSandboxError) in try Self.writeAll(fd, contents, path: path) }
        }
        try result.get()
    }

    /// Writes all of `contents` to `fd` and closes it.
    static func writeAll(_ fd: FileDescriptor, _ contents: [UInt8], path: String) throws(LinuxSandboxError) {
        defer { try? fd.close() }
        var offset = 0
        while offset < contents.count {
            let n = contents.withUnsafeBytes { write(fd.rawValue, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if Sys.errno == EINTR { continue }
                throw .system("write", path, Sys.errno)
            }
            offset += n
        }
    }
}
