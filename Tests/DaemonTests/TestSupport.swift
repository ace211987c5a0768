import Foundation
import Logging
import ServiceLifecycle
@testable import ControlAPI
import DaemonMetrics
import ProcessSpawn
import Supervisor

/// Host facts and helpers for tests that need root, real users and real processes.
enum TestHost {
    static var isRoot: Bool { getuid() == 0 }

    /// The package root (tests run from anywhere).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A new temporary policy directory holding a copy of the repository's presets plus `extra`
    /// files (name → text). The caller removes it.
    static func policyDirectory(extra: [String: String] = [:]) throws -> String {
        var template = Array("/tmp/sandboxd-policies-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestError("mkdtemp failed") }
        let directory = String(cString: made)
        let presets = packageRoot.appendingPathComponent("policies").path
        for name in try FileManager.default.contentsOfDirectory(atPath: presets) where name.hasSuffix(".yaml") {
            try FileManager.default.copyItem(atPath: presets + "/" + name, toPath: directory + "/" + name)
        }
        for (name, text) in extra { try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8) }
        return directory
    }

    /// A built executable of this package (`swift build --build-tests` builds them all).
    static func product(_ name: String) -> String {
        for configuration in ["debug", "release"] {
            let path = packageRoot.appendingPathComponent(".build/\(configuration)/\(name)").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return packageRoot.appendingPathComponent(".build/debug/\(name)").path
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a program to completion (blocking), feeding `input` on stdin.
    @discardableResult
    static func run(_ argv: [String], input: Data = Data(), environment: [String: String]? = nil) throws -> Result {
        let output = try SpawnCommand(argv, environment: environment.map { $0.map { "\($0.key)=\($0.value)" } })
            .run(input: Array(input))
        return Result(status: output.termination.status, stdout: output.outputText, stderr: output.errorText)
    }

    /// `run` on a thread of its own. An async test that waits for a child talking to an
    /// in-process server must not hold one of the few cooperative threads that server needs to
    /// answer it (with two cores there are two; a blocked pair starves the server).
    @discardableResult
    static func runOnThread(_ argv: [String], input: Data = Data(), environment: [String: String]? = nil) async throws -> Result {
        try await onThread { try run(argv, input: input, environment: environment) }
    }

    /// `curl` on a thread of its own (see `runOnThread`).
    static func curlOnThread(_ socket: String, _ method: String, _ path: String, as user: String? = nil, body: Data? = nil,
                             contentType: String? = "application/json", extra: [String] = []) async throws -> (status: Int, body: String, result: Result) {
        try await onThread { try curl(socket, method, path, as: user, body: body, contentType: contentType, extra: extra) }
    }

    private static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Swift.Result { try body() }) }.start()
        }
    }

    static func ensureGroup(_ name: String) throws {
        if getgrnam(name) == nil { try run(["/usr/sbin/groupadd", "--system", name]) }
    }

    /// A throwaway system user (no home, no login shell) in exactly `groups`; returns its uid.
    /// Users are reused across runs (named `sbxt-*`), their groups reset each time.
    static func ensureUser(_ name: String, groups: [String]) throws -> UInt32 {
        for group in groups { try ensureGroup(group) }
        if getpwnam(name) == nil {
            try run(["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        }
        try run(["/usr/sbin/usermod", "-G", groups.joined(separator: ","), name])
        guard let entry = getpwnam(name) else { throw TestError("useradd \(name) did not create the user") }
        return entry.pointee.pw_uid
    }

    /// `curl` over the Unix socket as `user` (nil: as root). Returns the HTTP status (0 when no response) and body.
    static func curl(_ socket: String, _ method: String, _ path: String, as user: String? = nil, body: Data? = nil,
                     contentType: String? = "application/json", extra: [String] = []) throws -> (status: Int, body: String, result: Result) {
        var argv = ["/usr/bin/curl", "-sS", "--max-time", "30", "--unix-socket", socket, "-X", method, "-o", "-", "-w", "\n%{http_code}"]
        if let contentType { argv += ["-H", "Content-Type: \(contentType)"] }
        if body != nil { argv += ["--data-binary", "@-"] }
        argv += extra
        argv.append("http://localhost" + path)
        if let user { argv = ["/usr/sbin/runuser", "-u", user, "--"] + argv }
        let result = try run(argv, input: body ?? Data())
        let text = result.stdout
        guard let newline = text.lastIndex(of: "\n") else { return (0, text, result) }
        return (Int(text[text.index(after: newline)...]) ?? 0, String(text[..<newline]), result)
    }
}

struct TestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A real control server on a real socket in a temporary directory, served in-process.
final class TestServer: @unchecked Sendable {
    let directory: String
    let socketPath: String
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    init(service: any SandboxService, configuration: ControlAPIConfiguration = .init(), socketGroup: String? = "sandboxd",
         metrics: DaemonMetrics? = nil) async throws {
        var template = Array("/tmp/sandboxd-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestError("mkdtemp failed") }
        directory = String(cString: made)
        chmod(directory, 0o755) // other test users must reach the socket; the socket's own mode decides
        socketPath = directory + "/sandboxd.sock"
        var logger = Logger(label: "test.control")
        logger.logLevel = .warning
        let server = ControlServer(listener: .path(socketPath, mode: 0o660, group: socketGroup), service: service,
                                   configuration: configuration, logger: logger, metrics: metrics)
        group = ServiceGroup(configuration: .init(services: [server], logger: logger))
        let group = self.group
        task = Task { try await group.run() }
        for _ in 0..<500 {
            if access(socketPath, F_OK) == 0 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestError("server did not create \(socketPath)")
    }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
        rmdir(directory)
    }
}

/// A long-running child started with posix_spawn and reaped by this code alone.
/// (Foundation's Process reaps with a blocking wait4 on one shared thread: while a long-lived
/// child runs, short-lived ones started with Process are never reaped.)
struct SpawnedProcess {
    let pid: pid_t

    /// Starts `argv` with stdout to /dev/null and stderr appended to `logPath`.
    init(_ argv: [String], logPath: String) throws {
        var command = SpawnCommand(argv)
        command.standardError = .file(logPath, append: true)
        pid = try command.spawn()
    }

    /// The exit status once it has exited (reaping it), nil while it runs.
    func poll() -> (exited: Bool, status: Int32)? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid else { return nil }
        let exited = status & 0x7f == 0
        return (exited, exited ? (status >> 8) & 0xff : status & 0x7f)
    }

    /// Waits up to `seconds` for the exit.
    func wait(seconds: Double) async throws -> (exited: Bool, status: Int32)? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let result = poll() { return result }
            try await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    func kill(_ signal: Int32) { _ = Glibc.kill(pid, signal) }
}

extension TestHost {
    /// Whether a server accepts connections on the Unix socket at `path`.
    static func canConnect(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in bytes.enumerated() { raw[index] = byte } }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }
}

/// One raw exchange on a fresh connection: `bytes` go out as they are, the answer is read until
/// the server closes (or 10 s pass). For malformed HTTP that no HTTP client library would send.
struct RawExchange {
    var status: Int
    var headers: [String: String]
    var body: String
    var raw: String

    init(socket path: String, sending bytes: [UInt8]) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket: errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in pathBytes.enumerated() { raw[index] = byte } }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestError("connect \(path): errno \(errno)") }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            // The server may answer and close before reading everything (an oversized head): stop sending then.
            if written <= 0 { break }
            offset += written
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            received += chunk[..<count]
        }
        raw = String(decoding: received, as: UTF8.self)
        guard let split = raw.range(of: "\r\n\r\n") else {
            status = 0; headers = [:]; body = ""
            return
        }
        let lines = raw[..<split.lowerBound].split(separator: "\r\n")
        status = lines.first.flatMap { line in line.split(separator: " ").dropFirst().first.flatMap { Int($0) } } ?? 0
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        headers = fields
        body = String(raw[split.upperBound...])
    }
}

/// The value of one series (`name` or `name{labels}`, exactly as exposed) in Prometheus text, nil when absent.
func metricValue(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1).trimmingCharacters(in: .whitespaces))
    }
    return nil
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// A blocking HTTP/1.1 client on one keep-alive Unix-socket connection (enough for load tests:
/// Content-Length bodies only, which is all the daemon sends for non-streamed answers).
final class UnixHTTPClient {
    private let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in bytes.enumerated() { raw[index] = byte } }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, connected == 0 else { throw TestError("connect \(path): errno \(errno)") }
    }

    deinit { close(fd) }

    func request(_ method: String, _ path: String, json: String? = nil) throws -> (Int, String) {
        let body = Array((json ?? "").utf8)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(body.count)\r\n"
        if json != nil { head += "Content-Type: application/json\r\n" }
        head += "\r\n"
        let message = Array(head.utf8) + body
        var offset = 0
        while offset < message.count {
            let written = message.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard written > 0 else { throw TestError("write: errno \(errno)") }
            offset += written
        }
        let headerEnd = try readUntil(Array("\r\n\r\n".utf8))
        let headerText = String(decoding: buffer[..<headerEnd], as: UTF8.self)
        buffer.removeFirst(headerEnd + 4)
        let lines = headerText.split(separator: "\r\n")
        guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ")[1]) else {
            throw TestError("bad status line: \(headerText)")
        }
        var length = 0
        for line in lines.dropFirst() where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
        }
        while buffer.count < length { try fill() }
        let text = String(decoding: buffer[..<length], as: UTF8.self)
        buffer.removeFirst(length)
        return (status, text)
    }

    private func readUntil(_ marker: [UInt8]) throws -> Int {
        while true {
            if buffer.count >= marker.count {
                for index in 0...(buffer.count - marker.count) where buffer[index..<(index + marker.count)].elementsEqual(marker) {
                    return index
                }
            }
            try fill()
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { throw TestError("connection closed (read \(count), errno \(errno))") }
        buffer.append(contentsOf: chunk[..<count])
    }
}
