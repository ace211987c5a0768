#if SANDBOXD_LEVEL1_ENGINE
import Foundation
import SandboxCore
import Store
import Testing
@testable import ControlAPI

/// The egress allowlist and the read-only database tool through the real daemon: sandboxd runs
/// with test policies derived from the `network`, `web-scraper` and `database-readonly` presets
/// (and the `database-readonly` preset itself), against servers in a network namespace the test
/// creates (never outside this machine). The daemon runs in a private mount namespace whose
/// `/etc/hosts` names the test servers, so its proxy resolves them like any host name.
/// Part of the serialized `EndToEndTests` suite: every real daemon shares the engine's cgroup
/// subtree, and a starting daemon reaps what it finds there.
extension EndToEndTests {
    static let user = "sbxt-alice"

    /// An "internet" namespace joined to the host by a veth pair, serving HTTP on :80 and on the
    /// blocked port :22 (so a refusal there is the proxy's, not a missing server's), and on :8080.
    final class Internet: @unchecked Sendable {
        let namespace: String
        let hostInterface: String
        let serverAddress: String
        let hostAddress: String
        let directory: String
        private var servers: [SpawnedProcess] = []

        init() throws {
            let n = Int.random(in: 0..<250)
            let tag = String(format: "%05x", Int.random(in: 0..<0xfffff))
            namespace = "sbxe2e-\(tag)"
            hostInterface = "sbxe2e\(tag)"
            hostAddress = "10.251.\(n).1"
            serverAddress = "10.251.\(n).2"
            var template = Array("/tmp/sbxe2e-net-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw TestError("mkdtemp failed") }
            directory = String(cString: made)
            chmod(directory, 0o755)
        }

        func setUp() async throws {
            let ip = "/usr/sbin/ip"
            try check([ip, "netns", "add", namespace])
            try check([ip, "link", "add", hostInterface, "type", "veth", "peer", "name", "eth0", "netns", namespace])
            try check([ip, "addr", "add", hostAddress + "/24", "dev", hostInterface])
            try check([ip, "link", "set", hostInterface, "up"])
            try check([ip, "-n", namespace, "addr", "add", serverAddress + "/24", "dev", "eth0"])
            try check([ip, "-n", namespace, "link", "set", "eth0", "up"])
            try check([ip, "-n", namespace, "link", "set", "lo", "up"])
            try "hello from the allowed host\n".write(toFile: directory + "/hello.txt", atomically: true, encoding: .utf8)
            for port in [80, 22, 8080] {
                servers.append(try SpawnedProcess(
                    [ip, "netns", "exec", namespace, "/usr/bin/python3", "-m", "http.server", String(port), "--bind", serverAddress,
                     "--directory", directory], logPath: directory + "/server-\(port).log"))
            }
            for port in [80, 22, 8080] {
                var up = false
                for _ in 0..<200 {
                    let probe = try TestHost.run(["/usr/bin/curl", "-s", "-o", "/dev/null", "-m", "2", "http://\(serverAddress):\(port)/hello.txt"])
                    if probe.status == 0 { up = true; break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                guard up else { throw TestError("test server on \(serverAddress):\(port) did not start") }
            }
        }

        /// Stops the servers and removes the namespace (and with it both ends of the veth pair).
        func tearDown() async {
            for server in servers {
                server.kill(SIGKILL)
                _ = try? await server.wait(seconds: 10)
            }
            servers = []
            // Deleting one end removes the pair at once (a namespace's own teardown is asynchronous).
            _ = try? TestHost.run(["/usr/sbin/ip", "link", "del", hostInterface])
            _ = try? TestHost.run(["/usr/sbin/ip", "netns", "del", namespace])
            try? FileManager.default.removeItem(atPath: directory)
        }

        var leftovers: [String] {
            var found: [String] = []
            if FileManager.default.fileExists(atPath: "/run/netns/" + namespace) { found.append("/run/netns/" + namespace) }
            if (try? TestHost.run(["/usr/sbin/ip", "link", "show", hostInterface]))?.status == 0 { found.append(hostInterface) }
            return found
        }

        private func check(_ argv: [String]) throws {
            let result = try TestHost.run(argv)
            guard result.status == 0 else { throw TestError("\(argv.joined(separator: " ")): \(result.stderr)") }
        }
    }

    /// The bundled presets plus the test policies, in a directory the daemon loads.
    static func writePolicies(into directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let presets = TestHost.packageRoot.appendingPathComponent("policies").path
        for name in try FileManager.default.contentsOfDirectory(atPath: presets) where name.hasSuffix(".yaml") {
            try FileManager.default.copyItem(atPath: presets + "/" + name, toPath: directory + "/" + name)
        }
        func derived(_ preset: String, _ replace: [(String, String)]) throws -> String {
            var text = try String(contentsOfFile: presets + "/" + preset + ".yaml", encoding: .utf8)
            for (old, new) in replace {
                guard text.contains(old) else { throw TestError("preset \(preset) no longer contains \(old)") }
                text = text.replacingOccurrences(of: old, with: new)
            }
            return text
        }
        // `network`: any port but 22, 23, 25, 53, to the listed hosts.
        try derived("network", [(#"allowed_hosts: ["api.openai.com", "github.com", "*.githubusercontent.com"]"#,
                                 #"allowed_hosts: ["allowed.test", "*.wild.test"]"#)])
            .write(toFile: directory + "/egress-test.yaml", atomically: true, encoding: .utf8)
        // `web-scraper`: ports 80 and 443 only.
        // `database-readonly` naming a table that does not exist.
        try derived("database-readonly", [("tables: [public.documents, public.index_stats]", "tables: [public.no_such_table]")])
            .write(toFile: directory + "/db-missing-test.yaml", atomically: true, encoding: .utf8)
        try derived("web-scraper", [("    - example.com\n    - \"*.example.com\"        # any name below example.com (not example.com itself)\n    - en.wikipedia.org\n",
                                     "    - allowed.test\n")])
            .write(toFile: directory + "/scraper-test.yaml", atomically: true, encoding: .utf8)
    }

    private func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(T.self, from: Data(text.utf8))
    }

    private func json(_ value: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: value), as: UTF8.self)
    }

    /// One-shot run of `script` under `policy` (with the policy's own time limit); returns the result.
    private func run(_ daemon: EndToEndTests.Daemon, policy: String, _ script: String) throws -> ExecutionResult {
        let response = try daemon.curl("POST", "/v1/run", as: Self.user,
                                       json: try json(["command": ["/bin/sh", "-c", script], "policy": policy]))
        guard response.status == 200 else { throw TestError("run under \(policy): \(response.status) \(response.body)") }
        return try decodeJSON(ExecutionResult.self, response.body)
    }

    private func events(_ daemon: EndToEndTests.Daemon, _ execution: UUID) throws -> [EgressEventRecord] {
        let response = try daemon.curl("GET", "/v1/executions/\(execution.uuidString.lowercased())/egress", as: Self.user)
        guard response.status == 200 else { throw TestError("egress events: \(response.status) \(response.body)") }
        let list = try decodeJSON(EgressEventList.self, response.body)
        #expect(list.executionID == execution)
        return list.events
    }

    private func withNetworkDaemon(_ body: (EndToEndTests.Daemon, Internet) async throws -> Void) async throws {
        _ = try TestHost.ensureUser(Self.user, groups: ["sandboxd"])
        let internet = try Internet()
        let daemon = try EndToEndTests.Daemon(extraConfiguration: "policy_directory: PLACEHOLDER")
        let policies = daemon.directory + "/policies"
        try Self.writePolicies(into: policies)
        let config = try String(contentsOfFile: daemon.config, encoding: .utf8).replacingOccurrences(of: "PLACEHOLDER", with: policies)
        try config.write(toFile: daemon.config, atomically: true, encoding: .utf8)
        let hosts = daemon.directory + "/hosts"
        try """
        127.0.0.1 localhost
        \(internet.serverAddress) allowed.test www.wild.test unlisted.test
        \(internet.hostAddress) host.wild.test
        169.254.169.254 metadata.wild.test
        127.0.0.1 loopback.wild.test


        """.write(toFile: hosts, atomically: true, encoding: .utf8)
        // The daemon's own view of /etc/hosts names the test servers; the host's file is untouched.
        daemon.launcher = ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                           "mount --bind \"$0\" /etc/hosts && exec \"$@\"", hosts]
        do {
            try await internet.setUp()
            try await daemon.start()
            try await body(daemon, internet)
        } catch {
            print("daemon log:\n\(daemon.logText)")
            await daemon.cleanup()
            await internet.tearDown()
            throw error
        }
        await daemon.cleanup()
        await internet.tearDown()
        #expect(internet.leftovers.isEmpty, "test network left behind: \(internet.leftovers)")
    }

    @Test("egress: listed host through the proxy; unlisted host, blocked port, IP literals, --noproxy and DNS all fail; every attempt is an event of its execution")
    func egressAllowlist() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        try await withNetworkDaemon { daemon, internet in
            // The allowed host by name, through the proxy the environment names.
            let allowed = try run(daemon, policy: "egress-test",
                                  #"echo "proxy=$http_proxy HTTPS=$HTTPS_PROXY no=$NO_PROXY"; /usr/bin/curl -sS -m 20 http://allowed.test/hello.txt"#)
            #expect(allowed.exitCode == 0, "\(allowed.stderr)")
            #expect(allowed.stdout.contains("proxy=http://127.0.0.1:3128 HTTPS=http://127.0.0.1:3128 no=localhost,127.0.0.1,::1"), "\(allowed.stdout)")
            #expect(allowed.stdout.contains("hello from the allowed host"), "\(allowed.stdout) \(allowed.stderr)")
            let allowedEvents = try events(daemon, allowed.executionID)
            #expect(allowedEvents.count == 1, "\(allowedEvents)")
            if let event = allowedEvents.first {
                #expect(event.decision == .allowed && event.host == "allowed.test" && event.port == 80 && event.method == "GET")
                #expect(event.address == internet.serverAddress && event.bytesDown > 0 && event.executionID == allowed.executionID)
                #expect(event.sandboxID == allowed.sandboxID)
            }

            // HTTPS-style CONNECT tunnel to the allowed host (plain HTTP inside the tunnel).
            let tunnel = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 20 --proxytunnel http://allowed.test/hello.txt")
            #expect(tunnel.exitCode == 0 && tunnel.stdout.contains("hello from the allowed host"), "\(tunnel.stdout) \(tunnel.stderr)")
            #expect(try events(daemon, tunnel.executionID).map(\.method) == ["CONNECT"])

            // An unlisted host (same server, other name): 403 from the proxy, a denial event.
            let unlisted = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 20 -o /dev/null -w '%{http_code}' http://unlisted.test/hello.txt")
            #expect(unlisted.stdout == "403", "\(unlisted.stdout) \(unlisted.stderr)")
            let denied = try events(daemon, unlisted.executionID)
            #expect(denied.count == 1 && denied.first?.decision == .denied && denied.first?.host == "unlisted.test"
                    && denied.first?.status == 403 && (denied.first?.reason.contains("host not allowed") ?? false), "\(denied)")

            // A blocked port of a listed host, with a server listening there.
            let blocked = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 20 -o /dev/null -w '%{http_code}' http://allowed.test:22/hello.txt")
            #expect(blocked.stdout == "403", "\(blocked.stdout) \(blocked.stderr)")
            let blockedEvents = try events(daemon, blocked.executionID)
            #expect(blockedEvents.first?.reason.contains("port 22 is blocked") ?? false, "\(blockedEvents)")
            // web-scraper: only 80 and 443, so 8080 of the listed host is refused too.
            let scraper = try run(daemon, policy: "scraper-test",
                                  "/usr/bin/curl -sS -m 20 -o /dev/null -w '%{http_code} ' http://allowed.test:8080/hello.txt; /usr/bin/curl -sS -m 20 http://allowed.test/hello.txt")
            #expect(scraper.stdout.hasPrefix("403 ") && scraper.stdout.contains("hello from the allowed host"), "\(scraper.stdout) \(scraper.stderr)")
            #expect(try events(daemon, scraper.executionID).map(\.decision) == [.denied, .allowed])

            // IP literals through the proxy: the server's, the metadata service's, the host's loopback.
            for target in ["http://\(internet.serverAddress)/hello.txt", "http://169.254.169.254/latest/meta-data/", "http://2130706433:5432/"] {
                let literal = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 20 -o /dev/null -w '%{http_code}' --noproxy '' '\(target)'")
                #expect(literal.stdout == "403", "\(target): \(literal.stdout) \(literal.stderr) status \(literal.status) signal \(String(describing: literal.signal))")
                #expect(try events(daemon, literal.executionID).first?.reason.contains("IP addresses are not allowed") ?? false)
            }
            // Names under a listed wildcard that resolve to this host, the metadata service or loopback:
            // refused after resolution (only a literally listed name may reach those).
            for (name, why) in [("host.wild.test", "this host"), ("metadata.wild.test", "link-local"), ("loopback.wild.test", "loopback")] {
                let refused = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 20 -o /dev/null -w '%{http_code}' http://\(name):5432/")
                #expect(refused.stdout == "403", "\(name): \(refused.stdout) \(refused.stderr)")
                let event = try events(daemon, refused.executionID).first
                #expect(event?.decision == .denied && event?.address != nil, "\(name): \(String(describing: event))")
                #expect(event?.reason.contains(why) ?? false, "\(name): \(String(describing: event?.reason)) should mention \(why)")
            }

            // Around the proxy: no route, no resolver.
            let direct = try run(daemon, policy: "egress-test",
                                 "/usr/bin/curl -sS -m 10 --noproxy '*' http://\(internet.serverAddress)/hello.txt; echo \"exit=$?\"")
            #expect(direct.stdout.contains("exit=7") && !direct.stdout.contains("hello from"), "\(direct.stdout) \(direct.stderr)")
            let noproxy = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 10 --noproxy '*' http://allowed.test/hello.txt; echo \"exit=$?\"")
            #expect(noproxy.stdout.contains("exit=6") && !noproxy.stdout.contains("hello from"), "\(noproxy.stdout) \(noproxy.stderr)")
            #expect(try events(daemon, noproxy.executionID).isEmpty)
            let dns = try run(daemon, policy: "egress-test", """
                /usr/bin/getent hosts allowed.test; echo "getent=$?"
                /usr/bin/python3 -c 'import socket
                try:
                    socket.getaddrinfo("allowed.test", 80); print("resolved")
                except OSError as e:
                    print("lookup failed", e.errno)'
                /usr/bin/python3 -c 'import socket
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.sendto(b"x", ("\(internet.hostAddress)", 53)); print("sent")
                except OSError as e:
                    print("udp failed", e.errno)'
                /usr/bin/cat /etc/resolv.conf | /usr/bin/wc -c
                """)
            #expect(dns.stdout.contains("getent=2") && dns.stdout.contains("lookup failed") && !dns.stdout.contains("resolved"), "\(dns.stdout) \(dns.stderr)")
            #expect(dns.stdout.contains("udp failed 101") && dns.stdout.hasSuffix("0\n"), "\(dns.stdout)")
            // localhost stays direct (NO_PROXY): the sandbox's own loopback, where nothing listens.
            let loopback = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 10 http://localhost:5432/; echo \"exit=$?\"")
            #expect(loopback.stdout.contains("exit=7"), "\(loopback.stdout)")
            // Forced through the proxy, localhost is a name the policy does not list.
            let viaProxy = try run(daemon, policy: "egress-test", "/usr/bin/curl -sS -m 10 -o /dev/null -w '%{http_code}' --noproxy '' http://localhost:5432/")
            #expect(viaProxy.stdout == "403", "\(viaProxy.stdout) \(viaProxy.stderr)")

            // A request cannot point the variables elsewhere.
            let override = try daemon.curl("POST", "/v1/run", as: Self.user, json: try json([
                "command": ["/bin/sh", "-c", "echo $http_proxy"], "policy": "egress-test", "env": ["http_proxy": "http://10.0.0.1:1"]]))
            if override.status == 200 {
                #expect(try decodeJSON(ExecutionResult.self, override.body).stdout == "http://127.0.0.1:3128\n")
            } else {
                #expect(override.status == 400, "\(override.body)")
            }

            // A policy without allowed_hosts: no proxy, no variables, no way out.
            let none = try run(daemon, policy: "default", "echo \"[$http_proxy]\"; /usr/bin/curl -sS -m 10 --noproxy '' -x http://127.0.0.1:3128 http://allowed.test/; echo \"exit=$?\"")
            #expect(none.stdout.hasPrefix("[]") && none.stdout.contains("exit=7"), "\(none.stdout) \(none.stderr)")

            // Persistent sandbox: events of each exec; the proxy is gone once the sandbox is.
            let created = try daemon.curl("POST", "/v1/sandboxes", as: Self.user, json: #"{"policy":"egress-test"}"#)
            #expect(created.status == 201, "\(created.body)")
            let sandbox = try decodeJSON(SandboxDescription.self, created.body)
            var executions: [UUID] = []
            for host in ["allowed.test", "unlisted.test", "www.wild.test"] {
                let exec = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.user, json: try json([
                    "command": ["/usr/bin/curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", "http://\(host)/hello.txt"]]))
                #expect(exec.status == 200, "\(exec.body)")
                let result = try decodeJSON(ExecutionResult.self, exec.body)
                #expect(result.stdout == (host == "unlisted.test" ? "403" : "200"), "\(host): \(result.stdout) \(result.stderr)")
                executions.append(result.executionID)
            }
            var perExec: [[EgressEventRecord]] = []
            for execution in executions { perExec.append(try events(daemon, execution)) }
            #expect(perExec.map { $0.map(\.host) } == [["allowed.test"], ["unlisted.test"], ["www.wild.test"]], "\(perExec)")
            #expect(perExec.map { $0.map(\.decision) } == [[.allowed], [.denied], [.allowed]])
            // The listener lives in the sandbox's namespace (127.0.0.1:3128 listening in its
            // /proc/net/tcp) and is held by the daemon; destroying the sandbox closes it.
            let tcp = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.user, json: #"{"command":["/usr/bin/cat","/proc/net/tcp"]}"#)
            let table: String = try decodeJSON(ExecutionResult.self, tcp.body).stdout
            var inodes: [String] = []
            for line in table.split(separator: "\n") {
                let fields: [Substring] = line.split(separator: " ")
                // local address 127.0.0.1:3128, state 0A (LISTEN), inode in the 10th field
                if fields.count > 9, fields[1] == "0100007F:0C38", fields[3] == "0A" { inodes.append(String(fields[9])) }
            }
            let inode = try #require(inodes.first, "no listener on 127.0.0.1:3128 in the sandbox: \(tcp.body)")
            let daemonPID = try #require(daemon.process?.pid)
            func daemonHoldsListener() -> Bool {
                let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemonPID)/fd")) ?? []
                return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(daemonPID)/fd/\($0)")) == "socket:[\(inode)]" }
            }
            #expect(daemonHoldsListener(), "the daemon holds no socket with inode \(inode)")
            #expect(try daemon.curl("DELETE", "/v1/sandboxes/\(sandbox.sandboxID)", as: Self.user).status == 204)
            #expect(!daemonHoldsListener(), "the proxy's listener outlived its sandbox")

            // The denial is in egress_events, tied to its execution, as the database has it.
            let rows = try psql(daemon, "SELECT decision || ' ' || host || ' ' || coalesce(status::text, '-') FROM egress_events WHERE execution_id = '\(unlisted.executionID.uuidString.lowercased())'")
            #expect(rows == "denied unlisted.test 403", "\(rows)")
        }
    }

    // MARK: - Database tool

    /// Runs SQL on the daemon's embedded cluster as its superuser.
    func psql(_ daemon: EndToEndTests.Daemon, _ sql: String, database: String = "sandboxd") throws -> String {
        let password = try String(contentsOfFile: daemon.directory + "/state/postgres/superuser.password", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try TestHost.run(["/usr/lib/postgresql/15/bin/psql", "-X", "-h", daemon.directory + "/state/postgres/socket", "-U", "postgres",
                                       "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                                      environment: ["PGPASSWORD": password, "PATH": "/usr/bin:/bin"])
        guard result.status == 0 else { throw TestError("psql \(sql): \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("database-readonly preset: SELECT works; writes, DDL, COPY TO PROGRAM, record tables and server files fail; the role is dropped with the sandbox, and by the next start after a kill -9")
    func databaseTool() async throws {
        guard TestHost.isRoot else { print("skipped: sandboxd needs root"); return }
        _ = try TestHost.ensureUser(Self.user, groups: ["sandboxd"])
        let daemon = try EndToEndTests.Daemon(extraConfiguration: "policy_directory: PLACEHOLDER")
        let policies = daemon.directory + "/policies"
        try Self.writePolicies(into: policies)
        let config = try String(contentsOfFile: daemon.config, encoding: .utf8).replacingOccurrences(of: "PLACEHOLDER", with: policies)
        try config.write(toFile: daemon.config, atomically: true, encoding: .utf8)
        do {
            try await daemon.start()
            try await databaseChecks(daemon)
        } catch {
            print("daemon log:\n\(daemon.logText)")
            await daemon.cleanup()
            throw error
        }
        await daemon.cleanup()
    }

    private func databaseChecks(_ daemon: EndToEndTests.Daemon) async throws {
        // A policy naming a table that does not exist is refused at creation, naming it; no role is left.
        let missing = try daemon.curl("POST", "/v1/sandboxes", as: Self.user, json: #"{"policy":"db-missing-test"}"#)
        #expect(missing.status == 400 && missing.body.contains("no_such_table"), "\(missing.body)")
        let missingRun = try daemon.curl("POST", "/v1/run", as: Self.user, json: #"{"command":["true"],"policy":"db-missing-test"}"#)
        #expect(missingRun.status == 400 && missingRun.body.contains("no_such_table"), "\(missingRun.body)")
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sbx_ro_%'") == "0")

        // The preset's tables are part of sandboxd's schema (migration 1); give them rows.
        _ = try psql(daemon, "INSERT INTO public.documents (filename, content) VALUES ('a.txt', 'first document'), ('b.txt', 'second document')")
        let created = try daemon.curl("POST", "/v1/sandboxes", as: Self.user, json: #"{"policy":"database-readonly"}"#)
        #expect(created.status == 201, "\(created.body)")
        let sandbox = try decodeJSON(SandboxDescription.self, created.body)
        let role = ReadOnlyDatabaseAccess.roleName(forSandbox: sandbox.sandboxID)
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname = '\(role)'") == "1")

        func sql(_ statement: String) throws -> ExecutionResult {
            let exec = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.user, json: try json([
                "command": ["/usr/lib/postgresql/15/bin/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", statement]]))
            guard exec.status == 200 else { throw TestError("exec \(statement): \(exec.status) \(exec.body)") }
            return try decodeJSON(ExecutionResult.self, exec.body)
        }
        let environment = try daemon.curl("POST", "/v1/sandboxes/\(sandbox.sandboxID)/exec", as: Self.user, json: try json([
            "command": ["/bin/sh", "-c", "echo $PGHOST $PGUSER $PGDATABASE; ls /run/postgresql/.s.PGSQL.*; touch /run/postgresql/x; echo touch=$?"]]))
        let shown = try decodeJSON(ExecutionResult.self, environment.body)
        #expect(shown.stdout.hasPrefix("/run/postgresql \(role) sandboxd\n"), "\(shown.stdout) \(shown.stderr)")
        #expect(shown.stdout.contains("/run/postgresql/.s.PGSQL.") && shown.stdout.contains("touch=1"), "\(shown.stdout) \(shown.stderr)")

        let select = try sql("SELECT content FROM documents ORDER BY filename")
        #expect(select.exitCode == 0 && select.stdout == "first document\nsecond document\n", "\(select.stdout) \(select.stderr)")
        let refused: [(String, String)] = [
            ("INSERT INTO documents (filename) VALUES ('x')", "read-only transaction"),
            ("UPDATE documents SET content = 'changed'", "read-only transaction"),
            ("BEGIN READ WRITE; UPDATE documents SET content = 'changed'; COMMIT", "permission denied"),
            ("BEGIN READ WRITE; DELETE FROM documents; COMMIT", "permission denied"),
            ("CREATE TABLE public.evil (x int)", "read-only transaction"),
            ("BEGIN READ WRITE; CREATE TABLE public.evil (x int); COMMIT", "permission denied"),
            ("COPY documents TO PROGRAM 'touch /tmp/sbxe2e-pwned'", "pg_execute_server_program"),
            ("SELECT count(*) FROM agent_executions", "permission denied"),
            ("SELECT count(*) FROM egress_events", "permission denied"),
            ("SELECT pg_read_file('/etc/passwd')", "permission denied"),
        ]
        for (statement, expected) in refused {
            let result = try sql(statement)
            #expect(result.exitCode != 0 && result.stderr.contains(expected), "\(statement): \(result.exitCode.map(String.init) ?? "-") \(result.stdout) \(result.stderr)")
        }
        #expect(try psql(daemon, "SELECT string_agg(content, ',' ORDER BY filename) FROM public.documents") == "first document,second document")
        #expect(try psql(daemon, "SELECT count(*) FROM pg_tables WHERE tablename = 'evil'") == "0")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/sbxe2e-pwned"))

        #expect(try daemon.curl("DELETE", "/v1/sandboxes/\(sandbox.sandboxID)", as: Self.user).status == 204)
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname = '\(role)'") == "0")

        // One-shot: the role exists during the run and is gone after it.
        let oneShot = try daemon.curl("POST", "/v1/run", as: Self.user, json: try json([
            "command": ["/bin/sh", "-c", "echo $PGUSER; /usr/lib/postgresql/15/bin/psql -X -At -c 'SELECT count(*) FROM documents'"],
            "policy": "database-readonly"]))
        #expect(oneShot.status == 200, "\(oneShot.body)")
        let result = try decodeJSON(ExecutionResult.self, oneShot.body)
        let oneShotRole = ReadOnlyDatabaseAccess.roleName(forSandbox: result.sandboxID)
        #expect(result.stdout == "\(oneShotRole)\n2\n", "\(result.stdout) \(result.stderr)")
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sbx_ro_%'") == "0")

        // A request cannot replace the tool's variables.
        let override = try daemon.curl("POST", "/v1/run", as: Self.user, json: try json([
            "command": ["/bin/sh", "-c", "echo $PGUSER"], "policy": "database-readonly", "env": ["PGUSER": "postgres"]]))
        if override.status == 200 {
            #expect(try decodeJSON(ExecutionResult.self, override.body).stdout.hasPrefix("sbx_ro_"))
        } else {
            #expect(override.status == 400, "\(override.body)")
        }
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sbx_ro_%'") == "0")

        // A daemon killed with a live database sandbox leaves its role; the next start drops it
        // before serving.
        let survivor = try daemon.curl("POST", "/v1/sandboxes", as: Self.user, json: #"{"policy":"database-readonly"}"#)
        #expect(survivor.status == 201, "\(survivor.body)")
        let survivorRole = ReadOnlyDatabaseAccess.roleName(forSandbox: try decodeJSON(SandboxDescription.self, survivor.body).sandboxID)
        _ = try await daemon.stop(signal: SIGKILL)
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname = '\(survivorRole)'") == "1")
        try await daemon.start()
        #expect(try psql(daemon, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sbx_ro_%'") == "0")
        #expect(daemon.logText.contains(survivorRole), "the start should log the dropped role")
    }
}
#endif
