/// `GET /v1/health`.
public struct HealthResponse: Codable, Sendable, Hashable {
    /// `ok` while serving; `stopping` during shutdown.
    public var status: String
    public var uptimeSeconds: Double

    public init(status: String, uptimeSeconds: Double) {
        self.status = status
        self.uptimeSeconds = uptimeSeconds
    }

    enum CodingKeys: String, CodingKey {
        case status
        case uptimeSeconds = "uptime_seconds"
    }
}

/// `GET /v1/info`: what this daemon can do on this host and why not.
public struct InfoResponse: Codable, Sendable, Hashable {
    public struct Level: Codable, Sendable, Hashable {
        public var level: Int
        public var available: Bool
        /// Why the level is not available (nil when it is).
        public var reason: String?
        /// How it runs here (level 3: KVM or TCG and why, the guest image), when the engine says.
        public var detail: String?
        public init(level: Int, available: Bool, reason: String?, detail: String? = nil) {
            self.level = level
            self.available = available
            self.reason = reason
            self.detail = detail
        }
    }

    public struct Language: Codable, Sendable, Hashable {
        public var language: String
        /// The program that runs it, e.g. `python3`.
        public var runtime: String
        public var available: Bool
        public init(language: String, runtime: String, available: Bool) {
            self.language = language
            self.runtime = runtime
            self.available = available
        }
    }

    public struct Limits: Codable, Sendable, Hashable {
        public var maxBodyBytes: Int
        public var maxSandboxes: Int
        public var maxSandboxesPerUID: Int
        public var maxOutputBytes: Int
        public var defaultTimeout: Double
        public var maxTimeout: Double
        public var limitEnforcement: String
        public init(maxBodyBytes: Int, maxSandboxes: Int, maxSandboxesPerUID: Int, maxOutputBytes: Int,
                    defaultTimeout: Double, maxTimeout: Double, limitEnforcement: String) {
            self.maxBodyBytes = maxBodyBytes
            self.maxSandboxes = maxSandboxes
            self.maxSandboxesPerUID = maxSandboxesPerUID
            self.maxOutputBytes = maxOutputBytes
            self.defaultTimeout = defaultTimeout
            self.maxTimeout = maxTimeout
            self.limitEnforcement = limitEnforcement
        }
        enum CodingKeys: String, CodingKey {
            case maxBodyBytes = "max_body_bytes"
            case maxSandboxes = "max_sandboxes"
            case maxSandboxesPerUID = "max_sandboxes_per_uid"
            case maxOutputBytes = "max_output_bytes"
            case defaultTimeout = "default_timeout"
            case maxTimeout = "max_timeout"
            case limitEnforcement = "limit_enforcement"
        }
    }

    public struct Database: Codable, Sendable, Hashable {
        /// `connected`, `unavailable` or `not_configured`.
        public var state: String
        /// Host/socket and database name; never a password.
        public var detail: String?
        public init(state: String, detail: String?) {
            self.state = state
            self.detail = detail
        }
    }

    /// Who is asking, from the socket's peer credentials.
    public struct CallerView: Codable, Sendable, Hashable {
        public var uid: UInt32
        public var gid: UInt32
        public var pid: Int32
        public var admin: Bool
        public init(uid: UInt32, gid: UInt32, pid: Int32, admin: Bool) {
            self.uid = uid
            self.gid = gid
            self.pid = pid
            self.admin = admin
        }
    }

    public var version: String
    public var levels: [Level]
    public var languages: [Language]
    public var limits: Limits
    public var database: Database
    public var caller: CallerView
    public var sandboxes: Int

    public init(version: String, levels: [Level], languages: [Language], limits: Limits,
                database: Database, caller: CallerView, sandboxes: Int) {
        self.version = version
        self.levels = levels
        self.languages = languages
        self.limits = limits
        self.database = database
        self.caller = caller
        self.sandboxes = sandboxes
    }
}
