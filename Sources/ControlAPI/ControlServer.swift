#if canImport(Glibc)
import Glibc
#endif
import DaemonMetrics
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The control API: HTTP/1.1 + JSON on the Unix socket, one `Service` in the daemon's group.
///
/// Each connection's peer credentials are read once when it is accepted and travel with every
/// request on it. On graceful shutdown the server stops accepting at once, lets requests in
/// flight finish (`onGracefulShutdown` is where the daemon bounds that with its grace period),
/// then closes and removes the socket file it created.
public final class ControlServer: Service, Sendable {
    private let listener: ControlListener
    private let service: any SandboxService
    private let configuration: ControlAPIConfiguration
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let metrics: DaemonMetrics?
    private let onListening: @Sendable (String) async -> Void
    private let onGracefulShutdown: @Sendable () async -> Void

    /// - Parameters:
    ///   - listener: where the socket comes from.
    ///   - service: the daemon's brain.
    ///   - metrics: served by `GET /metrics` (admins only); also counts error responses. nil: no metrics endpoint.
    ///   - onListening: called once the socket accepts connections (sd_notify READY=1 goes here).
    ///   - onGracefulShutdown: called when shutdown starts, after accepting stopped.
    public init(listener: ControlListener, service: any SandboxService, configuration: ControlAPIConfiguration = .init(),
                logger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                metrics: DaemonMetrics? = nil,
                onListening: @escaping @Sendable (String) async -> Void = { _ in },
                onGracefulShutdown: @escaping @Sendable () async -> Void = {}) {
        self.listener = listener
        self.service = service
        self.configuration = configuration
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.metrics = metrics
        self.onListening = onListening
        self.onGracefulShutdown = onGracefulShutdown
    }

    public func run() async throws {
        let bound: BoundListener
        do { bound = try listener.open() } catch {
            logger.critical("control socket: \(error.description)")
            throw error
        }
        let adminGroup = configuration.adminGroup.flatMap { name in getgrnam(name).map { $0.pointee.gr_gid } }
        let metrics = self.metrics
        let responder = ControlRoutes(service: service, configuration: configuration, metrics: metrics).makeRouter().buildResponder()
        let logger = self.logger
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [ProtocolErrorHandler { error in metrics?.apiError(code: error.code.rawValue) }],
            idleTimeout: .seconds(configuration.headerTimeoutSeconds),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: configuration.maxHeaderBytes, maxHeaderListSize: configuration.maxHeaderBytes))
        let childSetup = PeerHTTP1Channel(configuration: http1, adminGroup: adminGroup) { request, writer, channel, caller in
            let context = ControlRequestContext(source: .init(channel: channel, logger: logger, caller: caller))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch {
                let apiError = APIErrorMiddleware.apiError(for: error, request: request, context: context)
                if !(error is HTTPParserError) { metrics?.apiError(code: apiError.code.rawValue) }
                response = errorResponse(apiError)
            }
            let closeAfter = response.headers[.connection] == "close"
            try await writer.write(response: response.head, body: response.body)
            if closeAfter { try? await channel.close() }
        }

        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        let serverChannel: NIOAsyncChannel<PeerHTTP1Channel.Value, Never>
        do {
            serverChannel = try await bootstrap.bind(NIOBSDSocket.Handle(bound.fd)) { channel in
                childSetup.setup(channel: channel, logger: logger)
            }
        } catch {
            if let path = bound.ownedPath { unlink(path) }
            throw error
        }
        let description = bound.ownedPath ?? "inherited socket fd \(bound.fd)"
        logger.info("control API listening on \(description)")

        await withGracefulShutdownHandler {
            await onListening(description)
            await withDiscardingTaskGroup { group in
                do {
                    try await serverChannel.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await childSetup.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("control socket accept loop ended: \(error)")
                }
            }
        } onGracefulShutdown: {
            let promise = self.eventLoopGroup.next().makePromise(of: Void.self)
            quiescing.initiateShutdown(promise: promise)
            Task { await self.onGracefulShutdown() }
        }
        // The socket file is ours only when we bound it; systemd owns an activated one.
        if let path = bound.ownedPath { unlink(path) }
        logger.info("control API stopped")
    }
}

/// HTTP/1.1 on a connection whose peer credentials are read once, when it is accepted.
struct PeerHTTP1Channel: ServerChildChannel {
    typealias Responder = @Sendable (Request, consuming ResponseWriter, any Channel, Caller) async throws -> Void

    struct Value: ServerChildChannelValue {
        var http: HTTP1Channel.Value
        /// `nil` when credentials could not be read: every request is then refused.
        var caller: Caller?
        var channel: any Channel { http.channel }
    }

    let configuration: HTTP1Channel.Configuration
    let adminGroup: UInt32?
    let responder: Responder

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let http1 = HTTP1Channel(responder: { _, _, _ in }, configuration: configuration)
        return channel.readCaller(adminGroup: adminGroup)
            .map { Optional($0) }
            .recover { _ in nil }
            .flatMap { caller in http1.setup(channel: channel, logger: logger).map { Value(http: $0, caller: caller) } }
    }

    func handle(value: Value, logger: Logger) async {
        let responder = self.responder
        let caller = value.caller
        let connection = HTTP1Channel(responder: { request, writer, channel in
            // Fail closed: no credentials, no service.
            guard let caller else {
                let refusal = errorResponse(APIError(.forbidden, "peer credentials could not be read"))
                try await writer.write(response: refusal.head, body: refusal.body)
                return
            }
            try await responder(request, writer, channel, caller)
        }, configuration: configuration)
        await connection.handle(value: value.http, logger: logger)
    }
}
