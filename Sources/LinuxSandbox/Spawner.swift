import CLinuxSandbox
import ProcessSpawn
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The engine's spawn helper, `sandboxd-spawner`: a small C process started once, which clones
/// the first process of every new sandbox, and of every exec into a live one, and passes its
/// descriptors back over a socket.
///
/// Why: `clone` copies the caller's page tables, memory map and descriptor table, and the daemon's
/// are large and grow with its heap and threads; the spawner's are a few hundred kilobytes
/// (bubblewrap is fast for the same reason). A clone of the daemon would also hold a copy of each
/// of its descriptors until its exec, so a listener the daemon closed would go on answering for
/// that moment. An exec's first process waits for the command itself and writes its status and
/// resource usage on a pipe (the command is not the daemon's child).
///
/// A few helpers run side by side (one per CPU, 2–4), each serving one request at a time (a
/// clone takes well under a millisecond): a request goes to a free one, so one helper waiting for
/// a CPU does not hold up every create. A helper that died is started again on its next request.
final class Spawner: Sendable {
    /// The helper's executable.
    let path: String

    private struct Connection {
        var socket: Int32
        var pid: pid_t
    }
    private final class Slot: Sendable {
        let connection: Mutex<Connection?>
        init(_ connection: Connection) { self.connection = Mutex(connection) }
    }
    private let slots: [Slot]
    private let next = Atomic<Int>(0)

    /// Starts the helpers. Throws when the executable is missing or not safe to run as root.
    init(path: String, count requested: Int? = nil) throws(LinuxSandboxError) {
        self.path = path
        try Self.checkExecutable(path)
        let count = requested.map { max(1, $0) } ?? max(2, min(4, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var started: [Slot] = []
        do throws(LinuxSandboxError) {
            for _ in 0..<count { started.append(Slot(try Self.start(path))) }
        } catch {
            for slot in started { slot.connection.withLock { if let c = $0 { Self.stop(c) }; $0 = nil } }
            throw error
        }
        slots = started
    }

    deinit {
        for slot in slots { slot.connection.withLock { if let c = $0 { Self.stop(c) }; $0 = nil } }
    }

    /// Sends a create request (`config` and everything it points to inside `arena`'s block) and
    /// fills `spawned`. The spawner writes the child's id maps (root inside = `hostID`) and, with
    /// `release`, lets it go on at once (`spawned.sync_fd` is then -1). Returns 0 or -errno of the
    /// clone; throws when the maps could not be written or the helper cannot be reached.
    func create(arena: CArena, config: UnsafePointer<sbx_create_config>, hostID: UInt32, release: Bool,
                into spawned: inout sbx_spawned) throws(LinuxSandboxError) -> Int32 {
        let block = try Self.block(arena)
        return try call(hostID: hostID) { socket in
            var failedStep: Int32 = 0
            let rc = sbx_spawner_create(socket, block, arena.used, config, hostID, release ? 1 : 0, &spawned, &failedStep)
            return (rc, failedStep)
        }
    }

    /// Sends an exec request (`config` and everything it points to inside `arena`'s block) and
    /// fills `spawned` (pid, pidfd and report of the exec's first process; no sync descriptor).
    /// Returns 0 or -errno of the clone; throws when the helper cannot be reached.
    func exec(arena: CArena, config: UnsafePointer<sbx_exec_config>, into spawned: inout sbx_spawned) throws(LinuxSandboxError) -> Int32 {
        let block = try Self.block(arena)
        return try call { socket in (sbx_spawner_exec(socket, block, arena.used, config, &spawned), 0) }
    }

    private static func block(_ arena: CArena) throws(LinuxSandboxError) -> UnsafeRawPointer {
        guard arena.isContiguous, let block = arena.base else {
            if arena.base == nil { throw LinuxSandboxError(.system, "could not reserve address space for the sandbox's description (mmap)") }
            throw LinuxSandboxError(.invalidRequest, "the sandbox's command, environment and mounts take more than \(arena.reserved >> 20) MiB")
        }
        return UnsafeRawPointer(block)
    }

    /// Runs `send` (one request and its answer; returns -errno and the failed step) on a free
    /// helper, starting one again when it died.
    private func call(hostID: UInt32 = 0, _ send: (Int32) -> (rc: Int32, failedStep: Int32)) throws(LinuxSandboxError) -> Int32 {
        func request(_ current: inout Connection?) throws(LinuxSandboxError) -> Int32 {
            var lastError: Int32 = EPIPE
            // A helper that died (killed, or a broken request) is replaced once; the failed
            // request left no child behind (its sync pipe closed with the helper).
            for _ in 0..<2 {
                if current == nil { current = try Self.start(path) }
                let (rc, failedStep) = send(current!.socket)
                if rc < 0 && failedStep == 1 {
                    throw LinuxSandboxError(.system, "writing the uid/gid map of the sandbox's first process (root inside = host id \(hostID)): \(errnoName(-rc))", errno: -rc)
                }
                if rc == -ECONNABORTED {
                    Self.stop(current!)
                    current = nil
                    throw LinuxSandboxError(.system, "the spawn helper \(path) stopped answering after the request was sent", errno: ECONNABORTED)
                }
                if rc != -EPIPE && rc != -ECONNRESET && rc != -EPROTO { return rc }
                lastError = -rc
                Self.stop(current!)
                current = nil
            }
            throw LinuxSandboxError(.system, "the spawn helper \(path) stopped answering: \(errnoName(lastError))", errno: lastError)
        }
        // A free helper if there is one, else wait for one in turn.
        let first = Int(UInt(bitPattern: next.wrappingAdd(1, ordering: .relaxed).oldValue) % UInt(slots.count))
        for offset in 0..<slots.count {
            let slot = slots[(first + offset) % slots.count]
            if let rc = try slot.connection.withLockIfAvailable({ (current: inout Connection?) throws(LinuxSandboxError) -> Int32 in
                try request(&current)
            }) {
                return rc
            }
        }
        return try slots[first].connection.withLock { (current: inout Connection?) throws(LinuxSandboxError) -> Int32 in
            try request(&current)
        }
    }

    /// The helper runs as root: it must belong to root (or to us) and be writable by no one else.
    static func checkExecutable(_ path: String) throws(LinuxSandboxError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw LinuxSandboxError(.system, "the spawn helper \(path): \(errnoName(Sys.errno)) (build it with swift build --product sandboxd-spawner, or set spawnerPath)", errno: Sys.errno)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG, access(path, X_OK) == 0 else {
            throw LinuxSandboxError(.system, "the spawn helper \(path) is not an executable file")
        }
        guard st.st_uid == 0 || st.st_uid == geteuid(), st.st_mode & 0o022 == 0 else {
            throw LinuxSandboxError(.system, "the spawn helper \(path) is writable by others or owned by uid \(st.st_uid); it runs as root, so it must be owned by root and writable by no one else")
        }
    }

    /// Starts the helper with one end of a socket pair on fd 3 and /dev/null as stdio.
    private static func start(_ path: String) throws(LinuxSandboxError) -> Connection {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw .system("socketpair", nil, Sys.errno)
        }
        defer { close(pair[1]) }
        // Its end of the socket on fd 3, nothing else of ours; default dispositions (the daemon
        // ignores SIGPIPE), nothing blocked, its own process group, an empty environment.
        var command = SpawnCommand(["sandboxd-spawner"], environment: [])
        command.passedDescriptors = [pair[1]]
        command.newProcessGroup = true
        do {
            return Connection(socket: pair[0], pid: try command.spawn(executable: path))
        } catch {
            close(pair[0])
            throw LinuxSandboxError(.system, "starting the spawn helper \(path): \(error)", errno: error.errno)
        }
    }

    /// Closing the socket ends the helper; reap it (it exits at once, or is killed).
    private static func stop(_ c: Connection) {
        close(c.socket)
        var status: Int32 = 0
        for _ in 0..<200 {
            let r = waitpid(c.pid, &status, WNOHANG)
            if r == c.pid || (r < 0 && Sys.errno != EINTR) { return }
            usleep(1_000)
        }
        kill(c.pid, SIGKILL)
        while waitpid(c.pid, &status, 0) < 0 && Sys.errno == EINTR {}
    }
}
