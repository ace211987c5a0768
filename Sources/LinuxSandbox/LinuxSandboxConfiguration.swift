#if canImport(Glibc)
import Glibc
#endif

/// How the level-1 engine runs on this host. Defaults suit a production host (pure cgroup v2,
/// daemon delegated `/sys/fs/cgroup/…`); this build machine needs `cgroupRoot:
/// "/sys/fs/cgroup/unified"`.
public struct LinuxSandboxConfiguration: Sendable, Hashable {
    /// Where cgroup2 is mounted. Never unmounted or remounted by sandboxd.
    public var cgroupRoot: String
    /// The daemon's directory below `cgroupRoot`; one directory per sandbox is created in it.
    public var cgroupSubtree: String
    /// Host directory for sandboxd's own files (the empty directory each sandbox's root tmpfs is
    /// mounted on, privately, in the sandbox's mount namespace). Must be searchable by others.
    public var stateDirectory: String
    /// User namespace ids: sandbox N (slot) runs as host uid and gid `idBase + N`, mapped to 0
    /// inside. At least 65536 (`sandbox.uid_range_start`). One id per sandbox: with every capability dropped, nothing inside can change its
    /// uid, so more would only be unused surface. Distinct per live sandbox.
    public var idBase: UInt32
    /// How many ids (and so concurrent sandboxes) the range holds.
    public var idCount: UInt32
    /// PID 1 of a persistent sandbox: a program from the sandbox's runtime that waits forever.
    /// It runs with SIGCHLD ignored, so the kernel reaps every orphan reparented to it; it has no
    /// handlers, so nothing inside can signal it. Shows as `sandboxd-init` in `/proc/1/cmdline`.
    public var initCommand: [String]
    /// Host directories bound read-only at the same place (symlinks copied as symlinks).
    public var runtimePaths: [String]
    /// Non-secret host files under /etc the runtime needs (dynamic loader cache, alternatives,
    /// CA certificates, the JDK's configuration); bound read-only when present.
    public var hostEtcPaths: [String]
    /// Seconds a child may take to build the sandbox or start a command before it is killed.
    public var setupTimeout: Double
    /// Paths under the sandbox's `/proc` bound read-only (runc's list). Only a level-3 test guest
    /// (`sandboxd.test_sysrq=1`) leaves `/proc/sysrq-trigger` out, so a test can panic its own guest.
    public var procReadOnlyPaths: [String] = RootfsPlan.readOnlyPaths
    /// The spawn helper (`sandboxd-spawner`, built with the daemon) that clones new sandboxes;
    /// nil: `defaultSpawnerPath()`.
    public var spawnerPath: String?
    /// How many spawn helpers the engine keeps; nil: one per CPU, 2–4. A caller that creates one
    /// sandbox at a time (the level-3 guest agent) needs one, and each costs a process start.
    public var spawnerCount: Int?
    /// The seccomp program as `SeccompProgram.exportStandard()` wrote it, checked and used
    /// instead of compiling one with libseccomp (a level-3 guest gets the host's in its image);
    /// nil: compile it. An invalid program fails the engine's start.
    public var seccompProgram: [UInt8]?

    public init(
        cgroupRoot: String = "/sys/fs/cgroup",
        cgroupSubtree: String = "sandboxd",
        stateDirectory: String = "/run/sandboxd",
        idBase: UInt32 = 524_288,
        idCount: UInt32 = 65_536,
        initCommand: [String] = ["/usr/bin/sleep", "infinity"],
        runtimePaths: [String] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"],
        hostEtcPaths: [String] = [
            "/etc/ld.so.cache", "/etc/alternatives", "/etc/ssl/certs",
            "/etc/java-17-openjdk", "/etc/java-21-openjdk", "/etc/localtime", "/etc/mime.types",
        ],
        setupTimeout: Double = 10,
        spawnerPath: String? = nil
    ) {
        self.cgroupRoot = cgroupRoot
        self.cgroupSubtree = cgroupSubtree
        self.stateDirectory = stateDirectory
        self.idBase = idBase
        self.idCount = idCount
        self.initCommand = initCommand
        self.runtimePaths = runtimePaths
        self.hostEtcPaths = hostEtcPaths
        self.setupTimeout = setupTimeout
        self.spawnerPath = spawnerPath
    }

    /// `SANDBOXD_SPAWNER` if set; else `sandboxd-spawner` next to the running executable (a
    /// test bundle sits a few levels below the products); else
    /// `/usr/local/libexec/sandboxd/sandboxd-spawner`.
    public static func defaultSpawnerPath() -> String {
        if let value = getenv("SANDBOXD_SPAWNER"), value.pointee != 0 { return String(cString: value) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 {
            var directory = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            for _ in 0..<4 {
                guard let slash = directory.lastIndex(of: "/"), slash != directory.startIndex else { break }
                directory = String(directory[..<slash])
                let candidate = directory + "/sandboxd-spawner"
                if access(candidate, X_OK) == 0 { return candidate }
            }
        }
        return "/usr/local/libexec/sandboxd/sandboxd-spawner"
    }
}
