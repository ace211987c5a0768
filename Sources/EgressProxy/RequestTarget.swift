import NIOHTTP1

/// Where a proxy request wants to go: `CONNECT host:port` or `METHOD http://host[:port]/path`.
struct RequestTarget: Equatable {
    struct Malformed: Error, Equatable {
        let message: String
        init(_ message: String) { self.message = "malformed request: " + message }
    }

    /// Normalised host name (lower case, no trailing dot), or a bracketed IPv6 literal.
    let host: String
    let port: Int
    let isConnect: Bool
    /// Origin-form target for a forwarded request (`/path?query`); empty for CONNECT.
    let path: String

    init(head: HTTPRequestHead) throws(Malformed) {
        if head.method == .CONNECT {
            let (host, port) = try Self.authority(Substring(head.uri), defaultPort: nil)
            self.init(host: host, port: port, isConnect: true, path: "")
            return
        }
        let uri = Substring(head.uri)
        let lower = uri.prefix(8).lowercased()
        if lower.hasPrefix("https://") {
            throw Malformed("https:// URLs go through CONNECT (set HTTPS_PROXY), not a plain proxy request")
        }
        guard lower.hasPrefix("http://") else {
            throw Malformed("this is a forward proxy: the request target must be an absolute http:// URL or CONNECT host:port, not \"\(head.uri.prefix(100))\"")
        }
        let rest = uri.dropFirst(7)
        let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let (host, port) = try Self.authority(rest[..<end], defaultPort: 80)
        var path = String(rest[end...])
        if let fragment = path.firstIndex(of: "#") { path = String(path[..<fragment]) }
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        self.init(host: host, port: port, isConnect: false, path: path)
    }

    private init(host: String, port: Int, isConnect: Bool, path: String) {
        self.host = host
        self.port = port
        self.isConnect = isConnect
        self.path = path
    }

    /// `host`, `host:port`, `[v6]:port`. No user info: `user@host` is a classic way to make a
    /// URL look like it names one host and reach another.
    private static func authority(_ text: Substring, defaultPort: Int?) throws(Malformed) -> (String, Int) {
        guard !text.isEmpty else { throw Malformed("no host in the request target") }
        guard !text.contains("@") else { throw Malformed("user info (user@host) in the request target is not supported") }
        let hostPart: Substring
        var portPart: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw Malformed("unterminated [ in \"\(text.prefix(100))\"") }
            hostPart = text[...close]
            let after = text[text.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw Malformed("junk after ] in \"\(text.prefix(100))\"") }
                portPart = after.dropFirst()
            }
        } else if let colon = text.lastIndex(of: ":") {
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        } else {
            hostPart = text
        }
        let port: Int
        if let portPart {
            guard portPart.count <= 5, portPart.allSatisfy(\.isASCII), let value = Int(portPart), (1...65535).contains(value) else {
                throw Malformed("invalid port \"\(portPart.prefix(20))\"")
            }
            port = value
        } else if let defaultPort {
            port = defaultPort
        } else {
            throw Malformed("CONNECT needs host:port, got \"\(text.prefix(100))\"")
        }
        guard let host = EgressRules.normalizedHost(hostPart) else {
            throw Malformed("invalid host name \"\(hostPart.prefix(100))\"")
        }
        return (host, port)
    }

    /// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never passed upstream.
    static let hopByHop: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate",
        "te", "trailer", "transfer-encoding-ignored", "upgrade",
    ]

    /// The request as the origin server gets it: origin-form target, `Host` from the URL (a
    /// client-sent `Host` could name a different site than the one that was checked), hop-by-hop
    /// headers removed, one request per connection.
    func upstreamHead(from head: HTTPRequestHead) -> HTTPRequestHead {
        var drop = Self.hopByHop
        drop.insert("host")
        for token in head.headers[canonicalForm: "connection"] { drop.insert(token.lowercased()) }
        drop.remove("transfer-encoding") // framing of the body we forward; the encoder honours it
        drop.remove("content-length")
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: port == 80 ? host : "\(host):\(port)")
        for (name, value) in head.headers where !drop.contains(name.lowercased()) {
            headers.add(name: name, value: value)
        }
        headers.add(name: "Connection", value: "close")
        return HTTPRequestHead(version: .http1_1, method: head.method, uri: path, headers: headers)
    }
}
