import NIOCore

/// Copies bytes read on its channel to a partner channel, with backpressure: when the partner
/// cannot take more, the partner's handler stops this side's reads via `autoRead`.
final class RelayHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    enum Direction { case up, down }

    private let partner: any Channel
    private let counters: ByteCounters
    private let direction: Direction
    /// Tunnels pass a half-close on (the client's FIN becomes the upstream's FIN); forwarded HTTP
    /// responses end the whole connection (one request per connection).
    private let passesHalfClose: Bool
    private var lastWrite: EventLoopFuture<Void>?

    init(partner: any Channel, counters: ByteCounters, direction: Direction, passesHalfClose: Bool) {
        self.partner = partner
        self.counters = counters
        self.direction = direction
        self.passesHalfClose = passesHalfClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        switch direction {
        case .up: counters.up += buffer.readableBytes
        case .down: counters.down += buffer.readableBytes
        }
        lastWrite = partner.write(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner.flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // This side's socket buffer is full: stop reading the partner until it drains.
        partner.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenFailure { _ in }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Deliver what was already read, then close the other side too.
        let partner = self.partner
        partner.flush()
        if let lastWrite {
            lastWrite.whenComplete { _ in partner.close(promise: nil) }
        } else {
            partner.close(promise: nil)
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .some(.inputClosed) = event as? ChannelEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // This side sent its last byte: once that byte is written to the partner, shut the
        // partner's output (tunnel) or end both (forwarded response). When both directions are
        // shut, NIO closes the channels fully.
        let partner = self.partner
        let channel = context.channel
        let passesHalfClose = self.passesHalfClose
        partner.flush()
        (lastWrite ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in
            if passesHalfClose {
                partner.close(mode: .output, promise: nil)
            } else {
                partner.close(promise: nil)
                channel.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Thrown into the pipeline when a request head grows past the limit.
struct HeadTooLarge: Error {}

/// Counts bytes until the request head is complete and fails the connection past the limit, so
/// a header flood costs the proxy at most one read beyond `limit`. Removed once the head is in.
final class HeadSizeLimiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let limit: Int
    private(set) var seen = 0
    private var tripped = false

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !tripped else { return }
        seen += unwrapInboundIn(data).readableBytes
        // Pass first: if this read completes the head, the proxy handler removes this limiter
        // (and a body in the same read must not count). Only a still-missing head past the limit trips.
        context.fireChannelRead(data)
        if seen > limit, context.channel.isActive, (try? context.pipeline.syncOperations.context(handlerType: HeadSizeLimiter.self)) != nil {
            tripped = true
            context.fireErrorCaught(HeadTooLarge())
        }
    }
}
