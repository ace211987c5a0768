// What the egress proxy costs: the same clients against the same loopback servers, directly and
// through an EgressProxy, printed as ratios (proxied / direct). Run by Benchmarks/run (make bench)
// as root (the listener is made with EgressListener, which enters a network namespace — here the
// daemon's own); not part of make test.
//
// Usage: EgressBenchmark [--requests N] [--mebibytes N] [--clients C]

import BenchmarkSupport
import EgressProxy
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SandboxCore

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var requests = 2_000
    var mebibytes = 512
    var clients = 4

    init(_ arguments: [String]) throws {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            guard let text = iterator.next(), let value = Int(text), value > 0 else {
                throw BenchmarkError("\(argument) needs a positive number")
            }
            switch argument {
            case "--requests": requests = value
            case "--mebibytes": mebibytes = value
            case "--clients": clients = value
            default: throw BenchmarkError("unknown option \(argument) (known: --requests, --mebibytes, --clients)")
            }
        }
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: Servers (in-process, 127.0.0.1)

/// Answers every request with a small fixed response and closes.
final class SmallResponse: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let body = ByteBuffer(string: "ok\n")
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "3", "Connection": "close"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Sends `total` bytes as fast as the connection takes them, then closes.
final class Source: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let total: Int
    private var queued = 0
    private let chunk = ByteBuffer(repeating: 0x61, count: 65536)
    init(total: Int) { self.total = total }
    func channelActive(context: ChannelHandlerContext) { pump(context: context) }
    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context: context) }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    private func pump(context: ChannelHandlerContext) {
        while context.channel.isActive, context.channel.isWritable, queued < total {
            queued += chunk.readableBytes
            let last = queued >= total
            let written = context.writeAndFlush(wrapOutboundOut(chunk))
            if last { written.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
        }
    }
}

// MARK: Blocking clients (each on its own thread)

func connectLoopback(_ port: Int) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = UInt16(port).bigEndian
    sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let rc = withUnsafePointer(to: &sin) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    precondition(rc == 0, "connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
    return fd
}

/// Sends `request`, reads to EOF; returns the bytes read.
func exchange(port: Int, request: String) -> Int {
    let fd = connectLoopback(port)
    defer { close(fd) }
    let bytes = Array(request.utf8)
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var buffer = [UInt8](repeating: 0, count: 1 << 17)
    var total = 0
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        total += n
    }
    return total
}

/// Runs `body(client)` on `clients` threads at once; returns the wall time in seconds.
func timed(clients: Int, _ body: @escaping @Sendable (Int) -> Void) -> Double {
    let group = DispatchGroup()
    let start = now()
    for client in 0..<clients {
        group.enter()
        Thread.detachNewThread { body(client); group.leave() }
    }
    group.wait()
    return now() - start
}

// MARK: Main

let options = try Options(Array(CommandLine.arguments.dropFirst()))
guard getuid() == 0 else {
    say("EgressBenchmark needs root (EgressListener enters a network namespace with setns)")
    exit(2)
}
let group = MultiThreadedEventLoopGroup.singleton
let httpServer = try await ServerBootstrap(group: group)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(SmallResponse())
        }
    }
    .bind(host: "127.0.0.1", port: 0).get()
let total = options.mebibytes << 20
let sourceServer = try await ServerBootstrap(group: group)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Source(total: total)) }
    }
    .bind(host: "127.0.0.1", port: 0).get()
let httpPort = httpServer.localAddress!.port!
let sourcePort = sourceServer.localAddress!.port!

// The proxy, on a listener made the daemon's way, in the daemon's own namespace (so the
// benchmark needs no extra namespace). "bench.test" is listed exactly, so loopback is allowed.
let ownNamespace = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
let proxyPort = 31_280 + Int(getpid() % 1000)
let listener = try EgressListener.make(inNetworkNamespace: ownNamespace, port: UInt16(proxyPort), describedAs: "/proc/self/ns/net")
close(ownNamespace)
let events = ManagedCounter()
let proxy = try await EgressProxy.start(
    listeningSocket: listener,
    configuration: .init(sandboxID: "bench", network: Policy.Network(allowedHosts: [try HostPattern(parsing: "bench.test")]),
                         limits: .init(maxConnections: 1024), resolver: StaticResolver(["bench.test": ["127.0.0.1"]])),
    onEvent: { _ in events.increment() })

final class ManagedCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func increment() { lock.withLock { value += 1 } }
    var count: Int { lock.withLock { value } }
}

say("egress proxy vs direct, 127.0.0.1, \(options.clients) clients, \(ProcessInfo.processInfo.activeProcessorCount) cores")

// 1. Short requests: a new connection per request (what scrapers and package managers do).
let perClient = options.requests / options.clients
let directRequest = "GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n"
let proxiedRequest = "GET http://bench.test:\(httpPort)/ HTTP/1.1\r\nHost: bench.test\r\n\r\n"
_ = timed(clients: options.clients) { _ in for _ in 0..<10 { _ = exchange(port: proxyPort, request: proxiedRequest) } } // warm-up
let directSeconds = timed(clients: options.clients) { _ in for _ in 0..<perClient { _ = exchange(port: httpPort, request: directRequest) } }
let proxiedSeconds = timed(clients: options.clients) { _ in for _ in 0..<perClient { _ = exchange(port: proxyPort, request: proxiedRequest) } }
let requests = Double(perClient * options.clients)
say(String(format: "requests/s    direct %8.0f   proxied %8.0f   ratio %.2f", requests / directSeconds, requests / proxiedSeconds,
           directSeconds / proxiedSeconds))

// 2. Bulk download: one CONNECT tunnel per client.
let received = ManagedCounter()
let directBulk = timed(clients: options.clients) { _ in _ = exchange(port: sourcePort, request: "") }
let proxiedBulk = timed(clients: options.clients) { _ in
    let bytes = exchange(port: proxyPort, request: "CONNECT bench.test:\(sourcePort) HTTP/1.1\r\n\r\n")
    if bytes >= total { received.increment() }
}
let mebibytes = Double(options.mebibytes * options.clients)
say(String(format: "MiB/s         direct %8.0f   proxied %8.0f   ratio %.2f   (%d MiB per client)", mebibytes / directBulk,
           mebibytes / proxiedBulk, directBulk / proxiedBulk, options.mebibytes))
if received.count != options.clients { say("warning: \(options.clients - received.count) tunnels ended short") }

await proxy.close()
try await httpServer.close().get()
try await sourceServer.close().get()
say("events recorded: \(events.count)")
