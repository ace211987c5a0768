import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which resolved addresses the proxy may connect to.
///
/// A listed name can resolve to anything (its owner controls its DNS, or rebinds it), so every
/// address is checked after resolution and the proxy connects to exactly the address it checked.
/// Loopback, link-local and the host's own addresses reach the daemon's host (its database, its
/// metadata service): only a host name listed literally in `allowed_hosts` may lead there.
/// Unspecified, multicast and broadcast addresses are never connected to.
public enum AddressCheck {
    /// Why `address` must not be connected to, or `nil` when it may.
    /// - Parameters:
    ///   - listedExactly: the requested name is listed literally (not via `*.suffix`).
    ///   - hostAddresses: this host's own addresses (``hostAddresses()``), as raw bytes.
    public static func refusal(for address: SocketAddress, listedExactly: Bool, hostAddresses: Set<[UInt8]>) -> String? {
        guard let raw = rawBytes(address) else { return "address \(address) is not an IP address" }
        let text = presentation(address) ?? "\(address)"
        let bytes = unmapped(raw)
        let never: String?
        let unlessListed: String?
        if bytes.count == 4 {
            never = bytes == [0, 0, 0, 0] || bytes[0] == 0 ? "unspecified"
                : bytes[0] >= 224 && bytes[0] <= 239 ? "multicast"
                : bytes == [255, 255, 255, 255] ? "broadcast" : nil
            unlessListed = bytes[0] == 127 ? "loopback"
                : bytes[0] == 169 && bytes[1] == 254 ? "link-local" : nil
        } else {
            never = bytes.allSatisfy({ $0 == 0 }) ? "unspecified" : bytes[0] == 0xFF ? "multicast" : nil
            unlessListed = bytes == [UInt8](repeating: 0, count: 15) + [1] ? "loopback"
                : bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80 ? "link-local" : nil
        }
        if let never { return "address \(text) is \(never)" }
        if listedExactly { return nil }
        if let unlessListed { return "address \(text) is \(unlessListed)" }
        if hostAddresses.contains(bytes) { return "address \(text) is one of this host's own addresses" }
        return nil
    }

    /// Every address configured on this host's interfaces (the daemon's network namespace), as
    /// raw bytes (4 or 16), IPv4-mapped IPv6 folded to IPv4.
    public static func hostAddresses() -> Set<[UInt8]> {
        var result: Set<[UInt8]> = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return result }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    let sin = UnsafeRawPointer(sa).loadUnaligned(as: sockaddr_in.self)
                    result.insert(withUnsafeBytes(of: sin.sin_addr) { Array($0) })
                case AF_INET6:
                    let sin6 = UnsafeRawPointer(sa).loadUnaligned(as: sockaddr_in6.self)
                    result.insert(unmapped(withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }))
                default: break
                }
            }
            cursor = entry.pointee.ifa_next
        }
        return result
    }

    static func rawBytes(_ address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4): withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6): withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default: nil
        }
    }

    /// `::ffff:a.b.c.d` is a.b.c.d on the wire: check it as IPv4.
    static func unmapped(_ bytes: [UInt8]) -> [UInt8] {
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return Array(bytes[12..<16])
        }
        return bytes
    }

    /// `10.0.0.1` / `fe80::1`: the address only, without NIO's `[IPv4]host/` decoration.
    public static func presentation(_ address: SocketAddress) -> String? {
        guard var raw = rawBytes(address) else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = raw.count == 4 ? AF_INET : AF_INET6
        let ok = raw.withUnsafeMutableBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) } != nil
        return ok ? String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
}
