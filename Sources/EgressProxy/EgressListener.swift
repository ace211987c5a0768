#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Creates the proxy's listening socket inside a sandbox's network namespace.
///
/// A socket belongs to the network namespace it was created in, forever, whichever thread later
/// uses it. So a short-lived dedicated OS thread (never a cooperative-pool or event-loop thread)
/// enters the namespace with `setns(CLONE_NEWNET)`, brings `lo` up if needed, creates, binds and
/// listens, and exits; the namespace change dies with it. The daemon then serves the returned fd
/// from its own namespace (``EgressProxy``): the sandbox reaches `127.0.0.1:3128`, and nothing else.
public enum EgressListener {
    /// The port announced to sandboxes in `HTTP_PROXY` (Squid's customary port).
    public static let defaultPort: UInt16 = 3128

    /// The variables a sandbox served by a proxy on `port` gets (all in
    /// `Policy.daemonSetVariables`, so no request can override them). Both spellings, because
    /// curl reads only lower-case `http_proxy` and most other clients read either. Loopback stays
    /// direct: it is the sandbox's own loopback, where the proxy would refuse it anyway.
    public static func sandboxEnvironment(port: UInt16 = defaultPort) -> [String: String] {
        let url = "http://127.0.0.1:\(port)"
        let direct = "localhost,127.0.0.1,::1"
        return ["HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
                "NO_PROXY": direct, "no_proxy": direct]
    }

    /// A listening TCP socket on `127.0.0.1:port` inside the network namespace of `pid`.
    /// - Returns: the fd (close-on-exec, non-blocking); the caller owns it (``EgressProxy`` closes
    ///   it when it stops).
    public static func make(inNetworkNamespaceOf pid: pid_t, port: UInt16 = defaultPort) throws(EgressProxyError) -> Int32 {
        let path = "/proc/\(pid)/ns/net"
        let namespace = open(path, O_RDONLY | O_CLOEXEC)
        guard namespace >= 0 else { throw .syscall("open", path, errno: errno) }
        defer { close(namespace) }
        return try make(inNetworkNamespace: namespace, port: port, describedAs: path)
    }

    /// A listening TCP socket on `127.0.0.1:port` inside the network namespace open as
    /// `namespaceFD` (from `/proc/PID/ns/net`, `/run/netns/NAME`, or a pidfd).
    public static func make(inNetworkNamespace namespaceFD: Int32, port: UInt16 = defaultPort,
                            describedAs name: String = "netns") throws(EgressProxyError) -> Int32 {
        try listeningSocket(inNetworkNamespace: namespaceFD, address: "127.0.0.1", port: port, describedAs: name)
    }

    /// A listening TCP socket on `address:port` (IPv4) inside a network namespace.
    static func listeningSocket(inNetworkNamespace namespaceFD: Int32, address: String, port: UInt16,
                                describedAs name: String) throws(EgressProxyError) -> Int32 {
        try NetworkNamespace.run(in: namespaceFD, describedAs: name) { () throws(EgressProxyError) -> Int32 in
            try NetworkNamespace.bringLoopbackUp()
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw .syscall("socket", "AF_INET in \(name)", errno: errno) }
            var success = false
            defer { if !success { close(fd) } }
            var one: Int32 = 1
            guard setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                throw .syscall("setsockopt", "SO_REUSEADDR", errno: errno)
            }
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else {
                throw EgressProxyError(code: .systemCall, message: "inet_pton(\(address)): not an IPv4 address")
            }
            let bound = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw .syscall("bind", "\(address):\(port) in \(name)", errno: errno) }
            guard listen(fd, 128) == 0 else { throw .syscall("listen", "\(address):\(port) in \(name)", errno: errno) }
            success = true
            return fd
        }
    }
}

/// Runs short, synchronous work inside another network namespace on a dedicated OS thread.
enum NetworkNamespace {
    fileprivate final class Job<Value>: @unchecked Sendable {
        // Written by the worker thread, read by the caller after pthread_join (a happens-before edge).
        let namespaceFD: Int32
        let name: String
        let body: () throws(EgressProxyError) -> Value
        var result: Result<Value, EgressProxyError>?

        init(namespaceFD: Int32, name: String, body: @escaping () throws(EgressProxyError) -> Value) {
            self.namespaceFD = namespaceFD
            self.name = name
            self.body = body
        }

        func run() {
            // unshare(CLONE_FS) is not needed: network namespaces are per thread, and this thread
            // exits right after, so no other code ever runs in the sandbox's namespace.
            guard let setns = NetworkNamespace.setns else {
                result = .failure(EgressProxyError(code: .systemCall, message: "setns: not found in the C library"))
                return
            }
            guard setns(namespaceFD, NetworkNamespace.cloneNewNet) == 0 else {
                result = .failure(.syscall("setns", "\(name), CLONE_NEWNET", errno: errno))
                return
            }
            do throws(EgressProxyError) { result = .success(try body()) } catch { result = .failure(error) }
        }
    }

    /// `CLONE_NEWNET` from <sched.h>.
    static let cloneNewNet: Int32 = 0x4000_0000

    /// glibc's setns(2) wrapper. Glibc's Swift module leaves out the _GNU_SOURCE declarations,
    /// so it is looked up once by name rather than adding a C target for one call.
    static let setns: (@convention(c) (Int32, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
    }()

    /// Calls `body` on a new thread that has joined the namespace, waits for it (these are a few
    /// non-blocking syscalls, so the caller's thread is held for microseconds), and returns its result.
    static func run<Value>(in namespaceFD: Int32, describedAs name: String,
                           _ body: @escaping () throws(EgressProxyError) -> Value) throws(EgressProxyError) -> Value {
        let job = Job(namespaceFD: namespaceFD, name: name, body: body)
        let context = Unmanaged.passRetained(job).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            let job = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! any NamespaceRunnable
            job.runJob()
            return nil
        }, context)
        guard created == 0 else {
            Unmanaged<Job<Value>>.fromOpaque(context).release()
            throw .syscall("pthread_create", name, errno: created)
        }
        pthread_join(thread, nil)
        guard let result = job.result else {
            throw EgressProxyError(code: .systemCall, message: "namespace worker for \(name) returned nothing")
        }
        return try result.get()
    }

    /// `ip link set lo up`: a fresh network namespace has `lo` down, and 127.0.0.1 unusable.
    static func bringLoopbackUp() throws(EgressProxyError) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .syscall("socket", "AF_INET (for SIOCGIFFLAGS)", errno: errno) }
        defer { close(fd) }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: Array("lo".utf8)) }
        guard ioctl(fd, UInt(SIOCGIFFLAGS), &request) == 0 else { throw .syscall("ioctl", "lo, SIOCGIFFLAGS", errno: errno) }
        if request.ifr_ifru.ifru_flags & Int16(IFF_UP) != 0 { return }
        request.ifr_ifru.ifru_flags |= Int16(IFF_UP)
        guard ioctl(fd, UInt(SIOCSIFFLAGS), &request) == 0 else { throw .syscall("ioctl", "lo, SIOCSIFFLAGS up", errno: errno) }
    }
}

private protocol NamespaceRunnable: AnyObject { func runJob() }
extension NetworkNamespace.Job: NamespaceRunnable { func runJob() { run() } }
