import Foundation
import Testing
@testable import SandboxCore

struct PolicyTests {
    static let presetNames = ["database-readonly", "default", "filesystem", "ml-model", "network", "web-scraper"]

    /// The original plan's block, verbatim.
    static let planBlock = """
    sandbox_policies:
      network:
        allowed_hosts: ["api.openai.com", "github.com"]
        blocked_ports: [22, 23, 25, 53]
      filesystem:
        read_only: true
        allowed_paths: ["/tmp", "/app/data"]
        blocked_paths: ["/etc", "/home", "/root"]
      resources:
        memory_limit: "512MB"
        cpu_limit: "0.5"
        execution_timeout: 30
      environment:
        blocked_vars: ["PATH", "HOME", "USER"]
        allowed_vars: ["LANG", "TZ"]
    """

    // MARK: Presets

    @Test("every preset in policies/ parses and validates, even on a one-core host", arguments: presetNames)
    func presetParses(name: String) throws {
        let text = try RepositoryFiles.text("policies/\(name).yaml")
        let policy = try Policy(yaml: text, file: "\(name).yaml", hostCores: 1)
        #expect(policy.summary?.isEmpty == false)
        #expect(policy.resources.cpuLimit <= 1)
    }

    @Test("policies/ holds exactly the six presets")
    func presetFiles() throws {
        #expect(try RepositoryFiles.names(in: "policies", withExtension: "yaml") == Self.presetNames.map { "\($0).yaml" })
    }

    @Test("the embedded presets are byte for byte the files in policies/ (run scripts/embed-policies if not)")
    func embeddedCopiesMatch() throws {
        let files = try RepositoryFiles.names(in: "policies", withExtension: "yaml")
        #expect(BundledPolicies.texts.keys.sorted() == files)
        for file in files {
            #expect(BundledPolicies.texts[file] == (try RepositoryFiles.text("policies/\(file)")), "\(file) differs")
        }
    }

    @Test("the bundled set loads every preset with its name and digest")
    func bundledSet() throws {
        let time = Date(timeIntervalSince1970: 1_800_000_000)
        let set = try PolicySet.bundled(hostCores: 2, at: time)
        #expect(set.names == Self.presetNames)
        for name in Self.presetNames {
            let loaded = try #require(set[name])
            #expect(loaded.digest == SHA256.hex(of: try RepositoryFiles.text("policies/\(name).yaml")))
            #expect(loaded.loadedAt == time)
            #expect(loaded.source == "bundled/\(name).yaml")
        }
    }

    @Test("default preset: no network, read-only, 512 MiB, half a core, 30 s")
    func defaultPreset() throws {
        let policy = try #require(try PolicySet.bundled(hostCores: nil)[PolicySet.defaultName]).policy
        #expect(policy.network.allowedHosts.isEmpty)
        #expect(policy.filesystem.readOnly)
        #expect(policy.filesystem.allowedPaths.isEmpty)
        #expect(policy.resources.memoryLimit == .mebibytes(512))
        #expect(policy.resources.cpuLimit == 0.5)
        #expect(policy.resources.executionTimeout == 30)
        #expect(policy.database == nil)
        #expect(policy.resourceLimits == ResourceLimits(memory: .mebibytes(512), cpu: 0.5, pids: 256, executionTimeout: 30,
                                                        outputLimit: .mebibytes(1), tmpfsSize: .mebibytes(64)))
    }

    @Test("the other presets say what their names promise")
    func otherPresets() throws {
        let set = try PolicySet.bundled(hostCores: nil)
        let scraper = try #require(set["web-scraper"]).policy
        #expect(scraper.network.allows(host: "www.example.com", port: 443))
        #expect(scraper.network.allows(host: "example.com", port: 80))
        #expect(!scraper.network.allows(host: "example.com", port: 22))
        #expect(!scraper.network.allows(host: "example.com", port: 8080), "HTTP(S) ports only")
        #expect(!scraper.network.allows(host: "evil.com", port: 443))
        #expect(!scraper.network.allows(host: "example.com.evil.com", port: 443))

        let files = try #require(set["filesystem"]).policy
        #expect(!files.filesystem.readOnly)
        #expect(files.filesystem.allowedPaths == ["/app/data"])
        #expect(files.filesystem.blockedPaths.contains("/app/data/secrets"))
        #expect(files.network.allowedHosts.isEmpty)

        let network = try #require(set["network"]).policy
        #expect(network.network.allows(host: "api.openai.com", port: 443))
        #expect(!network.network.allows(host: "api.openai.com", port: 25))

        let databasePolicy = try #require(set["database-readonly"]).policy
        let database = try #require(databasePolicy.database)
        #expect(database.tables == ["public.documents", "public.index_stats"])
        #expect(database.statementTimeout == 5)

        let model = try #require(set["ml-model"]).policy
        let defaults = try #require(set["default"]).policy
        #expect(model.resources.memoryLimit > defaults.resources.memoryLimit)
        #expect(model.resources.executionTimeout > defaults.resources.executionTimeout)
        #expect(model.resources.cpuLimit >= defaults.resources.cpuLimit)
        #expect(model.network.allowedHosts.isEmpty)
    }

    // MARK: The plan's block

    @Test("the original plan's sandbox_policies block parses as-is")
    func planBlockParses() throws {
        let policy = try Policy(yaml: Self.planBlock, file: "plan.yaml", hostCores: 2)
        #expect(policy.network.allowedHosts.map(\.description) == ["api.openai.com", "github.com"])
        #expect(policy.network.blockedPorts == [22, 23, 25, 53])
        #expect(policy.filesystem.readOnly)
        #expect(policy.filesystem.allowedPaths == ["/tmp", "/app/data"])
        #expect(policy.filesystem.blockedPaths == ["/etc", "/home", "/root"])
        #expect(policy.resources.memoryLimit == .mebibytes(512))
        #expect(policy.resources.cpuLimit == 0.5)
        #expect(policy.resources.executionTimeout == 30)
        #expect(policy.environment.blockedVars == ["PATH", "HOME", "USER"])
        #expect(policy.environment.allowedVars == ["LANG", "TZ"])
    }

    @Test("the same policy without the wrapper is the same policy")
    func bareEqualsWrapped() throws {
        let bare = Self.planBlock.split(separator: "\n").dropFirst().map { String($0.dropFirst(2)) }.joined(separator: "\n")
        #expect(try Policy(yaml: bare, file: "bare.yaml") == Policy(yaml: Self.planBlock, file: "plan.yaml"))
    }

    // MARK: Validation errors

    static func problems(_ yaml: String, hostCores: Int? = 2) -> [String] {
        do {
            _ = try Policy(yaml: yaml, file: "p.yaml", hostCores: hostCores)
            return []
        } catch {
            #expect(error.code == .invalidPolicy)
            return error.diagnostics.map(\.description)
        }
    }

    static let refusedCases: [(yaml: String, expectedPrefix: String)] = [
        ("resources:\n  memroy_limit: 1G", "p.yaml:2: resources.memroy_limit: unknown key (did you mean memory_limit?)"),
        ("netwrok:\n  allowed_hosts: []", "p.yaml:1: netwrok: unknown key (did you mean network?)"),
        ("resources:\n  memory_limit: -512MB", "p.yaml:2: resources.memory_limit: invalid size \"-512MB\": must not be negative"),
        ("resources:\n  memory_limit: 0", "p.yaml:2: resources.memory_limit: must be larger than 0"),
        ("resources:\n  memory_limit: 4K", "p.yaml:2: resources.memory_limit: 4KiB is below the minimum of 1MiB"),
        ("resources:\n  memory_limit: 512XB", "p.yaml:2: resources.memory_limit: invalid size \"512XB\": unknown unit"),
        ("resources:\n  cpu_limit: 0", "p.yaml:2: resources.cpu_limit: must be larger than 0, got 0"),
        ("resources:\n  cpu_limit: \"-0.5\"", "p.yaml:2: resources.cpu_limit: must be larger than 0, got -0.5"),
        ("resources:\n  cpu_limit: 4", "p.yaml:2: resources.cpu_limit: 4 cores is more than this host has (2)"),
        ("resources:\n  cpu_limit: half", "p.yaml:2: resources.cpu_limit: \"half\" is not a number"),
        ("resources:\n  execution_timeout: 0", "p.yaml:2: resources.execution_timeout: must be larger than 0"),
        ("resources:\n  execution_timeout: -5", "p.yaml:2: resources.execution_timeout: must not be negative"),
        ("resources:\n  pids_limit: 0", "p.yaml:2: resources.pids_limit: must be positive, got 0"),
        ("resources:\n  output_limit: -1", "p.yaml:2: resources.output_limit: invalid size \"-1\": must not be negative"),
        ("resources:\n  tmpfs_size: 0", "p.yaml:2: resources.tmpfs_size: must be larger than 0"),
        ("filesystem:\n  allowed_paths: [app/data]", "p.yaml:2: filesystem.allowed_paths[0]: \"app/data\" is a relative path"),
        ("filesystem:\n  blocked_paths:\n    - /etc\n    - secrets", "p.yaml:4: filesystem.blocked_paths[1]: \"secrets\" is a relative path"),
        ("filesystem:\n  allowed_paths: [/data/../etc]", "p.yaml:2: filesystem.allowed_paths[0]: \"/data/../etc\" contains . or .."),
        ("filesystem:\n  allowed_paths:\n    - /data\n  blocked_paths: [/data/]", "p.yaml:3: filesystem.allowed_paths: /data is also in blocked_paths"),
        ("filesystem:\n  allowed_paths:\n    - /etc/ssl\n  blocked_paths: [/etc]", "p.yaml:3: filesystem.allowed_paths: /etc/ssl lies inside blocked path /etc"),
        ("filesystem:\n  allowed_paths: [/]", "p.yaml:2: filesystem.allowed_paths: \"/\" would expose the whole host"),
        ("filesystem:\n  read_only: maybe", "p.yaml:2: filesystem.read_only: \"maybe\" is not true or false"),
        ("network:\n  blocked_ports: [22, 70000]", "p.yaml:2: network.blocked_ports[1]: port 70000 is out of range 1…65535"),
        ("network:\n  blocked_ports: [0]", "p.yaml:2: network.blocked_ports[0]: port 0 is out of range 1…65535"),
        ("network:\n  blocked_ports: [ssh]", "p.yaml:2: network.blocked_ports[0]: \"ssh\" is not a port number"),
        ("network:\n  allowed_ports: [443]\n  blocked_ports: [443]", "p.yaml:2: network.allowed_ports: port 443 is also in blocked_ports"),
        ("network:\n  allowed_hosts: [\"bad_host.com\"]", "p.yaml:2: network.allowed_hosts[0]: \"bad_host.com\" is not a host name"),
        ("network:\n  allowed_hosts: [\"https://github.com\"]", "p.yaml:2: network.allowed_hosts[0]: \"https://github.com\" is a URL"),
        ("network:\n  allowed_hosts: [\"github.com:443\"]", "p.yaml:2: network.allowed_hosts[0]: \"github.com:443\" contains a port"),
        ("network:\n  allowed_hosts: [\"10.0.0.5\"]", "p.yaml:2: network.allowed_hosts[0]: \"10.0.0.5\" is an IP address"),
        ("network:\n  allowed_hosts: [\"*\"]", "p.yaml:2: network.allowed_hosts[0]: \"*\" is not a host name"),
        ("network:\n  allowed_hosts: [\"*.com\"]", "p.yaml:2: network.allowed_hosts[0]: \"*.com\" would match a whole top-level domain"),
        ("network:\n  allowed_hosts: [\"a.*.com\"]", "p.yaml:2: network.allowed_hosts[0]: \"a.*.com\" is not a host name"),
        ("network:\n  allowed_hosts: [\"-x.com\"]", "p.yaml:2: network.allowed_hosts[0]: \"-x.com\" is not a host name"),
        ("network:\n  allowed_hosts: github.com", "p.yaml:2: network.allowed_hosts: expected a list"),
        ("isolation:\n  minimum_level: 5", "p.yaml:2: isolation.minimum_level: \"5\" is not an isolation level (1, 2, 3 or 4)"),
        ("isolation:\n  minimum_level: 0", "p.yaml:2: isolation.minimum_level: \"0\" is not an isolation level"),
        ("isolation:\n  agent_types:\n    scraper: 9", "p.yaml:3: isolation.agent_types.scraper: \"9\" is not an isolation level"),
        ("isolation:\n  agent_types: [scraper]", "p.yaml:2: isolation.agent_types: expected a mapping"),
        ("environment:\n  allowed_vars: [LANG, \"1BAD\"]", "p.yaml:2: environment.allowed_vars[1]: \"1BAD\" is not a variable name"),
        ("environment:\n  allowed_vars: [TZ]\n  blocked_vars: [TZ]", "p.yaml:2: environment.allowed_vars: TZ is also in blocked_vars"),
        ("environment:\n  allowed_vars: [PATH]", "p.yaml:2: environment.allowed_vars: PATH is set by sandboxd"),
        ("environment:\n  allowed_vars: [HTTPS_PROXY]", "p.yaml:2: environment.allowed_vars: HTTPS_PROXY is set by sandboxd"),
        ("database:\n  tables: [agent_executions]", "p.yaml:2: database.tables[0]: \"agent_executions\" is not schema.table"),
        ("database:\n  tables: [public.agent_executions]", "p.yaml:2: database.tables[0]: \"public.agent_executions\" is one of sandboxd's own record tables"),
        ("database:\n  schemas: [pg_catalog]", "p.yaml:2: database.schemas[0]: \"pg_catalog\" is a system schema"),
        ("database:\n  tables: [\"public.x; DROP TABLE y\"]", "p.yaml:2: database.tables[0]: \"public.x; DROP TABLE y\" is not schema.table"),
        ("database:\n  statement_timeout: 5", "p.yaml:1: database: lists neither schemas nor tables"),
        ("database:\n  tables: [public.t]\n  statement_timeout: 0", "p.yaml:3: database.statement_timeout: must be larger than 0"),
        ("sandbox_policies:\n  network: {}\nextra: 1", "p.yaml:3: extra: not allowed next to sandbox_policies"),
        ("network:\n  allowed_hosts: [a.com]\nnetwork:\n  blocked_ports: [1]", "p.yaml:1: duplicate key \"network\""),
        ("network: [unclosed", "p.yaml:"),
        ("", "p.yaml: the file is empty"),
        ("just a string", "p.yaml:1: expected a mapping"),
    ]

    @Test("each invalid value is refused naming file:line, key and why", arguments: refusedCases)
    func refused(yaml: String, expectedPrefix: String) {
        let found = Self.problems(yaml)
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.hasPrefix(expectedPrefix) == true, "\(found)")
    }

    @Test("a blocked path inside an allowed path is fine")
    func blockedInsideAllowed() throws {
        let policy = try Policy(yaml: "filesystem:\n  allowed_paths: [/app/data]\n  blocked_paths: [/app/data/secrets]\n", file: "p.yaml")
        #expect(policy.filesystem.blockedPaths == ["/app/data/secrets"])
    }

    @Test("a sibling with a common prefix is not inside a blocked path")
    func siblingPrefixIsNotInside() throws {
        let policy = try Policy(yaml: "filesystem:\n  allowed_paths: [/etc2, /datafiles]\n  blocked_paths: [/etc, /data]\n", file: "p.yaml")
        #expect(policy.filesystem.allowedPaths == ["/etc2", "/datafiles"])
    }

    @Test("paths are normalised")
    func pathsNormalised() throws {
        let policy = try Policy(yaml: "filesystem:\n  allowed_paths: [\"//app//data/\"]\n", file: "p.yaml")
        #expect(policy.filesystem.allowedPaths == ["/app/data"])
    }

    @Test("all problems of a file are reported at once, each with its line")
    func allProblemsAtOnce() {
        let yaml = """
        network:
          allowed_hosts: ["ok.com", "bad host"]
        resources:
          cpu_limit: 16
          pids_limit: -1
        environment:
          alowed_vars: [LANG]
        """
        let found = Self.problems(yaml, hostCores: 2)
        #expect(found.count == 4, "\(found)")
        #expect(found.contains { $0.hasPrefix("p.yaml:2: network.allowed_hosts[1]:") })
        #expect(found.contains { $0.hasPrefix("p.yaml:4: resources.cpu_limit: 16 cores is more than this host has (2)") })
        #expect(found.contains { $0.hasPrefix("p.yaml:5: resources.pids_limit: must be positive, got -1") })
        #expect(found.contains { $0.hasPrefix("p.yaml:7: environment.alowed_vars: unknown key (did you mean allowed_vars?)") })
    }

    @Test("the wrapper's keys are named with their full path")
    func wrappedKeyPath() {
        let found = Self.problems("sandbox_policies:\n  resources:\n    cpu_limit: 0\n")
        #expect(found == ["p.yaml:3: sandbox_policies.resources.cpu_limit: must be larger than 0, got 0"])
    }

    @Test("host cores are not checked when the caller does not know them")
    func hostCoresUnknown() throws {
        #expect(try Policy(yaml: "resources:\n  cpu_limit: 64\n", file: "p.yaml", hostCores: nil).resources.cpuLimit == 64)
    }

    // MARK: Sizes and numbers

    static let sizeCases: [(text: String, bytes: UInt64)] = [
        ("512MB", 536_870_912), ("512M", 536_870_912), ("512MiB", 536_870_912), ("\"512MB\"", 536_870_912),
        ("1G", 1_073_741_824), ("1.5G", 1_610_612_736), ("536870912", 536_870_912), ("1_048_576", 1_048_576),
        ("2 GiB", 2_147_483_648),
    ]

    @Test("sizes in policies use binary units", arguments: sizeCases)
    func sizes(text: String, bytes: UInt64) throws {
        let policy = try Policy(yaml: "resources:\n  memory_limit: \(text)\n", file: "p.yaml")
        #expect(policy.resources.memoryLimit.bytes == bytes)
    }

    @Test("size edge cases are refused", arguments: ["1.5", "MB", "12 XB", "-1", "1e9", "0.0000001K", "99999999999T", "[1]"])
    func badSizes(text: String) {
        let found = Self.problems("resources:\n  output_limit: \(text)\n")
        #expect(found.count == 1 && found.first?.hasPrefix("p.yaml:2: resources.output_limit:") == true, "\(found)")
    }

    @Test("cpu_limit accepts a number or a quoted number", arguments: [("0.5", 0.5), ("\"0.5\"", 0.5), ("1", 1.0), ("'1.25'", 1.25)])
    func cpuForms(text: String, cores: Double) throws {
        #expect(try Policy(yaml: "resources:\n  cpu_limit: \(text)\n", file: "p.yaml").resources.cpuLimit == cores)
    }

    @Test("execution_timeout accepts seconds or a unit", arguments: [("30", 30.0), ("2.5", 2.5), ("90s", 90), ("5m", 300), ("1h", 3600)])
    func timeoutForms(text: String, seconds: Double) throws {
        #expect(try Policy(yaml: "resources:\n  execution_timeout: \(text)\n", file: "p.yaml").resources.executionTimeout == seconds)
    }

    @Test("absent keys take the fail-closed defaults")
    func defaultsWhenAbsent() throws {
        let policy = try Policy(yaml: "isolation:\n  minimum_level: 1\n", file: "p.yaml")
        #expect(policy == Policy())
        #expect(policy.network.allowedHosts.isEmpty && policy.filesystem.readOnly && policy.environment.allowedVars.isEmpty)
        #expect(policy.database == nil)
    }

    // MARK: Hosts

    @Test("host patterns match exact names and subdomains of *.suffix only")
    func hostPatterns() throws {
        let exact = try HostPattern(parsing: "GitHub.com.")
        #expect(exact.description == "github.com")
        #expect(exact.matches("github.com") && exact.matches("GITHUB.COM.") && !exact.matches("api.github.com"))
        let wildcard = try HostPattern(parsing: "*.example.com")
        #expect(wildcard.matches("a.example.com") && wildcard.matches("a.b.example.com"))
        #expect(!wildcard.matches("example.com") && !wildcard.matches("badexample.com") && !wildcard.matches("example.com.evil.org"))
    }

    // MARK: Encoding

    @Test("a policy encodes to JSON with the file's key names, and that JSON parses back through the validator", arguments: presetNames)
    func jsonRoundTrip(name: String) throws {
        let policy = try Policy(yaml: try RepositoryFiles.text("policies/\(name).yaml"), file: "\(name).yaml")
        let json = String(decoding: try JSONEncoder().encode(policy), as: UTF8.self)
        #expect(json.contains("\"allowed_hosts\"") && json.contains("\"memory_limit\"") && json.contains("\"description\""))
        #expect(try Policy(yaml: json, file: "inline") == policy)
    }
}
