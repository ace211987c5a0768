import CLinuxSandbox
import SandboxCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Level 1: creates native Linux sandboxes (namespaces, cgroup v2, seccomp, no capabilities).
///
/// One engine per daemon. Every blocking step (clone, waiting, pipe I/O) runs on a dedicated
/// thread, never on Swift's cooperative pool.
public final class LinuxSandboxEngine: Sendable {
    public let configuration: LinuxSandboxConfiguration
    /// The cgroup v2 limit controllers (`cpu`, `memory`, `pids`) sandboxes get on this host.
    public let availableControllers: Set<String>
    let cgroup: Cgroup2
    let initExecutableFD: Int32
    let newRootPath: String
    let seccomp: SeccompProgram
    private let usedSlots = Mutex<Set<UInt32>>([])

    /// Prepares the cgroup subtree, the state directory and the seccomp program.
    ///
    /// Also sets SIGPIPE to ignored for the process: writing a command's stdin after it exited
    /// must be an EPIPE, not the daemon's death. Commands get SIGPIPE back at its default.
    public init(configuration: LinuxSandboxConfiguration = .init()) throws(LinuxSandboxError) {
        signal(SIGPIPE, SIG_IGN)
        self.configuration = configuration
        guard configuration.idCount > 0, UInt64(configuration.idBase) + UInt64(configuration.idCount) < UInt64(UInt32.max),
              configuration.idBase > 0 else {
            throw LinuxSandboxError(.invalidRequest, "id range \(configuration.idBase)+\(configuration.idCount) is not a valid unprivileged uid range")
        }
        cgroup = try Cgroup2(mountPoint: configuration.cgroupRoot, subtree: configuration.cgroupSubtree)
        availableControllers = try cgroup.prepareSubtree()

        // The root tmpfs of each sandbox is mounted on this directory inside the sandbox's own
        // mount namespace; the host only ever sees it empty.
        newRootPath = configuration.stateDirectory + "/rootfs"
        for dir in [configuration.stateDirectory, newRootPath] {
            if mkdir(dir, 0o700) != 0 && Sys.errno != EEXIST { throw .system("mkdir", dir, Sys.errno) }
        }

        let initPath = configuration.initExecutable ?? Self.besideRunningExecutable("sandboxd-init")
        let fd = open(initPath, Int32(SBX_O_PATH) | O_CLOEXEC)
        guard fd >= 0 else {
            throw LinuxSandboxError(.system, "open(\"\(initPath)\"): \(errnoName(Sys.errno)) — the sandbox init executable (built as the sandboxd-init product) is needed next to the daemon or set in the configuration", errno: Sys.errno)
        }
        guard access(initPath, X_OK) == 0 else {
            close(fd)
            throw LinuxSandboxError(.system, "\(initPath) is not executable")
        }
        initExecutableFD = fd
        seccomp = try SeccompProgram.standard.get()
    }

    deinit { close(initExecutableFD) }

    static func besideRunningExecutable(_ name: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return name }
        let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = exe.lastIndex(of: "/") else { return name }
        return String(exe[..<slash]) + "/" + name
    }

    // MARK: - Public API

    /// Creates a persistent sandbox: namespaces, root filesystem, cgroup with limits, and an init
    /// (PID 1 inside) that reaps. Run commands in it with `exec`, end it with `destroy`.
    ///
    /// Throws `controllersMissing` when the spec has limits, enforcement is strict and the host
    /// lacks the cgroup v2 controllers; `childSetup` naming the step and path when building the
    /// sandbox failed (e.g. `mount /data: ENOENT`).
    public func create(_ spec: SandboxSpec) async throws(LinuxSandboxError) -> LinuxSandbox {
        try Self.validate(spec)
        let enforced = try limitsEnforced(for: spec)
        let result: Result<LinuxSandbox, LinuxSandboxError> = await onDedicatedThread {
            Result { () throws(LinuxSandboxError) in try self.createBlocking(spec, limitsEnforced: enforced) }
        }
        return try result.get()
    }

    /// One-shot: create, run one command, destroy (also when the command or creation fails).
    public func run(
        _ spec: SandboxSpec, _ request: ExecRequest, onOutput: (@Sendable (OutputChunk) -> Void)? = nil
    ) async throws(LinuxSandboxError) -> ExecResult {
        let sandbox = try await create(spec)
        do {
            let result = try await sandbox.exec(request, onOutput: onOutput)
            await sandbox.destroy()
            return result
        } catch {
            await sandbox.destroy()
            throw error
        }
    }

    /// Whether `spec`'s limits can all be enforced here. Throws `controllersMissing` when they
    /// cannot and the spec says strict; returns false for best-effort (rlimits then apply).
    public func limitsEnforced(for spec: SandboxSpec) throws(LinuxSandboxError) -> Bool {
        var needed: [String] = []
        if spec.limits.cpu != nil { needed.append("cpu") }
        if spec.limits.memory != nil { needed.append("memory") }
        if spec.limits.pids != nil { needed.append("pids") }
        let missing = needed.filter { !availableControllers.contains($0) }
        if missing.isEmpty { return true }
        if spec.enforcement == .bestEffort { return false }
        let offered = cgroup.controllers(at: cgroup.subtreePath).sorted()
        let rootOffered = cgroup.controllers(at: cgroup.mountPoint).sorted()
        throw LinuxSandboxError(
            .controllersMissing,
            "resource limits need the cgroup v2 controller\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")), "
                + "which \(cgroup.subtreePath) does not offer (it offers: \(offered.isEmpty ? "none" : offered.joined(separator: " ")); "
                + "\(cgroup.mountPoint)/cgroup.controllers lists: \(rootOffered.isEmpty ? "none" : rootOffered.joined(separator: " "))). "
                + "Run on a host with a cgroup v2 hierarchy delegated to sandboxd, or set resources.enforcement: best-effort "
                + "to fall back to rlimits and record limits_enforced: false")
    }

    /// Kills and removes what a previous daemon left: every cgroup in the subtree (with all its
    /// processes). Call once at start, before creating sandboxes. Returns the ids removed.
    public func reapLeftovers() async -> [String] {
        await onDedicatedThread {
            var removed: [String] = []
            for entry in Sys.listDirectory(self.cgroup.subtreePath) where entry.isDirectory {
                let path = self.cgroup.subtreePath + "/" + entry.name
                _ = self.cgroup.kill(path)
                _ = self.cgroup.waitUntilEmpty(path, timeout: 5)
                if self.cgroup.removeTree(path) { removed.append(entry.name) }
            }
            return removed
        }
    }

    /// Ids of sandboxes whose cgroup exists in the subtree (live or leftover).
    public func listCgroups() -> [String] {
        Sys.listDirectory(cgroup.subtreePath).filter(\.isDirectory).map(\.name)
    }

    // MARK: - Creation

    static func validate(_ spec: SandboxSpec) throws(LinuxSandboxError) {
        let idOK = !spec.id.isEmpty && spec.id.utf8.count <= 64
            && spec.id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d || $0 == 0x5f }
            && !["init"].contains(spec.id) && !spec.id.hasPrefix("exec-")
        guard idOK else {
            throw LinuxSandboxError(.invalidRequest, "sandbox id \"\(spec.id)\" must be 1–64 letters, digits, - or _")
        }
        let host = spec.effectiveHostname
        guard !host.isEmpty, host.utf8.count <= 64, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw LinuxSandboxError(.invalidRequest, "hostname \"\(host)\" must be 1–64 printable characters without spaces")
        }
        try RootfsPlan.validateSandboxPath(spec.workspacePath, what: "workspace path")
        for mount in spec.mounts {
            guard mount.hostPath.hasPrefix("/"), !mount.hostPath.utf8.contains(0) else {
                throw LinuxSandboxError(.invalidRequest, "mount host path \"\(mount.hostPath)\" must be absolute", path: mount.hostPath)
            }
            try RootfsPlan.validateSandboxPath(mount.sandboxPath, what: "mount path")
            if mount.sandboxPath == spec.workspacePath || mount.sandboxPath == "/tmp" {
                throw LinuxSandboxError(.invalidRequest, "mount path \"\(mount.sandboxPath)\" would hide the sandbox's own tmpfs", path: mount.sandboxPath)
            }
        }
        for (key, value) in spec.environment { try validateEnvironment(key, value) }
        let limits = spec.limits
        guard limits.executionTimeout > 0, limits.openFiles > 0, limits.tmpfsSize.bytes > 0,
              (limits.cpu ?? 1) > 0, (limits.pids ?? 1) > 0, (limits.memory?.bytes ?? 1) > 0 else {
            throw LinuxSandboxError(.invalidRequest, "limits must be positive (timeout, open files, tmpfs size, cpu, pids, memory)")
        }
    }

    static func validateEnvironment(_ key: String, _ value: String) throws(LinuxSandboxError) {
        if key.isEmpty || key.contains("=") || key.utf8.contains(0) || value.utf8.contains(0) {
            throw LinuxSandboxError(.invalidRequest, "environment variable \"\(key)\" has an empty name, \"=\" in its name, or a NUL byte")
        }
    }

    func allocateSlot() throws(LinuxSandboxError) -> UInt32 {
        let slot: UInt32? = usedSlots.withLock { used in
            // Start at a pseudo-random place so ids of recent sandboxes are not reused at once.
            let start = UInt32.random(in: 0..<configuration.idCount)
            for offset in 0..<configuration.idCount {
                let candidate = (start &+ offset) % configuration.idCount
                if used.insert(candidate).inserted { return candidate }
            }
            return nil
        }
        guard let slot else { throw LinuxSandboxError(.exhausted, "all \(configuration.idCount) sandbox ids are in use") }
        return slot
    }

    func releaseSlot(_ slot: UInt32) {
        _ = usedSlots.withLock { $0.remove(slot) }
    }

    /// Limits the host cannot enforce through cgroups, approximated with rlimits (best-effort):
    /// memory → RLIMIT_AS per process; pids → RLIMIT_NPROC, which counts the processes of the
    /// sandbox's own host uid; cpu (a rate) → RLIMIT_CPU of `cpu × timeout` seconds per process.
    func rlimits(for spec: SandboxSpec, enforced: Bool) -> [sbx_rlimit] {
        var list = [
            sbx_rlimit(resource: Int32(SBX_RLIMIT_CORE), soft: 0, hard: 0),
            sbx_rlimit(resource: Int32(SBX_RLIMIT_NOFILE), soft: UInt64(spec.limits.openFiles), hard: UInt64(spec.limits.openFiles)),
        ]
        if !enforced {
            if let memory = spec.limits.memory, !availableControllers.contains("memory") {
                list.append(sbx_rlimit(resource: Int32(SBX_RLIMIT_AS), soft: memory.bytes, hard: memory.bytes))
            }
            if let pids = spec.limits.pids, !availableControllers.contains("pids") {
                list.append(sbx_rlimit(resource: Int32(SBX_RLIMIT_NPROC), soft: UInt64(pids), hard: UInt64(pids)))
            }
            if let cpu = spec.limits.cpu, !availableControllers.contains("cpu") {
                let seconds = UInt64((cpu * spec.limits.executionTimeout).rounded(.up)) + 1
                list.append(sbx_rlimit(resource: Int32(SBX_RLIMIT_CPU), soft: seconds, hard: seconds + 1))
            }
        }
        return list
    }

    private func createBlocking(_ spec: SandboxSpec, limitsEnforced: Bool) throws(LinuxSandboxError) -> LinuxSandbox {
        let slot = try allocateSlot()
        let hostID = configuration.idBase + slot
        let cgroupPath = cgroup.sandboxPath(spec.id)
        var succeeded = false
        var cgroupMade = false
        defer {
            if !succeeded {
                if cgroupMade { _ = cgroup.kill(cgroupPath); _ = cgroup.removeTree(cgroupPath) }
                releaseSlot(slot)
            }
        }
        if mkdir(cgroupPath, 0o755) != 0 {
            let e = Sys.errno
            if e == EEXIST { throw LinuxSandboxError(.invalidRequest, "a sandbox with id \"\(spec.id)\" already exists (\(cgroupPath))") }
            throw LinuxSandboxError(.cgroup, "mkdir(\"\(cgroupPath)\"): \(errnoName(e))", errno: e)
        }
        cgroupMade = true
        try cgroup.applyLimits(spec.limits, at: cgroupPath, available: availableControllers)
        try cgroup.makeDirectory(cgroupPath + "/init")
        let initCgroupFD = try cgroup.openDirectory(cgroupPath + "/init")
        defer { close(initCgroupFD) }

        let steps = try RootfsPlan.build(spec: spec, configuration: configuration)
        let limitList = rlimits(for: spec, enforced: limitsEnforced)

        var spawned = sbx_spawned()
        let rc: Int32 = {
            let arena = CArena()
            let mounts = steps.map { step in
                sbx_mount(
                    kind: Int32(step.kind.rawValue), flags: step.flags,
                    source: arena.optionalString(step.source),
                    target: arena.string(String(step.sandboxPath.dropFirst())),
                    data: step.data.map { arena.bytes($0) }, data_len: step.data?.count ?? 0,
                    attr_set: step.attributes, ms_flags: step.msFlags)
            }
            var final = sbx_final()
            final.stdin_fd = -1; final.stdout_fd = -1; final.stderr_fd = -1
            final.cwd = arena.string("/")
            final.rlimits = UnsafePointer(arena.array(Array(limitList.prefix(2))))  // init: core + nofile only
            final.nrlimits = 2
            final.seccomp = UnsafePointer(seccomp.program)
            final.exec_fd = initExecutableFD
            final.exec_paths = nil
            final.nexec_paths = 0
            final.argv = UnsafePointer(arena.stringArray(["sandboxd-init"]))
            final.envp = UnsafePointer(arena.stringArray([]))
            var config = sbx_create_config(
                cgroup_fd: initCgroupFD, new_root: arena.string(newRootPath),
                new_root_options: arena.string("mode=0755,uid=0,gid=0,size=4194304,nr_inodes=4096"),
                mounts: UnsafePointer(arena.array(mounts)), nmounts: Int32(mounts.count),
                hostname: arena.string(spec.effectiveHostname), bring_up_loopback: 1, final: final)
            return sbx_spawn_create(&config, &spawned)
        }()
        if rc < 0 { throw .system("clone3", cgroupPath + "/init", -rc) }
        let pidfd = spawned.pidfd
        var pidfdOwned = true
        defer { if pidfdOwned { killAndReap(pidfd) } }
        defer { close(spawned.report_fd) }

        // The child waits for this: root inside is hostID outside, for uid and gid alike.
        do throws(LinuxSandboxError) {
            try Sys.writeFile("/proc/\(spawned.pid)/uid_map", "0 \(hostID) 1\n")
            try Sys.writeFile("/proc/\(spawned.pid)/gid_map", "0 \(hostID) 1\n")
        } catch {
            close(spawned.sync_fd)
            throw error
        }
        var go: UInt8 = 1
        _ = write(spawned.sync_fd, &go, 1)
        close(spawned.sync_fd)

        switch ChildReport.read(from: spawned.report_fd, timeout: configuration.setupTimeout) {
        case .failed(let record, _):
            var path: String?
            var detail: String?
            if record.index >= 0, Int(record.index) < steps.count,
               [SBX_STEP_MKDIR, SBX_STEP_MOUNT, SBX_STEP_MOUNT_SETATTR, SBX_STEP_SYMLINK, SBX_STEP_WRITE_FILE]
                .map({ Int32($0.rawValue) }).contains(record.step) {
                let step = steps[Int(record.index)]
                path = step.sandboxPath
                if step.kind == SBX_MOUNT_BIND, let source = step.source, source != step.sandboxPath {
                    detail = "from \(source) on the host"
                }
            }
            throw ChildReport.error(record, path: path, detail: detail)
        case .timedOut:
            throw LinuxSandboxError(.childSetup, "building the sandbox took longer than \(configuration.setupTimeout) s; killed", step: "setup")
        case .started:
            break
        }
        // EOF without a record: exec'd, unless the child died on the way.
        var code: Int32 = 0, status: Int32 = 0, pid: Int32 = 0, rss = 0, ut = 0, st = 0
        if sbx_waitid_pidfd(pidfd, WEXITED | WNOHANG, &code, &status, &pid, &rss, &ut, &st) == 0, pid != 0 {
            pidfdOwned = false
            close(pidfd)
            throw LinuxSandboxError(.childSetup, "the sandbox init ended during setup (\(code == CLD_EXITED ? "exit \(status)" : "signal \(status)"))", step: "exec")
        }

        let workspacePath = "/proc/\(spawned.pid)/root\(spec.workspacePath)"
        let workspaceFD = open(workspacePath, Int32(SBX_O_PATH) | O_DIRECTORY | O_CLOEXEC)
        if workspaceFD < 0 { throw .system("open", workspacePath, Sys.errno) }

        pidfdOwned = false
        succeeded = true
        return LinuxSandbox(
            engine: self, spec: spec, slot: slot, hostID: hostID, initPID: spawned.pid, initPidfd: pidfd,
            cgroupPath: cgroupPath, workspaceFD: workspaceFD, limitsEnforced: limitsEnforced,
            rlimits: limitList)
    }
}

/// SIGKILLs a child through its pidfd, reaps it and closes the pidfd.
func killAndReap(_ pidfd: Int32) {
    _ = sbx_pidfd_send_signal(pidfd, SIGKILL)
    var code: Int32 = 0, status: Int32 = 0, pid: Int32 = 0, rss = 0, ut = 0, st = 0
    _ = sbx_waitid_pidfd(pidfd, WEXITED, &code, &status, &pid, &rss, &ut, &st)
    close(pidfd)
}
