/// What the daemon adds to a sandbox beyond its spec, at launch: host directories it opens itself
/// and a hook that runs once the sandbox's namespaces exist, before anything of the workload runs.
public struct LaunchAttachments: Sendable {
    /// A host directory shown read-only (`nosuid,nodev,noexec`) inside the sandbox. The daemon clones
    /// its mount (`open_tree`) as root before the clone, so the sandbox's own uid never looks the
    /// host path up: it may lie below directories only root can walk (the database tool's socket).
    public struct Directory: Sendable, Hashable {
        public var hostPath: String
        public var sandboxPath: String

        public init(hostPath: String, sandboxPath: String) {
            self.hostPath = hostPath
            self.sandboxPath = sandboxPath
        }
    }

    public var readOnlyDirectories: [Directory]
    /// Called on the launching thread with the host pid of the sandbox's init after its namespaces
    /// exist and its id maps are written, while the init still waits for the go-ahead (for a
    /// one-shot run: before the command exists). A throw fails the launch: the child is killed.
    /// Blocking here holds the sandbox's start, so keep it short (create a listener, not serve one).
    public var beforeWorkload: (@Sendable (_ initPID: Int32) throws -> Void)?

    public init(readOnlyDirectories: [Directory] = [], beforeWorkload: (@Sendable (_ initPID: Int32) throws -> Void)? = nil) {
        self.readOnlyDirectories = readOnlyDirectories
        self.beforeWorkload = beforeWorkload
    }

    /// At most this many directories: each travels to the spawn helper as a descriptor, and a
    /// request carries at most 16 (spawner.c `SPAWNER_MAX_FDS`), ten of them the config's own.
    public static let maximumDirectories = 6

    func validate() throws(LinuxSandboxError) {
        guard readOnlyDirectories.count <= Self.maximumDirectories else {
            throw LinuxSandboxError(.invalidRequest, "\(readOnlyDirectories.count) attached directories; at most \(Self.maximumDirectories)")
        }
        for directory in readOnlyDirectories {
            guard directory.hostPath.hasPrefix("/"), !directory.hostPath.utf8.contains(0) else {
                throw LinuxSandboxError(.invalidRequest, "attached directory \"\(directory.hostPath)\" must be an absolute host path", path: directory.hostPath)
            }
            try RootfsPlan.validateSandboxPath(directory.sandboxPath, what: "attached directory path")
        }
    }
}
