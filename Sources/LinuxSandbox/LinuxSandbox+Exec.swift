import CLinuxSandbox
import SandboxCore

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandbox {
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The environment a command starts with: fixed PATH and HOME, then the spec's, then the
    /// request's variables.
    func environment(for request: ExecRequest) -> [String: String] {
        var env = ["PATH": Self.defaultPath, "HOME": spec.workspacePath]
        for (k, v) in spec.environment { env[k] = v }
        for (k, v) in request.environment { env[k] = v }
        return env
    }

    /// Where `execve` looks, in order: `argv[0]` itself when it has a `/`, else each PATH entry.
    static func executableCandidates(_ name: String, path: String) -> [String] {
        if name.contains("/") { return [name] }
        return path.split(separator: ":", omittingEmptySubsequences: false)
            .map { $0.isEmpty ? "./" + name : $0 + "/" + name }
    }

    func execBlocking(
        _ request: ExecRequest, number: Int, timeout: Double, onOutput: (@Sendable (OutputChunk) -> Void)?
    ) throws(LinuxSandboxError) -> ExecResult {
        let cgroup = engine.cgroup
        let execCgroup = cgroupPath + "/exec-\(number)"
        try cgroup.makeDirectory(execCgroup)
        var keepCgroup = false
        defer {
            if !keepCgroup {
                _ = cgroup.kill(execCgroup)
                _ = cgroup.waitUntilEmpty(execCgroup, timeout: 2)
                _ = cgroup.removeTree(execCgroup)
            }
        }
        let execCgroupFD = try cgroup.openDirectory(execCgroup)
        defer { close(execCgroupFD) }
        // One OOM kill takes the whole exec: no half-dead process trees.
        if engine.availableControllers.contains("memory") { try? Sys.writeFile(execCgroup + "/memory.oom.group", "1") }

        // Pipes: the child's ends are dup'ed onto 0/1/2; ours are non-blocking.
        var pipes: [[Int32]] = []
        for _ in 0..<3 {
            var pair: [Int32] = [-1, -1]
            let rc = sbx_pipe_cloexec(&pair)
            if rc != 0 {
                let e = -rc
                for fd in pipes.joined() { close(fd) }
                throw .system("pipe2", nil, e)
            }
            pipes.append(pair)
        }
        let stdinPipe = pipes[0], stdoutPipe = pipes[1], stderrPipe = pipes[2]
        let stdinWrite = stdinPipe[1], stdoutRead = stdoutPipe[0], stderrRead = stderrPipe[0]
        for fd in [stdinWrite, stdoutRead, stderrRead] { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        // Bigger pipes: fewer wake-ups when a command floods its output.
        for fd in [stdoutRead, stderrRead] { _ = fcntl(fd, 1031 /* F_SETPIPE_SZ */, 1 << 20) }

        let env = environment(for: request)
        let candidates = Self.executableCandidates(request.arguments[0], path: env["PATH"] ?? Self.defaultPath)
        let cwd = request.workingDirectory ?? spec.workspacePath

        let start = Sys.monotonicNow()
        var spawned = sbx_spawned()
        let rc: Int32 = {
            let arena = CArena()
            var final = sbx_final()
            final.stdin_fd = stdinPipe[0]
            final.stdout_fd = stdoutPipe[1]
            final.stderr_fd = stderrPipe[1]
            final.cwd = arena.string(cwd)
            final.rlimits = UnsafePointer(arena.array(rlimits))
            final.nrlimits = Int32(rlimits.count)
            final.seccomp = UnsafePointer(engine.seccomp.program)
            final.exec_fd = -1
            let paths = candidates.map { arena.string($0) }
            final.exec_paths = UnsafePointer(arena.array(paths.map { Optional($0) }))
            final.nexec_paths = Int32(paths.count)
            final.argv = UnsafePointer(arena.stringArray(request.arguments))
            final.envp = UnsafePointer(arena.stringArray(env.keys.sorted().map { "\($0)=\(env[$0]!)" }))
            var config = sbx_exec_config(cgroup_fd: execCgroupFD, init_pidfd: initPidfd, final: final)
            return sbx_spawn_exec(&config, &spawned)
        }()
        // The child has its copies; ours of the child's ends must go, or EOF never comes.
        close(stdinPipe[0]); close(stdoutPipe[1]); close(stderrPipe[1])
        var parentFDs: Set<Int32> = [stdinWrite, stdoutRead, stderrRead]
        defer { for fd in parentFDs { close(fd) } }
        if rc < 0 { throw .system("clone3", execCgroup, -rc) }

        // The intermediate child joins the namespaces, forks the command and exits at once.
        let report = ChildReport.read(from: spawned.report_fd, timeout: engine.configuration.setupTimeout)
        close(spawned.report_fd)
        killAndReap(spawned.pidfd)   // already exited or exiting; never left behind

        let payloadPID: Int32
        switch report {
        case .failed(let record, let pid):
            if let pid, pid > 0 { reapChild(pid) }
            if record.step == Int32(SBX_STEP_FORK.rawValue) || record.step == Int32(SBX_STEP_SETNS.rawValue) {
                if sbx_pidfd_send_signal(initPidfd, 0) != 0 {
                    throw LinuxSandboxError(.sandboxGone, "sandbox \(id) is gone (its init has exited)")
                }
            }
            var path: String?
            if record.step == Int32(SBX_STEP_EXEC.rawValue) {
                path = record.error == ENOENT && !request.arguments[0].contains("/")
                    ? request.arguments[0] : candidates[max(0, min(Int(record.index), candidates.count - 1))]
            } else if record.step == Int32(SBX_STEP_CHDIR.rawValue) {
                path = cwd
            }
            throw ChildReport.error(record, path: path)
        case .timedOut(let pid):
            if let pid, pid > 0 { _ = cgroup.kill(execCgroup); reapChild(pid) }
            throw LinuxSandboxError(.childSetup, "starting the command took longer than \(engine.configuration.setupTimeout) s; killed", step: "setup")
        case .started(let pid):
            guard let pid, pid > 0 else {
                if sbx_pidfd_send_signal(initPidfd, 0) != 0 {
                    throw LinuxSandboxError(.sandboxGone, "sandbox \(id) is gone (its init has exited)")
                }
                throw LinuxSandboxError(.childSetup, "the command's process ended before it could be started", step: "fork into the sandbox")
            }
            payloadPID = pid
        }
        let payloadPidfd = sbx_pidfd_open(payloadPID)
        if payloadPidfd < 0 {
            reapChild(payloadPID)
            throw .system("pidfd_open", String(payloadPID), -payloadPidfd)
        }
        defer { close(payloadPidfd) }

        // Supervise: feed stdin, drain output, watch the pidfd and the clock.
        var monitor = ExecMonitor(
            stdinFD: stdinWrite, stdin: request.stdin, stdoutFD: stdoutRead, stderrFD: stderrRead, pidfd: payloadPidfd,
            outputLimit: Int(clamping: spec.limits.outputLimit.bytes), deadline: start + timeout, onOutput: onOutput,
            kill: { _ = cgroup.kill(execCgroup); _ = sbx_pidfd_send_signal(payloadPidfd, SIGKILL) })
        monitor.run()
        for fd in monitor.closedFDs { parentFDs.remove(fd) }
        let end = monitor.exitTime ?? Sys.monotonicNow()

        var code: Int32 = 0, status: Int32 = 0, pid: Int32 = 0, maxRSS = 0, utime = 0, stime = 0
        let waited = sbx_waitid_pidfd(payloadPidfd, WEXITED, &code, &status, &pid, &maxRSS, &utime, &stime)
        var exitCode: Int32?
        var signal: Int32?
        if waited == 0 {
            if code == CLD_EXITED { exitCode = status } else { signal = status }
        } else {
            signal = SIGKILL
        }

        let cpu = cgroup.cpuUsageMicroseconds(execCgroup) ?? UInt64(max(0, utime + stime))
        let peak = cgroup.memoryPeak(execCgroup) ?? UInt64(max(0, maxRSS)) * 1024
        let oomKilled = cgroup.oomKills(execCgroup) > 0

        // Background processes the command left (e.g. a server started with `&`) keep running in
        // their exec cgroup until the sandbox is destroyed; a timed-out exec leaves nothing.
        if !monitor.timedOut && cgroup.isPopulated(execCgroup) { keepCgroup = true }

        return ExecResult(
            exitCode: exitCode, signal: signal, stdout: monitor.stdout.kept, stderr: monitor.stderr.kept,
            stdoutTruncated: monitor.stdout.truncated, stderrTruncated: monitor.stderr.truncated,
            wallTime: end - start, timedOut: monitor.timedOut, oomKilled: oomKilled,
            usage: ResourceUsage(cpuMicroseconds: cpu, memoryPeakBytes: peak), limitsEnforced: limitsEnforced)
    }

    /// Waits for a child of ours (blocking; it is dead or about to be).
    func reapChild(_ pid: Int32) {
        var status: Int32 = 0
        while waitpid(pid, &status, __WALL) < 0 && Sys.errno == EINTR {}
    }
}

/// Output kept from one stream: at most `limit` bytes, the rest counted and dropped.
struct CapturedOutput {
    let limit: Int
    var kept: [UInt8] = []
    var truncated = false
    var open = true

    /// Keeps what fits; returns the kept part (for streaming).
    mutating func take(_ chunk: UnsafeRawBufferPointer) -> ArraySlice<UInt8> {
        let room = limit - kept.count
        if chunk.count > room { truncated = true }
        guard room > 0 else { return [] }
        let taken = chunk.prefix(room)
        let from = kept.count
        kept.append(contentsOf: taken)
        return kept[from...]
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
    let deadline: Double
    let onOutput: (@Sendable (OutputChunk) -> Void)?
    let kill: () -> Void

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
                if !stdout.open && !stderr.open { break }
                if now >= exitTime + Self.drainGrace { break }
            }
            if !timedOut && now >= deadline {
                timedOut = true
                killedAt = now
                kill()
            }
            if let killedAt, exitTime == nil, now > killedAt + 10 { break }   // unkillable: give up waiting

            var fds: [pollfd] = []
            if stdout.open { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
            if stderr.open { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
            if stdinOpen { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            if exitTime == nil { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
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
                default:
                    break
                }
            }
        }
        // Stop listening; whatever still holds the write ends gets EPIPE.
        if stdout.open { stdout.open = false; closeFD(stdoutFD) }
        if stderr.open { stderr.open = false; closeFD(stderrFD) }
        if stdinOpen { stdinOpen = false; closeFD(stdinFD) }
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
            if stream == .stdout { stdout.open = false } else { stderr.open = false }
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
