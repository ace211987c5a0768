import Foundation
import Logging
import NIOCore
import NIOPosix
import SandboxCore
import Synchronization

/// A sandbox's egress allowlist proxy: an HTTP/1.1 forward proxy (absolute-form requests) and
/// HTTPS `CONNECT` tunnel that serves one listening socket created inside the sandbox's network
/// namespace (``EgressListener``) and connects out from the daemon's namespace.
///
/// Each accepted connection carries one request. The requested host name is checked against the
/// policy (``EgressRules``), the proxy resolves it itself, checks every address (``AddressCheck``)
/// and connects to a checked address. Every allowed and denied request becomes an ``SandboxCore/EgressEventRecord`` (execution id left for the daemon to fill in).
public final class EgressProxy: Sendable {
    /// Bounds on what one sandbox can make the proxy hold.
    public struct Limits: Hashable, Sendable {
        /// Request line plus headers; more is answered 431.
        public var maxHeaderBytes: Int
        /// The whole request head must arrive within this time (slow-loris bound); else 408.
        public var headTimeout: TimeAmount
        /// Per upstream address tried.
        public var connectTimeout: TimeAmount
        /// A connection with no bytes either way for this long is closed.
        public var idleTimeout: TimeAmount
        /// Concurrent client connections; one more is answered 503.
        public var maxConnections: Int
        /// At most this many resolved addresses are tried, in order.
        public var maxAddressesTried: Int

        public init(maxHeaderBytes: Int = 16 * 1024, headTimeout: TimeAmount = .seconds(10),
                    connectTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(300),
                    maxConnections: Int = 64, maxAddressesTried: Int = 4) {
            self.maxHeaderBytes = maxHeaderBytes
            self.headTimeout = headTimeout
            self.connectTimeout = connectTimeout
            self.idleTimeout = idleTimeout
            self.maxConnections = maxConnections
            self.maxAddressesTried = maxAddressesTried
        }
    }

    /// Everything one sandbox's proxy needs.
    public struct Configuration: Sendable {
        /// The sandbox (or execution) id put in every event.
        public var sandboxID: String
        public var rules: EgressRules
        public var limits: Limits
        public var resolver: any EgressResolver

        public init(sandboxID: String, rules: EgressRules, limits: Limits = .init(),
                    resolver: any EgressResolver = SystemResolver()) {
            self.sandboxID = sandboxID
            self.rules = rules
            self.limits = limits
            self.resolver = resolver
        }

        public init(sandboxID: String, network: Policy.Network, limits: Limits = .init(),
                    resolver: any EgressResolver = SystemResolver()) {
            self.init(sandboxID: sandboxID, rules: EgressRules(network), limits: limits, resolver: resolver)
        }
    }

    private let shared: ConnectionShared
    private let serverChannel: any Channel

    /// Starts serving `listeningSocket` (bound and listening, e.g. from ``EgressListener``); the
    /// proxy owns the fd from here on and closes it in ``close()``.
    /// - Parameters:
    ///   - group: event loops for the listener, client and upstream connections.
    ///   - onEvent: called once per request, on an event-loop thread: must not block.
    public static func start(listeningSocket: Int32, configuration: Configuration,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             logger: Logger = Logger(label: "sandboxd.egress"),
                             onEvent: @escaping @Sendable (EgressEventRecord) -> Void) async throws -> EgressProxy {
        let shared = ConnectionShared(configuration: configuration, onEvent: onEvent, logger: logger)
        let limits = configuration.limits
        let bootstrap = ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: true)
            // Half-closure is seen (ChannelEvent.inputClosed) so tunnels can pass it on.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                let admitted = shared.connections.withLock { open -> Bool in
                    guard open.count < limits.maxConnections else { return false }
                    open[ObjectIdentifier(channel)] = channel
                    return true
                }
                channel.closeFuture.whenComplete { _ in
                    _ = shared.connections.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try ProxyConnectionHandler.install(on: channel, shared: shared, admitted: admitted)
                }
            }
        let server: any Channel
        do {
            server = try await bootstrap.withBoundSocket(listeningSocket).get()
        } catch {
            throw EgressProxyError(code: .startFailed, message: "serving egress listener fd \(listeningSocket) for \(configuration.sandboxID): \(error)")
        }
        return EgressProxy(shared: shared, serverChannel: server)
    }

    /// Creates the listener inside the network namespace of `pid` (``EgressListener``, on a
    /// thread-pool thread, not the caller's) and starts serving it: the one call a supervisor needs
    /// per sandbox, after the sandbox's network namespace exists and before its workload starts.
    public static func start(inNetworkNamespaceOf pid: pid_t, port: UInt16 = EgressListener.defaultPort,
                             configuration: Configuration,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             logger: Logger = Logger(label: "sandboxd.egress"),
                             onEvent: @escaping @Sendable (EgressEventRecord) -> Void) async throws -> EgressProxy {
        let fd = try await NIOThreadPool.singleton.runIfActive {
            try EgressListener.make(inNetworkNamespaceOf: pid, port: port)
        }
        return try await start(listeningSocket: fd, configuration: configuration, group: group, logger: logger, onEvent: onEvent)
    }

    private init(shared: ConnectionShared, serverChannel: any Channel) {
        self.shared = shared
        self.serverChannel = serverChannel
    }

    /// The configuration this proxy serves.
    public var configuration: Configuration { shared.configuration }

    /// Connections open right now.
    public var openConnections: Int { shared.connections.withLock { $0.count } }

    /// Stops listening (closing the listener fd) and closes every open connection, which emits
    /// their final events. Call when the sandbox is destroyed.
    public func close() async {
        try? await serverChannel.close()
        let open = shared.connections.withLock { Array($0.values) }
        for channel in open { try? await channel.close() }
    }
}

/// What every connection handler of one proxy shares.
final class ConnectionShared: Sendable {
    let configuration: EgressProxy.Configuration
    let onEvent: @Sendable (EgressEventRecord) -> Void
    let logger: Logger
    /// Open client connections, so ``EgressProxy/close()`` can close them and the limit can be kept.
    let connections = Mutex<[ObjectIdentifier: any Channel]>([:])

    init(configuration: EgressProxy.Configuration, onEvent: @escaping @Sendable (EgressEventRecord) -> Void, logger: Logger) {
        self.configuration = configuration
        self.onEvent = onEvent
        self.logger = logger
    }
}
