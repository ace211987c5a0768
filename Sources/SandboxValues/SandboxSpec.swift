/// Everything needed to create one sandbox, already derived from its policy and request.
public struct SandboxSpec: Hashable, Sendable, Codable {
    /// Unique id; names the sandbox's cgroup and hostname. Letters, digits, `-` and `_`, at most 64.
    public var id: String
    /// Host name inside; `nil` means `sbx-<first 12 characters of id>`.
    public var hostname: String?
    public var limits: ResourceLimits
    /// What to do when a limit cannot be enforced on this host.
    public var enforcement: LimitEnforcement
    /// Environment every exec starts from; an exec's own variables override these.
    public var environment: [String: String]
    /// Extra host paths mounted into the sandbox.
    public var mounts: [MountSpec]
    /// Absolute paths hidden inside the sandbox whatever mounts or the root provide there (a
    /// policy's `filesystem.blocked_paths`): an empty read-only directory over a directory,
    /// `/dev/null` over a file. A path absent inside the sandbox needs no mask.
    public var maskedPaths: [String]
    /// Working directory and writable scratch space (a size-capped tmpfs), kept across execs.
    public var workspacePath: String
    public var network: NetworkMode

    public init(
        id: String,
        hostname: String? = nil,
        limits: ResourceLimits = ResourceLimits(),
        enforcement: LimitEnforcement = .strict,
        environment: [String: String] = [:],
        mounts: [MountSpec] = [],
        maskedPaths: [String] = [],
        workspacePath: String = "/workspace",
        network: NetworkMode = .loopbackOnly
    ) {
        self.id = id
        self.hostname = hostname
        self.limits = limits
        self.enforcement = enforcement
        self.environment = environment
        self.mounts = mounts
        self.maskedPaths = maskedPaths
        self.workspacePath = workspacePath
        self.network = network
    }

    /// The host name used inside: `hostname`, or `sbx-` and the first 12 characters of the id.
    public var effectiveHostname: String { hostname ?? "sbx-" + String(id.prefix(12)) }
}

/// A host path made visible inside a sandbox.
public struct MountSpec: Hashable, Sendable, Codable {
    /// Absolute path on the host.
    public var hostPath: String
    /// Absolute path inside the sandbox.
    public var sandboxPath: String
    public var readOnly: Bool
    /// Refuse a host path with a symbolic link anywhere in it (policy mounts): the bind then
    /// cannot be redirected to another host directory, not even between the check and the mount.
    public var refuseSymlinks: Bool

    public init(hostPath: String, sandboxPath: String? = nil, readOnly: Bool = true, refuseSymlinks: Bool = false) {
        self.hostPath = hostPath
        self.sandboxPath = sandboxPath ?? hostPath
        self.readOnly = readOnly
        self.refuseSymlinks = refuseSymlinks
    }
}

/// What network a sandbox has.
public enum NetworkMode: String, Hashable, Sendable, Codable {
    /// Its own network namespace with only `lo`, up.
    case loopbackOnly = "loopback-only"
}
