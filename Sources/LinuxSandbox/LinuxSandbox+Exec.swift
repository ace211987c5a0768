import CLinuxSandbox
import SandboxValues

#if canImport(Glibc)
import Glibc
#endif

/// A command's argv, environment, executable candidates and working directory, computed by
/// the daemon before the clone.
struct CommandPlan {
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    let arguments: [String]
    /// `KEY=value`, sorted.
    let environment: [String]
    /// Where `execve` looks, in order: `argv[0]` itself when it has a `/`, else each PATH entry.
    let candidates: [String]
    let cwd: String

    /// Fixed PATH and HOME first, then the spec's variables, then the request's.
    init(spec: SandboxSpec, request: ExecRequest) {
        var env = ["PATH": Self.defaultPath, "HOME": spec.workspacePath]
        for (k, v) in spec.environment { env[k] = v }
        for (k, v) in request.environment { env[k] = v }
        arguments = request.arguments
        environment = env.keys.sorted().map { "\($0)=\(env[$0]!)" }
        let name = request.arguments[0]
        if name.contains("/") {
            candidates = [name]
        } else {
            candidates = (env["PATH"] ?? Self.defaultPath).split(separator: ":", omittingEmptySubsequences: false)
                .map { $0.isEmpty ? "./" + name : $0 + "/" + name }
        }
        cwd = request.workingDirectory ?? spec.workspacePath
    }

    /// The C description of the command's last steps; strings live in `arena`.
    func final(arena: CArena, pipes: CommandPipes, rlimits: [sbx_rlimit], seccomp: SeccompProgram) -> sbx_final {
        var final = sbx_final()
        final.stdin_fd = pipes.stdinRead
        final.stdout_fd = pipes.stdoutWrite
        final.stderr_fd = pipes.stderrWrite
        final.cwd = arena.string(cwd)
        final.rlimits = UnsafePointer(arena.array(rlimits))
        final.nrlimits = Int32(rlimits.count)
        final.seccomp = UnsafePointer(seccomp.program)
        final.exec_fd = -1
        final.exec_paths = UnsafePointer(arena.array(candidates.map { Optional(arena.string($0)) }))
        final.nexec_paths = Int32(candidates.count)
        final.argv = UnsafePointer(arena.stringArray(arguments))
        final.envp = UnsafePointer(arena.stringArray(environment))
        final.ignore_sigchld = 0
        return final
    }

    /// The path an exec failure names: the bare command when nothing on PATH had it.
    func failedPath(_ record: sbx_report) -> String {
        if record.error == ENOENT && !arguments[0].contains("/") { return arguments[0] }
        return candidates[max(0, min(Int(record.index), candidates.count - 1))]
    }
}

/// stdin, stdout and stderr pipes of one command. The child's ends are closed once it has its
/// copies; ours are non-blocking. Everything is close-on-exec.
struct CommandPipes {
    var stdinRead: Int32 = -1, stdinWrite: Int32 = -1
    var stdoutRead: Int32 = -1, stdoutWrite: Int32 = -1
    var stderrRead: Int32 = -1, stderrWrite: Int32 = -1

    init() throws(LinuxSandboxError) {
        var made: [[Int32]] = []
        for _ in 0..<3 {
            var pair: [Int32] = [-1, -1]
            let rc = sbx_pipe_cloexec(&pair)
            if rc != 0 {
                for fd in made.joined() { close(fd) }
                throw .system("pipe2", nil, -rc)
            }
            made.append(pair)
        }
        (stdinRead, stdinWrite) = (made[0][0], made[0][1])
        (stdoutRead, stdoutWrite) = (made[1][0], made[1][1])
        (stderrRead, stderrWrite) = (made[2][0], made[2][1])
        for fd in [stdinWrite, stdoutRead, stderrRead] { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        // Bigger pipes: fewer wake-ups when a command floods its output.
        for fd in [stdoutRead, stderrRead] { _ = fcntl(fd, 1031 /* F_SETPIPE_SZ */, 1 << 20) }
    }

    mutating func closeChildEnds() {
        for fd in [stdinRead, stdoutWrite, stderrWrite] where fd >= 0 { close(fd) }
        stdinRead = -1; stdoutWrite = -1; stderrWrite = -1
    }

    /// Marks descriptors the monitor already closed.
    mutating func forget(_ fds: [Int32]) {
        for fd in fds {
            if stdinWrite == fd { stdinWrite = -1 }
            if stdoutRead == fd { stdoutRead = -1 }
            if stderrRead == fd { stderrRead = -1 }
        }
    }

    mutating func closeAll() {
        closeChildEnds()
        for fd in [stdinWrite, stdoutRead, stderrRead] where fd >= 0 { close(fd) }
        stdinWrite = -1; stdoutRead = -1; stderrRead = -1
    }
}

extension LinuxSandbox {
    static func validate(_ request: ExecRequest) throws(LinuxSandboxError) {
        guard !request.arguments.isEmpty, !request.arguments[0].isEmpty else {
            throw LinuxSandboxError(.invalidRequest, "the command is empty")
        }
        if request.arguments.contains(where: { $0.utf8.contains(0) }) {
            throw LinuxSandboxError(.invalidRequest, "a command argument contains a NUL byte")
        }
        for (key, value) in request.environment { try LinuxSandboxEngine.validateEnvironment(key, value) }
        if let cwd = request.workingDirectory, !cwd.hasPrefix("/") || cwd.utf8.contains(0) {
            throw LinuxSandboxError(.invalidRequest, "working directory \"\(cwd)\" must be an absolute path", path: cwd)
        }
        if let timeout = request.timeout, !(timeout > 0 && timeout.isFinite) {
            throw LinuxSandboxError(.invalidRequest, "timeout must be a positive number of seconds")
        }
    }

    /// Runs one exec to its result. The result is known once the command's status and the end of
    /// its output are; what is left then, `tidyUp`, is reaping the exec's first process (it wrote
    /// the status and is exiting) and removing the exec's cgroup, and the caller runs it (after
    /// sending the result on, if it can: under TCG that exit alone took 8–57 ms).
    func execBlocking(
        _ request: ExecRequest, number: Int, timeout: Double, onOutput: (@Sendable (OutputChunk) -> Void)?
    ) throws(LinuxSandboxError) -> (result: ExecResult, tidyUp: () -> Void) {
        let cgroup = engine.cgroup
        let execCgroup = cgroupPath + "/exec-\(number)"
        try cgroup.makeDirectory(execCgroup)
        // Set once the tidy-up owns the cgroup (or background processes keep it).
        var keepCgroup = false
        defer { if !keepCgroup { Self.removeExecCgroup(execCgroup, cgroup: cgroup) } }
        let execCgroupFD = try cgroup.openDirectory(execCgroup)
        defer { close(execCgroupFD) }
        // One OOM kill takes the whole exec: no half-dead process trees.
        if engine.availableControllers.contains("memory") { try? Sys.writeFile(execCgroup + "/memory.oom.group", "1") }

        let plan = CommandPlan(spec: spec, request: request)
        var pipes = try CommandPipes()
        defer { pipes.closeAll() }
        // The exec's first process writes how the command ended here (it waits for it, not us).
        var status: [Int32] = [-1, -1]
        let piped = sbx_pipe_cloexec(&status)
        if piped < 0 { throw .system("pipe2", nil, -piped) }
        defer { close(status[0]) }
        // Watched with the output; read once more without waiting if the exec ends without it.
        _ = fcntl(status[0], F_SETFL, O_NONBLOCK)

        let start = Sys.monotonicNow()
        var spawned = sbx_spawned()
        let rc: Int32
        do throws(LinuxSandboxError) {
            defer { close(status[1]) }
            rc = try { () throws(LinuxSandboxError) -> Int32 in
                // Cloned by the spawner (which fills in its stack and command line), not from the
                // daemon: no copy of the daemon's descriptors ever exists in the child.
                let arena = CArena()
                var final = plan.final(arena: arena, pipes: pipes, rlimits: rlimits, seccomp: engine.seccomp)
                final.seccomp = arena.program(engine.seccomp.program)
                let config = sbx_exec_config(
                    cgroup_fd: execCgroupFD, init_pidfd: initPidfd, final: final, status_fd: status[1],
                    stack: nil, stack_size: 0, argv_area: nil, argv_area_len: 0)
                return try engine.spawner.exec(arena: arena, config: arena.array([config]), into: &spawned)
            }()
        } catch {
            pipes.closeChildEnds()
            throw error
        }
        // The child has its copies; ours of the child's ends must go, or EOF never comes.
        pipes.closeChildEnds()
        if rc < 0 { throw .system("clone3", execCgroup, -rc) }
        // The exec's first process: it exits once the command has ended and its status is written.
        let waiterPidfd = spawned.pidfd
        var waiterOwned = true
        defer { if waiterOwned { killAndReap(waiterPidfd) } }

        // It joins the namespaces, starts the command, and reports the command's pid.
        let report = ChildReport.read(from: spawned.report_fd, timeout: engine.configuration.setupTimeout)
        close(spawned.report_fd)

        switch report {
        case .failed(let record, _):
            if record.step == Int32(SBX_STEP_FORK.rawValue) || record.step == Int32(SBX_STEP_SETNS.rawValue),
               record.error == ESRCH || initHasExited {
                throw LinuxSandboxError(.sandboxGone, "sandbox \(id) is gone (its init has exited)", errno: record.error)
            }
            var path: String?
            if record.step == Int32(SBX_STEP_EXEC.rawValue) {
                path = plan.failedPath(record)
            } else if record.step == Int32(SBX_STEP_CHDIR.rawValue) {
                path = plan.cwd
            }
            throw ChildReport.error(record, path: path)
        case .timedOut:
            _ = cgroup.kill(execCgroup)
            throw LinuxSandboxError(.childSetup, "starting the command took longer than \(engine.configuration.setupTimeout) s; killed", step: "setup")
        case .started(let pid):
            guard let pid, pid > 0 else {
                if initHasExited {
                    throw LinuxSandboxError(.sandboxGone, "sandbox \(id) is gone (its init has exited)")
                }
                throw LinuxSandboxError(.childSetup, "the command's process ended before it could be started", step: "fork into the sandbox")
            }
        }

        // Supervise: feed stdin, drain output, watch the waiter's pidfd and the clock. The waiter
        // is in the exec cgroup too, so a kill ends it with the command.
        var monitor = ExecMonitor(
            stdinFD: pipes.stdinWrite, stdin: request.stdin, stdoutFD: pipes.stdoutRead, stderrFD: pipes.stderrRead,
            pidfd: waiterPidfd, outputLimit: Int(clamping: spec.limits.outputLimit.bytes), deadline: start + timeout,
            onOutput: onOutput, kill: { if !cgroup.kill(execCgroup) { _ = sbx_pidfd_send_signal(waiterPidfd, SIGKILL) } })
        // The loop ends at the status and the end of the output, without waiting for the
        // waiter's own exit.
        monitor.statusFD = status[0]
        monitor.run()
        pipes.forget(monitor.closedFDs)
        let end = monitor.exitTime ?? Sys.monotonicNow()

        // Written just before the waiter exits; nothing there means it was killed with the command.
        var exit = sbx_exit()
        var exitCode: Int32?
        var signal: Int32?
        if let status = monitor.status {
            exit = status
        } else if withUnsafeMutableBytes(of: &exit, { read(status[0], $0.baseAddress, $0.count) }) != MemoryLayout<sbx_exit>.size {
            exit.code = Int32(CLD_KILLED)
            exit.status = SIGKILL
        }
        if exit.code == CLD_EXITED { exitCode = exit.status } else { signal = exit.status }

        let cpu = cgroup.cpuUsageMicroseconds(execCgroup) ?? UInt64(max(0, exit.utime_usec + exit.stime_usec))
        let peak = cgroup.memoryPeak(execCgroup) ?? UInt64(max(0, exit.maxrss_kib)) * 1024
        let oomKilled = cgroup.oomKills(execCgroup) > 0

        let result = ExecResult(
            exitCode: exitCode, signal: signal, stdout: monitor.stdout.kept, stderr: monitor.stderr.kept,
            stdoutTruncated: monitor.stdout.truncated, stderrTruncated: monitor.stderr.truncated,
            wallTime: end - start, timedOut: monitor.timedOut, oomKilled: oomKilled,
            usage: ResourceUsage(cpuMicroseconds: cpu, memoryPeakBytes: peak), limitsEnforced: limitsEnforced)
        waiterOwned = false
        keepCgroup = true
        let timedOut = monitor.timedOut
        return (result, {
            killAndReap(waiterPidfd)   // the spawner's child: the kernel reaps it; this waits for its exit
            // Background processes the command left (e.g. a server started with `&`) keep running
            // in their exec cgroup until the sandbox is destroyed; a timed-out exec leaves nothing.
            if timedOut || !cgroup.isPopulated(execCgroup) { Self.removeExecCgroup(execCgroup, cgroup: cgroup) }
        })
    }

    static func removeExecCgroup(_ execCgroup: String, cgroup: Cgroup2) {
        // Usually empty already: then rmdir is all it takes.
        if !cgroup.removeTree(execCgroup, timeout: 0) {
            _ = cgroup.kill(execCgroup)
            _ = cgroup.waitUntilEmpty(execCgroup, timeout: 2)
            _ = cgroup.removeTree(execCgroup)
        }
    }

    /// True once the init has exited (its pidfd turns readable; it stays unreaped until destroy):
    /// the sandbox can run nothing more.
    public var initHasExited: Bool {
        var pfd = pollfd(fd: initPidfd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) == 1
    }
}

/// The poll loop of one exec, on the exec's own thread.
struct ExecMonitor {
    let stdinFD: Int32
    let stdin: [UInt8]
    let stdoutFD: Int32
    let stderrFD: Int32
    let pidfd: Int32
    var stdout: CapturedOutput
    var stderr: CapturedOutput
    /// Whether each output pipe is still read (until its end of file, or the exec's end).
    var stdoutOpen = true
    var stderrOpen = true
    let deadline: Double
    let onOutput: (@Sendable (OutputChunk) -> Void)?
    let kill: () -> Void

    /// One-shot: the child's report pipe, read along with the output until EOF.
    var reportFD: Int32 = -1
    /// The first failure record the report pipe carried.
    var setupFailure: sbx_report?
    private var reportBuffer: [UInt8] = []
    /// One-shot: the pipe on which PID 1 writes how the command ended, just before it exits.
    var statusFD: Int32 = -1
    /// What PID 1 wrote there. Once it is known and the output is drained, the loop ends without
    /// waiting for PID 1 itself to be gone (its exit tears down the namespaces, which takes a while).
    var status: sbx_exit?

    var stdinOffset = 0
    var stdinOpen = true
    var timedOut = false
    var exitTime: Double?
    var closedFDs: [Int32] = []

    /// After the command exits, output still buffered is read; a descendant that keeps the pipe
    /// open gets this long before we stop listening.
    static let drainGrace = 0.25

    init(stdinFD: Int32, stdin: [UInt8], stdoutFD: Int32, stderrFD: Int32, pidfd: Int32, outputLimit: Int,
         deadline: Double, onOutput: (@Sendable (OutputChunk) -> Void)?, kill: @escaping () -> Void) {
        self.stdinFD = stdinFD
        self.stdin = stdin
        self.stdoutFD = stdoutFD
        self.stderrFD = stderrFD
        self.pidfd = pidfd
        self.stdout = CapturedOutput(limit: outputLimit)
        self.stderr = CapturedOutput(limit: outputLimit)
        self.deadline = deadline
        self.onOutput = onOutput
        self.kill = kill
    }

    mutating func closeFD(_ fd: Int32) {
        close(fd)
        closedFDs.append(fd)
    }

    mutating func run() {
        if stdin.isEmpty { stdinOpen = false; closeFD(stdinFD) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        var killedAt: Double?
        while true {
            let now = Sys.monotonicNow()
            if let exitTime {
                if !stdoutOpen && !stderrOpen && reportFD < 0 { break }
                if now >= exitTime + Self.drainGrace { break }
            } else if status != nil && !stdoutOpen && !stderrOpen && reportFD < 0 {
                exitTime = now
                break
            }
            if !timedOut && now >= deadline {
                timedOut = true
                killedAt = now
                kill()
            }
            if let killedAt, exitTime == nil, now > killedAt + 10 { break }   // unkillable: give up waiting

            var fds: [pollfd] = []
            if stdoutOpen { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
            if stderrOpen { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
            if stdinOpen { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            if reportFD >= 0 { fds.append(pollfd(fd: reportFD, events: Int16(POLLIN), revents: 0)) }
            if exitTime == nil { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
            if statusFD >= 0 && status == nil && exitTime == nil { fds.append(pollfd(fd: statusFD, events: Int16(POLLIN), revents: 0)) }
            var wait = exitTime.map { $0 + Self.drainGrace - now } ?? (timedOut ? 0.1 : deadline - now)
            wait = max(0, min(wait, 60))
            let ready = poll(&fds, nfds_t(fds.count), Int32((wait * 1000).rounded(.up)))
            if ready < 0 && Sys.errno != EINTR { break }
            if ready <= 0 { continue }
            for p in fds where p.revents != 0 {
                switch p.fd {
                case pidfd:
                    exitTime = Sys.monotonicNow()
                case stdoutFD:
                    drain(.stdout, buffer: buffer)
                case stderrFD:
                    drain(.stderr, buffer: buffer)
                case stdinFD:
                    feedStdin()
                case reportFD:
                    readReport()
                case statusFD:
                    readStatus()
                default:
                    break
                }
            }
        }
        // Stop listening; whatever still holds the write ends gets EPIPE.
        if stdoutOpen { stdoutOpen = false; closeFD(stdoutFD) }
        if stderrOpen { stderrOpen = false; closeFD(stderrFD) }
        if stdinOpen { stdinOpen = false; closeFD(stdinFD) }
        if reportFD >= 0 { close(reportFD); reportFD = -1 }
    }

    /// PID 1 writes its `sbx_exit` in one write (smaller than PIPE_BUF, so it arrives whole);
    /// EOF without it means PID 1 died first (killed with everything else).
    private mutating func readStatus() {
        var exit = sbx_exit()
        let n = withUnsafeMutableBytes(of: &exit) { read(statusFD, $0.baseAddress, $0.count) }
        if n < 0 && (Sys.errno == EINTR || Sys.errno == EAGAIN) { return }
        if n == MemoryLayout<sbx_exit>.size { status = exit }
        statusFD = -1   // read once: the caller owns and closes the descriptor
    }

    private mutating func readReport() {
        var chunk = [UInt8](repeating: 0, count: 256)
        let n = chunk.withUnsafeMutableBytes { read(reportFD, $0.baseAddress, $0.count) }
        if n < 0 && (Sys.errno == EINTR || Sys.errno == EAGAIN) { return }
        if n <= 0 {
            close(reportFD)
            reportFD = -1
            return
        }
        reportBuffer += chunk[0..<n]
        let size = MemoryLayout<sbx_report>.size
        while reportBuffer.count >= size {
            var record = sbx_report()
            withUnsafeMutableBytes(of: &record) { $0.copyBytes(from: reportBuffer[0..<size]) }
            reportBuffer.removeFirst(size)
            if record.step != Int32(SBX_STEP_NONE.rawValue) && setupFailure == nil { setupFailure = record }
        }
    }

    private mutating func drain(_ stream: OutputChunk.Stream, buffer: UnsafeMutableRawBufferPointer) {
        let fd = stream == .stdout ? stdoutFD : stderrFD
        // Bounded: at most 16 reads per wake-up, so one flooding stream cannot starve the clock.
        for _ in 0..<16 {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                let kept = stream == .stdout ? stdout.take(chunk) : stderr.take(chunk)
                if !kept.isEmpty, let onOutput { onOutput(OutputChunk(stream: stream, bytes: Array(kept))) }
                continue
            }
            if n < 0 && (Sys.errno == EINTR) { continue }
            if n < 0 && Sys.errno == EAGAIN { return }
            if stream == .stdout { stdoutOpen = false } else { stderrOpen = false }
            closeFD(fd)
            return
        }
    }

    private mutating func feedStdin() {
        while stdinOffset < stdin.count {
            let n = stdin.withUnsafeBytes { write(stdinFD, $0.baseAddress! + stdinOffset, $0.count - stdinOffset) }
            if n > 0 { stdinOffset += n; continue }
            if n < 0 && Sys.errno == EINTR { continue }
            if n < 0 && Sys.errno == EAGAIN { return }
            break   // EPIPE: the command closed its stdin
        }
        stdinOpen = false
        closeFD(stdinFD)
    }
}
