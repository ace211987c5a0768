import CLinuxSandbox
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The engine's spawn helper, `sandboxd-spawner`: a small C process started once, which clones
/// the first process of every new sandbox and passes its descriptors back over a socket.
///
/// Why: `clone` copies the caller's page tables and memory map, and the daemon's are large and
/// grow with its heap and threads; the spawner's are a few hundred kilobytes (bubblewrap is fast
/// for the same reason). Execs into a live sandbox still clone from the daemon: their command
/// must be the daemon's child, so it can be waited for with its resource usage.
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
        guard arena.isContiguous, let block = arena.base else {
            if arena.base == nil { throw LinuxSandboxError(.system, "could not reserve address space for the sandbox's description (mmap)") }
            throw LinuxSandboxError(.invalidRequest, "the sandbox's command, environment and mounts take more than \(arena.reserved >> 20) MiB")
        }
        func request(_ current: inout Connection?) throws(LinuxSandboxError) -> Int32 {
            var lastError: Int32 = EPIPE
            // A helper that died (killed, or a broken request) is replaced once; the failed
            // request left no child behind (its sync pipe closed with the helper).
            for _ in 0..<2 {
                if current == nil { current = try Self.start(path) }
                var failedStep: Int32 = 0
                let rc = sbx_spawner_create(current!.socket, block, arena.used, config, hostID, release ? 1 : 0,
                                            &spawned, &failedStep)
                if rc < 0 && failedStep == 1 {
                    throw LinuxSandboxError(.system, "writing the uid/gid map of the sandbox's first process (root inside = host id \(hostID)): \(errnoName(-rc))", errno: -rc)
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
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 first: an fd 0–2 socket end would otherwise be replaced by /dev/null.
        posix_spawn_file_actions_adddup2(&actions, pair[1], 3)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Default dispositions (the daemon ignores SIGPIPE), nothing blocked, own process group.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("sandboxd-spawner"), nil]
        defer { free(argv[0]) }
        var envp: [UnsafeMutablePointer<CChar>?] = [nil]
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, &envp)
        if rc != 0 {
            close(pair[0])
            throw LinuxSandboxError(.system, "starting the spawn helper \(path): \(errnoName(rc))", errno: rc)
        }
        return Connection(socket: pair[0], pid: pid)
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
