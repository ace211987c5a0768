import SandboxValues
import Yams

extension DaemonConfiguration {
    /// Environment variables that choose the database, in the original plan's names.
    public static let databaseVariables = ["POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"]

    static let topLevelKeys = ["state_directory", "socket", "policy_directory", "database", "resources", "sandbox", "vm",
                               "shutdown_grace_period", "log_level"]
    static let socketKeys = ["path", "group", "admin_group"]
    static let databaseKeys = ["url", "host", "port", "name", "user", "password", "password_file", "pool_size"]
    static let resourcesKeys = ["enforcement", "cgroup_root", "cgroup_subtree"]
    static let sandboxKeys = ["uid_range_start", "uid_range_size", "max_sandboxes", "max_sandboxes_per_uid", "max_request_body", "pool_size"]
    static let vmKeys = ["enabled", "accelerator", "pool_size", "image_directory", "test_hooks"]

    /// Every key the file may contain, as dotted paths (`socket.admin_group`).
    static var allKeys: [String] {
        ["state_directory", "policy_directory", "shutdown_grace_period", "log_level"]
            + socketKeys.map { "socket.\($0)" } + databaseKeys.map { "database.\($0)" }
            + resourcesKeys.map { "resources.\($0)" } + sandboxKeys.map { "sandbox.\($0)" } + vmKeys.map { "vm.\($0)" }
    }

    /// Resolves the configuration from the file's text, the environment and the defaults.
    ///
    /// - Parameters:
    ///   - yaml: the text of the configuration file, or `nil` when there is none (all defaults).
    ///   - file: the file's name as errors should show it (`sandboxd.yaml`, `/etc/sandboxd/sandboxd.yaml`).
    ///   - environment: the process environment; only `POSTGRES_*` and `SQLITE_DB` are read.
    ///     An empty variable counts as unset.
    /// - Throws: ``SandboxCoreError`` `.invalidConfiguration` listing every problem with file, line and key.
    public init(yaml: String?, file: String = DaemonConfiguration.defaultPath, environment: [String: String] = [:]) throws(SandboxCoreError) {
        let log = DiagnosticLog(file: file)
        let environmentLog = DiagnosticLog(file: "environment")
        var configuration = DaemonConfiguration()
        var fileDatabase = FileDatabaseSection()

        if let yaml, let root = composeYAML(yaml, log: log), !root.isNull,
           let top = YAMLMapping(root, path: "", known: Self.topLevelKeys, log: log) {
            configuration.read(top, database: &fileDatabase)
        }

        configuration.resolveDatabase(file: fileDatabase, environment: environment, log: environmentLog)
        if let sqlite = environment["SQLITE_DB"], !sqlite.isEmpty { configuration.sqliteDatabase = sqlite }

        let diagnostics = log.diagnostics + environmentLog.diagnostics
        guard diagnostics.isEmpty else {
            let count = diagnostics.count == 1 ? "1 problem" : "\(diagnostics.count) problems"
            throw SandboxCoreError(code: .invalidConfiguration, message: "invalid configuration (\(count))", diagnostics: diagnostics)
        }
        self = configuration
    }

    private mutating func read(_ top: YAMLMapping, database: inout FileDatabaseSection) {
        if let path = top.value("state_directory", YAMLValue.absolutePath) { stateDirectory = path }
        if let path = top.value("policy_directory", YAMLValue.absolutePath) { policyDirectory = path }
        if let seconds = top.value("shutdown_grace_period", YAMLValue.seconds) { shutdownGracePeriod = seconds }
        if let level = top.value("log_level", { (node) throws(ValueError) in try Self.logLevel(node) }) { logLevel = level }

        if let section = top.mapping("socket", known: Self.socketKeys) {
            if let path = section.value("path", YAMLValue.absolutePath) { socket.path = path }
            if let group = section.value("group", Self.groupName) { socket.group = group }
            if let group = section.value("admin_group", Self.groupName) { socket.adminGroup = group }
        }

        if let section = top.mapping("resources", known: Self.resourcesKeys) {
            if let mode = section.value("enforcement", Self.enforcement) { resources.enforcement = mode }
            if let path = section.value("cgroup_root", YAMLValue.absolutePath) { resources.cgroupRoot = path }
            if let name = section.value("cgroup_subtree", { (node) throws(ValueError) in try Self.cgroupName(node) }) { resources.configuredCgroupSubtree = name }
        }

        if let section = top.mapping("sandbox", known: Self.sandboxKeys) {
            let uidLimit = Int(UInt32.max) - 1  // (uid_t)-1 is "no uid" to the kernel
            if let start = section.value("uid_range_start", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 65_536...uidLimit) }) {
                sandbox.uidRangeStart = UInt32(start)
            }
            if let size = section.value("uid_range_size", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 1...uidLimit) }) {
                sandbox.uidRangeSize = UInt32(size)
            }
            if Int(sandbox.uidRangeStart) + Int(sandbox.uidRangeSize) - 1 > uidLimit {
                section.report("uid range \(sandbox.uidRangeStart)+\(sandbox.uidRangeSize) ends past the largest uid \(uidLimit)",
                               key: "uid_range_size", at: section.mark(of: "uid_range_size"))
            }
            if let count = section.value("max_sandboxes", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 1...1_000_000) }) {
                sandbox.maxSandboxes = count
            }
            if let count = section.value("max_sandboxes_per_uid", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 1...1_000_000) }) {
                sandbox.maxSandboxesPerUID = count
            }
            if sandbox.maxSandboxesPerUID > sandbox.maxSandboxes {
                section.report("\(sandbox.maxSandboxesPerUID) is more than sandbox.max_sandboxes (\(sandbox.maxSandboxes))",
                               key: "max_sandboxes_per_uid", at: section.mark(of: "max_sandboxes_per_uid") ?? section.mark(of: "max_sandboxes"))
            }
            if let size = section.value("pool_size", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 0...64) }) {
                sandbox.poolSize = size
            }
            if let size = section.value("max_request_body", YAMLValue.byteCount) {
                if size.bytes == 0 { section.report("must be larger than 0", key: "max_request_body", at: section.mark(of: "max_request_body")) }
                sandbox.maxRequestBody = size
            }
        }

        if let section = top.mapping("vm", known: Self.vmKeys) {
            if let enabled = section.value("enabled", YAMLValue.bool) { vm.enabled = enabled }
            if let accelerator = section.value("accelerator", { (node) throws(ValueError) in try Self.accelerator(node) }) {
                vm.accelerator = accelerator
            }
            if let size = section.value("pool_size", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 0...64) }) {
                vm.poolSize = size
            }
            if let path = section.value("image_directory", YAMLValue.absolutePath) { vm.imageDirectory = path }
            if let hooks = section.value("test_hooks", YAMLValue.bool) { vm.testHooks = hooks }
        }

        if let section = top.mapping("database", known: Self.databaseKeys) {
            database.read(section)
        }
        if let size = database.poolSize { databasePoolSize = size }
    }

    /// Applies the precedence POSTGRES_URL > POSTGRES_* > file > embedded.
    private mutating func resolveDatabase(file: FileDatabaseSection, environment: [String: String], log: DiagnosticLog) {
        func variable(_ name: String) -> String? {
            guard let value = environment[name], !value.isEmpty else { return nil }
            return value
        }
        let setVariables = Self.databaseVariables.filter { variable($0) != nil }

        if let url = variable("POSTGRES_URL") {
            do {
                database = .external(try DatabaseTarget.parse(url: url, poolSize: databasePoolSize))
                databaseSource = .environmentURL
            } catch {
                log.report(error.message, key: "POSTGRES_URL", at: nil)
            }
            if !setVariables.isEmpty {
                notes.append("POSTGRES_URL is set, so \(setVariables.joined(separator: ", ")) \(setVariables.count == 1 ? "is" : "are") ignored")
            }
            if file.configuresServer { notes.append("POSTGRES_URL is set, so the database section of the configuration file is ignored (except pool_size)") }
            return
        }

        guard let fileTarget = file.target(poolSize: databasePoolSize) else {
            if !setVariables.isEmpty { resolveFromVariables(base: DatabaseTarget(poolSize: databasePoolSize)) }
            else { database = .embedded(dataDirectory: stateDirectory + "/postgres"); databaseSource = .embedded }
            return
        }
        if setVariables.isEmpty {
            database = .external(fileTarget)
            databaseSource = .file
        } else {
            resolveFromVariables(base: fileTarget)
        }

        // Each variable set replaces the same field of `base` (the file's settings or the defaults).
        func resolveFromVariables(base: DatabaseTarget) {
            var target = base
            if let host = variable("POSTGRES_HOST") { target.host = host }
            if let port = variable("POSTGRES_PORT") {
                do { target.port = try DatabaseTarget.port(port) } catch { log.report(error.message, key: "POSTGRES_PORT", at: nil) }
            }
            if let name = variable("POSTGRES_DB") { target.database = name }
            if let user = variable("POSTGRES_USER") { target.user = user }
            if let password = variable("POSTGRES_PASSWORD") {
                target.password = Secret(password)
                target.passwordFile = nil
            }
            database = .external(target)
            databaseSource = .environmentVariables
        }
    }

    static func logLevel(_ node: Node) throws(ValueError) -> LogLevel {
        let text = try YAMLValue.string(node)
        guard let level = LogLevel(rawValue: text.lowercased()) else {
            throw ValueError("\"\(text)\" is not a log level (\(LogLevel.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return level
    }

    static func accelerator(_ node: Node) throws(ValueError) -> VirtualMachines.Accelerator {
        let text = try YAMLValue.string(node)
        guard let accelerator = VirtualMachines.Accelerator(rawValue: text.lowercased()) else {
            throw ValueError("\"\(text)\" is not an accelerator (auto, tcg, kvm)")
        }
        return accelerator
    }

    static func enforcement(_ node: Node) throws(ValueError) -> LimitEnforcement {
        let text = try YAMLValue.string(node)
        guard let mode = LimitEnforcement(rawValue: text.lowercased()) else {
            throw ValueError("\"\(text)\" is not strict or best-effort")
        }
        return mode
    }

    /// A POSIX group name as `groupadd` accepts it.
    /// One cgroup directory name: letters, digits, `.`, `_`, `-`; not `.` or `..`; at most 64.
    static func groupName(_ node: Node) throws(ValueError) -> String {
        let text = try YAMLValue.string(node)
        let allowed = text.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
        guard allowed, text.count <= 32, let first = text.unicodeScalars.first, first == "_" || ("a"..."z").contains(first) else {
            throw ValueError("\"\(text)\" is not a group name (lower-case letters, digits, _ and -, at most 32, starting with a letter or _)")
        }
        return text
    }

    /// One cgroup directory name: letters, digits, `_`, `-` and `.`, at most 64, not `.` or `..`.
    static func cgroupName(_ node: Node) throws(ValueError) -> String {
        let text = try YAMLValue.string(node)
        let allowed = text.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" || $0 == "."
        }
        guard allowed, !text.isEmpty, text.count <= 64, text != ".", text != "..", !text.hasPrefix("cgroup.") else {
            throw ValueError("\"\(text)\" is not a cgroup directory name (letters, digits, _, - and ., at most 64, not . or .., not starting with cgroup.)")
        }
        return text
    }
}

/// The `database` section as written in the file, before the environment is applied.
struct FileDatabaseSection {
    var url: DatabaseTarget?
    var host: String?
    var port: Int?
    var name: String?
    var user: String?
    var password: String?
    var passwordFile: String?
    var poolSize: Int?

    /// Whether the file names a server at all (a pool size alone does not).
    var configuresServer: Bool { url != nil || host != nil || port != nil || name != nil || user != nil || password != nil || passwordFile != nil }

    mutating func read(_ section: YAMLMapping) {
        poolSize = section.value("pool_size") { (node) throws(ValueError) in try YAMLValue.integer(node, in: 1...1024) }
        url = section.value("url") { (node) throws(ValueError) in try DatabaseTarget.parse(url: try YAMLValue.string(node), poolSize: DatabaseTarget.defaultPoolSize) }
        host = section.value("host", YAMLValue.string)
        port = section.value("port") { (node) throws(ValueError) in try YAMLValue.integer(node, in: 1...65535) }
        name = section.value("name", YAMLValue.string)
        user = section.value("user", YAMLValue.string)
        password = section.value("password", YAMLValue.scalarText)
        passwordFile = section.value("password_file", YAMLValue.absolutePath)
        if section.contains("url") {
            for key in ["host", "port", "name", "user", "password", "password_file"] where section.contains(key) {
                section.report("give either url or \(key), not both", key: key, at: section.mark(of: key))
            }
        }
        if section.contains("password"), section.contains("password_file") {
            section.report("give either password or password_file, not both", key: "password_file", at: section.mark(of: "password_file"))
        }
    }

    /// The server the file names, or `nil` when it names none.
    func target(poolSize: Int) -> DatabaseTarget? {
        guard configuresServer else { return nil }
        if var target = url { target.poolSize = poolSize; return target }
        var target = DatabaseTarget(poolSize: poolSize)
        if let host { target.host = host }
        if let port { target.port = port }
        if let name { target.database = name }
        if let user { target.user = user }
        if let password { target.password = Secret(password) }
        target.passwordFile = passwordFile
        return target
    }
}
