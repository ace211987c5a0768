import Foundation
import SandboxCore
import Testing
@testable import EgressProxy
#if canImport(Glibc)
import Glibc
#endif

/// End-to-end: real namespaces, a real veth, servers in a namespace standing in for the internet,
/// the proxy's listener inside a loopback-only "sandbox" namespace, and curl run inside it.
@Suite("Egress proxy, end to end (root: network namespaces)", .serialized,
       .enabled(if: getuid() == 0, "needs root to create network namespaces"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") && FileManager.default.isExecutableFile(atPath: NetworkLab.ip),
                "needs curl and iproute2 (make test installs them)"))
struct EgressProxyEndToEndTests {
    /// Body and status from `NetworkLab.curl` output.
    private func split(_ result: CommandResult) -> (body: String, status: Int) {
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (lines.dropLast().joined(separator: "\n"), Int(lines.last ?? "") ?? -1)
    }

    @Test("an allowed host is reached by name through the HTTP proxy; the request is rewritten and recorded")
    func allowedHostOverHTTP() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let result = try await lab.curl(["-H", "Proxy-Authorization: Basic c2VjcmV0", "-H", "X-Agent: test", "http://web.test/hello?x=1"])
            let (body, status) = split(result)
            #expect(status == 200, "\(result)")
            #expect(body.contains("GET /hello?x=1 HTTP/1.1"))
            #expect(body.contains("Host: web.test"))
            #expect(body.contains("X-Agent: test"))
            #expect(body.contains("Connection: close"))
            #expect(!body.lowercased().contains("proxy-authorization"), "proxy credentials leaked upstream: \(body)")
            let event = try #require(await log.wait { $0.decision == .allowed })
            #expect(event.host == "web.test" && event.port == 80 && event.method == "GET")
            #expect(event.address == lab.serverAddress)
            #expect(event.reason == "allowed by web.test")
            #expect(event.bytesUp > 0 && event.bytesDown > body.utf8.count)
            #expect(event.sandboxID == "lab-\(lab.sbx)")

            // Request bodies pass, with either framing.
            let posted = split(try await lab.curl(["--data-binary", "field=value", "http://web.test/form"]))
            #expect(posted.status == 200 && posted.body.contains("POST /form HTTP/1.1") && posted.body.contains("body: field=value"), "\(posted)")
            let chunked = split(try await lab.curl(["-H", "Transfer-Encoding: chunked", "--data-binary", "streamed", "http://web.test/upload"]))
            #expect(chunked.status == 200 && chunked.body.contains("body: streamed"), "\(chunked)")
        }
    }

    @Test("an allowed host is reached through a CONNECT tunnel; bytes are relayed and counted")
    func allowedHostOverConnect() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let result = try await lab.curl(["--proxytunnel", "http://web.test/tunnelled"])
            let (body, status) = split(result)
            #expect(status == 200, "\(result)")
            #expect(body.contains("GET /tunnelled HTTP/1.1"))
            let tunnel = try #require(await log.wait { $0.method == "CONNECT" && $0.decision == .allowed })
            #expect(tunnel.status == 200 && tunnel.host == "web.test" && tunnel.address == lab.serverAddress)

            let payload = Array("ping through the tunnel\n".utf8)
            let echo = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n".utf8), payload: payload)
            #expect(echo.response.hasPrefix("HTTP/1.1 200 Connection Established\r\n\r\n"), "\(echo.response)")
            #expect(echo.response.hasSuffix("ping through the tunnel\n"))
            let event = try #require(await log.wait { $0.host == "echo.test" })
            #expect(event.decision == .allowed && event.port == 7)
            #expect(event.bytesUp == payload.count && event.bytesDown == payload.count)

            // A client that half-closes after sending still gets the whole answer, then EOF.
            let halfClosed = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("CONNECT echo.test:7 HTTP/1.1\r\n\r\n".utf8),
                                                      payload: Array("last words\n".utf8), halfClose: true)
            #expect(halfClosed.response == "HTTP/1.1 200 Connection Established\r\n\r\nlast words\n<EOF>", "\(halfClosed.response)")
        }
    }

    @Test("an unlisted host is refused with 403 and a denial event, over HTTP and CONNECT")
    func unlistedHost() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let (body, status) = split(try await lab.curl(["http://unlisted.test/"]))
            #expect(status == 403)
            #expect(body == "host not allowed: unlisted.test\n")
            let tunnel = try await lab.curl(["--proxytunnel", "http://unlisted.test/"])
            #expect(tunnel.status != 0)
            #expect(tunnel.stderr.contains("403"), "\(tunnel)")
            let denials = log.all.filter { $0.decision == .denied }
            #expect(denials.map(\.method) == ["GET", "CONNECT"])
            #expect(denials.allSatisfy { $0.host == "unlisted.test" && $0.reason == "host not allowed: unlisted.test" && $0.status == 403 })
            #expect(denials.allSatisfy { $0.address == nil }, "an unlisted name must not even be resolved")
        }
    }

    @Test("a blocked port is refused even for a listed host; allowed_ports refuses the others")
    func blockedPorts() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let (body, status) = split(try await lab.curl(["http://web.test:22/"]))
            #expect(status == 403 && body == "port 22 is blocked\n")
            let raw = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("CONNECT echo.test:22 HTTP/1.1\r\n\r\n".utf8))
            #expect(raw.response.hasPrefix("HTTP/1.1 403 Forbidden"))
            #expect(raw.response.hasSuffix("port 22 is blocked\n"))
            #expect(log.all.filter { $0.reason == "port 22 is blocked" }.count == 2)

            let strictLog = try await lab.startProxy(network: try NetworkLab.network(allowedPorts: [80]), port: 3129)
            let strict = await RawClient.exchange(namespaceFD: lab.sbxFD, port: 3129, head: Array("CONNECT echo.test:7 HTTP/1.1\r\n\r\n".utf8))
            #expect(strict.response.hasSuffix("port 7 is not in allowed_ports\n"), "\(strict.response)")
            #expect(strictLog.all.first?.decision == .denied)
        }
    }

    @Test("requests naming an IP address are refused, whatever its spelling")
    func ipLiterals() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            for url in ["http://\(lab.serverAddress)/", "http://2130706433/", "http://0x7f.1/", "http://[::1]/"] {
                // --noproxy "": send even loopback spellings to the proxy (NO_PROXY would keep them
                // on the sandbox's own loopback, which is harmless but not what this test is about).
                let (body, status) = split(try await lab.curl(["-g", "--noproxy", "", url]))
                #expect(status == 403, "\(url)")
                #expect(body.hasPrefix("IP addresses are not allowed"), "\(url): \(body)")
            }
            // Spellings sent as they are (curl rewrites some of them before the proxy sees them).
            for target in ["\(lab.serverAddress):80", "0x7f.1:80", "2130706433:80", "127.1:80", "[::1]:80", "[::ffff:7f00:1]:80"] {
                let raw = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("CONNECT \(target) HTTP/1.1\r\n\r\n".utf8))
                #expect(raw.response.hasPrefix("HTTP/1.1 403"), "\(target): \(raw.response)")
                #expect(raw.response.contains("IP addresses are not allowed"), "\(target)")
            }
            #expect(log.all.count == 10 && log.all.allSatisfy { $0.decision == .denied && $0.address == nil })
            // The proxy emits the stored record type: one id per event, the execution left to the daemon.
            #expect(Set(log.all.map(\.id)).count == 10 && log.all.allSatisfy { $0.executionID == nil })
        }
    }

    @Test("without the proxy nothing leaves the sandbox: no route to any address, no name resolution")
    func noWayAroundTheProxy() async throws {
        try await NetworkLab.with { lab in
            _ = try await lab.startProxy(network: try NetworkLab.network())
            // Control: the server is there and reachable from the host.
            let control = try await Command.run(["/usr/bin/curl", "-sS", "--noproxy", "*", "--max-time", "5", "http://\(lab.serverAddress)/control"])
            #expect(control.status == 0 && control.stdout.contains("GET /control"), "\(control)")

            let direct = try await lab.curl(["--noproxy", "*", "http://\(lab.serverAddress)/"])
            #expect(direct.status == 7, "\(direct)") // couldn't connect
            #expect(direct.stderr.lowercased().contains("unreachable") || direct.stderr.contains("Couldn't connect"), "\(direct)")
            let byName = try await lab.curl(["--noproxy", "*", "http://web.test/"])
            #expect(byName.status == 6, "\(byName)") // couldn't resolve host
            let hostLoopback = try await lab.curl(["--noproxy", "*", "http://127.0.0.1:\(lab.hostLoopbackPort)/"])
            #expect(hostLoopback.status == 7, "the sandbox's 127.0.0.1 must not be the host's: \(hostLoopback)")
        }
    }

    @Test("DNS lookups inside the sandbox fail, while the same resolver answers from a routed namespace")
    func noDNSInside() async throws {
        try await NetworkLab.with { lab in
            let control = try await lab.exec(in: lab.net, ["/usr/bin/getent", "hosts", "anything.test"])
            #expect(control.status == 0 && control.stdout.contains(lab.serverAddress), "the test DNS server must answer: \(control)")
            let inside = try await lab.exec(in: lab.sbx, ["/usr/bin/getent", "hosts", "anything.test"])
            #expect(inside.status != 0 && inside.stdout.isEmpty, "\(inside)")
            let example = try await lab.exec(in: lab.sbx, ["/usr/bin/getent", "ahosts", "example.com"])
            #expect(example.status != 0 && example.stdout.isEmpty, "\(example)")
        }
    }

    @Test("a listed name resolving to loopback, link-local, unspecified or the host's own address is refused")
    func dangerousAddresses() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let cases = [
                ("http://loop.allowed.test/", "address 127.0.0.1 is loopback"),
                ("http://loop6.allowed.test/", "address ::1 is loopback"),
                ("http://mapped.allowed.test/", "address ::ffff:127.0.0.1 is loopback"),
                ("http://meta.allowed.test/latest/meta-data/", "address \(lab.serverLinkLocal) is link-local"),
                ("http://self.allowed.test:\(lab.hostOwnPort)/", "address \(lab.hostAddress) is one of this host's own addresses"),
                ("http://zero.test/", "address 0.0.0.0 is unspecified"),
            ]
            for (url, reason) in cases {
                let (body, status) = split(try await lab.curl([url]))
                #expect(status == 403, "\(url)")
                #expect(body == reason + "\n", "\(url)")
            }
            #expect(log.all.filter { $0.decision == .denied }.map(\.address) == ["127.0.0.1", "::1", "::ffff:127.0.0.1", lab.serverLinkLocal, lab.hostAddress, "0.0.0.0"])
        }
    }

    @Test("a name listed literally may reach the host's loopback and own address; a mixed answer uses only the safe address")
    func exactListingAndRebinding() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let db = split(try await lab.curl(["http://hostdb.test:\(lab.hostLoopbackPort)/db"]))
            #expect(db.status == 200 && db.body.contains("GET /db"))
            let own = split(try await lab.curl(["http://hostown.test:\(lab.hostOwnPort)/own"]))
            #expect(own.status == 200 && own.body.contains("GET /own"))
            let rebind = split(try await lab.curl(["http://rebind.allowed.test/r"]))
            #expect(rebind.status == 200 && rebind.body.contains("GET /r"))
            let event = try #require(await log.wait { $0.host == "rebind.allowed.test" })
            #expect(event.address == lab.serverAddress, "connected to an unchecked address")
        }
    }

    @Test("*.suffix reaches names below it, not the suffix itself nor look-alike names")
    func wildcards() async throws {
        try await NetworkLab.with { lab in
            _ = try await lab.startProxy(network: try NetworkLab.network())
            for name in ["api.allowed.test", "a.b.allowed.test", "API.Allowed.Test."] {
                #expect(split(try await lab.curl(["http://\(name)/"])).status == 200, "\(name)")
            }
            for name in ["allowed.test", "allowed.test-evil.test", "evilallowed.test"] {
                let (body, status) = split(try await lab.curl(["http://\(name)/"]))
                #expect(status == 403 && body == "host not allowed: \(name)\n", "\(name)")
            }
        }
    }

    @Test("malformed requests get 400 and a denial event")
    func malformed() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            let heads = [
                "GARBAGE\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n",
                "CONNECT web.test HTTP/1.1\r\n\r\n",
                "CONNECT web.test:99999 HTTP/1.1\r\n\r\n",
                "GET http://user@web.test/ HTTP/1.1\r\n\r\n",
                "GET https://web.test/ HTTP/1.1\r\n\r\n",
                "GET http://web.test/ HTTP/2.0\r\n\r\n",
                "GET http://web.test/ HTTP/1.1\r\nBad Header\r\n\r\n",
                // Request smuggling shapes: conflicting framing must not reach an upstream.
                "POST http://web.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST http://web.test/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
            ]
            for head in heads {
                let exchange = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array(head.utf8))
                #expect(exchange.response.hasPrefix("HTTP/1.1 400 Bad Request"), "\(head.debugDescription): \(exchange.response)")
            }
            #expect(log.all.count == heads.count && log.all.allSatisfy { $0.decision == .denied && $0.status == 400 })
        }
    }

    @Test("a header flood is cut off with 431 after the limit, and the proxy stays healthy")
    func headerFlood() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network(), limits: .init(maxHeaderBytes: 16 * 1024))
            var manyHeaders = "GET http://web.test/ HTTP/1.1\r\n"
            for i in 0..<20_000 { manyHeaders += "X-Flood-\(i): \(String(repeating: "a", count: 40))\r\n" }
            let oneLongLine = "GET http://web.test/" + String(repeating: "b", count: 1 << 20)
            for flood in [manyHeaders, oneLongLine] {
                let exchange = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array(flood.utf8))
                #expect(exchange.response.hasPrefix("HTTP/1.1 431"), "\(exchange.response.prefix(200))")
            }
            let refusals = log.all.filter { $0.status == 431 }
            #expect(refusals.count == 2)
            // The proxy read the limit plus at most one socket read (NIO reads up to 64 KiB), not the 1 MiB flood.
            for refusal in refusals {
                #expect(refusal.bytesUp > 16 * 1024 && refusal.bytesUp <= 16 * 1024 + 65536, "read \(refusal.bytesUp) bytes of a flood")
            }
            #expect(split(try await lab.curl(["http://web.test/after"])).status == 200)
        }
    }

    @Test("connections beyond the per-sandbox limit get 503; slow heads get 408; dead upstreams 502")
    func limits() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network(), limits: .init(headTimeout: .seconds(1), maxConnections: 3))
            let over = await RawClient.holdingConnections(namespaceFD: lab.sbxFD, count: 3)
            #expect(over.response.hasPrefix("HTTP/1.1 503"), "\(over.response)")
            #expect(over.response.contains("too many connections"))
            // The held connections sent nothing: each timed out with 408 before the client closed them.
            var slow = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("GET http://web.test/ HTTP/1.1\r\n".utf8))
            // The held connections' closes can reach the proxy a moment after the client returns;
            // until they do, the slot is still taken and a new connection rightly gets 503.
            for _ in 0..<50 where slow.response.hasPrefix("HTTP/1.1 503") {
                try await Task.sleep(for: .milliseconds(100))
                slow = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("GET http://web.test/ HTTP/1.1\r\n".utf8))
            }
            #expect(slow.response.hasPrefix("HTTP/1.1 408"), "\(slow.response)")
            let dead = split(try await lab.curl(["http://closed.test:81/"]))
            #expect(dead.status == 502 && dead.body.hasPrefix("cannot connect to closed.test:81"), "\(dead)")
            #expect(log.all.contains { $0.decision == .failed && $0.host == "closed.test" && $0.address == lab.serverAddress })
            #expect(split(try await lab.curl(["http://web.test/still-fine"])).status == 200)
        }
    }

    @Test("a sandbox that stops reading stops the upstream too: the proxy does not buffer a download")
    func backpressure() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network())
            // The client reads the 200 head byte by byte (so no tunnel data with it), then nothing for 2 s.
            let exchange = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("CONNECT chargen.test:19 HTTP/1.1\r\n\r\n".utf8), stallAfterHead: 2)
            #expect(exchange.response.hasPrefix("HTTP/1.1 200"), "\(exchange.response.prefix(100))")
            let pushed = lab.chargenWritten.get()
            // Socket buffers along the way (client, proxy both sides, server) hold a few MiB at most;
            // without backpressure the proxy would have taken all 256 MiB the server offers.
            #expect(pushed > 0 && pushed < 64 << 20, "the server got \(pushed) bytes into a connection nobody read")
            let event = try #require(await log.wait { $0.host == "chargen.test" })
            #expect(event.bytesDown <= pushed)
        }
    }

    @Test("an idle tunnel is closed after the idle timeout")
    func idleTunnel() async throws {
        try await NetworkLab.with { lab in
            let log = try await lab.startProxy(network: try NetworkLab.network(), limits: .init(idleTimeout: .seconds(1)))
            // The client would wait 8 s for more; the proxy closes after 1 s of silence.
            let exchange = await RawClient.exchange(namespaceFD: lab.sbxFD, head: Array("CONNECT echo.test:7 HTTP/1.1\r\n\r\n".utf8), timeout: 8)
            #expect(exchange.response == "HTTP/1.1 200 Connection Established\r\n\r\n")
            let event = try #require(await log.wait { $0.host == "echo.test" })
            #expect(event.duration < 6, "closed after \(event.duration) s")
        }
    }

    @Test("the listener made from a pid lives in that process's network namespace, not the host's; close() removes it")
    func listenerByPid() async throws {
        try await NetworkLab.with { lab in
            let sleeper = Process()
            sleeper.executableURL = URL(fileURLWithPath: NetworkLab.ip)
            sleeper.arguments = ["netns", "exec", lab.sbx, "/bin/sleep", "30"]
            try sleeper.run()
            defer { if sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL); sleeper.waitUntilExit() } }
            // `ip netns exec` switches namespace, then execs sleep in the same process.
            var inode = ""
            for _ in 0..<100 {
                inode = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(sleeper.processIdentifier)/ns/net")) ?? ""
                let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")) ?? ""
                if !inode.isEmpty, inode != own { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let log = EventLog()
            let proxy = try await EgressProxy.start(
                inNetworkNamespaceOf: sleeper.processIdentifier, port: 3130,
                configuration: .init(sandboxID: "by-pid", network: try NetworkLab.network(), resolver: lab.resolver),
                onEvent: { log.append($0) })
            #expect(RawClient.connectLoopback(port: 3130).map { close($0) } == nil, "listener reachable from the host's 127.0.0.1")
            let inside = await RawClient.exchange(namespaceFD: lab.sbxFD, port: 3130, head: Array("GET http://unlisted.test/ HTTP/1.1\r\n\r\n".utf8))
            #expect(inside.response.hasPrefix("HTTP/1.1 403"), "\(inside)")
            #expect(log.all.first?.sandboxID == "by-pid")
            await proxy.close()
            // close() returns once the listener is closed: refused at once.
            let after = await RawClient.exchange(namespaceFD: lab.sbxFD, port: 3130, head: Array("GET http://web.test/ HTTP/1.1\r\n\r\n".utf8), timeout: 2)
            #expect(after.connectError != nil, "listener still open after close(): \(after)")
        }
    }

    @Test("a sandbox with its own user namespace (lo still down) gets a working listener")
    func listenerInUserNamespace() async throws {
        try await NetworkLab.with { lab in
            let sandbox = Process()
            sandbox.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            sandbox.arguments = ["--user", "--map-root-user", "--net", "/bin/sleep", "30"]
            try sandbox.run()
            defer { if sandbox.isRunning { kill(sandbox.processIdentifier, SIGKILL); sandbox.waitUntilExit() } }
            let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
            for _ in 0..<100 where ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(sandbox.processIdentifier)/ns/net")) ?? own) == own {
                try await Task.sleep(for: .milliseconds(20))
            }
            let namespace = open("/proc/\(sandbox.processIdentifier)/ns/net", O_RDONLY | O_CLOEXEC)
            try #require(namespace >= 0)
            defer { close(namespace) }
            let proxy = try await EgressProxy.start(
                inNetworkNamespaceOf: sandbox.processIdentifier,
                configuration: .init(sandboxID: "userns", network: try NetworkLab.network(), resolver: lab.resolver),
                onEvent: { _ in })
            let exchange = await RawClient.exchange(namespaceFD: namespace, head: Array("GET http://web.test/userns HTTP/1.1\r\n\r\n".utf8))
            await proxy.close() // the listener fd would keep the sandbox's namespace alive
            #expect(exchange.response.hasPrefix("HTTP/1.1 200"), "\(exchange)")
            #expect(exchange.response.contains("GET /userns HTTP/1.1"))
        }
    }

    @Test("making a listener in a namespace that does not exist fails naming the call and the path")
    func listenerErrors() {
        #expect(throws: EgressProxyError.self) { _ = try EgressListener.make(inNetworkNamespaceOf: 999_999_999) }
        do {
            _ = try EgressListener.make(inNetworkNamespaceOf: 999_999_999)
        } catch {
            #expect(error.message == "open(/proc/999999999/ns/net): ENOENT (No such file or directory)")
        }
    }
}
