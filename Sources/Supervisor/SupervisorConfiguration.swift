import SandboxCore

/// The Supervisor's limits and defaults (from `sandboxd.yaml`, see the daemon's configuration).
public struct SupervisorConfiguration: Sendable, Hashable {
    /// Sandboxes alive at once, persistent and one-shot together.
    public var maxSandboxes: Int
    /// Sandboxes one peer uid may have alive at once (admins included).
    public var maxSandboxesPerUID: Int
    /// Level-1 sandboxes built ahead per recently run shape, for one-shot runs (0: every run builds its own).
    public var oneShotPoolSize: Int = 0
    /// Exec timeout when neither the request nor the sandbox names one, in seconds.
    public var defaultTimeout: Double
    /// Largest timeout a request may ask for, in seconds.
    public var maxTimeout: Double
    /// Bytes kept of each of stdout and stderr.
    public var maxOutputBytes: Int
    /// Largest stdin accepted, in bytes.
    public var maxStdinBytes: Int
    /// On shutdown, running execs get this long to finish before they are killed.
    public var gracePeriodSeconds: Double
    /// The policy used when a request names none.
    public var defaultPolicy: String
    /// What to do when limits cannot be enforced (no cgroup v2 controllers).
    public var limitEnforcement: LimitEnforcement
    /// The daemon's version, reported by `/v1/info`.
    public var version: String
    /// Directories searched for language runtimes (the sandbox sees the host's `/usr`).
    public var runtimeSearchPath: [String]
    /// The loaded policies; a request naming another is refused. nil: none loaded (every request
    /// runs under the built-in defaults of `Policy()`).
    public var policies: PolicySet?
    /// Where `SIGHUP` and `POST /v1/policies/reload` re-read the policies from; nil: reloads are refused.
    public var policyDirectory: PolicyDirectory?
    /// Why there is no engine, when the daemon runs without one (reported by `/v1/info` and errors).
    public var engineProblem: String?
    /// Why a level has no engine (`vm.enabled: false`, …), reported by `/v1/info` and errors.
    public var levelProblems: [IsolationLevel: String] = [:]

    public init(maxSandboxes: Int = 64, maxSandboxesPerUID: Int = 16, defaultTimeout: Double = 30, maxTimeout: Double = 3600,
                maxOutputBytes: Int = 1 << 20, maxStdinBytes: Int = 1 << 20, gracePeriodSeconds: Double = 10,
                defaultPolicy: String = "default", limitEnforcement: LimitEnforcement = .strict, version: String = "0.1.0",
                runtimeSearchPath: [String] = ["/usr/local/bin", "/usr/bin", "/bin"]) {
        self.maxSandboxes = maxSandboxes
        self.maxSandboxesPerUID = maxSandboxesPerUID
        self.defaultTimeout = defaultTimeout
        self.maxTimeout = maxTimeout
        self.maxOutputBytes = maxOutputBytes
        self.maxStdinBytes = maxStdinBytes
        self.gracePeriodSeconds = gracePeriodSeconds
        self.defaultPolicy = defaultPolicy
        self.limitEnforcement = limitEnforcement
        self.version = version
        self.runtimeSearchPath = runtimeSearchPath
    }
}
