import Foundation
import NIOCore
import NIOPosix
import SandboxCore
import Testing
@testable import EgressProxy
#if canImport(Glibc)
import Glibc
#endif

/// A private network on this machine, built and destroyed by each test:
///
/// - `net`: a namespace standing in for the internet, joined to the host by a veth pair
///   (host 10.X.Y.1, net 10.X.Y.2) and running the test servers (HTTP :80, echo :7 and :22, DNS :53).
/// - `sbx`: the sandbox's namespace, loopback only, where the proxy's listener is created.
///
/// The proxy runs in the test process, in the host namespace, like the daemon. The sandbox has no
/// DNS, so proxy names come from a static table (``resolver``) that replaces DNS for the proxy.
final class NetworkLab: @unchecked Sendable {
    private nonisolated(unsafe) static var counter = 0
    private static let counterLock = NSLock()

    let net: String
    let sbx: String
    let hostInterface: String
    let peerInterface: String
    let hostAddress: String
    let serverAddress: String
    /// A link-local address of the lab's server, routed only through the lab's veth: if the
    /// link-local check ever broke, the proxy would reach the lab, never a real metadata service.
    let serverLinkLocal: String
    private(set) var netFD: Int32 = -1
    private(set) var sbxFD: Int32 = -1
    private var channels: [any Channel] = []
    private var proxies: [EgressProxy] = []
    private var createdEtcNetns = false
    /// Bytes the chargen server (port 19) got into its socket so far.
    let chargenWritten = Mutexed(0)
    /// Port of an HTTP server on the host's own 127.0.0.1 (what a sandbox must not reach by default).
    private(set) var hostLoopbackPort = 0
    /// Port of an HTTP server on the host's veth address (one of "this host's own addresses").
    let hostOwnPort = 8080

    static let ip = "/usr/sbin/ip"

    init() {
        let n = Self.counterLock.withLock { Self.counter += 1; return Self.counter }
        let pid = Int(getpid())
        net = "sbxd-eg\(pid)-\(n)-net"
        sbx = "sbxd-eg\(pid)-\(n)-sbx"
        hostInterface = "eg\(pid % 100_000)h\(n)"
        peerInterface = "eg\(pid % 100_000)p\(n)"
        let prefix = "10.\(100 + pid % 100).\(n % 250)"
        hostAddress = prefix + ".1"
        serverAddress = prefix + ".2"
        serverLinkLocal = "169.254.\(n % 250 + 1).2"
    }

    /// Runs `body` with a fresh lab and destroys it afterwards, also when `body` throws.
    static func with<T>(_ body: (NetworkLab) async throws -> T) async throws -> T {
        let lab = NetworkLab()
        do {
            try await lab.setUp()
            let result = try await body(lab)
            await lab.tearDown()
            return result
        } catch {
            await lab.tearDown()
            throw error
        }
    }

    private func setUp() async throws {
        try await Command.check([Self.ip, "netns", "add", net])
        try await Command.check([Self.ip, "netns", "add", sbx])
        try await Command.check([Self.ip, "link", "add", hostInterface, "type", "veth", "peer", "name", peerInterface, "netns", net])
        try await Command.check([Self.ip, "addr", "add", hostAddress + "/24", "dev", hostInterface])
        try await Command.check([Self.ip, "link", "set", hostInterface, "up"])
        try await Command.check([Self.ip, "-n", net, "addr", "add", serverAddress + "/24", "dev", peerInterface])
        try await Command.check([Self.ip, "-n", net, "link", "set", peerInterface, "up"])
        try await Command.check([Self.ip, "-n", net, "link", "set", "lo", "up"])
        try await Command.check([Self.ip, "-n", net, "addr", "add", serverLinkLocal + "/24", "dev", peerInterface])
        try await Command.check([Self.ip, "route", "add", serverLinkLocal, "dev", hostInterface])
        // `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf: both
        // namespaces get a resolver that exists (in `net`), so only reachability differs.
        createdEtcNetns = !FileManager.default.fileExists(atPath: "/etc/netns")
        for name in [net, sbx] {
            try FileManager.default.createDirectory(atPath: "/etc/netns/\(name)", withIntermediateDirectories: true)
            try "nameserver \(serverAddress)\noptions timeout:1 attempts:1\n".write(toFile: "/etc/netns/\(name)/resolv.conf", atomically: false, encoding: .utf8)
        }
        netFD = open("/run/netns/\(net)", O_RDONLY | O_CLOEXEC)
        sbxFD = open("/run/netns/\(sbx)", O_RDONLY | O_CLOEXEC)
        guard netFD >= 0, sbxFD >= 0 else { throw LabError("open /run/netns/*: \(String(cString: strerror(errno)))") }

        channels.append(try await TestServers.http(listeningSocket: try TestServers.tcpListener(namespaceFD: netFD, address: serverAddress, port: 80)))
        channels.append(try await TestServers.echo(listeningSocket: try TestServers.tcpListener(namespaceFD: netFD, address: serverAddress, port: 7)))
        channels.append(try await TestServers.echo(listeningSocket: try TestServers.tcpListener(namespaceFD: netFD, address: serverAddress, port: 22)))
        channels.append(try await TestServers.chargen(listeningSocket: try TestServers.tcpListener(namespaceFD: netFD, address: serverAddress, port: 19), written: chargenWritten))
        channels.append(try await TestServers.dns(socket: try TestServers.udpSocket(namespaceFD: netFD, address: serverAddress, port: 53), answering: serverAddress))
        // Servers in the host's own namespace: on loopback, and on the host's veth address.
        let loopbackServer = try await TestServers.http(bindingTo: "127.0.0.1", port: 0)
        channels.append(loopbackServer)
        hostLoopbackPort = loopbackServer.localAddress?.port ?? 0
        channels.append(try await TestServers.http(bindingTo: hostAddress, port: hostOwnPort))
    }

    func tearDown() async {
        // Every client is done by now: the proxy must have closed every connection by itself
        // (client and upstream sockets alike), without waiting for close().
        for proxy in proxies {
            var open = proxy.openConnections
            for _ in 0..<40 where open > 0 {
                try? await Task.sleep(for: .milliseconds(50))
                open = proxy.openConnections
            }
            #expect(open == 0, "proxy still holds \(open) connections after its clients left")
            await proxy.close()
        }
        proxies = []
        for channel in channels { try? await channel.close() }
        channels = []
        for fd in [netFD, sbxFD] where fd >= 0 { close(fd) }
        netFD = -1; sbxFD = -1
        _ = try? await Command.run([Self.ip, "netns", "del", net])
        _ = try? await Command.run([Self.ip, "netns", "del", sbx])
        _ = try? await Command.run([Self.ip, "link", "del", hostInterface]) // gone with `net` already, normally
        for name in [net, sbx] { try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)") }
        if createdEtcNetns, (try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns"))?.isEmpty == true {
            try? FileManager.default.removeItem(atPath: "/etc/netns")
        }
        // Never leave a namespace or interface behind.
        let namespaces = (try? await Command.run([Self.ip, "netns", "list"]))?.stdout ?? ""
        #expect(!namespaces.contains(net) && !namespaces.contains(sbx), "namespaces left behind: \(namespaces)")
        let link = try? await Command.run([Self.ip, "link", "show", hostInterface])
        #expect(link?.status != 0, "interface \(hostInterface) left behind")
        #expect(!FileManager.default.fileExists(atPath: "/etc/netns/\(sbx)"))
    }

    /// The name → address table that replaces DNS for the proxy (the lab has no DNS it may use).
    var resolver: StaticResolver {
        StaticResolver([
            "web.test": [serverAddress],
            "echo.test": [serverAddress],
            "unlisted.test": [serverAddress],
            "api.allowed.test": [serverAddress],
            "a.b.allowed.test": [serverAddress],
            "allowed.test": [serverAddress],
            "allowed.test-evil.test": [serverAddress],
            "evilallowed.test": [serverAddress],
            "loop.allowed.test": ["127.0.0.1"],
            "loop6.allowed.test": ["::1"],
            "mapped.allowed.test": ["::ffff:127.0.0.1"],
            "meta.allowed.test": [serverLinkLocal],
            "self.allowed.test": [hostAddress],
            "rebind.allowed.test": ["127.0.0.1", serverAddress],
            "hostdb.test": ["127.0.0.1"],
            "hostown.test": [hostAddress],
            "zero.test": ["0.0.0.0"],
            "closed.test": [serverAddress],
            "chargen.test": [serverAddress],
        ])
    }

    /// The policy the end-to-end tests use.
    static func network(allowedPorts: [Int] = []) throws -> Policy.Network {
        Policy.Network(
            allowedHosts: try ["web.test", "echo.test", "*.allowed.test", "hostdb.test", "hostown.test", "zero.test", "closed.test", "chargen.test"]
                .map { name throws(SandboxCoreError) in try HostPattern(parsing: name) },
            blockedPorts: [22], allowedPorts: allowedPorts)
    }

    /// Starts a proxy for the sandbox namespace on `port`, recording its events.
    func startProxy(network: Policy.Network, limits: EgressProxy.Limits = .init(), port: UInt16 = EgressListener.defaultPort) async throws -> EventLog {
        let log = EventLog()
        let fd = try EgressListener.make(inNetworkNamespace: sbxFD, port: port, describedAs: "/run/netns/\(sbx)")
        let proxy = try await EgressProxy.start(
            listeningSocket: fd,
            configuration: .init(sandboxID: "lab-\(sbx)", network: network, limits: limits, resolver: resolver),
            onEvent: { log.append($0) })
        proxies.append(proxy)
        return log
    }

    /// curl inside the sandbox namespace, with exactly the proxy environment the daemon sets.
    /// Prints the body, then a last line with the HTTP status curl saw.
    func curl(_ arguments: [String]) async throws -> CommandResult {
        let environment = EgressListener.sandboxEnvironment().sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return try await Command.run([Self.ip, "netns", "exec", sbx, "/usr/bin/env", "-i", "PATH=/usr/bin:/bin"] + environment + [
                                      "/usr/bin/curl", "-sS", "--max-time", "10", "-w", "\\n%{http_code}"] + arguments)
    }

    /// A command inside one of the lab's namespaces.
    func exec(in namespace: String, _ arguments: [String]) async throws -> CommandResult {
        try await Command.run([Self.ip, "netns", "exec", namespace] + arguments)
    }
}

/// Events a proxy reported, in order.
final class EventLog: Sendable {
    private let events = Mutexed<[EgressEventRecord]>([])

    func append(_ event: EgressEventRecord) { events.update { $0.append(event) } }
    var all: [EgressEventRecord] { events.get() }

    /// Waits (up to 3 s) for an event matching `predicate`: allowed connections report at close.
    func wait(for predicate: @Sendable (EgressEventRecord) -> Bool) async -> EgressEventRecord? {
        for _ in 0..<60 {
            if let event = all.first(where: predicate) { return event }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }
}
