import Dispatch
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL cluster under a state directory: the daemon's default database when no
/// server is configured, and the throwaway server of the tests.
///
/// Layout of `directory` (owned by `systemUser`, mode 0700):
/// `data/` the cluster, `socket/` its Unix socket (no TCP: `listen_addresses = ''`),
/// `sandbox-socket/` a second socket of the same server for the read-only database tool,
/// `postgres.log`, `superuser.password` and `<role>.password`.
///
/// The socket files are 0777; the directories decide who reaches them. `socket/` is 0700, for
/// the daemon (root) and the server's user. `sandbox-socket/` is 0755 but lies inside the 0700
/// state directory, so no host user can walk to it: only sandboxes reach it, through a bind mount
/// of that one directory (see `ReadOnlyDatabaseAccess`), and there a role's password decides.
/// `initdb` and the server refuse to run as root, so they run as `systemUser` via `runuser`.
/// Authentication is scram-sha-256 on the socket, with generated passwords kept in the files above.
public struct EmbeddedPostgres: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// The state directory holding the cluster, its socket and its log.
        public var directory: String
        /// Unprivileged account that owns the cluster and runs the server.
        public var systemUser: String
        /// Create `systemUser` (`useradd --system`) when it does not exist.
        public var createSystemUser: Bool
        /// The database and login role the daemon uses.
        public var database: String
        public var role: String
        /// Where `initdb`, `pg_ctl` and `postgres` live.
        public var binDirectory: String
        /// Number in the socket name (`.s.PGSQL.<port>`); no TCP port is opened.
        public var port: Int
        /// Extra `postgresql.conf` settings (the tests turn off fsync, for example).
        public var serverSettings: [String: String]
        public var startTimeoutSeconds: Int
        /// Pool size put into the returned settings.
        public var poolSize: Int
        /// Extra `initdb` arguments (the tests pass `--no-sync`).
        public var initdbArguments: [String]

        public init(
            directory: String = "/var/lib/sandboxd/postgres",
            systemUser: String = "sandboxd-db",
            createSystemUser: Bool = true,
            database: String = "sandboxd",
            role: String = "sandboxd",
            binDirectory: String = "/usr/lib/postgresql/15/bin",
            port: Int = 5432,
            serverSettings: [String: String] = [:],
            startTimeoutSeconds: Int = 60,
            poolSize: Int = 8,
            initdbArguments: [String] = []
        ) {
            self.directory = directory
            self.systemUser = systemUser
            self.createSystemUser = createSystemUser
            self.database = database
            self.role = role
            self.binDirectory = binDirectory
            self.port = port
            self.serverSettings = serverSettings
            self.startTimeoutSeconds = startTimeoutSeconds
            self.poolSize = poolSize
            self.initdbArguments = initdbArguments
        }
    }

    public let configuration: Configuration
    private let logger: Logger

    public init(configuration: Configuration = Configuration(), logger: Logger = Logger(label: "sandboxd.store.embedded")) {
        self.configuration = configuration
        self.logger = logger
    }

    public var dataDirectory: String { configuration.directory + "/data" }
    public var socketDirectory: String { configuration.directory + "/socket" }
    /// The second socket directory of the same server, the one sandboxes get bind-mounted.
    public var sandboxSocketDirectory: String { configuration.directory + "/sandbox-socket" }
    public var logFile: String { configuration.directory + "/postgres.log" }
    private var superuserPasswordFile: String { configuration.directory + "/superuser.password" }
    private var rolePasswordFile: String { configuration.directory + "/\(configuration.role).password" }
    private var pgCtl: String { configuration.binDirectory + "/pg_ctl" }
    /// The superuser initdb creates (named explicitly so it never depends on `systemUser`).
    static let superuser = "postgres"

    /// Creates the cluster if needed, starts it (or adopts one already running from this
    /// directory), makes sure the role and database exist, and returns how to connect.
    /// A `postmaster.pid` left by a crash is recognised as stale and removed.
    public func start() async throws -> DatabaseSettings {
        try await Self.onOwnThread { try self.startBlocking() }
    }

    /// Stops the server (`pg_ctl stop -m fast`); does nothing when it is not running.
    public func stop() async throws {
        try await Self.onOwnThread { try self.stopBlocking() }
    }

    /// Whether a server from this data directory is running.
    public func isRunning() -> Bool { runningPostmasterPID() != nil }

    /// Settings for the cluster's superuser (administration and tests), valid after `start()`.
    public func superuserSettings(database: String = "postgres") throws -> DatabaseSettings {
        DatabaseSettings(
            host: socketDirectory, port: configuration.port, database: database, user: Self.superuser,
            password: try readSecret(superuserPasswordFile), poolSize: 2)
    }

    // MARK: - Start

    private func startBlocking() throws -> DatabaseSettings {
        try validateConfiguration()
        let (uid, gid) = try ensureSystemUser()
        try prepareDirectory(configuration.directory, uid: uid, gid: gid, mode: 0o700)
        try prepareDirectory(socketDirectory, uid: uid, gid: gid, mode: 0o700)
        try prepareDirectory(sandboxSocketDirectory, uid: uid, gid: gid, mode: 0o755)
        let superuserPassword = try ensureSecret(superuserPasswordFile, uid: uid, gid: gid)
        let rolePassword = try ensureSecret(rolePasswordFile, uid: 0, gid: 0)

        if !FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            try initializeCluster(uid: uid, gid: gid)
        }
        try writeServerSettings(uid: uid, gid: gid)

        if let pid = runningPostmasterPID() {
            logger.info("adopting the running embedded PostgreSQL", metadata: ["pid": "\(pid)", "data": "\(dataDirectory)"])
        } else {
            removeStaleLockFiles()
            let outcome = try ChildProcess.run(
                pgCtl,
                ["-D", dataDirectory, "-l", logFile, "-w", "-t", String(configuration.startTimeoutSeconds), "-s", "start"],
                asUser: configuration.systemUser, workingDirectory: configuration.directory)
            guard outcome.succeeded else {
                throw failure("pg_ctl start -D \(dataDirectory) exited with \(outcome.exitStatus): \(outcome.output)\(logTail())")
            }
            logger.info("started embedded PostgreSQL", metadata: ["data": "\(dataDirectory)", "socket": "\(socketDirectory)"])
        }

        try provisionRoleAndDatabase(superuserPassword: superuserPassword, rolePassword: rolePassword)
        return DatabaseSettings(
            host: socketDirectory, port: configuration.port, database: configuration.database,
            user: configuration.role, password: rolePassword, poolSize: configuration.poolSize)
    }

    private func validateConfiguration() throws {
        let config = configuration
        guard config.directory.hasPrefix("/") else { throw failure("state directory \(config.directory) is not an absolute path") }
        // The socket paths must fit sun_path (108 bytes).
        for directory in [socketDirectory, sandboxSocketDirectory] {
            let socketPath = directory + "/.s.PGSQL.\(config.port)"
            guard socketPath.utf8.count < 100 else {
                throw failure("socket path \(socketPath) is too long for a Unix socket; choose a shorter state directory")
            }
        }
        // unix_socket_directories is a comma-separated list.
        guard !config.directory.contains(",") else { throw failure("state directory \(config.directory) contains a comma") }
        for (what, name) in [("database", config.database), ("role", config.role), ("system user", config.systemUser)] {
            let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
            guard !name.isEmpty, name.count <= 63, allowed else {
                throw failure("\(what) name \"\(name)\" must be 1–63 ASCII letters, digits, _ or -")
            }
        }
        guard (1...65535).contains(config.port) else { throw failure("port \(config.port) is not between 1 and 65535") }
    }

    private func ensureSystemUser() throws -> (uid_t, gid_t) {
        if let ids = Self.lookUpUser(configuration.systemUser) { return ids }
        guard configuration.createSystemUser else {
            throw failure("system user \(configuration.systemUser) does not exist")
        }
        let outcome = try ChildProcess.run(
            "/usr/sbin/useradd",
            ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
             "--comment", "sandboxd embedded PostgreSQL", configuration.systemUser])
        // Exit 9: created concurrently by someone else; fine if it exists now.
        guard let ids = Self.lookUpUser(configuration.systemUser) else {
            throw failure("useradd --system \(configuration.systemUser) exited with \(outcome.exitStatus): \(outcome.output)")
        }
        logger.notice("created system user for the embedded PostgreSQL", metadata: ["user": "\(configuration.systemUser)"])
        return ids
    }

    private static func lookUpUser(_ name: String) -> (uid_t, gid_t)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    private func prepareDirectory(_ path: String, uid: uid_t, gid: gid_t, mode: mode_t) throws {
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else { throw failure("stat(\(path)): \(String(cString: strerror(errno)))") }
            // Parents must let the unprivileged user through, so they get 0755.
            do {
                try FileManager.default.createDirectory(
                    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o755])
            } catch {
                throw failure("cannot create the parent of \(path): \(error.localizedDescription)")
            }
            guard mkdir(path, mode) == 0 || errno == EEXIST else {
                throw failure("mkdir(\(path)): \(String(cString: strerror(errno)))")
            }
        } else if (info.st_mode & S_IFMT) != S_IFDIR {
            throw failure("\(path) exists and is not a directory")
        }
        guard chown(path, uid, gid) == 0 else { throw failure("chown(\(path) → \(uid):\(gid)): \(String(cString: strerror(errno)))") }
        guard chmod(path, mode) == 0 else { throw failure("chmod(\(path), \(String(mode, radix: 8))): \(String(cString: strerror(errno)))") }
    }

    /// Returns the secret in `path`, creating a random one (0600, owned by uid:gid) when missing.
    private func ensureSecret(_ path: String, uid: uid_t, gid: gid_t) throws -> String {
        if FileManager.default.fileExists(atPath: path) { return try readSecret(path) }
        var generator = SystemRandomNumberGenerator()  // getrandom(2)
        let secret = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("open(\(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array((secret + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw failure("write(\(path)): \(String(cString: strerror(errno)))") }
        guard fchown(fd, uid, gid) == 0 else { throw failure("fchown(\(path)): \(String(cString: strerror(errno)))") }
        return secret
    }

    private func readSecret(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path),
            let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty
        else { throw failure("cannot read the password file \(path)") }
        return text
    }

    private func initializeCluster(uid: uid_t, gid: gid_t) throws {
        if let contents = try? FileManager.default.contentsOfDirectory(atPath: dataDirectory), !contents.isEmpty {
            throw failure("\(dataDirectory) is not empty but holds no cluster (no PG_VERSION); move it away")
        }
        let outcome = try ChildProcess.run(
            configuration.binDirectory + "/initdb",
            ["-D", dataDirectory, "--username=\(Self.superuser)", "--auth=scram-sha-256", "--pwfile=\(superuserPasswordFile)",
             "--encoding=UTF8", "--no-locale", "--no-instructions"] + configuration.initdbArguments,
            asUser: configuration.systemUser, workingDirectory: configuration.directory)
        guard outcome.succeeded else {
            throw failure("initdb -D \(dataDirectory) exited with \(outcome.exitStatus): \(outcome.output)")
        }
        // Our settings live in their own file, rewritten at every start; postgresql.conf only includes it.
        let include = "\n# sandboxd: settings managed by the daemon, rewritten at every start\ninclude_if_exists = 'sandboxd.conf'\n"
        guard let handle = FileHandle(forWritingAtPath: dataDirectory + "/postgresql.conf") else {
            throw failure("cannot open \(dataDirectory)/postgresql.conf")
        }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(include.utf8))
        logger.notice("created the embedded PostgreSQL cluster", metadata: ["data": "\(dataDirectory)"])
    }

    private func writeServerSettings(uid: uid_t, gid: gid_t) throws {
        var settings: [(String, String)] = [
            ("listen_addresses", "''"),  // Unix socket only: no TCP port is opened.
            ("unix_socket_directories", Self.quoted(socketDirectory + "," + sandboxSocketDirectory)),
            // The directories gate access (see the type's comment); the sockets themselves are open.
            ("unix_socket_permissions", "0777"),
            ("port", String(configuration.port)),
            ("password_encryption", "'scram-sha-256'"),
        ]
        for (key, value) in configuration.serverSettings.sorted(by: { $0.key < $1.key }) {
            guard key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ".") }) else {
                throw failure("server setting name \"\(key)\" is not a PostgreSQL parameter name")
            }
            settings.append((key, Self.quoted(value)))
        }
        let text = "# Written by sandboxd at every start; edits are lost.\n"
            + settings.map { "\($0.0) = \($0.1)\n" }.joined()
        let path = dataDirectory + "/sandboxd.conf"
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]),
            chown(path, uid, gid) == 0
        else { throw failure("cannot write \(path)") }
    }

    private static func quoted(_ value: String) -> String {
        "'" + value.replacingAll("\\", with: "\\\\").replacingAll("'", with: "''") + "'"
    }

    private func provisionRoleAndDatabase(superuserPassword: String, rolePassword: String) throws {
        let admin = DatabaseSettings(
            host: socketDirectory, port: configuration.port, database: "postgres", user: Self.superuser,
            password: superuserPassword, poolSize: 1)
        let connection = try PostgresConnection.connectBlocking(admin, queue: DispatchQueue(label: "sandboxd.store.embedded"))
        defer { connection.closeNow() }
        // Utility statements take no parameters; format() on the server does the quoting (%I, %L),
        // so no value is ever spliced into SQL text here.
        func run(formatted format: String, _ arguments: [String]) throws {
            let placeholders = arguments.indices.map { "$\($0 + 2)::text" }.joined(separator: ", ")
            let built = try connection.query("SELECT format($1::text, \(placeholders))", [format] + arguments)
            guard let sql = built.rows.first?.first ?? nil else { throw failure("format() returned nothing") }
            try connection.execute(sql)
        }
        let roleExists = try connection.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [configuration.role]).rows.count == 1
        if roleExists {
            // Keeps the role's password equal to the file (e.g. after the file was replaced).
            try run(formatted: "ALTER ROLE %I WITH LOGIN PASSWORD %L", [configuration.role, rolePassword])
        } else {
            try run(formatted: "CREATE ROLE %I WITH LOGIN PASSWORD %L", [configuration.role, rolePassword])
        }
        let databaseExists = try connection.query(
            "SELECT 1 FROM pg_database WHERE datname = $1", [configuration.database]).rows.count == 1
        if !databaseExists {
            try run(formatted: "CREATE DATABASE %I OWNER %I ENCODING 'UTF8' TEMPLATE template0", [configuration.database, configuration.role])
        }
    }

    // MARK: - Running state

    /// The postmaster's pid when `postmaster.pid` names a live postgres serving this data directory.
    private func runningPostmasterPID() -> pid_t? {
        guard let pid = Self.pidInLockFile(dataDirectory + "/postmaster.pid") else { return nil }
        // A pid can be reused after a crash: it is ours only if it is postgres and runs in our data directory.
        guard let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
            command.trimmingCharacters(in: .whitespacesAndNewlines) == "postgres",
            let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"),
            cwd == (dataDirectory as NSString).resolvingSymlinksInPath
        else { return nil }
        return pid
    }

    private static func pidInLockFile(_ path: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first.trimmingCharacters(in: .whitespaces)), pid > 0
        else { return nil }
        return pid
    }

    /// After a crash `postmaster.pid` (and the socket's lock file) may name a pid that now belongs
    /// to another process, which would make the server refuse to start.
    private func removeStaleLockFiles() {
        let lockFiles = [dataDirectory + "/postmaster.pid"] + [socketDirectory, sandboxSocketDirectory].flatMap {
            [$0 + "/.s.PGSQL.\(configuration.port).lock", $0 + "/.s.PGSQL.\(configuration.port)"]
        }
        for path in lockFiles where FileManager.default.fileExists(atPath: path) {
            logger.notice("removing stale lock file of the embedded PostgreSQL", metadata: ["path": "\(path)"])
            unlink(path)
        }
    }

    // MARK: - Stop

    private func stopBlocking() throws {
        guard let pid = runningPostmasterPID() else { return }
        let outcome = try ChildProcess.run(
            pgCtl, ["-D", dataDirectory, "-m", "fast", "-w", "-t", "60", "-s", "stop"],
            asUser: configuration.systemUser, workingDirectory: configuration.directory)
        if !outcome.succeeded, runningPostmasterPID() == pid {
            // Last resort for a server that ignores a fast shutdown: immediate shutdown of our own postmaster.
            kill(pid, SIGQUIT)
            throw failure("pg_ctl stop -D \(dataDirectory) exited with \(outcome.exitStatus): \(outcome.output)")
        }
        logger.info("stopped embedded PostgreSQL", metadata: ["data": "\(dataDirectory)"])
    }

    // MARK: - Helpers

    private func failure(_ message: String) -> StoreError {
        StoreError(.embeddedServerFailed, "embedded PostgreSQL in \(configuration.directory): \(message)")
    }

    private func logTail() -> String {
        guard let text = try? String(contentsOfFile: logFile, encoding: .utf8) else { return "" }
        let lines = text.split(separator: "\n").suffix(10)
        return lines.isEmpty ? "" : "; \(logFile) ends with:\n" + lines.joined(separator: "\n")
    }

    /// Blocking work (child processes, libpq) runs on its own thread, not the cooperative pool.
    private static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue(label: "sandboxd.store.embedded").async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
