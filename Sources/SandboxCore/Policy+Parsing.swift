import SandboxValues
import Yams

extension Policy {
    static let sectionKeys = ["description", "network", "filesystem", "resources", "environment", "isolation", "database"]
    /// The original plan's block is wrapped in this key; a file may use it or not.
    static let wrapperKey = "sandbox_policies"
    static let networkKeys = ["allowed_hosts", "blocked_ports", "allowed_ports"]
    static let filesystemKeys = ["read_only", "allowed_paths", "blocked_paths"]
    static let resourcesKeys = ["memory_limit", "cpu_limit", "execution_timeout", "pids_limit", "output_limit", "tmpfs_size"]
    static let environmentKeys = ["allowed_vars", "blocked_vars"]
    static let isolationKeys = ["minimum_level", "agent_types"]
    static let databaseKeys = ["schemas", "tables", "statement_timeout"]

    /// Every key a policy may contain, as dotted paths (`resources.cpu_limit`).
    static var allKeys: [String] {
        ["description"]
            + networkKeys.map { "network.\($0)" } + filesystemKeys.map { "filesystem.\($0)" }
            + resourcesKeys.map { "resources.\($0)" } + environmentKeys.map { "environment.\($0)" }
            + isolationKeys.map { "isolation.\($0)" } + databaseKeys.map { "database.\($0)" }
    }

    /// The daemon's own record tables; the database tool must never expose them.
    public static let protectedTables: Set<String> = [
        "agent_executions", "code_executions", "schema_migrations", "users", "sessions", "egress_events",
    ]

    /// Parses and validates one policy document.
    ///
    /// - Parameters:
    ///   - yaml: the file's text; a bare policy or the plan's `sandbox_policies:` block.
    ///   - file: the file's name as errors should show it.
    ///   - hostCores: CPUs of this host; a `cpu_limit` above it is refused. `nil`: not checked.
    /// - Throws: ``SandboxCoreError`` `.invalidPolicy` with every problem (file, line, key, why).
    public init(yaml: String, file: String, hostCores: Int? = nil) throws(SandboxCoreError) {
        let (policy, diagnostics) = Self.parse(yaml: yaml, file: file, hostCores: hostCores)
        guard let policy, diagnostics.isEmpty else {
            throw SandboxCoreError(code: .invalidPolicy, message: "invalid policy \(file) (\(diagnostics.count == 1 ? "1 problem" : "\(diagnostics.count) problems"))",
                                   diagnostics: diagnostics)
        }
        self = policy
    }

    /// The policy, or every problem found in it.
    static func parse(yaml: String, file: String, hostCores: Int?) -> (Policy?, [Diagnostic]) {
        let log = DiagnosticLog(file: file)
        guard let root = composeYAML(yaml, log: log) else {
            if log.isEmpty { log.report("the file is empty; a policy needs at least one section (\(sectionKeys.dropFirst().joined(separator: ", ")))", key: nil, at: nil) }
            return (nil, log.diagnostics)
        }
        if root.isNull {
            log.report("the file is empty; a policy needs at least one section", key: nil, at: root.mark)
            return (nil, log.diagnostics)
        }
        var body = root
        var path = ""
        if case let .mapping(mapping) = root, mapping.keys.contains(where: { $0.string == wrapperKey }) {
            for key in mapping.keys where key.string != wrapperKey {
                log.report("not allowed next to \(wrapperKey) (put it inside, or drop the wrapper)", key: key.string, at: key.mark)
            }
            guard let inner = mapping[wrapperKey], !inner.isNull else {
                log.report("empty policy", key: wrapperKey, at: root.mark)
                return (nil, log.diagnostics)
            }
            body = inner
            path = wrapperKey
        }
        // At the top of a bare document the wrapper is listed too, so `sandbox_policy:` gets a suggestion.
        let known = path.isEmpty ? sectionKeys + [wrapperKey] : sectionKeys
        guard let top = YAMLMapping(body, path: path, known: known, log: log) else { return (nil, log.diagnostics) }
        var policy = Policy()
        policy.summary = top.value("description", YAMLValue.string)
        policy.readNetwork(top)
        policy.readFilesystem(top)
        policy.readResources(top, hostCores: hostCores)
        policy.readEnvironment(top)
        policy.readIsolation(top)
        policy.readDatabase(top)
        return (log.isEmpty ? policy : nil, log.diagnostics)
    }

    // MARK: Sections

    private mutating func readNetwork(_ top: YAMLMapping) {
        guard let section = top.mapping("network", known: Self.networkKeys) else { return }
        if let hosts = section.list("allowed_hosts", { (node) throws(ValueError) in try HostPattern.parse(try YAMLValue.string(node)) }) {
            network.allowedHosts = hosts.map(\.value).uniqued()
        }
        let port = { (node: Node) throws(ValueError) -> Int in
            let text = try YAMLValue.scalarText(node)
            guard let value = Int(text.trimmingWhitespace()) else { throw ValueError("\"\(text)\" is not a port number") }
            guard (1...65535).contains(value) else { throw ValueError("port \(value) is out of range 1…65535") }
            return value
        }
        let blocked = section.list("blocked_ports", port) ?? []
        let allowed = section.list("allowed_ports", port) ?? []
        network.blockedPorts = blocked.map(\.value).uniqued()
        network.allowedPorts = allowed.map(\.value).uniqued()
        for (value, mark) in allowed where network.blockedPorts.contains(value) {
            section.report("port \(value) is also in blocked_ports", key: "allowed_ports", at: mark)
        }
    }

    private mutating func readFilesystem(_ top: YAMLMapping) {
        guard let section = top.mapping("filesystem", known: Self.filesystemKeys) else { return }
        if let readOnly = section.value("read_only", YAMLValue.bool) { filesystem.readOnly = readOnly }
        let allowed = section.list("allowed_paths", YAMLValue.absolutePath) ?? []
        let blocked = section.list("blocked_paths", YAMLValue.absolutePath) ?? []
        for (path, mark) in allowed where path == "/" {
            section.report("\"/\" would expose the whole host; list the directories the sandbox needs", key: "allowed_paths", at: mark)
        }
        for (path, mark) in blocked where path == "/" {
            section.report("\"/\" cannot be masked; the sandbox root is built by sandboxd and holds no host files", key: "blocked_paths", at: mark)
        }
        // A blocked path inside an allowed one is the normal way to hide part of a tree; the
        // reverse is a contradiction, since blocked paths win and the allowed one would never show.
        for (path, mark) in allowed {
            if blocked.contains(where: { $0.value == path }) {
                section.report("\(path) is also in blocked_paths", key: "allowed_paths", at: mark)
            } else if let ancestor = blocked.first(where: { isPath(path, insideOrEqualTo: $0.value) && $0.value != "/" }) {
                section.report("\(path) lies inside blocked path \(ancestor.value), so it would never be visible", key: "allowed_paths", at: mark)
            }
        }
        filesystem.allowedPaths = allowed.map(\.value).uniqued()
        filesystem.blockedPaths = blocked.map(\.value).uniqued()
    }

    private mutating func readResources(_ top: YAMLMapping, hostCores: Int?) {
        guard let section = top.mapping("resources", known: Self.resourcesKeys) else { return }
        func size(_ key: String, minimum: ByteCount) -> ByteCount? {
            section.value(key) { (node) throws(ValueError) -> ByteCount in
                let value = try YAMLValue.byteCount(node)
                guard value.bytes > 0 else { throw ValueError("must be larger than 0") }
                guard value >= minimum else { throw ValueError("\(value) is below the minimum of \(minimum)") }
                return value
            }
        }
        if let value = size("memory_limit", minimum: .mebibytes(1)) { resources.memoryLimit = value }
        if let value = size("output_limit", minimum: .init(bytes: 1)) { resources.outputLimit = value }
        if let value = size("tmpfs_size", minimum: .mebibytes(1)) { resources.tmpfsSize = value }
        if let value = section.value("cpu_limit", { (node) throws(ValueError) -> Double in
            let cores = try YAMLValue.number(node)
            guard cores > 0 else { throw ValueError("must be larger than 0, got \(cores.plainText)") }
            // cpu.max cannot express less than 1 ms per 100 ms period.
            guard cores >= 0.01 else { throw ValueError("\(cores.plainText) is below the minimum of 0.01 cores") }
            if let hostCores, cores > Double(hostCores) {
                throw ValueError("\(cores.plainText) cores is more than this host has (\(hostCores))")
            }
            return cores
        }) { resources.cpuLimit = value }
        if let value = section.value("execution_timeout", { (node) throws(ValueError) -> Double in
            let seconds = try YAMLValue.seconds(node)
            guard seconds > 0 else { throw ValueError("must be larger than 0") }
            guard seconds <= 86_400 else { throw ValueError("\(seconds.plainText) s is more than a day (86400)") }
            return seconds
        }) { resources.executionTimeout = value }
        if let value = section.value("pids_limit", { (node) throws(ValueError) in try YAMLValue.integer(node, in: 1...4_194_304) }) {
            resources.pidsLimit = value
        }
    }

    private mutating func readEnvironment(_ top: YAMLMapping) {
        guard let section = top.mapping("environment", known: Self.environmentKeys) else { return }
        let name = { (node: Node) throws(ValueError) -> String in
            let text = try YAMLValue.string(node)
            guard Self.isVariableName(text) else {
                throw ValueError("\"\(text)\" is not a variable name (letters, digits and _, not starting with a digit)")
            }
            return text
        }
        let allowed = section.list("allowed_vars", name) ?? []
        let blocked = section.list("blocked_vars", name) ?? []
        for (variable, mark) in allowed {
            if blocked.contains(where: { $0.value == variable }) {
                section.report("\(variable) is also in blocked_vars", key: "allowed_vars", at: mark)
            } else if Self.daemonSetVariables.contains(variable) {
                section.report("\(variable) is set by sandboxd and cannot be allowed from requests", key: "allowed_vars", at: mark)
            }
        }
        environment.allowedVars = allowed.map(\.value).uniqued()
        environment.blockedVars = blocked.map(\.value).uniqued()
    }

    private mutating func readIsolation(_ top: YAMLMapping) {
        guard let section = top.mapping("isolation", known: Self.isolationKeys) else { return }
        if let level = section.value("minimum_level", Self.level) { isolation.minimumLevel = level }
        guard let node = section.node("agent_types") else { return }
        guard case let .mapping(rules) = node else {
            section.report("expected a mapping of agent type to level (scraper: 3), found \(node.kindName)", key: "agent_types", at: node.mark)
            return
        }
        for (keyNode, value) in rules {
            let type = (keyNode.string ?? "").lowercased()
            let key = "\(section.keyPath("agent_types")).\(type)"
            guard Self.isAgentTypeName(type) else {
                section.log.report("\"\(keyNode.string ?? "")\" is not an agent type name (letters, digits, _ and -)", key: key, at: keyNode.mark)
                continue
            }
            do { isolation.agentTypes[type] = try Self.level(value) } catch {
                section.log.report(error.message, key: key, at: value.mark)
            }
        }
    }

    private mutating func readDatabase(_ top: YAMLMapping) {
        guard let section = top.mapping("database", known: Self.databaseKeys) else { return }
        var access = DatabaseAccess()
        let schemas = section.list("schemas") { (node) throws(ValueError) -> String in
            let schema = try YAMLValue.string(node)
            guard Self.isSQLIdentifier(schema) else { throw ValueError("\"\(schema)\" is not a schema name (letters, digits, _; at most 63)") }
            guard !Self.isSystemSchema(schema) else { throw ValueError("\"\(schema)\" is a system schema and cannot be exposed") }
            return schema
        } ?? []
        let tables = section.list("tables") { (node) throws(ValueError) -> String in
            let text = try YAMLValue.string(node)
            let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, parts.allSatisfy(Self.isSQLIdentifier) else {
                throw ValueError("\"\(text)\" is not schema.table (letters, digits, _; at most 63 each)")
            }
            guard !Self.isSystemSchema(parts[0]) else { throw ValueError("\"\(text)\" is in a system schema and cannot be exposed") }
            guard !Self.protectedTables.contains(parts[1].lowercased()) else {
                throw ValueError("\"\(text)\" is one of sandboxd's own record tables and cannot be exposed")
            }
            return text
        } ?? []
        access.schemas = schemas.map(\.value).uniqued()
        access.tables = tables.map(\.value).uniqued()
        if let seconds = section.value("statement_timeout", { (node) throws(ValueError) -> Double in
            let seconds = try YAMLValue.seconds(node)
            guard seconds >= 0.001 else { throw ValueError("must be larger than 0") }
            guard seconds <= 3600 else { throw ValueError("\(seconds.plainText) s is more than an hour (3600)") }
            return seconds
        }) { access.statementTimeout = seconds }
        if !section.contains("schemas"), !section.contains("tables") {
            top.report("lists neither schemas nor tables; give at least one, or drop the database section", key: "database", at: top.keyMark(of: "database"))
        }
        database = access
    }

    // MARK: Value checks

    static func level(_ node: Node) throws(ValueError) -> IsolationLevel {
        let text = try YAMLValue.scalarText(node).trimmingWhitespace()
        guard let number = Int(text), let level = IsolationLevel(rawValue: number) else {
            throw ValueError("\"\(text)\" is not an isolation level (1, 2, 3 or 4)")
        }
        return level
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
    }

    static func isAgentTypeName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
    }

    /// An unquoted PostgreSQL identifier: it can be used in GRANT statements without quoting games.
    static func isSQLIdentifier(_ name: String) -> Bool {
        guard (1...63).contains(name.utf8.count), let first = name.unicodeScalars.first,
              first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
    }

    static func isSystemSchema(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower == "information_schema" || lower.hasPrefix("pg_")
    }
}

extension Array where Element: Hashable {
    /// The elements in order, without repeats.
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
