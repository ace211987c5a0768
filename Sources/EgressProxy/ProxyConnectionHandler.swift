import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SandboxCore

/// One client connection from the sandbox: reads one request head, decides, connects, relays.
///
/// Pipeline: `IdleStateHandler` → ``HeadSizeLimiter`` → `HTTPRequestDecoder` → this handler
/// (→ ``RelayHandler`` once a `CONNECT` tunnel is up). Responses the proxy makes itself are
/// written as raw bytes (so the same pipeline can later carry tunnel bytes) and always close.
final class ProxyConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        /// Waiting for the request head.
        case awaitingHead
        /// Head accepted; resolving and connecting. Body parts of a forwarded request wait in `pending`.
        case connecting
        /// Plain HTTP: request parts go to `upstream` through its HTTPRequestEncoder; response bytes
        /// come back through its RelayHandler.
        case forwarding(upstream: any Channel)
        /// CONNECT: bytes both ways through RelayHandlers.
        case tunnel(upstream: any Channel)
        /// The proxy answered (or gave up); nothing more is read.
        case finished
    }

    private let shared: ConnectionShared
    private let admitted: Bool
    private var state: State = .awaitingHead
    private weak var limiter: HeadSizeLimiter?
    private var decoder: ByteToMessageHandler<HTTPRequestDecoder>?
    private var headDeadline: Scheduled<Void>?

    // What the event reports.
    private let arrived = Date()
    private var method = ""
    private var host = ""
    private var port = 0
    private var address: String?
    private var allowedBy: HostPattern?
    private var eventSent = false
    /// Bytes relayed each way; updated by this handler and the RelayHandlers on the same event loop.
    let counters = ByteCounters()

    /// Parts of a forwarded request received while connecting (bounded by one socket read:
    /// reading stops once the head is in).
    private var pending: [HTTPClientRequestPart] = []
    private var requestEnded = false

    private var limits: EgressProxy.Limits { shared.configuration.limits }

    init(shared: ConnectionShared, admitted: Bool) {
        self.shared = shared
        self.admitted = admitted
    }

    static func install(on channel: any Channel, shared: ConnectionShared, admitted: Bool) throws {
        let handler = ProxyConnectionHandler(shared: shared, admitted: admitted)
        let sync = channel.pipeline.syncOperations
        guard admitted else {
            try sync.addHandler(handler)
            return
        }
        let limits = shared.configuration.limits
        let limiter = HeadSizeLimiter(limit: limits.maxHeaderBytes)
        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
        try sync.addHandlers([
            IdleStateHandler(allTimeout: limits.idleTimeout), limiter, decoder, handler,
        ])
        handler.limiter = limiter
        handler.decoder = decoder
    }

    // MARK: Lifecycle

    func channelActive(context: ChannelHandlerContext) {
        guard admitted else {
            respond(context: context, status: 503, reason: "too many connections (this sandbox may have \(limits.maxConnections) open)")
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        headDeadline = context.eventLoop.scheduleTask(in: limits.headTimeout) {
            let (handler, context) = loopBound.value
            if case .awaitingHead = handler.state {
                handler.respond(context: context, status: 408, reason: "request head not received within \(handler.limits.headTimeout.nanoseconds / 1_000_000_000) s")
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        headDeadline?.cancel()
        switch state {
        case .forwarding(let upstream), .tunnel(let upstream):
            upstream.close(promise: nil)
            emit(decision: .allowed, reason: "allowed by \(allowedBy?.description ?? "policy")", status: isTunnel ? 200 : nil)
        case .connecting:
            emit(decision: .failed, reason: "client closed before the upstream connected", status: nil)
        case .awaitingHead:
            if !eventSent, admitted, let seen = limiter?.seen, seen > 0 {
                counters.up = seen
                emit(decision: .denied, reason: "client closed before a complete request head", status: nil)
            }
        case .finished:
            break
        }
        state = .finished
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            switch state {
            case .tunnel:
                context.fireUserInboundEventTriggered(event) // to the RelayHandler: half-close the upstream
            case .awaitingHead:
                context.close(promise: nil) // no (complete) request will come
            case .connecting, .forwarding, .finished:
                break // the request is complete; the response still goes out on our open output
            }
            return
        }
        if event is IdleStateHandler.IdleStateEvent {
            if case .awaitingHead = state {
                respond(context: context, status: 408, reason: "idle for \(limits.idleTimeout.nanoseconds / 1_000_000_000) s")
            } else {
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .awaitingHead where error is IOError:
            context.close(promise: nil) // the client's socket failed (reset): nobody to answer
        case .awaitingHead:
            // What a refused head cost: the bytes read before the refusal (bounded by the limiter).
            counters.up = limiter?.seen ?? counters.up
            if error is HeadTooLarge || (error as? HTTPParserError) == .headerOverflow {
                respond(context: context, status: 431, reason: "request head larger than \(limits.maxHeaderBytes) bytes")
            } else {
                respond(context: context, status: 400, reason: "malformed request: \(error)")
            }
        default:
            context.close(promise: nil)
        }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .tunnel:
            context.fireChannelRead(data) // raw bytes left in the decoder, on their way to the RelayHandler
            return
        case .finished:
            return // answered and closing; on a refused (503) connection these are raw bytes, not parts
        default:
            break
        }
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.awaitingHead, .head(let head)):
            received(head: head, context: context)
        case (.awaitingHead, _):
            respond(context: context, status: 400, reason: "malformed request: body before head")
        case (.connecting, .body(let buffer)):
            counters.up += buffer.readableBytes
            pending.append(.body(.byteBuffer(buffer)))
        case (.connecting, .end(let trailers)):
            requestEnded = true
            pending.append(.end(trailers))
        case (.forwarding(let upstream), .body(let buffer)) where !requestEnded:
            counters.up += buffer.readableBytes
            upstream.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
        case (.forwarding(let upstream), .end(let trailers)) where !requestEnded:
            requestEnded = true
            upstream.writeAndFlush(HTTPClientRequestPart.end(trailers), promise: nil)
        default:
            break // a second request on the same connection is not served: one request per connection
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .forwarding(let upstream) = state { upstream.flush() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The client reads slower than the upstream sends: stop reading the upstream until it catches up.
        if case .forwarding(let upstream) = state {
            upstream.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenFailure { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    private var isTunnel: Bool {
        if case .tunnel = state { return true }
        return method == "CONNECT"
    }

    // MARK: Deciding

    private func received(head: HTTPRequestHead, context: ChannelHandlerContext) {
        headDeadline?.cancel()
        if let limiter { context.pipeline.syncOperations.removeHandler(limiter, promise: nil) }
        method = head.method.rawValue
        let target: RequestTarget
        do {
            target = try RequestTarget(head: head)
        } catch {
            respond(context: context, status: 400, reason: error.message)
            return
        }
        host = target.host
        port = target.port
        switch shared.configuration.rules.verdict(host: target.host, port: target.port) {
        case .denied(let reason):
            respond(context: context, status: 403, reason: reason)
        case .allowed(let pattern, let listedExactly):
            allowedBy = pattern
            if !target.isConnect { pending.append(.head(target.upstreamHead(from: head))) }
            state = .connecting
            // Nothing more from the client until the upstream is there (backpressure, and the body
            // of a forwarded request waits in `pending`, bounded by what one read brought).
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
            resolveAndConnect(target: target, listedExactly: listedExactly, context: context)
        }
    }

    private func resolveAndConnect(target: RequestTarget, listedExactly: Bool, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        shared.configuration.resolver.resolve(host: target.host, port: target.port, on: loop)
            .hop(to: loop)
            .assumeIsolated()
            .whenComplete { result in
                guard case .connecting = self.state else { return }
                switch result {
                case .failure(let error):
                    let message = (error as? EgressProxyError)?.message ?? "cannot resolve \(target.host): \(error)"
                    self.respond(context: context, status: 502, reason: message, decision: .failed)
                case .success(let addresses):
                    // Fresh every time (a netlink dump): interfaces change. Not needed when the
                    // name is listed literally, which may reach the host's addresses anyway.
                    let own = listedExactly ? [] : AddressCheck.hostAddresses()
                    var firstRefusal: (String, String)?
                    let usable = addresses.filter { address in
                        guard let refusal = AddressCheck.refusal(for: address, listedExactly: listedExactly, hostAddresses: own) else { return true }
                        if firstRefusal == nil { firstRefusal = (refusal, AddressCheck.presentation(address) ?? "\(address)") }
                        return false
                    }
                    guard !usable.isEmpty else {
                        self.address = firstRefusal?.1
                        self.respond(context: context, status: 403, reason: firstRefusal?.0 ?? "\(target.host) has no address")
                        return
                    }
                    self.connect(to: Array(usable.prefix(self.limits.maxAddressesTried)), index: 0, target: target,
                                 lastError: nil, context: context)
                }
            }
    }

    /// Tries the checked addresses in order; connects only to what was checked (no re-resolution).
    private func connect(to addresses: [SocketAddress], index: Int, target: RequestTarget, lastError: (any Error)?,
                         context: ChannelHandlerContext) {
        guard index < addresses.count else {
            respond(context: context, status: 502, reason: "cannot connect to \(target.host):\(target.port): \(describe(lastError))", decision: .failed)
            return
        }
        let candidate = addresses[index]
        address = AddressCheck.presentation(candidate)
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(limits.connectTimeout)
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: target.isConnect)
            .connect(to: candidate)
            .hop(to: context.eventLoop)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    guard case .connecting = self.state else { return }
                    self.connect(to: addresses, index: index + 1, target: target, lastError: error, context: context)
                case .success(let upstream):
                    guard case .connecting = self.state, context.channel.isActive else {
                        upstream.close(promise: nil)
                        return
                    }
                    do {
                        if target.isConnect {
                            try self.startTunnel(upstream: upstream, context: context)
                        } else {
                            try self.startForwarding(upstream: upstream, context: context)
                        }
                    } catch {
                        upstream.close(promise: nil)
                        self.respond(context: context, status: 502, reason: "cannot relay to \(target.host): \(error)", decision: .failed)
                    }
                }
            }
    }

    private func startForwarding(upstream: any Channel, context: ChannelHandlerContext) throws {
        let sync = upstream.pipeline.syncOperations
        try sync.addHandler(HTTPRequestEncoder())
        try sync.addHandler(RelayHandler(partner: context.channel, counters: counters, direction: .down, passesHalfClose: false))
        state = .forwarding(upstream: upstream)
        for part in pending {
            if case .head(let head) = part { counters.up += Self.approximateSize(of: head) }
            upstream.write(part, promise: nil)
        }
        pending = []
        upstream.flush()
        upstream.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }

    private func startTunnel(upstream: any Channel, context: ChannelHandlerContext) throws {
        try upstream.pipeline.syncOperations.addHandler(RelayHandler(partner: context.channel, counters: counters, direction: .down, passesHalfClose: true))
        let sync = context.pipeline.syncOperations
        try sync.addHandler(RelayHandler(partner: upstream, counters: counters, direction: .up, passesHalfClose: true))
        state = .tunnel(upstream: upstream)
        var established = context.channel.allocator.buffer(capacity: 64)
        established.writeString("HTTP/1.1 200 Connection Established\r\n\r\n")
        context.writeAndFlush(wrapOutboundOut(established), promise: nil)
        // Bytes the client sent after the CONNECT head (a TLS ClientHello) sit in the decoder;
        // removing it forwards them, through this handler, to the RelayHandler.
        if let decoder { sync.removeHandler(decoder, promise: nil) }
        decoder = nil
        upstream.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }

    // MARK: Answering

    /// Answers with `status` and a one-line plain-text body, closes, and records the event.
    private func respond(context: ChannelHandlerContext, status: Int, reason: String,
                         decision: EgressEventRecord.Decision = .denied) {
        guard !eventSent else { return }
        state = .finished
        emit(decision: decision, reason: reason, status: status)
        let body = reason + "\n"
        var buffer = context.channel.allocator.buffer(capacity: 160 + body.utf8.count)
        buffer.writeString("HTTP/1.1 \(status) \(Self.statusText(status))\r\n")
        buffer.writeString("Content-Type: text/plain; charset=utf-8\r\n")
        buffer.writeString("Content-Length: \(body.utf8.count)\r\n")
        buffer.writeString("Connection: close\r\n")
        buffer.writeString("X-Sandboxd-Egress: \(decision.rawValue)\r\n\r\n")
        buffer.writeString(body)
        context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func emit(decision: EgressEventRecord.Decision, reason: String, status: Int?) {
        guard !eventSent else { return }
        eventSent = true
        // A fresh id per event: the daemon's writes of it are idempotent. The execution is the
        // daemon's to fill in (it knows which one was running when the request arrived).
        let event = EgressEventRecord(
            executionID: nil, sandboxID: shared.configuration.sandboxID, occurredAt: arrived, method: method, host: host, port: port,
            address: address, decision: decision, reason: reason, status: status,
            bytesUp: counters.up, bytesDown: counters.down, duration: Date().timeIntervalSince(arrived))
        shared.logger.debug("egress \(decision.rawValue)", metadata: [
            "sandbox": "\(event.sandboxID)", "host": "\(host)", "port": "\(port)", "reason": "\(reason)",
        ])
        shared.onEvent(event)
    }

    private func describe(_ error: (any Error)?) -> String {
        switch error {
        case let error as ChannelError where error == .connectTimeout(limits.connectTimeout):
            "timed out after \(limits.connectTimeout.nanoseconds / 1_000_000) ms"
        case let error as IOError: "\(error.description)"
        case let error?: "\(error)"
        case nil: "no address"
        }
    }

    private static func approximateSize(of head: HTTPRequestHead) -> Int {
        head.method.rawValue.utf8.count + head.uri.utf8.count + 12
            + head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 } + 2
    }

    static func statusText(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 408: "Request Timeout"
        case 431: "Request Header Fields Too Large"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }
}

/// Bytes relayed each way for one client connection. Event-loop confined (client and upstream
/// channels share the loop), so plain stored properties.
final class ByteCounters {
    var up = 0
    var down = 0
}
