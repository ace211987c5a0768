import SandboxValues

/// One entry of `network.allowed_hosts`: an exact host name, or `*.suffix` for every name below it.
///
/// Names are compared case-insensitively and without a trailing dot. `*.example.com` matches
/// `api.example.com` and `a.b.example.com` but not `example.com` itself (list both when both are meant).
public struct HostPattern: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The host name, or the suffix after `*.`, lower-case, without a trailing dot.
    public let name: String
    /// True for a `*.suffix` pattern.
    public let isWildcard: Bool

    /// Parses and checks an entry.
    public init(parsing text: String) throws(SandboxCoreError) {
        do { self = try Self.parse(text) } catch {
            throw SandboxCoreError(code: .invalidPolicy, message: error.message)
        }
    }

    static func parse(_ text: String) throws(ValueError) -> HostPattern {
        var name = text.trimmingWhitespace().lowercased()
        if name.contains("://") {
            throw ValueError("\"\(text)\" is a URL; list the host name only (example.com)")
        }
        if name.contains("/") { throw ValueError("\"\(text)\" contains /; list the host name only") }
        if name.contains(":") {
            throw ValueError("\"\(text)\" contains a port or is an IPv6 address; list host names only, and use blocked_ports for ports")
        }
        var wildcard = false
        if name.hasPrefix("*.") { wildcard = true; name.removeFirst(2) }
        if name.hasSuffix(".") { name.removeLast() }
        guard Self.isValidHostName(name) else {
            throw ValueError("\"\(text)\" is not a host name or *.suffix pattern (labels of letters, digits and -, at most 63 each, 253 in all)")
        }
        // RFC 3696: a top-level label is never all digits, so this is an IPv4 address. The proxy
        // resolves names itself and checks the addresses; letting IPs in would bypass that.
        if let last = name.split(separator: ".").last, last.allSatisfy(\.isNumber) {
            throw ValueError("\"\(text)\" is an IP address; list host names only")
        }
        if wildcard, !name.contains(".") {
            throw ValueError("\"\(text)\" would match a whole top-level domain; give at least two labels after *.")
        }
        return HostPattern(name: name, isWildcard: wildcard)
    }

    private init(name: String, isWildcard: Bool) {
        self.name = name
        self.isWildcard = isWildcard
    }

    /// Whether `host` (as a client asked for it) is allowed by this pattern.
    public func matches(_ host: String) -> Bool {
        var candidate = host.lowercased()
        if candidate.hasSuffix(".") { candidate.removeLast() }
        return isWildcard ? candidate.hasSuffix("." + name) && candidate.count > name.count + 1 : candidate == name
    }

    public var description: String { isWildcard ? "*.\(name)" : name }

    /// RFC 1123 host name: dot-separated labels of ASCII letters, digits and inner hyphens.
    static func isValidHostName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard (1...63).contains(label.utf8.count), label.first != "-", label.last != "-" else { return false }
            guard label.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }) else {
                return false
            }
        }
        return true
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do { self = try Self.parse(text) } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
