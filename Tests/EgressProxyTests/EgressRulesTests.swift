import NIOCore
import NIOHTTP1
import SandboxCore
import Testing
@testable import EgressProxy

struct EgressRulesTests {
    let rules = EgressRules(Policy.Network(
        allowedHosts: try! ["api.example.com", "*.cdn.example.org", "localdb.internal"].map { try HostPattern(parsing: $0) },
        blockedPorts: [22, 25]))

    private func host(_ text: String) -> String { EgressRules.normalizedHost(Substring(text))! }

    @Test("an exact entry matches case-insensitively and without the trailing dot")
    func exactMatch() {
        #expect(rules.verdict(host: host("API.Example.COM."), port: 443) == .allowed(pattern: try! HostPattern(parsing: "api.example.com"), listedExactly: true))
        #expect(rules.verdict(host: host("example.com"), port: 443) == .denied(reason: "host not allowed: example.com"))
        #expect(rules.verdict(host: host("api.example.com.evil.net"), port: 443) == .denied(reason: "host not allowed: api.example.com.evil.net"))
    }

    @Test("*.suffix matches names below the suffix, not the suffix itself nor look-alikes",
          arguments: [("img.cdn.example.org", true), ("a.b.cdn.example.org", true), ("cdn.example.org", false),
                      ("evilcdn.example.org", false), ("cdn.example.org-evil.com", false), ("cdn.example.org.evil.com", false)])
    func wildcard(name: String, allowed: Bool) {
        let verdict = rules.verdict(host: host(name), port: 443)
        if allowed {
            #expect(verdict == .allowed(pattern: try! HostPattern(parsing: "*.cdn.example.org"), listedExactly: false))
        } else {
            #expect(verdict == .denied(reason: "host not allowed: \(name)"))
        }
    }

    @Test("a blocked port is refused even for a listed host; allowed_ports restricts the rest")
    func ports() throws {
        #expect(rules.verdict(host: "api.example.com", port: 22) == .denied(reason: "port 22 is blocked"))
        let only443 = EgressRules(Policy.Network(allowedHosts: [try HostPattern(parsing: "api.example.com")], allowedPorts: [443]))
        #expect(only443.verdict(host: "api.example.com", port: 80) == .denied(reason: "port 80 is not in allowed_ports"))
        #expect(only443.verdict(host: "api.example.com", port: 443) != .denied(reason: "port 443 is not in allowed_ports"))
    }

    @Test("every spelling of an IP address is refused as a literal",
          arguments: ["10.0.0.1", "127.1", "2130706433", "0x7f.1", "0x7f000001", "017700000001", "[::1]", "[::ffff:127.0.0.1]", "1.2.3.4."])
    func addressLiterals(text: String) throws {
        let normalized = try #require(EgressRules.normalizedHost(Substring(text)))
        guard case .denied(let reason) = rules.verdict(host: normalized, port: 80) else {
            Issue.record("\(text) was allowed")
            return
        }
        #expect(reason.hasPrefix("IP addresses are not allowed"))
    }

    @Test("names that are not host names are malformed", arguments: ["", ".", "a..b", "bad host", "ex\u{e4}mple.com", "x/y", String(repeating: "a", count: 64) + ".com"])
    func malformedNames(text: String) {
        #expect(EgressRules.normalizedHost(Substring(text)) == nil)
    }
}

struct AddressCheckTests {
    private func refusal(_ ip: String, exact: Bool = false, own: Set<[UInt8]> = []) throws -> String? {
        AddressCheck.refusal(for: try SocketAddress(ipAddress: ip, port: 80), listedExactly: exact, hostAddresses: own)
    }

    @Test("loopback, link-local and the host's own addresses are refused for wildcard-allowed names")
    func refusedUnlessListed() throws {
        #expect(try refusal("127.0.0.1") == "address 127.0.0.1 is loopback")
        #expect(try refusal("127.9.8.7") == "address 127.9.8.7 is loopback")
        #expect(try refusal("::1") == "address ::1 is loopback")
        #expect(try refusal("::ffff:127.0.0.1") == "address ::ffff:127.0.0.1 is loopback")
        #expect(try refusal("169.254.169.254") == "address 169.254.169.254 is link-local")
        #expect(try refusal("fe80::1") == "address fe80::1 is link-local")
        #expect(try refusal("192.0.2.7", own: [[192, 0, 2, 7]]) == "address 192.0.2.7 is one of this host's own addresses")
        #expect(try refusal("93.184.216.34") == nil)
    }

    @Test("a literally listed name may reach loopback and the host's own addresses")
    func exactListingAllowsHostAddresses() throws {
        #expect(try refusal("127.0.0.1", exact: true) == nil)
        #expect(try refusal("192.0.2.7", exact: true, own: [[192, 0, 2, 7]]) == nil)
    }

    @Test("unspecified, multicast and broadcast are refused even for a literally listed name")
    func neverAllowed() throws {
        #expect(try refusal("0.0.0.0", exact: true) == "address 0.0.0.0 is unspecified")
        #expect(try refusal("0.1.2.3", exact: true) == "address 0.1.2.3 is unspecified")
        #expect(try refusal("::", exact: true) == "address :: is unspecified")
        #expect(try refusal("224.0.0.1", exact: true) == "address 224.0.0.1 is multicast")
        #expect(try refusal("ff02::1", exact: true) == "address ff02::1 is multicast")
        #expect(try refusal("255.255.255.255", exact: true) == "address 255.255.255.255 is broadcast")
    }

    @Test("the host's own addresses include loopback")
    func hostAddresses() {
        #expect(AddressCheck.hostAddresses().contains([127, 0, 0, 1]))
    }
}

struct RequestTargetTests {
    private func target(_ method: HTTPMethod, _ uri: String, headers: HTTPHeaders = [:]) throws -> RequestTarget {
        try RequestTarget(head: HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers))
    }

    @Test("CONNECT host:port and absolute http:// URLs are understood")
    func parsing() throws {
        let connect = try target(.CONNECT, "Api.Example.com.:443")
        #expect(connect.host == "api.example.com" && connect.port == 443 && connect.isConnect)
        let get = try target(.GET, "http://web.test:8080/a/b?c=d#frag")
        #expect(get.host == "web.test" && get.port == 8080 && get.path == "/a/b?c=d" && !get.isConnect)
        #expect(try target(.GET, "http://web.test").path == "/")
        #expect(try target(.GET, "HTTP://web.test?q=1").path == "/?q=1")
        #expect(try target(.GET, "http://[::1]:80/").host == "[::1]")
    }

    @Test("malformed targets are refused with the reason",
          arguments: ["CONNECT web.test", "CONNECT web.test:0", "CONNECT web.test:99999", "CONNECT :443", "GET /index.html",
                      "GET https://web.test/", "GET http://user:pw@web.test/", "GET http:///path", "GET http://bad_host!/",
                      "GET ftp://web.test/", "CONNECT web.test:44x3"])
    func malformed(line: String) {
        let parts = line.split(separator: " ", maxSplits: 1)
        #expect(throws: RequestTarget.Malformed.self) {
            _ = try target(HTTPMethod(rawValue: String(parts[0])), parts.count > 1 ? String(parts[1]) : "")
        }
    }

    @Test("forwarded requests: origin-form, Host from the URL, hop-by-hop and proxy headers removed")
    func upstreamHead() throws {
        let headers: HTTPHeaders = [
            "Host": "other.site", "Proxy-Authorization": "Basic c2VjcmV0", "Proxy-Connection": "keep-alive",
            "Connection": "keep-alive, X-Private", "X-Private": "drop me", "Keep-Alive": "timeout=5", "TE": "trailers",
            "Upgrade": "websocket", "Accept": "*/*", "Content-Length": "3",
        ]
        let head = HTTPRequestHead(version: .http1_0, method: .POST, uri: "http://web.test:8080/p?q", headers: headers)
        let upstream = try RequestTarget(head: head).upstreamHead(from: head)
        #expect(upstream.uri == "/p?q")
        #expect(upstream.version == .http1_1)
        #expect(upstream.headers["Host"] == ["web.test:8080"])
        #expect(upstream.headers["Connection"] == ["close"])
        #expect(upstream.headers["Accept"] == ["*/*"])
        #expect(upstream.headers["Content-Length"] == ["3"])
        for gone in ["Proxy-Authorization", "Proxy-Connection", "X-Private", "Keep-Alive", "TE", "Upgrade"] {
            #expect(upstream.headers[gone].isEmpty, "\(gone) was forwarded")
        }
    }
}

struct SandboxEnvironmentTests {
    @Test("the proxy variables are daemon-set, so a request can never override them")
    func variablesAreDaemonSet() {
        let environment = EgressListener.sandboxEnvironment()
        #expect(environment["http_proxy"] == "http://127.0.0.1:3128" && environment["HTTPS_PROXY"] == "http://127.0.0.1:3128")
        #expect(Set(environment.keys).isSubset(of: Policy.daemonSetVariables))
    }
}
