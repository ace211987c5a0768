import SandboxValues

/// A security policy (`policies/NAME.yaml`): what a sandbox may reach, see, use and inherit.
///
/// Parsed by ``init(yaml:file:hostCores:)``; the exact meaning of every key is in `policies/README.md`.
/// Encodable (for `GET /v1/policies` and records) but deliberately not Decodable: the only way
/// in is the validating parser. JSON is YAML, so an inline JSON policy goes through
/// `Policy(yaml:file:hostCores:)` too.
///
/// Every key has a fail-closed default: no network, read-only, no host paths, the default limits,
/// no environment variables, level 1, no database.
public struct Policy: Hashable, Sendable, Encodable {
    /// Free text for operators (`description:` in the file).
    public var summary: String?
    public var network: Network
    public var filesystem: Filesystem
    public var resources: Resources
    public var environment: Environment
    public var isolation: Isolation
    /// The read-only database tool; `nil`: the sandbox gets no database.
    public var database: DatabaseAccess?

    public init(summary: String? = nil, network: Network = .init(), filesystem: Filesystem = .init(),
                resources: Resources = .init(), environment: Environment = .init(), isolation: Isolation = .init(),
                database: DatabaseAccess? = nil) {
        self.summary = summary
        self.network = network
        self.filesystem = filesystem
        self.resources = resources
        self.environment = environment
        self.isolation = isolation
        self.database = database
    }

    /// `network`: egress through the daemon's proxy only.
    public struct Network: Hashable, Sendable, Encodable {
        /// Hosts reachable through the egress proxy. Empty: loopback only, no way out.
        public var allowedHosts: [HostPattern]
        /// Ports never reachable, even on an allowed host.
        public var blockedPorts: [Int]
        /// When not empty, the only ports reachable on allowed hosts (sandboxd's addition to the plan).
        public var allowedPorts: [Int]

        public init(allowedHosts: [HostPattern] = [], blockedPorts: [Int] = [], allowedPorts: [Int] = []) {
            self.allowedHosts = allowedHosts
            self.blockedPorts = blockedPorts
            self.allowedPorts = allowedPorts
        }

        /// Whether a connection to `host`:`port` through the proxy is allowed by this section.
        public func allows(host: String, port: Int) -> Bool {
            guard !blockedPorts.contains(port) else { return false }
            guard allowedPorts.isEmpty || allowedPorts.contains(port) else { return false }
            return allowedHosts.contains { $0.matches(host) }
        }

        enum CodingKeys: String, CodingKey {
            case allowedHosts = "allowed_hosts", blockedPorts = "blocked_ports", allowedPorts = "allowed_ports"
        }
    }

    /// `filesystem`: which host paths are visible and whether they are writable.
    public struct Filesystem: Hashable, Sendable, Encodable {
        /// Host paths are mounted read-only (and the root always is); only the private tmpfs mounts are writable.
        public var readOnly: Bool
        /// Absolute host paths mounted at the same place inside (`/tmp` is a private tmpfs instead).
        public var allowedPaths: [String]
        /// Absolute paths masked inside the sandbox, whatever else says so.
        public var blockedPaths: [String]

        public init(readOnly: Bool = true, allowedPaths: [String] = [], blockedPaths: [String] = []) {
            self.readOnly = readOnly
            self.allowedPaths = allowedPaths
            self.blockedPaths = blockedPaths
        }

        enum CodingKeys: String, CodingKey {
            case readOnly = "read_only", allowedPaths = "allowed_paths", blockedPaths = "blocked_paths"
        }
    }

    /// `resources`: the limits one sandbox runs under.
    public struct Resources: Hashable, Sendable, Encodable {
        public var memoryLimit: ByteCount
        /// Cores (`0.5` = half of one core's time).
        public var cpuLimit: Double
        /// Seconds of wall-clock time for one exec.
        public var executionTimeout: Double
        public var pidsLimit: Int
        /// Bytes kept of each of stdout and stderr.
        public var outputLimit: ByteCount
        /// Size cap of each private tmpfs.
        public var tmpfsSize: ByteCount

        public init(memoryLimit: ByteCount = .mebibytes(512), cpuLimit: Double = 0.5, executionTimeout: Double = 30,
                    pidsLimit: Int = 256, outputLimit: ByteCount = .mebibytes(1), tmpfsSize: ByteCount = .mebibytes(64)) {
            self.memoryLimit = memoryLimit
            self.cpuLimit = cpuLimit
            self.executionTimeout = executionTimeout
            self.pidsLimit = pidsLimit
            self.outputLimit = outputLimit
            self.tmpfsSize = tmpfsSize
        }

        enum CodingKeys: String, CodingKey {
            case memoryLimit = "memory_limit", cpuLimit = "cpu_limit", executionTimeout = "execution_timeout"
            case pidsLimit = "pids_limit", outputLimit = "output_limit", tmpfsSize = "tmpfs_size"
        }
    }

    /// `environment`: which request variables reach the sandbox.
    public struct Environment: Hashable, Sendable, Encodable {
        public var allowedVars: [String]
        public var blockedVars: [String]

        public init(allowedVars: [String] = [], blockedVars: [String] = []) {
            self.allowedVars = allowedVars
            self.blockedVars = blockedVars
        }

        enum CodingKeys: String, CodingKey { case allowedVars = "allowed_vars", blockedVars = "blocked_vars" }
    }

    /// `isolation`: the lowest level a sandbox under this policy may run at.
    public struct Isolation: Hashable, Sendable, Encodable {
        public var minimumLevel: IsolationLevel
        /// Escalation by agent type: `scraper: 3` runs scraper agents at level 3 or higher.
        public var agentTypes: [String: IsolationLevel]

        public init(minimumLevel: IsolationLevel = .native, agentTypes: [String: IsolationLevel] = [:]) {
            self.minimumLevel = minimumLevel
            self.agentTypes = agentTypes
        }

        enum CodingKeys: String, CodingKey { case minimumLevel = "minimum_level", agentTypes = "agent_types" }
    }

    /// `database`: the read-only database tool (a restricted role, SELECT only).
    public struct DatabaseAccess: Hashable, Sendable, Encodable {
        /// Schemas whose tables may all be read.
        public var schemas: [String]
        /// Single tables that may be read, as `schema.table`.
        public var tables: [String]
        /// Seconds after which a statement is cancelled (`statement_timeout`).
        public var statementTimeout: Double

        public init(schemas: [String] = [], tables: [String] = [], statementTimeout: Double = 5) {
            self.schemas = schemas
            self.tables = tables
            self.statementTimeout = statementTimeout
        }

        enum CodingKeys: String, CodingKey { case schemas, tables, statementTimeout = "statement_timeout" }
    }

    enum CodingKeys: String, CodingKey {
        case summary = "description", network, filesystem, resources, environment, isolation, database
    }
}

// MARK: - Derived values

extension Policy {
    /// The limits a sandbox under this policy gets.
    public var resourceLimits: ResourceLimits {
        ResourceLimits(memory: resources.memoryLimit, cpu: resources.cpuLimit, pids: resources.pidsLimit,
                       executionTimeout: resources.executionTimeout, outputLimit: resources.outputLimit,
                       tmpfsSize: resources.tmpfsSize)
    }

    /// The level a sandbox runs at and why (design.md: `max(requested, minimum_level, agent-type rule)`).
    public struct LevelDecision: Hashable, Sendable, Codable {
        public var level: IsolationLevel
        /// The policy key that raised the level (`isolation.minimum_level`,
        /// `isolation.agent_types.scraper`), `nil` when the requested level stood.
        public var raisedBy: String?
        /// One sentence for results, records and refusals.
        public var reason: String

        enum CodingKeys: String, CodingKey { case level, raisedBy = "raised_by", reason }
    }

    /// The effective isolation level for a request; never lower than `requested`.
    /// - Parameter agentType: the request's agent type, compared case-insensitively.
    public func effectiveLevel(requested: IsolationLevel, agentType: String?) -> LevelDecision {
        var level = requested
        var raisedBy: String?
        if isolation.minimumLevel > level {
            level = isolation.minimumLevel
            raisedBy = "isolation.minimum_level"
        }
        if let agentType, let rule = isolation.agentTypes[agentType.lowercased()], rule > level {
            level = rule
            raisedBy = "isolation.agent_types.\(agentType.lowercased())"
        }
        guard let raisedBy else {
            return LevelDecision(level: level, raisedBy: nil, reason: "level \(level.rawValue) as requested")
        }
        return LevelDecision(level: level, raisedBy: raisedBy,
                             reason: "raised from level \(requested.rawValue) to \(level.rawValue) by the policy's \(raisedBy)")
    }

    /// `PATH` inside every sandbox; requests cannot change it.
    public static let sandboxPath = "/usr/local/bin:/usr/bin:/bin"
    /// `HOME` inside every sandbox (a private tmpfs); requests cannot change it.
    public static let sandboxHome = "/tmp"

    /// Variables only the daemon sets (fixed paths, the egress proxy, the database tool), so a
    /// policy can never let a request supply them.
    public static let daemonSetVariables: Set<String> = [
        "PATH", "HOME",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICEFILE", "PGPASSFILE",
    ]

    /// What happens to a requested variable that is neither allowed nor blocked.
    public enum UnlistedVariables: Sendable {
        /// Refused like a blocked one (strict callers).
        case refuse
        /// Silently left out (the daemon: only allowed variables pass; blocked ones are refused).
        case drop
    }

    /// The environment a sandbox starts with: `PATH` and `HOME` fixed by the daemon, plus the
    /// requested variables the policy allows. Nothing else is inherited.
    ///
    /// - Throws: ``SandboxCoreError`` `.environmentRefused` naming every requested variable that is
    ///   blocked, set by the daemon, or simply not in `environment.allowed_vars` (one diagnostic each).
    public func sandboxEnvironment(requested: [String: String]) throws(SandboxCoreError) -> [String: String] {
        try filterEnvironment(requested: requested, unlisted: .refuse).environment
    }

    /// The environment a sandbox starts with, and the requested variables left out.
    ///
    /// A blocked variable, a daemon-set one (`PATH`, `HOME`, proxy and database variables) and a
    /// value with a NUL byte are always refused; an unlisted one is refused or dropped as `unlisted` says.
    /// - Throws: ``SandboxCoreError`` `.environmentRefused` naming every refused variable at once.
    public func filterEnvironment(requested: [String: String], unlisted: UnlistedVariables)
        throws(SandboxCoreError) -> (environment: [String: String], dropped: [String]) {
        var result = ["PATH": Self.sandboxPath, "HOME": Self.sandboxHome]
        var refused: [Diagnostic] = []
        var dropped: [String] = []
        for (name, value) in requested.sorted(by: { $0.key < $1.key }) {
            if environment.blockedVars.contains(name) {
                refused.append(Diagnostic(key: name, message: "blocked by the policy (environment.blocked_vars)"))
            } else if Self.daemonSetVariables.contains(name) {
                refused.append(Diagnostic(key: name, message: "set by sandboxd; a request cannot supply it"))
            } else if !environment.allowedVars.contains(name) {
                if unlisted == .drop {
                    dropped.append(name)
                } else {
                    refused.append(Diagnostic(key: name, message: "not listed in the policy's environment.allowed_vars (only listed variables pass)"))
                }
            } else if value.utf8.contains(0) {
                refused.append(Diagnostic(key: name, message: "value contains a NUL byte"))
            } else {
                result[name] = value
            }
        }
        guard refused.isEmpty else {
            let names = refused.compactMap(\.key).joined(separator: ", ")
            throw SandboxCoreError(code: .environmentRefused, message: "environment refused: \(names)", diagnostics: refused)
        }
        return (result, dropped)
    }
}
