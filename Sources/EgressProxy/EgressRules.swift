import SandboxCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the proxy allows, derived once from a policy's `network` section.
///
/// Decisions are on the host *name* the client asked for; addresses are checked separately,
/// after the proxy resolves the name itself (``AddressCheck``).
public struct EgressRules: Hashable, Sendable {
    public var allowedHosts: [HostPattern]
    public var blockedPorts: Set<Int>
    /// Empty: every port not blocked.
    public var allowedPorts: Set<Int>

    public init(_ network: Policy.Network) {
        allowedHosts = network.allowedHosts
        blockedPorts = Set(network.blockedPorts)
        allowedPorts = Set(network.allowedPorts)
    }

    /// The verdict on a requested host and port.
    public enum Verdict: Hashable, Sendable {
        /// Allowed by `pattern`. `listedExactly` is true when some entry names this host literally
        /// (not through a wildcard), which is what lets it reach loopback, link-local or the
        /// host's own addresses.
        case allowed(pattern: HostPattern, listedExactly: Bool)
        /// Refused, with the reason the client and the event get.
        case denied(reason: String)
    }

    /// Checks a host name (already normalised by ``normalizedHost(_:)``) and a port.
    public func verdict(host: String, port: Int) -> Verdict {
        if Self.isAddressLiteral(host) {
            return .denied(reason: "IP addresses are not allowed, only listed host names: \(host)")
        }
        guard let pattern = allowedHosts.first(where: { !$0.isWildcard && $0.matches(host) })
            ?? allowedHosts.first(where: { $0.matches(host) })
        else { return .denied(reason: "host not allowed: \(host)") }
        if blockedPorts.contains(port) { return .denied(reason: "port \(port) is blocked") }
        if !allowedPorts.isEmpty, !allowedPorts.contains(port) {
            return .denied(reason: "port \(port) is not in allowed_ports")
        }
        return .allowed(pattern: pattern, listedExactly: !pattern.isWildcard)
    }

    /// Lower case, one trailing dot removed; `nil` when `text` is not a syntactically valid host
    /// name or IP literal (so it is refused as malformed before any policy check).
    public static func normalizedHost(_ text: Substring) -> String? {
        var host = text.lowercased()
        if host.hasSuffix(".") { host.removeLast() }
        guard !host.isEmpty, host.utf8.count <= 253 else { return nil }
        if host.hasPrefix("["), host.hasSuffix("]") { return host } // IPv6 literal, refused later by name
        for label in host.split(separator: ".", omittingEmptySubsequences: false) {
            guard (1...63).contains(label.utf8.count) else { return nil }
            guard label.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F })
            else { return nil }
        }
        return host
    }

    /// True for anything the C library would read as an address: dotted quads, but also the
    /// `inet_aton` forms (`2130706433`, `0x7f.1`, `127.1`) getaddrinfo accepts, and IPv6.
    public static func isAddressLiteral(_ host: String) -> Bool {
        if host.contains(":") || host.hasPrefix("[") { return true }
        var v4 = in_addr()
        if inet_aton(host, &v4) != 0 { return true }
        // RFC 3696: a top-level label is never all digits.
        if let last = host.split(separator: ".").last, last.allSatisfy(\.isNumber) { return true }
        return false
    }
}
