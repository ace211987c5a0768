import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Turns a host name the policy allowed into addresses to check and connect to.
///
/// The proxy resolves names itself: the sandbox has no resolver at all. The default is
/// ``SystemResolver`` (getaddrinfo, the host's own DNS configuration); tests inject a
/// ``StaticResolver`` because their hosts live in network namespaces without DNS.
public protocol EgressResolver: Sendable {
    /// Every address of `host`, with `port` filled in, in the order to try them.
    func resolve(host: String, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<[SocketAddress]>
}

/// getaddrinfo(3) on a thread pool (it blocks; never on an event loop).
public struct SystemResolver: EgressResolver {
    let threadPool: NIOThreadPool

    /// - Parameter threadPool: where the blocking lookups run; `.singleton` by default.
    public init(threadPool: NIOThreadPool = .singleton) {
        self.threadPool = threadPool
    }

    public func resolve(host: String, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<[SocketAddress]> {
        threadPool.runIfActive(eventLoop: eventLoop) { try Self.getaddrinfo(host: host, port: port) }
    }

    static func getaddrinfo(host: String, port: Int) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_ADDRCONFIG
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw EgressProxyError(code: .resolution, message: "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var result: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ai_addr {
                switch entry.pointee.ai_family {
                case AF_INET:
                    result.append(SocketAddress(UnsafeRawPointer(sa).loadUnaligned(as: sockaddr_in.self), host: host))
                case AF_INET6:
                    result.append(SocketAddress(UnsafeRawPointer(sa).loadUnaligned(as: sockaddr_in6.self), host: host))
                default: break
                }
            }
            cursor = entry.pointee.ai_next
        }
        guard !result.isEmpty else {
            throw EgressProxyError(code: .resolution, message: "cannot resolve \(host): no IPv4 or IPv6 address")
        }
        return result
    }
}

/// A fixed name → addresses table, for hosts that have no DNS (test namespaces, air-gapped
/// deployments with a known set of upstreams). Unknown names fail to resolve.
public struct StaticResolver: EgressResolver {
    /// Lower-case host name → IP address strings (`10.1.2.3`, `fe80::1`).
    public let table: [String: [String]]

    public init(_ table: [String: [String]]) {
        self.table = Dictionary(table.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: +)
    }

    public func resolve(host: String, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<[SocketAddress]> {
        guard let addresses = table[host], !addresses.isEmpty else {
            return eventLoop.makeFailedFuture(EgressProxyError(code: .resolution, message: "cannot resolve \(host): not in the static table"))
        }
        do {
            return eventLoop.makeSucceededFuture(try addresses.map { try SocketAddress(ipAddress: $0, port: port) })
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }
}
