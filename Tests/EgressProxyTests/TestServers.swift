import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
@testable import EgressProxy
#if canImport(Glibc)
import Glibc
#endif

/// Servers the tests run in-process on sockets created inside the lab's "internet" namespace:
/// an HTTP server that answers with the request it received, a TCP echo server, and a tiny DNS
/// server (A records only) for the DNS-inside-the-sandbox checks.
enum TestServers {
    /// Answers every request with `200`, body = the request line and headers exactly as received,
    /// so tests can see what the proxy forwarded.
    static func http(listeningSocket fd: Int32) async throws -> any Channel {
        try await httpBootstrap.withBoundSocket(fd).get()
    }

    /// The same HTTP server, bound in the test's own (the host's) namespace.
    static func http(bindingTo host: String, port: Int) async throws -> any Channel {
        try await httpBootstrap.bind(host: host, port: port).get()
    }

    private static var httpBootstrap: ServerBootstrap {
        ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(RequestMirror())
                }
            }
    }

    /// Echoes every byte back.
    static func echo(listeningSocket fd: Int32) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
            }
            .withBoundSocket(fd).get()
    }

    /// Sends bytes as fast as the connection takes them (up to 256 MiB), counting what the kernel accepted.
    static func chargen(listeningSocket fd: Int32, written: Mutexed<Int>) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Chargen(written: written)) }
            }
            .withBoundSocket(fd).get()
    }

    /// Answers A queries for any name with `address` (AAAA and others: no answer).
    static func dns(socket fd: Int32, answering address: String) async throws -> any Channel {
        var bytes = in_addr()
        inet_pton(AF_INET, address, &bytes)
        let raw = withUnsafeBytes(of: bytes) { Array($0) }
        return try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(DNSResponder(answer: raw)) }
            }
            .withBoundSocket(fd).get()
    }

    /// A TCP listening socket at `address:port` inside a namespace (the proxy's own helper).
    static func tcpListener(namespaceFD: Int32, address: String, port: UInt16) throws -> Int32 {
        try EgressListener.listeningSocket(inNetworkNamespace: namespaceFD, address: address, port: port, describedAs: "lab netns")
    }

    /// A bound UDP socket at `address:port` inside a namespace.
    static func udpSocket(namespaceFD: Int32, address: String, port: UInt16) throws -> Int32 {
        try NetworkNamespace.run(in: namespaceFD, describedAs: "lab netns") { () throws(EgressProxyError) -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw .syscall("socket", "udp", errno: errno) }
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            inet_pton(AF_INET, address, &sin.sin_addr)
            let rc = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else { close(fd); throw .syscall("bind", "\(address):\(port)/udp", errno: errno) }
            return fd
        }
    }
}

private final class RequestMirror: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private var received = ""

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            received = "\(head.method.rawValue) \(head.uri) HTTP/\(head.version.major).\(head.version.minor)\n"
            for (name, value) in head.headers { received += "\(name): \(value)\n" }
        case .body(let buffer):
            received += "body: " + String(buffer: buffer) + "\n"
        case .end:
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "\(received.utf8.count)")
            headers.add(name: "Content-Type", value: "text/plain")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: received)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

private final class Chargen: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let written: Mutexed<Int>
    private var queued = 0
    init(written: Mutexed<Int>) { self.written = written }

    func channelActive(context: ChannelHandlerContext) { pump(context: context) }
    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context: context) }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func pump(context: ChannelHandlerContext) {
        let written = self.written
        while context.channel.isActive, context.channel.isWritable, queued < 256 << 20 {
            queued += 65536
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(repeating: 0x61, count: 65536))).whenSuccess {
                written.update { $0 += 65536 }
            }
        }
    }
}

private final class Echo: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
}

/// Just enough DNS (RFC 1035) to answer `getent hosts NAME`: one question, one A answer.
private final class DNSResponder: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    let answer: [UInt8]
    init(answer: [UInt8]) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let query = envelope.data.getBytes(at: envelope.data.readerIndex, length: envelope.data.readableBytes),
              query.count > 12 else { return }
        // The question: labels up to the zero byte, then QTYPE and QCLASS.
        var end = 12
        while end < query.count, query[end] != 0 { end += Int(query[end]) + 1 }
        guard end + 5 <= query.count else { return }
        let question = Array(query[12...(end + 4)])
        let isA = query[end + 1] == 0 && query[end + 2] == 1
        var response: [UInt8] = [query[0], query[1], 0x81, 0x80, 0, 1, 0, isA ? 1 : 0, 0, 0, 0, 0]
        response += question
        if isA { response += [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4] + answer }
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: response))), promise: nil)
    }
}
