import CLinuxSandbox
import SandboxValues
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
    let newRootPath: String
    let seccomp: SeccompProgram
    let hostRuntime: RootfsPlan.HostRuntime
    /// Clones every new sandbox's first process from its own small address space.
    let spawner: Spawner
    private let usedSlots = Mutex<Set<UInt32>>([])

    /// Prepares the cgroup subtree, the state directory and the seccomp program.
    ///
    /// Also sets SIGPIPE to ignored for the process: writing a command's stdin after it exited
    /// must be an EPIPE, not the daemon's death. Commands get SIGPIPE back at its default.
    public init(configuration: LinuxSandboxConfiguration = .init()) throws(LinuxSandboxError) {
        signal(SIGPIPE, SIG_IGN)
        self.configuration = configuration
        // Below 65536 live system and user accounts; sandbox root must never be one of them.
        guard configuration.idCount > 0, configuration.idBase >= 65_536,
              UInt64(configuration.idBase) + UInt64(configuration.idCount) < UInt64(UInt32.max) else {
            throw LinuxSandboxError(.invalidRequest, "id range \(configuration.idBase)+\(configuration.idCount) is not a valid unprivileged uid range (it must start at 65536 or above and end below 4294967295)")
        }
        // Checks first, then what changes the host: a refused configuration leaves nothing behind.
        guard let initPath = configuration.initCommand.first, initPath.hasPrefix("/"),
              configuration.runtimePaths.contains(where: { initPath.hasPrefix($0 + "/") }) else {
            throw LinuxSandboxError(.invalidRequest, "the init command must be an absolute path inside one of the runtime paths \(configuration.runtimePaths)")
        }
        guard access(initPath, X_OK) == 0 else {
            throw LinuxSandboxError(.system, "the sandbox init \(initPath) is not an executable on this host: \(errnoName(Sys.errno))", errno: Sys.errno)
        }
        if let exported = configuration.seccompProgram {
            seccomp = try SeccompProgram(validating: exported)
        } else {
            seccomp = try SeccompProgram.standard.get()
        }
        cgroup = try Cgroup2(mountPoint: configuration.cgroupRoot, subtree: configuration.cgroupSubtree)
        availableControllers = try cgroup.prepareSubtree()

        // The root tmpfs of each sandbox is mounted on this directory inside the sandbox's own
        // mount namespace; the host only ever sees it empty.
        newRootPath = configuration.stateDirectory + "/rootfs"
        for dir in [configuration.stateDirectory, newRootPath] {
            if mkdir(dir, 0o700) != 0 && Sys.errno != EEXIST { throw .system("mkdir", dir, Sys.errno) }
        }

        hostRuntime = RootfsPlan.HostRuntime(configuration: configuration)
        spawner = try Spawner(path: configuration.spawnerPath ?? LinuxSandboxConfiguration.defaultSpawnerPath(),
                              count: configuration.spawnerCount)
    }

    // MARK: - Public API

    /// Creates a persistent sandbox: namespaces, root filesystem, cgroup with limits, and an init
    /// (PID 1 inside) that reaps. Run commands in it with `exec`, end it with `destroy`.
    ///
    /// Throws `controllersMissing` when the spec has limits, enforcement is strict and the host
    /// lacks the cgroup v2 controllers; `childSetup` naming the step and path when building the
    /// sandbox failed (e.g. `mount /data: ENOENT`).
    ///
    /// `attachments`: directories the daemon mounts itself and a hook run before the init starts.
    public func create(_ spec: SandboxSpec, attachments: LaunchAttachments = .init()) async throws(LinuxSandboxError) -> LinuxSandbox {
        try Self.validate(spec)
        try attachments.validate()
        let enforced = try limitsEnforced(for: spec)
        let result: Result<LinuxSandbox, LinuxSandboxError> = await onDedicatedThread {
            Result { () throws(LinuxSandboxError) in try self.createBlocking(spec, limitsEnforced: enforced, attachments: attachments) }
        }
        return try result.get()
    }

    /// One-shot: create, run one command, destroy (also when the command or creation fails).
    ///
    /// The same isolation as `create` + `exec`, done in one step: the sandbox's PID 1 starts the
    /// command itself and the whole sandbox is torn down when it ends (or times out).
    ///
    /// `onEnded`: called (on the engine's thread) with the result as soon as the command's end
    /// and all its output are known, while the sandbox is still being torn down; `run` returns the
    /// same result once the teardown is done. A caller can overlap its own work (writing the
    /// record) with the teardown. Not called when the command timed out or PID 1 died unreported.
    public func run(
        _ spec: SandboxSpec, _ request: ExecRequest, onOutput: (@Sendable (OutputChunk) -> Void)? = nil,
        attachments: LaunchAttachments = .init(), onEnded: (@Sendable (ExecResult) -> Void)? = nil
    ) async throws(LinuxSandboxError) -> ExecResult {
        let (enforced, timeout) = try checkOneShot(spec, request, attachments: attachments)
        let result: Result<ExecResult, LinuxSandboxError> = await onDedicatedThread {
            Result { () throws(LinuxSandboxError) in
                try self.runBlocking(spec, request, limitsEnforced: enforced, timeout: timeout, onOutput: onOutput,
                                     attachments: attachments, onEnded: onEnded)
            }
        }
        return try result.get()
    }

    /// One-shot that answers at the command's end: returns the result as soon as the command
    /// has ended and all its output is read, while the sandbox's teardown goes on on the engine's
    /// thread. `tornDown` is called exactly once, on that thread, when the sandbox is gone (or,
    /// when the request was refused before anything started, before this throws). When the end
    /// is not reported early (a timeout, PID 1 killed unreported, a failed setup), this returns
    /// or throws when `run` would, just before `tornDown` is called.
    public func runAnsweringAtEnd(
        _ spec: SandboxSpec, _ request: ExecRequest, attachments: LaunchAttachments = .init(),
        tornDown: @escaping @Sendable () -> Void
    ) async throws(LinuxSandboxError) -> ExecResult {
        let enforced: Bool, timeout: Double
        do throws(LinuxSandboxError) {
            (enforced, timeout) = try checkOneShot(spec, request, attachments: attachments)
        } catch {
            tornDown()
            throw error
        }
        let result: Result<ExecResult, LinuxSandboxError> = await withCheckedContinuation { continuation in
            let answer = AnswerOnce(continuation)
            BlockingThreads.shared.submit {
                let outcome = Result { () throws(LinuxSandboxError) in
                    try self.runBlocking(spec, request, limitsEnforced: enforced, timeout: timeout, onOutput: nil,
                                         attachments: attachments, onEnded: { answer.resume(.success($0)) })
                }
                answer.resume(outcome)
                tornDown()
            }
        }
        return try result.get()
    }

    /// A one-shot's checks before anything starts: the spec, attachments and request are valid,
    /// and whether the limits are enforced; with the exec's timeout.
    private func checkOneShot(_ spec: SandboxSpec, _ request: ExecRequest, attachments: LaunchAttachments)
        throws(LinuxSandboxError) -> (limitsEnforced: Bool, timeout: Double) {
        try Self.validate(spec)
        try attachments.validate()
        try LinuxSandbox.validate(request)
        return (try limitsEnforced(for: spec), request.timeout ?? spec.limits.executionTimeout)
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
                + "Run on a host with a cgroup v2 hierarchy delegated to sandboxd (whose own process sits in a leaf cgroup, not in a "
                + "parent of the subtree, where controllers cannot be enabled), or set resources.enforcement: best-effort "
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

    /// Removes the daemon's cgroup subtree and state directory when nothing is left in them (call at
    /// exit, after every sandbox is destroyed). Only this engine's own subtree is touched; a subtree
    /// still holding a sandbox cgroup stays (the next start reaps it). Returns whether it is gone.
    @discardableResult
    public func releaseSubtree() -> Bool {
        rmdir(newRootPath)
        rmdir(configuration.stateDirectory)
        guard cgroup.subtreePath != cgroup.mountPoint else { return false }
        return rmdir(cgroup.subtreePath) == 0 || Sys.errno == ENOENT
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
        for path in spec.maskedPaths {
            let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            guard path.hasPrefix("/"), path != "/", !path.utf8.contains(0),
                  !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                throw LinuxSandboxError(.invalidRequest, "masked path \"\(path)\" must be a normalized absolute path below / (no //, ., .. or NUL)", path: path)
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

    /// A sandbox's init, started and past setup; the caller owns all of it.
    struct Launched {
        let slot: UInt32
        let hostID: UInt32
        let cgroupPath: String
        let pid: Int32
        let pidfd: Int32
        let rlimits: [sbx_rlimit]
        /// One-shot only: the report pipe, still open (the monitor reads it with the output).
        let reportFD: Int32
        let steps: [MountStep]
    }

    /// A one-shot command: PID 1 runs it and reports its end on `statusWrite`.
    struct OneShotCommand {
        let plan: CommandPlan
        let pipes: CommandPipes
        let statusWrite: Int32
    }

    /// Creates the cgroup, clones the child into every namespace, writes its id maps and waits
    /// until it has built the sandbox and exec'd its init (or, one-shot, the command).
    func launch(_ spec: SandboxSpec, limitsEnforced: Bool, oneShot: OneShotCommand?,
                attachments: LaunchAttachments = .init()) throws(LinuxSandboxError) -> Launched {
        let slot = try allocateSlot()
        let hostID = configuration.idBase + slot
        let cgroupPath = cgroup.sandboxPath(spec.id)
        var succeeded = false
        var cgroupMade = false
        defer {
            if !succeeded {
                if cgroupMade {
                    _ = cgroup.kill(cgroupPath)
                    _ = cgroup.waitUntilEmpty(cgroupPath, timeout: 5)
                    _ = cgroup.removeTree(cgroupPath)
                }
                releaseSlot(slot)
            }
        }
        if mkdir(cgroupPath, 0o755) != 0 {
            let e = Sys.errno
            if e == EEXIST { throw LinuxSandboxError(.invalidRequest, "a sandbox with id \"\(spec.id)\" already exists (\(cgroupPath))") }
            throw LinuxSandboxError(.cgroup, "mkdir(\"\(cgroupPath)\"): \(errnoName(e))", errno: e)
        }
        cgroupMade = true
        // A persistent sandbox's init gets a leaf of its own (execs get theirs); a one-shot
        // sandbox is one process tree, so it lives in the sandbox's directory itself.
        try cgroup.applyLimits(spec.limits, at: cgroupPath, available: availableControllers, delegate: oneShot == nil)
        let initCgroup = oneShot == nil ? cgroupPath + "/init" : cgroupPath
        if oneShot == nil { try cgroup.makeDirectory(initCgroup) }
        let initCgroupFD = try cgroup.openDirectory(initCgroup)
        defer { close(initCgroupFD) }

        // Cloned as root here; the child attaches them (its own uid may not reach the host paths).
        var trees: [RootfsPlan.AttachedTree] = []
        defer { for tree in trees { close(tree.fd) } }
        for directory in attachments.readOnlyDirectories {
            let fd = sbx_open_tree(directory.hostPath)
            if fd < 0 { throw .system("open_tree", directory.hostPath, -fd) }
            trees.append(.init(fd: fd, sandboxPath: directory.sandboxPath))
        }
        let steps = try RootfsPlan.build(spec: spec, host: hostRuntime, attached: trees)
        let limitList = rlimits(for: spec, enforced: limitsEnforced)

        var spawned = sbx_spawned()
        let rc: Int32 = try { () throws(LinuxSandboxError) -> Int32 in
            let arena = CArena()
            let mounts = steps.map { step in
                sbx_mount(
                    kind: Int32(step.kind.rawValue), flags: step.flags,
                    source: arena.optionalString(step.source),
                    target: arena.string(String(step.sandboxPath.dropFirst())),
                    data: step.data.map { arena.bytes($0) }, data_len: step.data?.count ?? 0,
                    attr_set: step.attributes, ms_flags: step.msFlags, tree_fd: step.treeFD)
            }
            // The init of a persistent sandbox: only the core and open-files limits, so a
            // best-effort CPU or memory rlimit can never take it down.
            var initFinal = sbx_final()
            initFinal.stdin_fd = -1; initFinal.stdout_fd = -1; initFinal.stderr_fd = -1
            initFinal.cwd = arena.string("/")
            initFinal.rlimits = UnsafePointer(arena.array(Array(limitList.prefix(2))))
            initFinal.nrlimits = 2
            initFinal.seccomp = arena.program(seccomp.program)
            initFinal.exec_fd = -1
            initFinal.exec_paths = UnsafePointer(arena.array([Optional(arena.string(configuration.initCommand[0]))]))
            initFinal.nexec_paths = 1
            initFinal.argv = UnsafePointer(arena.stringArray(["sandboxd-init"] + configuration.initCommand.dropFirst()))
            initFinal.envp = UnsafePointer(arena.stringArray([]))
            initFinal.ignore_sigchld = 1
            var config = sbx_create_config()
            config.cgroup_fd = initCgroupFD
            config.new_root = arena.string(newRootPath)
            config.new_root_options = arena.string("mode=0755,uid=0,gid=0,size=4194304,nr_inodes=4096")
            config.mounts = UnsafePointer(arena.array(mounts))
            config.nmounts = Int32(mounts.count)
            config.hostname = arena.string(spec.effectiveHostname)
            config.bring_up_loopback = 1
            config.final = initFinal
            if let oneShot {
                config.run_payload = 1
                config.status_fd = oneShot.statusWrite
                config.payload = oneShot.plan.final(arena: arena, pipes: oneShot.pipes, rlimits: limitList,
                                                    seccomp: seccomp)
                // Its own copy: the spawner relocates each pointer it meets, so no object may be
                // reached twice.
                config.payload.seccomp = arena.program(seccomp.program)
            }
            // The spawner fills in its own command line as the area a one-shot PID 1 blanks.
            return try spawner.create(arena: arena, config: arena.array([config]), hostID: hostID, release: attachments.beforeWorkload == nil,
                                      into: &spawned)
        }()
        if rc < 0 { throw .system("clone3", initCgroup, -rc) }
        let pidfd = spawned.pidfd
        var pidfdOwned = true
        defer { if pidfdOwned { killAndReap(pidfd) } }
        var reportOwned = true
        defer { if reportOwned { close(spawned.report_fd) } }

        // The spawner wrote the id maps (root inside = hostID outside). A child still held
        // (sync_fd >= 0: the engine asked for it) waits for one byte: the namespaces exist and
        // nothing of the workload runs yet, so the daemon's own setup (the egress listener inside
        // the network namespace) happens now, or the sandbox is not released.
        if spawned.sync_fd >= 0 {
            if let beforeWorkload = attachments.beforeWorkload {
                do {
                    try beforeWorkload(spawned.pid)
                } catch {
                    close(spawned.sync_fd)
                    throw LinuxSandboxError(.childSetup, "preparing sandbox \(spec.id) before its workload: \(error)", step: "before-workload")
                }
            }
            var go: UInt8 = 1
            _ = write(spawned.sync_fd, &go, 1)
            close(spawned.sync_fd)
        }

        if oneShot != nil {
            // One-shot: the command may already be running; its setup report is read together
            // with its output, saving a wake-up on the way.
            reportOwned = false
            pidfdOwned = false
            succeeded = true
            return Launched(slot: slot, hostID: hostID, cgroupPath: cgroupPath, pid: spawned.pid, pidfd: pidfd,
                            rlimits: limitList, reportFD: spawned.report_fd, steps: steps)
        }
        switch ChildReport.read(from: spawned.report_fd, timeout: configuration.setupTimeout) {
        case .failed(let record, _):
            throw setupError(record, steps: steps, command: nil)
        case .timedOut:
            throw LinuxSandboxError(.childSetup, "building the sandbox took longer than \(configuration.setupTimeout) s; killed", step: "setup")
        case .started:
            break
        }
        if oneShot == nil {
            // EOF without a record: exec'd, unless the child died on the way (its pidfd turns
            // readable; the spawner, its parent, has reaped it).
            var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 0) == 1 {
                throw LinuxSandboxError(.childSetup, "the sandbox init ended during setup", step: "exec")
            }
        }
        pidfdOwned = false
        succeeded = true
        return Launched(slot: slot, hostID: hostID, cgroupPath: cgroupPath, pid: spawned.pid, pidfd: pidfd,
                        rlimits: limitList, reportFD: -1, steps: steps)
    }

    /// The typed error for a child's failure record: the step, and the path its index names.
    func setupError(_ record: sbx_report, steps: [MountStep], command: CommandPlan?) -> LinuxSandboxError {
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
        } else if record.step == Int32(SBX_STEP_EXEC.rawValue) {
            path = command.map { $0.failedPath(record) } ?? configuration.initCommand[0]
        } else if record.step == Int32(SBX_STEP_CHDIR.rawValue) {
            path = command?.cwd
        }
        return ChildReport.error(record, path: path, detail: detail)
    }

    func createBlocking(_ spec: SandboxSpec, limitsEnforced: Bool,
                        attachments: LaunchAttachments) throws(LinuxSandboxError) -> LinuxSandbox {
        let launched = try launch(spec, limitsEnforced: limitsEnforced, oneShot: nil, attachments: attachments)
        let workspacePath = "/proc/\(launched.pid)/root\(spec.workspacePath)"
        let workspaceFD = open(workspacePath, Int32(SBX_O_PATH) | O_DIRECTORY | O_CLOEXEC)
        if workspaceFD < 0 {
            let e = Sys.errno
            tearDown(launched)
            throw .system("open", workspacePath, e)
        }
        return LinuxSandbox(
            engine: self, spec: spec, slot: launched.slot, hostID: launched.hostID, initPID: launched.pid,
            initPidfd: launched.pidfd, cgroupPath: launched.cgroupPath, workspaceFD: workspaceFD,
            limitsEnforced: limitsEnforced, rlimits: launched.rlimits)
    }

    /// Kills everything in a sandbox's cgroup, reaps its init, removes the cgroup and frees the
    /// uid (only when nothing is left running under it). Closes the init's pidfd.
    func tearDown(_ launched: Launched) {
        destroySandbox(cgroupPath: launched.cgroupPath, initPidfd: launched.pidfd, slot: launched.slot)
        close(launched.pidfd)
    }

    func destroySandbox(cgroupPath: String, initPidfd: Int32, slot: UInt32) {
        // A one-shot sandbox whose PID 1 has exited is empty already: the kernel ends a pid
        // namespace's processes before its init is reported dead.
        var pfd = pollfd(fd: initPidfd, events: Int16(POLLIN), revents: 0)
        let initExited = poll(&pfd, 1, 0) == 1
        let populated = !initExited || cgroup.isPopulated(cgroupPath)
        if populated {
            if !cgroup.kill(cgroupPath) { _ = sbx_pidfd_send_signal(initPidfd, SIGKILL) }
        }
        // Wait for the init (the spawner's child; the kernel reaps it); the rest of the pid
        // namespace dies with it.
        _ = poll(&pfd, 1, 5_000)
        let empty = !populated || cgroup.waitUntilEmpty(cgroupPath, timeout: 5)
        if cgroup.removeTree(cgroupPath) && empty { releaseSlot(slot) }
    }

    /// One-shot on one thread: PID 1 of the new sandbox runs the command itself, so no second
    /// clone, no exec cgroup and no namespace entry are needed.
    func runBlocking(
        _ spec: SandboxSpec, _ request: ExecRequest, limitsEnforced: Bool, timeout: Double,
        onOutput: (@Sendable (OutputChunk) -> Void)?, attachments: LaunchAttachments = .init(),
        onEnded: (@Sendable (ExecResult) -> Void)? = nil
    ) throws(LinuxSandboxError) -> ExecResult {
        let plan = CommandPlan(spec: spec, request: request)
        var pipes = try CommandPipes()
        defer { pipes.closeAll() }
        var status: [Int32] = [-1, -1]
        let rc = sbx_pipe_cloexec(&status)
        if rc < 0 { throw .system("pipe2", nil, -rc) }
        var statusRead = status[0]
        defer { if statusRead >= 0 { close(statusRead) } }

        let start = Sys.monotonicNow()
        let launched: Launched
        do throws(LinuxSandboxError) {
            defer { close(status[1]) }
            launched = try launch(spec, limitsEnforced: limitsEnforced,
                                  oneShot: OneShotCommand(plan: plan, pipes: pipes, statusWrite: status[1]),
                                  attachments: attachments)
        } catch {
            pipes.closeChildEnds()
            throw error
        }
        pipes.closeChildEnds()
        defer { tearDown(launched) }

        let cgroupPath = launched.cgroupPath, pidfd = launched.pidfd
        var monitor = ExecMonitor(
            stdinFD: pipes.stdinWrite, stdin: request.stdin, stdoutFD: pipes.stdoutRead, stderrFD: pipes.stderrRead,
            pidfd: pidfd, outputLimit: Int(clamping: spec.limits.outputLimit.bytes), deadline: start + timeout,
            onOutput: onOutput, kill: { _ = self.cgroup.kill(cgroupPath) })
        monitor.reportFD = launched.reportFD
        monitor.statusFD = statusRead
        monitor.run()
        pipes.forget(monitor.closedFDs)
        let end = monitor.exitTime ?? Sys.monotonicNow()
        if let failure = monitor.setupFailure {
            throw setupError(failure, steps: launched.steps, command: plan)
        }

        // PID 1 wrote how the command ended just before exiting; nothing there means it was
        // killed with everything else (timeout, OOM of the whole sandbox).
        var exit = sbx_exit()
        var n = MemoryLayout<sbx_exit>.size
        if let status = monitor.status {
            exit = status
        } else {
            n = withUnsafeMutableBytes(of: &exit) { read(statusRead, $0.baseAddress, $0.count) }
        }
        close(statusRead)
        statusRead = -1
        var exitCode: Int32?
        var signal: Int32?
        if n == MemoryLayout<sbx_exit>.size {
            if exit.code == CLD_EXITED { exitCode = exit.status } else { signal = exit.status }
        } else {
            signal = SIGKILL
        }
        let cpu = cgroup.cpuUsageMicroseconds(cgroupPath)
            ?? UInt64(max(0, exit.utime_usec + exit.stime_usec))
        // memory.* exist only where the memory controller is enabled.
        let memory = availableControllers.contains("memory")
        let peak = (memory ? cgroup.memoryPeak(cgroupPath) : nil) ?? UInt64(max(0, exit.maxrss_kib)) * 1024
        let oomKilled = memory && cgroup.oomKills(cgroupPath) > 0
        let result = ExecResult(
            exitCode: exitCode, signal: signal, stdout: monitor.stdout.kept, stderr: monitor.stderr.kept,
            stdoutTruncated: monitor.stdout.truncated, stderrTruncated: monitor.stderr.truncated,
            wallTime: end - start, timedOut: monitor.timedOut, oomKilled: oomKilled,
            usage: ResourceUsage(cpuMicroseconds: cpu, memoryPeakBytes: peak), limitsEnforced: limitsEnforced)
        if monitor.status != nil && !monitor.timedOut {
            // The command ended and reported: PID 1 is on its way out. Hand the result over now,
            // then give PID 1 the time its exit takes so the teardown finds the sandbox empty.
            onEnded?(result)
            var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 5_000)
        }
        return result
    }
}

/// SIGKILLs a process through its pidfd, waits until it is gone (reaping it when it is our
/// child; the spawner's children are reaped by the kernel) and closes the pidfd.
func killAndReap(_ pidfd: Int32) {
    _ = sbx_pidfd_send_signal(pidfd, SIGKILL)
    var code: Int32 = 0, status: Int32 = 0, pid: Int32 = 0, rss = 0, ut = 0, st = 0
    if sbx_waitid_pidfd(pidfd, WEXITED, &code, &status, &pid, &rss, &ut, &st) == -ECHILD {
        var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, 5_000)
    }
    close(pidfd)
}

/// A continuation resumed by the first of several callers (the command's end, or the run's return).
private final class AnswerOnce: Sendable {
    private let continuation: Mutex<CheckedContinuation<Result<ExecResult, LinuxSandboxError>, Never>?>

    init(_ continuation: CheckedContinuation<Result<ExecResult, LinuxSandboxError>, Never>) {
        self.continuation = Mutex(continuation)
    }

    func resume(_ value: Result<ExecResult, LinuxSandboxError>) {
        continuation.withLock { pending in
            defer { pending = nil }
            return pending
        }?.resume(returning: value)
    }
}
