import Testing
@testable import SandboxCore

struct DaemonConfigurationTests {
    // MARK: Defaults and the example file

    @Test("no file and no environment gives the embedded database under the state directory")
    func defaults() throws {
        let configuration = try DaemonConfiguration(yaml: nil, environment: [:])
        #expect(configuration.database == .embedded(dataDirectory: "/var/lib/sandboxd/postgres"))
        #expect(configuration.databaseSource == .embedded)
        #expect(configuration.socket.path == "/run/sandboxd/sandboxd.sock")
        #expect(configuration.resources.enforcement == .strict)
        #expect(configuration.databasePoolSize == 8)
    }

    @Test("an empty or comment-only file means all defaults")
    func emptyFile() throws {
        #expect(try DaemonConfiguration(yaml: "", file: "sandboxd.yaml") == DaemonConfiguration())
        #expect(try DaemonConfiguration(yaml: "# nothing\n", file: "sandboxd.yaml") == DaemonConfiguration())
    }

    @Test("config/sandboxd.yaml parses and states exactly the built-in defaults")
    func exampleFileIsTheDefaults() throws {
        let text = try RepositoryFiles.text("config/sandboxd.yaml")
        let configuration = try DaemonConfiguration(yaml: text, file: "config/sandboxd.yaml", environment: [:])
        #expect(configuration == DaemonConfiguration())
    }

    @Test("embedded data directory follows state_directory")
    func embeddedFollowsStateDirectory() throws {
        let configuration = try DaemonConfiguration(yaml: "state_directory: /srv/sbx/\n", file: "sandboxd.yaml")
        #expect(configuration.stateDirectory == "/srv/sbx")
        #expect(configuration.database == .embedded(dataDirectory: "/srv/sbx/postgres"))
    }

    @Test("every key is read")
    func everyKey() throws {
        let yaml = """
        state_directory: /srv/state
        socket: {path: /run/x.sock, group: agents, admin_group: ops}
        policy_directory: /srv/policies
        database: {host: /run/postgresql, port: 5433, name: records, user: sbx, password_file: /etc/sandboxd/pw, pool_size: 4}
        resources: {enforcement: best-effort, cgroup_root: /sys/fs/cgroup/unified}
        sandbox: {uid_range_start: 200000, uid_range_size: 1000, max_sandboxes: 10, max_sandboxes_per_uid: 2, max_request_body: 1MB}
        shutdown_grace_period: 2m
        log_level: DEBUG
        """
        let c = try DaemonConfiguration(yaml: yaml, file: "sandboxd.yaml")
        #expect(c.stateDirectory == "/srv/state")
        #expect(c.socket == .init(path: "/run/x.sock", group: "agents", adminGroup: "ops"))
        #expect(c.policyDirectory == "/srv/policies")
        #expect(c.database == .external(DatabaseTarget(host: "/run/postgresql", port: 5433, database: "records", user: "sbx",
                                                      passwordFile: "/etc/sandboxd/pw", poolSize: 4)))
        #expect(c.databaseSource == .file)
        #expect(c.resources == .init(enforcement: .bestEffort, cgroupRoot: "/sys/fs/cgroup/unified"))
        #expect(c.sandbox == .init(uidRangeStart: 200_000, uidRangeSize: 1000, maxSandboxes: 10, maxSandboxesPerUID: 2,
                                   maxRequestBody: .mebibytes(1)))
        #expect(c.shutdownGracePeriod == 120)
        #expect(c.logLevel == .debug)
    }

    // MARK: Precedence

    static let fileWithDatabase = """
    database:
      host: file-host
      port: 6000
      name: filedb
      user: fileuser
      password: file-password
      pool_size: 3
    """

    @Test("POSTGRES_URL wins over the separate variables and the file")
    func urlWins() throws {
        let environment = ["POSTGRES_URL": "postgresql://urluser:url%40pw@url-host:7000/urldb?sslmode=require",
                           "POSTGRES_HOST": "var-host", "POSTGRES_PASSWORD": "var-password"]
        let c = try DaemonConfiguration(yaml: Self.fileWithDatabase, file: "sandboxd.yaml", environment: environment)
        guard case let .external(target) = c.database else { Issue.record("not external"); return }
        #expect(c.databaseSource == .environmentURL)
        #expect(target.host == "url-host")
        #expect(target.port == 7000)
        #expect(target.database == "urldb")
        #expect(target.user == "urluser")
        #expect(target.password?.revealed == "url@pw")
        #expect(target.parameters == ["sslmode": "require"])
        #expect(target.poolSize == 3, "pool_size still comes from the file")
        #expect(c.notes.contains { $0.contains("POSTGRES_HOST") && $0.contains("POSTGRES_PASSWORD") })
    }

    @Test("separate variables replace the file's fields one by one")
    func variablesOverFile() throws {
        let environment = ["POSTGRES_HOST": "var-host", "POSTGRES_PASSWORD": "var-password", "POSTGRES_PORT": ""]
        let c = try DaemonConfiguration(yaml: Self.fileWithDatabase, file: "sandboxd.yaml", environment: environment)
        #expect(c.databaseSource == .environmentVariables)
        #expect(c.database == .external(DatabaseTarget(host: "var-host", port: 6000, database: "filedb", user: "fileuser",
                                                      password: Secret("var-password"), poolSize: 3)))
    }

    @Test("separate variables alone select an external server with defaults for the rest")
    func variablesAlone() throws {
        let environment = ["POSTGRES_HOST": "db", "POSTGRES_PORT": "5439", "POSTGRES_DB": "agentic_ai",
                           "POSTGRES_USER": "agentic_user", "POSTGRES_PASSWORD": "pw"]
        let c = try DaemonConfiguration(yaml: nil, environment: environment)
        #expect(c.database == .external(DatabaseTarget(host: "db", port: 5439, database: "agentic_ai", user: "agentic_user",
                                                      password: Secret("pw"))))
    }

    @Test("the file's database is used when no variable is set")
    func fileOverEmbedded() throws {
        let c = try DaemonConfiguration(yaml: Self.fileWithDatabase, file: "sandboxd.yaml", environment: ["PATH": "/bin"])
        #expect(c.databaseSource == .file)
        #expect(c.database == .external(DatabaseTarget(host: "file-host", port: 6000, database: "filedb", user: "fileuser",
                                                      password: Secret("file-password"), poolSize: 3)))
    }

    @Test("pool_size alone keeps the embedded database")
    func poolSizeAloneIsEmbedded() throws {
        let c = try DaemonConfiguration(yaml: "database:\n  pool_size: 2\n", file: "sandboxd.yaml")
        #expect(c.databaseSource == .embedded)
        #expect(c.databasePoolSize == 2)
    }

    @Test("a url in the file is parsed like POSTGRES_URL")
    func fileURL() throws {
        let c = try DaemonConfiguration(yaml: "database:\n  url: postgres://u@%2Frun%2Fpostgresql/d\n", file: "sandboxd.yaml")
        guard case let .external(target) = c.database else { Issue.record("not external"); return }
        #expect(target.host == "/run/postgresql")
        #expect(target.isSocketDirectory)
        #expect(target.user == "u" && target.database == "d" && target.port == 5432 && target.password == nil)
    }

    @Test("SQLITE_DB is recognised")
    func sqlite() throws {
        let c = try DaemonConfiguration(yaml: nil, environment: ["SQLITE_DB": "./app/data/demo.db"])
        #expect(c.sqliteDatabase == "./app/data/demo.db")
        #expect(c.databaseSource == .embedded)
    }

    // MARK: Errors

    static func diagnostics(_ yaml: String, environment: [String: String] = [:]) -> [String] {
        do {
            _ = try DaemonConfiguration(yaml: yaml, file: "sandboxd.yaml", environment: environment)
            return []
        } catch {
            #expect(error.code == .invalidConfiguration)
            return error.diagnostics.map(\.description)
        }
    }

    @Test("the vm section is read")
    func vmSection() throws {
        let c = try DaemonConfiguration(yaml: "vm:\n  enabled: false\n  accelerator: TCG\n  pool_size: 0\n  image_directory: /srv/images/\n  test_hooks: true\n",
                                        file: "sandboxd.yaml")
        #expect(c.vm == .init(enabled: false, accelerator: .tcg, poolSize: 0, imageDirectory: "/srv/images", testHooks: true))
        #expect(try DaemonConfiguration(yaml: nil).vm == .init(enabled: true, accelerator: .auto, poolSize: 1,
                                                              imageDirectory: "/var/cache/sandboxd", testHooks: false))
    }

    @Test("an unknown key names file, line and key, with a suggestion")
    func unknownKey() {
        let yaml = """
        state_directory: /var/lib/sandboxd
        socket:
          path: /run/sandboxd/sandboxd.sock
        database:
          pool_size: 8
        resources:
          enforcment: strict
        """
        #expect(Self.diagnostics(yaml) == ["sandboxd.yaml:7: resources.enforcment: unknown key (did you mean enforcement?)"])
    }

    @Test("bad values name file, line, key and reason", arguments: [
        ("log_level: loud", "sandboxd.yaml:1: log_level: \"loud\" is not a log level"),
        ("state_directory: var/lib", "sandboxd.yaml:1: state_directory: \"var/lib\" is a relative path"),
        ("socket:\n  group: Bad Group", "sandboxd.yaml:2: socket.group: \"Bad Group\" is not a group name"),
        ("resources:\n  enforcement: lax", "sandboxd.yaml:2: resources.enforcement: \"lax\" is not strict or best-effort"),
        ("database:\n  port: 70000", "sandboxd.yaml:2: database.port: 70000 is out of range 1…65535"),
        ("database:\n  pool_size: 0", "sandboxd.yaml:2: database.pool_size: must be positive, got 0"),
        ("sandbox:\n  max_sandboxes: -3", "sandboxd.yaml:2: sandbox.max_sandboxes: must be positive, got -3"),
        ("sandbox:\n  uid_range_start: 1000", "sandboxd.yaml:2: sandbox.uid_range_start: 1000 is out of range"),
        ("sandbox:\n  max_request_body: 12XB", "sandboxd.yaml:2: sandbox.max_request_body: invalid size \"12XB\""),
        ("sandbox:\n  max_sandboxes: 4\n  max_sandboxes_per_uid: 8", "sandboxd.yaml:3: sandbox.max_sandboxes_per_uid: 8 is more than"),
        ("shutdown_grace_period: -1", "sandboxd.yaml:1: shutdown_grace_period: must not be negative"),
        ("shutdown_grace_period: soon", "sandboxd.yaml:1: shutdown_grace_period: \"soon\" is not a duration"),
        ("socket: /run/x.sock", "sandboxd.yaml:1: socket: expected a mapping"),
        ("database:\n  url: mysql://x/y", "sandboxd.yaml:2: database.url: must start with postgresql://"),
        ("database:\n  url: postgres://h/d\n  host: h", "sandboxd.yaml:3: database.host: give either url or host"),
        ("database:\n  password: a\n  password_file: /p", "sandboxd.yaml:3: database.password_file: give either password or password_file"),
        ("log_level: info\nlog_level: debug", "sandboxd.yaml:1: duplicate key \"log_level\""),
        ("socket:\n  path: [unterminated", "sandboxd.yaml:"),
        ("- a\n- b", "sandboxd.yaml:1: expected a mapping"),
        ("vm:\n  accelerator: hvf", "sandboxd.yaml:2: vm.accelerator: \"hvf\" is not an accelerator (auto, tcg, kvm)"),
        ("vm:\n  pool_size: 65", "sandboxd.yaml:2: vm.pool_size: 65 is out of range"),
        ("vm:\n  image_directory: cache", "sandboxd.yaml:2: vm.image_directory: \"cache\" is a relative path"),
        ("vm:\n  pool: 2", "sandboxd.yaml:2: vm.pool: unknown key"),
    ])
    func badValue(yaml: String, expectedPrefix: String) {
        let found = Self.diagnostics(yaml)
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.hasPrefix(expectedPrefix) == true, "\(found)")
    }

    @Test("all problems of a file are reported together")
    func allProblems() {
        let found = Self.diagnostics("log_level: loud\nsocket:\n  pth: /x\nbogus: 1\n")
        #expect(found.count == 3)
        #expect(found.contains { $0.hasPrefix("sandboxd.yaml:3: socket.pth: unknown key (did you mean path?)") })
        #expect(found.contains { $0.hasPrefix("sandboxd.yaml:4: bogus: unknown key") })
    }

    @Test("bad environment variables are named", arguments: [
        (["POSTGRES_PORT": "fivefour"], "environment: POSTGRES_PORT: port \"fivefour\" is not a number"),
        (["POSTGRES_URL": "http://h/d"], "environment: POSTGRES_URL: must start with postgresql://"),
        (["POSTGRES_URL": "postgresql://u:pw@h/d?sslmod=require"], "environment: POSTGRES_URL: unknown connection parameter \"sslmod\" (did you mean sslmode?)"),
        (["POSTGRES_URL": "postgresql://u:pw@h:99999/d"], "environment: POSTGRES_URL: port \"99999\""),
    ])
    func badEnvironment(environment: [String: String], expectedPrefix: String) {
        let found = Self.diagnostics("", environment: environment)
        #expect(found.count == 1 && found.first?.hasPrefix(expectedPrefix) == true, "\(found)")
    }

    // MARK: Secrets

    @Test("the password never appears in description, redacted settings, reflection or errors")
    func passwordRedacted() throws {
        let password = "hunter2-s3cr3t"
        let sources: [(String?, [String: String])] = [
            (nil, ["POSTGRES_URL": "postgresql://u:\(password)@h/d?sslpassword=\(password)"]),
            (nil, ["POSTGRES_HOST": "h", "POSTGRES_PASSWORD": password]),
            ("database:\n  host: h\n  password: \(password)\n", [:]),
            ("database:\n  url: postgresql://u:\(password)@h/d\n", [:]),
        ]
        for (yaml, environment) in sources {
            let c = try DaemonConfiguration(yaml: yaml, file: "sandboxd.yaml", environment: environment)
            guard case let .external(target) = c.database else { Issue.record("not external"); continue }
            #expect(target.password?.revealed == password, "the value itself is kept for the connection")
            var dumped = ""
            dump(c, to: &dumped)
            let renderings = [c.description, String(describing: c), String(reflecting: c), dumped, "\(c.database)",
                              target.description, "\(target)", c.redacted.description] + c.notes
            for text in renderings {
                #expect(!text.contains(password), "password leaked in: \(text)")
            }
            #expect(c.redacted["database.password"] == "<redacted>")
        }
    }

    @Test("errors about a file holding a password do not quote it")
    func errorsDoNotQuotePassword() {
        let password = "hunter2-s3cr3t"
        let cases = [
            "database:\n  password: \(password)\n  pasword: \(password)\n",
            "database:\n  password: \(password)\n  password: \(password)\n",
            "database:\n  password: [\(password)\n",
            "database:\n  password: {a: \(password)}\n",
            "database:\n  url: postgresql://u:\(password)@h:port/d\n",
        ]
        for yaml in cases {
            do {
                _ = try DaemonConfiguration(yaml: yaml, file: "sandboxd.yaml")
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect(!error.description.contains(password), "\(error.description)")
                #expect(!error.diagnostics.isEmpty)
            }
        }
        do {
            _ = try DaemonConfiguration(yaml: nil, environment: ["POSTGRES_URL": "postgresql://u:\(password)@h:port/d"])
            Issue.record("accepted a bad URL")
        } catch {
            #expect(!error.description.contains(password), "\(error.description)")
        }
    }

    @Test("a password file's first line becomes the password")
    func passwordFile() {
        let target = DatabaseTarget(passwordFile: "/etc/sandboxd/pw").withPassword(fromFileContents: "s3cret\r\nignored\n")
        #expect(target.password?.revealed == "s3cret")
        #expect(target.passwordFile == nil)
    }
}
