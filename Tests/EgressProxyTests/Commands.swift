import Foundation
import ProcessSpawn
@testable import EgressProxy
#if canImport(Glibc)
import Glibc
#endif

/// Result of a command the test ran.
struct CommandResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status); stdout: \(stdout.prefix(400)); stderr: \(stderr.prefix(400))" }
}

enum Command {
    /// Runs `arguments` (absolute path first) to completion on its own thread.
    static func run(_ arguments: [String], environment: [String: String]? = nil) async throws -> CommandResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                do {
                    let output = try SpawnCommand(arguments, environment: environment.map { $0.map { "\($0.key)=\($0.value)" } }).run()
                    continuation.resume(returning: CommandResult(
                        status: output.termination.status, stdout: output.outputText, stderr: output.errorText))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Throws unless the command exits 0.
    @discardableResult
    static func check(_ arguments: [String]) async throws -> CommandResult {
        let result = try await run(arguments)
        guard result.status == 0 else { throw LabError("\(arguments.joined(separator: " ")): \(result)") }
        return result
    }
}

struct LabError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A value behind a lock, for test bookkeeping shared across threads.
final class Mutexed<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.withLock { value } }
    func set(_ newValue: Value) { lock.withLock { value = newValue } }
    func update<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&value) } }
}

/// A blocking TCP client that runs inside a network namespace (the sandbox's view), for requests
/// curl will not send: malformed heads, header floods, raw tunnel bytes.
enum RawClient {
    struct Exchange: Sendable {
        /// Everything read until the proxy closed (or the read timed out).
        var response: String
        /// Bytes of the request written before the first response byte arrived (flood tests).
        var bytesSentBeforeResponse: Int
        var connectError: String?
    }

    /// Connects to `127.0.0.1:port` inside `namespaceFD`, sends `head`, then `payload` once the
    /// first response bytes are in (tunnels), and reads until close or `timeout` seconds of silence.
    /// With `halfClose`, shuts the write side after the payload and reads until the proxy closes.
    static func exchange(namespaceFD: Int32, port: UInt16 = 3128, head: [UInt8], payload: [UInt8] = [],
                         halfClose: Bool = false, stallAfterHead: UInt32 = 0, timeout: Int = 5) async -> Exchange {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let result = (try? NetworkNamespace.run(in: namespaceFD, describedAs: "client netns") { () throws(EgressProxyError) -> Exchange in
                    exchangeHere(port: port, head: head, payload: payload, halfClose: halfClose, stallAfterHead: stallAfterHead, timeout: timeout)
                }) ?? Exchange(response: "", bytesSentBeforeResponse: 0, connectError: "setns failed")
                continuation.resume(returning: result)
            }
        }
    }

    /// Opens `count` connections and holds them, then opens one more and returns what it got.
    static func holdingConnections(namespaceFD: Int32, count: Int, port: UInt16 = 3128) async -> Exchange {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let result = (try? NetworkNamespace.run(in: namespaceFD, describedAs: "client netns") { () throws(EgressProxyError) -> Exchange in
                    var held: [Int32] = []
                    defer { held.forEach { close($0) } }
                    for _ in 0..<count {
                        guard let fd = connectLoopback(port: port) else { break }
                        held.append(fd)
                        usleep(50_000) // let the proxy accept and admit it before the next
                    }
                    return exchangeHere(port: port, head: Array("GET http://web.test/ HTTP/1.1\r\n\r\n".utf8), payload: [], halfClose: false, stallAfterHead: 0, timeout: 5)
                }) ?? Exchange(response: "", bytesSentBeforeResponse: 0, connectError: "setns failed")
                continuation.resume(returning: result)
            }
        }
    }

    static func connectLoopback(port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); return nil }
        return fd
    }

    private static func exchangeHere(port: UInt16, head: [UInt8], payload: [UInt8], halfClose: Bool, stallAfterHead: UInt32,
                                     timeout: Int) -> Exchange {
        guard let fd = connectLoopback(port: port) else {
            return Exchange(response: "", bytesSentBeforeResponse: 0, connectError: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        // Send in 4 KiB pieces, looking for an early answer between them (a flood must be cut short).
        var sent = 0
        var sentBeforeResponse = -1
        while sent < head.count {
            let n = head[sent..<min(sent + 4096, head.count)].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
            let got = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if got > 0 {
                received += chunk[0..<got]
                sentBeforeResponse = sent
                break
            }
            if got == 0 { break }
        }
        if sentBeforeResponse < 0 { sentBeforeResponse = sent }
        if stallAfterHead > 0 {
            // Read only the response head (a few bytes at a time), then stop reading: a slow consumer.
            var byte = [UInt8](repeating: 0, count: 1)
            while !String(decoding: received, as: UTF8.self).contains("\r\n\r\n") {
                guard recv(fd, &byte, 1, 0) == 1 else { break }
                received += byte
            }
            sleep(stallAfterHead)
            return Exchange(response: String(decoding: received, as: UTF8.self), bytesSentBeforeResponse: sent, connectError: nil)
        }
        if !payload.isEmpty {
            // Tunnels: wait for the 200, then send the payload and give the echo a moment.
            while !String(decoding: received, as: UTF8.self).contains("\r\n\r\n") {
                let got = recv(fd, &chunk, chunk.count, 0)
                if got <= 0 { break }
                received += chunk[0..<got]
            }
            _ = payload.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if halfClose {
                shutdown(fd, Int32(SHUT_WR))
                var sawEOF = false
                while true {
                    let got = recv(fd, &chunk, chunk.count, 0)
                    if got == 0 { sawEOF = true }
                    if got <= 0 { break }
                    received += chunk[0..<got]
                }
                return Exchange(response: String(decoding: received, as: UTF8.self) + (sawEOF ? "<EOF>" : "<TIMEOUT>"),
                                bytesSentBeforeResponse: sent, connectError: nil)
            }
            // Read until the echo is back; closing earlier would drop it in flight.
            while let end = received.firstRange(of: Array("\r\n\r\n".utf8))?.upperBound, received.count - end < payload.count {
                let got = recv(fd, &chunk, chunk.count, 0)
                if got <= 0 { break }
                received += chunk[0..<got]
            }
            return Exchange(response: String(decoding: received, as: UTF8.self), bytesSentBeforeResponse: sent, connectError: nil)
        }
        while true {
            let got = recv(fd, &chunk, chunk.count, 0)
            if got <= 0 { break }
            received += chunk[0..<got]
        }
        return Exchange(response: String(decoding: received, as: UTF8.self), bytesSentBeforeResponse: sentBeforeResponse, connectError: nil)
    }
}
