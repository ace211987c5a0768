#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for the
/// abstract namespace). Silent no-op when not started by systemd.
struct SystemdNotifier: Sendable {
    /// The socket address bytes (`sun_path`), abstract names starting with NUL.
    private let address: [UInt8]?

    init(environment value: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }) {
        guard let value, !value.isEmpty, value.hasPrefix("/") || value.hasPrefix("@") else {
            address = nil
            return
        }
        var bytes = Array(value.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        address = bytes.count < 108 ? bytes : nil
    }

    var isActive: Bool { address != nil }

    /// Sends `state` (e.g. `READY=1\nSTATUS=serving`). Returns false when it could not be delivered.
    @discardableResult
    func notify(_ state: String) -> Bool {
        guard let address else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { raw in
            for (index, byte) in address.enumerated() { raw[index] = byte }
        }
        // Abstract addresses are length-delimited, not NUL-terminated: pass the exact length.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + address.count + (address.first == 0 ? 0 : 1))
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &socketAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                message.withUnsafeBytes { raw in
                    sendto(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL), sockaddrPointer, length)
                }
            }
        }
        return sent == message.count
    }
}
