import Foundation
import Logging
import Testing
@testable import ControlAPI
import DaemonMetrics
import Supervisor

/// The control protocol through the real socket: real curl, real users, real peer credentials.
/// The service behind it is the real Supervisor with no engine and no database, so everything here
/// is the protocol layer's own behaviour (errors, limits, identity), not a stand-in's.
@Suite(.serialized)
struct ProtocolTests {
    static let alice = "sbxt-alice"
    static let bob = "sbxt-bob"
    static let admin = "sbxt-admin"
    static let outsider = "sbxt-outsider"

    private func makeSupervisor() -> Supervisor {
        var logger = Logger(label: "test.supervisor")
        logger.logLevel = .warning
        return Supervisor(configuration: .init(), engine: nil, records: nil, logger: logger)
    }

    private func withServer(_ configuration: ControlAPIConfiguration = .init(), metrics: DaemonMetrics? = nil,
                            _ body: (TestServer) async throws -> Void) async throws {
        let server = try await TestServer(service: makeSupervisor(), configuration: configuration, metrics: metrics)
        do {
            try await body(server)
        } catch {
            try await server.stop()
            throw error
        }
        try await server.stop()
    }

    private func errorBody(_ text: String) throws -> APIErrorBody.Content {
        try JSONDecoder().decode(APIErrorBody.self, from: Data(text.utf8)).error
    }

    @Test("the socket is mode 0660, group sandboxd, and is removed on shutdown")
    func socketModeAndGroup() async throws {
        guard TestHost.isRoot else { print("skipped: needs root to chown the socket"); return }
        try TestHost.ensureGroup("sandboxd")
        let server = try await TestServer(service: makeSupervisor())
        var info = stat()
        #expect(lstat(server.socketPath, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_mode & 0o777 == 0o660)
        #expect(info.st_gid == getgrnam("sandboxd")!.pointee.gr_gid)
        try await server.stop()
        #expect(access(server.socketPath, F_OK) != 0)
    }

    @Test("each caller is identified by its peer credentials; root and sandboxd-admin members are admins")
    func peerCredentials() async throws {
        guard TestHost.isRoot else { print("skipped: needs root to create users"); return }
        let aliceUID = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        let bobUID = try TestHost.ensureUser(Self.bob, groups: ["sandboxd"])
        let adminUID = try TestHost.ensureUser(Self.admin, groups: ["sandboxd", "sandboxd-admin"])
        try await withServer { server in
            for (user, uid, admin) in [(Self.alice, aliceUID, false), (Self.bob, bobUID, false), (Self.admin, adminUID, true)] {
                let response = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/info", as: user, contentType: nil)
                #expect(response.status == 200, "\(user): \(response.body) \(response.result.stderr)")
                let info = try JSONDecoder().decode(InfoResponse.self, from: Data(response.body.utf8))
                #expect(info.caller.uid == uid)
                #expect(info.caller.admin == admin, "\(user) admin")
                #expect(info.caller.pid > 0)
            }
            let root = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/info", contentType: nil)
            let info = try JSONDecoder().decode(InfoResponse.self, from: Data(root.body.utf8))
            #expect(info.caller.uid == 0 && info.caller.admin)
        }
    }

    @Test("a user outside group sandboxd cannot connect at all")
    func outsiderRefused() async throws {
        guard TestHost.isRoot else { print("skipped: needs root to create users"); return }
        _ = try TestHost.ensureUser(Self.outsider, groups: [])
        try await withServer { server in
            let response = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/health", as: Self.outsider, contentType: nil)
            #expect(response.status == 0)
            #expect(response.result.status == 7, "curl exit \(response.result.status): \(response.result.stderr)") // couldn't connect
            let ctl = try await TestHost.runOnThread(["/usr/sbin/runuser", "-u", Self.outsider, "--", TestHost.product("sandboxctl"),
                                        "info", "--socket", server.socketPath])
            #expect(ctl.status == 125)
            #expect(ctl.stderr.contains("permission denied"), "\(ctl.stderr)")
        }
    }

    @Test("health answers ok")
    func health() async throws {
        try await withServer { server in
            let response = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/health", contentType: nil)
            #expect(response.status == 200)
            let health = try JSONDecoder().decode(HealthResponse.self, from: Data(response.body.utf8))
            #expect(health.status == "ok")
        }
    }

    @Test("malformed JSON, unknown fields, wrong types and missing fields are 400 with the one error shape")
    func badBodies() async throws {
        try await withServer { server in
            let cases: [(String, String, String)] = [
                (#"{"command": ["true"],}"#, "invalid_json", "line 1, column 22"),
                (#"{"command": ["true"], "timout": 3}"#, "unknown_field", "\"timout\""),
                (#"{"code": {"language": "python", "source": "1", "lang": "x"}}"#, "unknown_field", "\"code.lang\""),
                (#"{"command": "true"}"#, "invalid_field", "\"command\""),
                (#"{"code": {"language": "python"}}"#, "missing_field", "code.source"),
                (#"{}"#, "missing_field", "\"command\" or \"code\""),
                (#"{"command": ["true"], "isolation_level": 9}"#, "invalid_field", "isolation_level"),
                (#"[1]"#, "invalid_json", "JSON object"),
            ]
            for (body, code, fragment) in cases {
                let response = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run", body: Data(body.utf8))
                #expect(response.status == 400, "\(body) → \(response.status) \(response.body)")
                let error = try errorBody(response.body)
                #expect(error.code == code, "\(body) → \(error.code)")
                #expect(error.message.contains(fragment), "\(body) → \(error.message)")
            }
        }
    }

    @Test("a body that is not application/json is 415")
    func wrongContentType() async throws {
        try await withServer { server in
            for type in ["application/x-www-form-urlencoded", "text/plain"] {
                let response = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run", body: Data(#"{"command":["true"]}"#.utf8), contentType: type)
                #expect(response.status == 415)
                #expect(try errorBody(response.body).code == "unsupported_media_type")
            }
            let charset = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run", body: Data(#"{"command":["true"]}"#.utf8),
                                            contentType: "application/json; charset=utf-8")
            #expect(charset.status != 415)
        }
    }

    @Test("a body over the limit is 413 and the server keeps serving")
    func hugeBody() async throws {
        try await withServer(.init(maxBodyBytes: 64 * 1024)) { server in
            let huge = Data(#"{"command":["true"],"stdin":""#.utf8) + Data(repeating: UInt8(ascii: "a"), count: 8 << 20) + Data(#""}"#.utf8)
            let response = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run", body: huge)
            #expect(response.status == 413, "\(response.body) \(response.result.stderr)")
            #expect(try errorBody(response.body).code == "payload_too_large")
            // Without Content-Length (chunked): the limit still holds while reading.
            let chunked = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run", body: huge, extra: ["-H", "Transfer-Encoding: chunked"])
            #expect(chunked.status == 413, "\(chunked.body) \(chunked.result.stderr)")
            let after = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/health", contentType: nil)
            #expect(after.status == 200)
        }
    }

    @Test("unknown routes and methods get the JSON error shape, never an empty answer")
    func unknownRoutes() async throws {
        try await withServer { server in
            for (method, path) in [("GET", "/v2/anything"), ("GET", "/"), ("DELETE", "/v1/health"), ("PATCH", "/v1/sandboxes")] {
                let response = try await TestHost.curlOnThread(server.socketPath, method, path, contentType: nil)
                #expect([404, 405].contains(response.status), "\(method) \(path) → \(response.status)")
                let error = try errorBody(response.body)
                #expect(["not_found", "method_not_allowed"].contains(error.code))
                #expect(error.message.contains(path))
            }
            let missing = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/sandboxes/sbx-0000000000000000", contentType: nil)
            #expect(missing.status == 404)
            #expect(try errorBody(missing.body).code == "not_found")
            let badID = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/executions/not-a-uuid", contentType: nil)
            #expect(badID.status == 404)
        }
    }

    @Test("query parameters are checked: unknown names, bad limits, bad stream values")
    func queryParameters() async throws {
        try await withServer { server in
            let unknown = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/executions?sandbox=x", contentType: nil)
            #expect(unknown.status == 400)
            #expect(try errorBody(unknown.body).code == "unknown_field")
            let limit = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/executions?limit=100000", contentType: nil)
            #expect(limit.status == 400)
            let stream = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run?stream=sse", body: Data(#"{"command":["true"]}"#.utf8))
            #expect(stream.status == 400)
            #expect(try errorBody(stream.body).message.contains("ndjson"))
        }
    }

    @Test("without a database nothing runs and history says why (503), instead of running unrecorded")
    func noDatabase() async throws {
        try await withServer { server in
            let run = try await TestHost.curlOnThread(server.socketPath, "POST", "/v1/run", body: Data(#"{"command":["true"]}"#.utf8))
            #expect(run.status == 503)
            #expect(try errorBody(run.body).message.contains("database"))
            let history = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/executions", contentType: nil)
            #expect(history.status == 503)
        }
    }

    @Test("a second server refuses a live socket; a stale socket file is replaced; a regular file is never replaced")
    func socketTakeover() async throws {
        try await withServer { server in
            #expect(throws: ControlListenerError.self) {
                try ControlListener.path(server.socketPath, group: nil).open()
            }
            let health = try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/health", contentType: nil)
            #expect(health.status == 200)
        }
        // A stale socket: bound, then its listener closed.
        let directory = "/tmp/sandboxd-stale-\(getpid())"
        mkdir(directory, 0o755)
        let stale = directory + "/s.sock"
        // Also when a check below fails: nothing of this test stays in /tmp.
        defer { unlink(stale); rmdir(directory) }
        // Bound and listening in a process that then exits: no copy of that listener ever exists
        // in this one, where any child another test starts (curl, a daemon) holds a copy of every
        // descriptor until its exec. (Sandboxes are cloned by the spawner, never from here.)
        let made = try await TestHost.runOnThread(["/usr/bin/python3", "-c",
                                     "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()", stale])
        try #require(made.status == 0 && FileManager.default.fileExists(atPath: stale), "\(made.stderr)")
        let second = try ControlListener.path(stale, group: nil).open()
        close(second.fd)
        unlink(stale)
        // A regular file in the way is an error, and it is left alone.
        let file = directory + "/f.sock"
        _ = FileManager.default.createFile(atPath: file, contents: Data("keep".utf8))
        defer { unlink(file) }
        #expect(throws: ControlListenerError.self) { try ControlListener.path(file, group: nil).open() }
        #expect(FileManager.default.contents(atPath: file) == Data("keep".utf8))
    }

    struct Closing: Sendable {
        var ready: Bool
        var count: Int
        var error: Int32
        var received: [UInt8]
    }

    /// Waits (on its own thread, not the test's cooperative pool, which other tests share) until
    /// `fd` is readable, then reads to EOF or error. Signals meant for other tests in this process
    /// interrupt poll and read (EINTR): retried.
    static func waitForClose(_ fd: Int32, giveUpSeconds: Int) async -> Closing {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let giveUp = ContinuousClock.now + .seconds(giveUpSeconds)
                var ready: Int32 = 0
                repeat {
                    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    ready = poll(&entry, 1, 500)
                } while (ready == 0 || (ready < 0 && errno == EINTR)) && ContinuousClock.now < giveUp
                guard ready == 1 else {
                    continuation.resume(returning: Closing(ready: false, count: -1, error: errno, received: []))
                    return
                }
                var backstop = timeval(tv_sec: 30, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &backstop, socklen_t(MemoryLayout<timeval>.size))
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 512)
                var count: Int
                repeat {
                    count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if count > 0 { received += buffer.prefix(count) }
                } while (count > 0 || (count < 0 && errno == EINTR)) && received.count < 65536
                continuation.resume(returning: Closing(ready: true, count: count, error: errno, received: received))
            }
        }
    }

    @Test("a client that never finishes its request head is disconnected")
    func slowHeader() async throws {
        try await withServer(.init(headerTimeoutSeconds: 1)) { server in
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in server.socketPath.utf8.enumerated() { raw[index] = byte }
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(connected == 0)
            let partial = Array("GET /v1/health HTTP/1.1\r\nHost: x\r\n".utf8)
            _ = partial.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            // The server must close within the header timeout; 60 s is only this test's own give-up point.
            let closing = await Self.waitForClose(fd, giveUpSeconds: 60)
            #expect(closing.ready, "the server kept the connection open for 60 s")
            // Closed: EOF (or a reset when the server closed with our partial head unread), after at
            // most a 408 error response.
            #expect(closing.count == 0 || (closing.count < 0 && closing.error == ECONNRESET),
                    "expected the server to close the connection; read returned \(closing.count) errno \(closing.error)")
            let answer = String(decoding: closing.received, as: UTF8.self)
            #expect(closing.received.isEmpty || answer.hasPrefix("HTTP/1.1 408"), "the server answered a request it never fully received: \(answer)")
        }
    }

    @Test("sandboxctl says the daemon is not running when there is no socket, and exits 125")
    func sandboxctlNotRunning() async throws {
        let result = try await TestHost.runOnThread([TestHost.product("sandboxctl"), "info", "--socket", "/tmp/no-such-dir-\(getpid())/sandboxd.sock"])
        #expect(result.status == 125)
        #expect(result.stderr.contains("sandboxd is not running"), "\(result.stderr)")
        let refused = "/tmp/sandboxd-refused-\(getpid()).sock"
        let listener = try ControlListener.path(refused, group: nil).open()
        close(listener.fd) // the file stays, nobody listens: connection refused
        defer { unlink(refused) }
        let second = try await TestHost.runOnThread([TestHost.product("sandboxctl"), "ps", "--socket", refused])
        #expect(second.status == 125)
        #expect(second.stderr.contains("not running"), "\(second.stderr)")
    }

    @Test("sandboxctl info works over the socket, as text and as JSON")
    func sandboxctlInfo() async throws {
        try await withServer { server in
            let text = try await TestHost.runOnThread([TestHost.product("sandboxctl"), "info", "--socket", server.socketPath])
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.contains("isolation levels"))
            let json = try await TestHost.runOnThread([TestHost.product("sandboxctl"), "info", "-o", "json", "--socket", server.socketPath])
            #expect(json.status == 0)
            let info = try JSONDecoder().decode(InfoResponse.self, from: Data(json.stdout.utf8))
            #expect(info.caller.uid == getuid())
        }
    }

    @Test("malformed HTTP gets the JSON error shape on the raw socket, names what was wrong, and closes; the server keeps serving",
          arguments: [
              ("bad request line", "GARBAGE\r\n\r\n", 400, "malformed_http", "request line"),
              ("bad method", "G@T /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_http", "method"),
              ("bad version", "GET /v1/health HTTP/7.0\r\nHost: x\r\n\r\n", 400, "malformed_http", "version"),
              ("header without colon", "GET /v1/health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 400, "malformed_http", "header"),
              ("control byte in a header", "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\u{01}b\r\n\r\n", 400, "malformed_http", "header"),
              ("bad Content-Length", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}", 400, "malformed_http", "Content-Length"),
              ("oversized head", "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 40_000) + "\r\n\r\n",
               431, "headers_too_large", "larger than"),
              ("bad chunk size", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
               400, "malformed_http", "chunk"),
              ("valid chunk then a bad one", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nQ\r\n",
               400, "malformed_http", "chunk"),
          ])
    func malformedHTTP(_ name: String, _ request: String, _ status: Int, _ code: String, _ mentions: String) async throws {
        let metrics = DaemonMetrics()
        try await withServer(.init(maxHeaderBytes: 16 << 10), metrics: metrics) { server in
            let answer = try RawExchange(socket: server.socketPath, sending: Array(request.utf8))
            #expect(answer.status == status, "\(name): \(answer.raw.prefix(400))")
            #expect(answer.headers["content-type"] == "application/json", "\(name): \(answer.headers)")
            #expect(answer.headers["connection"] == "close", "\(name): \(answer.headers)")
            #expect(Int(answer.headers["content-length"] ?? "") == answer.body.utf8.count, "\(name): exactly one answer: \(answer.raw.prefix(600))")
            let error = try errorBody(answer.body)
            #expect(error.code == code, "\(name): \(answer.body)")
            #expect(error.message.contains(mentions), "\(name): \(error.message)")
            // The daemon is unharmed: the next connection is served.
            #expect(try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/health", contentType: nil).status == 200)
            let text = String(decoding: metrics.exposition(), as: UTF8.self)
            #expect(metricValue(text, "sandboxd_api_errors_total{code=\"\(code)\"}") == 1, "\(text)")
        }
    }

    @Test("GET /metrics: Prometheus text for root and sandboxd-admin members, 403 in the JSON shape for other users")
    func metricsAccess() async throws {
        guard TestHost.isRoot else { print("skipped: needs root to create users"); return }
        _ = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        _ = try TestHost.ensureUser(Self.admin, groups: ["sandboxd", "sandboxd-admin"])
        let metrics = DaemonMetrics()
        try await withServer(metrics: metrics) { server in
            // Something to count first: an unknown endpoint is a not_found error.
            #expect(try await TestHost.curlOnThread(server.socketPath, "GET", "/v1/nothing", contentType: nil).status == 404)
            for user in [nil, Self.admin] {
                let response = try await TestHost.curlOnThread(server.socketPath, "GET", "/metrics", as: user, contentType: nil)
                #expect(response.status == 200, "\(user ?? "root"): \(response.body)")
                #expect(response.body.contains("# TYPE sandboxd_sandboxes_alive gauge"), "\(response.body)")
                #expect(metricValue(response.body, "sandboxd_sandboxes_alive") == 0, "\(response.body)")
                #expect(metricValue(response.body, "sandboxd_api_errors_total{code=\"not_found\"}") == 1, "\(response.body)")
            }
            let raw = try RawExchange(socket: server.socketPath, sending: Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            #expect(raw.status == 200)
            #expect(raw.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", "\(raw.headers)")
            let refused = try await TestHost.curlOnThread(server.socketPath, "GET", "/metrics", as: Self.alice, contentType: nil)
            #expect(refused.status == 403, "\(refused.body)")
            let error = try errorBody(refused.body)
            #expect(error.code == "forbidden")
            #expect(error.message.contains("sandboxd-admin"), "\(error.message)")
        }
        // Without metrics configured there is no such endpoint.
        try await withServer { server in
            let missing = try await TestHost.curlOnThread(server.socketPath, "GET", "/metrics", contentType: nil)
            #expect(missing.status == 404, "\(missing.body)")
        }
    }
}
