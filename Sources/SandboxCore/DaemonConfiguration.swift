import SandboxValues

/// The daemon's settings, resolved from `sandboxd.yaml`, the `POSTGRES_*` environment variables and
/// built-in defaults (docs/configuration.md has the table of keys and the precedence).
///
/// A pure value: the daemon reads the file and passes its text and name, so errors can name
/// `sandboxd.yaml:7: resources.enforcment: unknown key (did you mean enforcement?)`.
/// `description` and ``redacted`` never contain the database password.
public struct DaemonConfiguration: Hashable, Sendable, CustomStringConvertible {
    /// Where the daemon keeps its state: the embedded PostgreSQL cluster, the record outbox.
    public var stateDirectory: String
    public var socket: Socket
    /// Directory of `*.yaml` policy files; when it does not exist the bundled presets are used.
    public var policyDirectory: String
    /// Which PostgreSQL the records go to.
    public var database: Database
    /// Where ``database`` came from, for `info` output and the start-up log.
    public var databaseSource: DatabaseSource
    /// Connections in the Store's pool (also for the embedded cluster).
    public var databasePoolSize: Int
    public var resources: Resources
    public var sandbox: SandboxLimits
    /// Level 3 (QEMU guests).
    public var vm: VirtualMachines
    /// Seconds running executions get to finish after SIGTERM before they are killed.
    public var shutdownGracePeriod: Double
    public var logLevel: LogLevel
    /// `SQLITE_DB`: the legacy SQLite database for `sandboxctl migrate-sqlite`; not used by the daemon.
    public var sqliteDatabase: String?
    /// Things worth logging at start that are not errors (an environment variable that was ignored).
    public var notes: [String]

    /// The control socket and who may use it.
    public struct Socket: Hashable, Sendable {
        public var path: String
        /// Group owning the socket (mode 0660): its members may create and control their own sandboxes.
        public var group: String
        /// Members of this group (and root) see and control every sandbox.
        public var adminGroup: String
        public init(path: String = "/run/sandboxd/sandboxd.sock", group: String = "sandboxd", adminGroup: String = "sandboxd-admin") {
            self.path = path
            self.group = group
            self.adminGroup = adminGroup
        }
    }

    /// Where the execution records are stored.
    public enum Database: Hashable, Sendable {
        /// A private cluster the daemon creates and runs under `dataDirectory`, on a Unix socket only.
        case embedded(dataDirectory: String)
        /// An existing PostgreSQL server.
        case external(DatabaseTarget)
    }

    /// Which setting chose the database (precedence: URL > separate variables > file > embedded).
    public enum DatabaseSource: String, Hashable, Sendable {
        case environmentURL = "POSTGRES_URL"
        case environmentVariables = "POSTGRES_* variables"
        case file = "configuration file"
        case embedded = "embedded default"
    }

    /// How resource limits are enforced.
    public struct Resources: Hashable, Sendable {
        public var enforcement: LimitEnforcement
        /// The cgroup v2 mount under which the daemon's delegated subtree lives.
        public var cgroupRoot: String
        /// The daemon's own directory below ``cgroupRoot`` as configured (`resources.cgroup_subtree`);
        /// nil: derived from the state directory (see ``DaemonConfiguration/cgroupSubtree``).
        public var configuredCgroupSubtree: String?
        public init(enforcement: LimitEnforcement = .strict, cgroupRoot: String = "/sys/fs/cgroup", cgroupSubtree: String? = nil) {
            self.enforcement = enforcement
            self.cgroupRoot = cgroupRoot
            self.configuredCgroupSubtree = cgroupSubtree
        }
    }

    /// Admission limits and the host uids sandboxes run as.
    public struct SandboxLimits: Hashable, Sendable {
        /// First host uid (and gid) the daemon maps sandbox users to.
        public var uidRangeStart: UInt32
        /// Number of host uids, from ``uidRangeStart``, reserved for sandboxes.
        public var uidRangeSize: UInt32
        /// Live sandboxes allowed at once, all callers together.
        public var maxSandboxes: Int
        /// Live sandboxes one caller (peer uid) may hold at once.
        public var maxSandboxesPerUID: Int
        /// Largest HTTP request body accepted on the control socket.
        public var maxRequestBody: ByteCount
        /// Level-1 sandboxes built ahead, per recently run policy, for one-shot runs to take (0: none).
        public var poolSize: Int
        public init(uidRangeStart: UInt32 = 524_288, uidRangeSize: UInt32 = 65_536, maxSandboxes: Int = 64,
                    maxSandboxesPerUID: Int = 16, maxRequestBody: ByteCount = .mebibytes(16), poolSize: Int = 2) {
            self.uidRangeStart = uidRangeStart
            self.uidRangeSize = uidRangeSize
            self.maxSandboxes = maxSandboxes
            self.maxSandboxesPerUID = maxSandboxesPerUID
            self.maxRequestBody = maxRequestBody
            self.poolSize = poolSize
        }
    }

    /// Level-3 settings (`vm` section): QEMU guests, their image and the warm pool.
    public struct VirtualMachines: Hashable, Sendable {
        /// Whether the daemon runs the level-3 engine at all.
        public var enabled: Bool
        /// `auto` probes /dev/kvm (time-boxed) and falls back to TCG; `tcg` never tries KVM;
        /// `kvm` fails level 3 when KVM does not work.
        public var accelerator: Accelerator
        /// Pre-booted guests kept ready (0: every create boots a guest).
        public var poolSize: Int
        /// Where the guest image (kernel, initramfs, agent) is cached, by content hash. Not secret;
        /// must be traversable by the unprivileged uid QEMU runs as.
        public var imageDirectory: String
        /// Tests only: a sandboxed command may panic its own guest (`/proc/sysrq-trigger`).
        public var testHooks: Bool

        public enum Accelerator: String, Hashable, Sendable, CaseIterable {
            case auto, tcg, kvm
        }

        public static let defaultImageDirectory = "/var/cache/sandboxd"

        public init(enabled: Bool = true, accelerator: Accelerator = .auto, poolSize: Int = 1,
                    imageDirectory: String = VirtualMachines.defaultImageDirectory, testHooks: Bool = false) {
            self.enabled = enabled
            self.accelerator = accelerator
            self.poolSize = poolSize
            self.imageDirectory = imageDirectory
            self.testHooks = testHooks
        }
    }

    /// Log verbosity; the names are swift-log's levels.
    public enum LogLevel: String, Hashable, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    /// The configuration file read when `--config` is not given.
    public static let defaultPath = "/etc/sandboxd/sandboxd.yaml"
    public static let defaultStateDirectory = "/var/lib/sandboxd"
    public static let defaultPolicyDirectory = "/etc/sandboxd/policies"

    /// The built-in defaults: embedded database under the default state directory.
    public init() {
        stateDirectory = Self.defaultStateDirectory
        socket = Socket()
        policyDirectory = Self.defaultPolicyDirectory
        database = .embedded(dataDirectory: Self.defaultStateDirectory + "/postgres")
        databaseSource = .embedded
        databasePoolSize = DatabaseTarget.defaultPoolSize
        resources = Resources()
        sandbox = SandboxLimits()
        vm = VirtualMachines()
        shutdownGracePeriod = 10
        logLevel = .info
        sqliteDatabase = nil
        notes = []
    }

    /// Every setting as `key: value` text, keys as in `sandboxd.yaml`; the password shows as `<redacted>`.
    /// Use this for `GET /v1/info` and the start-up log.
    /// The daemon's cgroup subtree below `resources.cgroup_root`: every sandbox cgroup of this
    /// daemon lives there, and reaping at start touches nothing else. `sandboxd` for the default
    /// state directory; otherwise `sandboxd-` and 12 hex digits of the state directory's SHA-256,
    /// so that two daemons with different state directories never reap each other's sandboxes.
    public var cgroupSubtree: String {
        if let configured = resources.configuredCgroupSubtree { return configured }
        if stateDirectory == Self.defaultStateDirectory { return "sandboxd" }
        return "sandboxd-" + SHA256.hex(of: stateDirectory).prefix(12)
    }

    public var redacted: [String: String] {
        var settings: [String: String] = [
            "state_directory": stateDirectory,
            "socket.path": socket.path,
            "socket.group": socket.group,
            "socket.admin_group": socket.adminGroup,
            "policy_directory": policyDirectory,
            "database.source": databaseSource.rawValue,
            "database.pool_size": String(databasePoolSize),
            "resources.enforcement": resources.enforcement.rawValue,
            "resources.cgroup_root": resources.cgroupRoot,
            "resources.cgroup_subtree": cgroupSubtree,
            "sandbox.uid_range_start": String(sandbox.uidRangeStart),
            "sandbox.uid_range_size": String(sandbox.uidRangeSize),
            "sandbox.max_sandboxes": String(sandbox.maxSandboxes),
            "sandbox.max_sandboxes_per_uid": String(sandbox.maxSandboxesPerUID),
            "sandbox.max_request_body": sandbox.maxRequestBody.description,
            "sandbox.pool_size": String(sandbox.poolSize),
            "vm.enabled": String(vm.enabled),
            "vm.accelerator": vm.accelerator.rawValue,
            "vm.pool_size": String(vm.poolSize),
            "vm.image_directory": vm.imageDirectory,
            "vm.test_hooks": String(vm.testHooks),
            "shutdown_grace_period": shutdownGracePeriod.plainText,
            "log_level": logLevel.rawValue,
        ]
        switch database {
        case let .embedded(dataDirectory):
            settings["database.embedded_data_directory"] = dataDirectory
        case let .external(target):
            settings["database.host"] = target.host
            settings["database.port"] = String(target.port)
            settings["database.name"] = target.database
            settings["database.user"] = target.user
            settings["database.password"] = target.password == nil ? "(none)" : "<redacted>"
            if let file = target.passwordFile { settings["database.password_file"] = file }
            for (name, value) in target.parameters {
                settings["database.\(name)"] = DatabaseTarget.isSecretParameter(name) ? "<redacted>" : value
            }
        }
        if let sqliteDatabase { settings["sqlite_db"] = sqliteDatabase }
        return settings
    }

    /// One `key: value` line per setting, sorted, password redacted.
    public var description: String {
        redacted.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "\n")
    }
}

extension Double {
    /// `30` for whole numbers, `0.5` otherwise.
    var plainText: String { self == rounded() && abs(self) < 1e15 ? String(Int64(self)) : String(self) }
}
