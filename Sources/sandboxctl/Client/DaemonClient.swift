#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import ControlAPI
import NIOCore
import NIOHTTP1

/// What went wrong talking to sandboxd, said so that the operator knows what to do.
struct ClientError: Error, CustomStringConvertible {
    var description: String
    /// The process exit status: 125 for "sandboxctl or the daemon failed" (the `docker run` convention).
    var exitCode: Int32 = 125
}

/// A daemon error answer (`{"error": …}`) with its HTTP status.
struct DaemonError: Error, CustomStringConvertible {
    var status: Int
    var body: APIErrorBody.Content
    var description: String { "sandboxd: \(body.message) [\(body.code), HTTP \(status)]" }
}

/// HTTP/1.1 over the daemon's Unix socket.
struct DaemonClient {
    var socketPath: String

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    /// Checks the socket before connecting, so "not running" and "not allowed" read as such.
    func preflight() throws {
        var info = stat()
        guard stat(socketPath, &info) == 0 else {
            if errno == EACCES {
                throw ClientError(description: "permission denied reaching \(socketPath): its directory is not accessible to uid \(getuid())")
            }
            throw ClientError(description: "sandboxd is not running: no socket at \(socketPath) (start it with `make run` or `systemctl start sandboxd`)")
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw ClientError(description: "\(socketPath) is not a socket")
        }
        // A real connect tells "refused" (stale socket, daemon gone) and "denied" (not in the group)
        // apart at once; the HTTP client would retry a refused connection until its deadline.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClientError(description: "socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ClientError(description: "socket path \(socketPath) is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in pathBytes.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if connected != 0 {
            switch errno {
            case EACCES, EPERM:
                throw ClientError(description: "permission denied on \(socketPath): uid \(getuid()) may not use sandboxd; ask an administrator to add you to group sandboxd")
            case ECONNREFUSED, ENOENT:
                throw ClientError(description: "sandboxd is not running: nothing listens on \(socketPath) (connection refused)")
            default:
                throw ClientError(description: "cannot connect to \(socketPath): \(String(cString: strerror(errno)))")
            }
        }
    }

    func url(_ path: String, query: [(String, String)] = []) throws -> String {
        var uri = path
        if !query.isEmpty {
            uri += "?" + query.map { "\($0.0)=\(percentEncode($0.1))" }.joined(separator: "&")
        }
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: uri) else {
            throw ClientError(description: "socket path \(socketPath) cannot be used in a URL")
        }
        return url.absoluteString
    }

    /// Sends a request, returns the response (body not yet read). Turns connection failures into clear messages.
    func send(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], json: (any Encodable)? = nil,
              bytes: [UInt8]? = nil, timeout: TimeAmount = .seconds(60)) async throws -> HTTPClientResponse {
        try preflight()
        var request = HTTPClientRequest(url: try url(path, query: query))
        request.method = method
        if let json {
            let data = try JSONEncoder().encode(json)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: data))
        } else if let bytes {
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
            request.body = .bytes(ByteBuffer(bytes: bytes))
        }
        do {
            return try await HTTPClient.shared.execute(request, timeout: timeout)
        } catch {
            throw explain(error)
        }
    }

    /// Sends a request and decodes the JSON answer, or throws the daemon's error.
    func call<T: Decodable>(_ type: T.Type, _ method: HTTPMethod, _ path: String, query: [(String, String)] = [],
                            json: (any Encodable)? = nil, timeout: TimeAmount = .seconds(60)) async throws -> T {
        let response = try await send(method, path, query: query, json: json, timeout: timeout)
        let body = try await collect(response)
        try Self.checkStatus(response, body)
        do { return try Self.decoder.decode(T.self, from: Data(body)) } catch {
            throw ClientError(description: "sandboxd answered something sandboxctl does not understand: \(error)")
        }
    }

    func collect(_ response: HTTPClientResponse, limit: Int = 64 << 20) async throws -> [UInt8] {
        do {
            let buffer = try await response.body.collect(upTo: limit)
            return Array(buffer: buffer)
        } catch {
            throw explain(error)
        }
    }

    static func checkStatus(_ response: HTTPClientResponse, _ body: [UInt8]) throws {
        guard response.status.code >= 300 else { return }
        if let error = try? decoder.decode(APIErrorBody.self, from: Data(body)) {
            throw DaemonError(status: Int(response.status.code), body: error.error)
        }
        throw ClientError(description: "sandboxd answered HTTP \(response.status.code) without an error body")
    }

    func explain(_ error: any Error) -> any Error {
        if error is ClientError || error is DaemonError { return error }
        let text = String(describing: error)
        if text.contains("connectionRefused") || text.contains("ECONNREFUSED") || text.contains("Connection refused") {
            return ClientError(description: "sandboxd is not running: nothing listens on \(socketPath) (connection refused)")
        }
        if text.contains("EACCES") || text.contains("Permission denied") || text.contains("permission") {
            return ClientError(description: "permission denied on \(socketPath): ask an administrator to add you to group sandboxd")
        }
        if text.contains("ENOENT") || text.contains("No such file") {
            return ClientError(description: "sandboxd is not running: no socket at \(socketPath)")
        }
        return ClientError(description: "talking to sandboxd at \(socketPath) failed: \(text)")
    }
}

private func percentEncode(_ text: String) -> String {
    var out = ""
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"), UInt8(ascii: "/"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
        }
    }
    return out
}
