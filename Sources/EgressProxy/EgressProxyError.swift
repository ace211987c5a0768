/// The one error type of EgressProxy: a stable code and a message naming the call and the object.
public struct EgressProxyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; the raw value is stable.
    public enum Code: String, Hashable, Sendable, Codable {
        /// A system call failed (`setns(/proc/42/ns/net): EPERM`).
        case systemCall = "system_call"
        /// A name could not be resolved.
        case resolution = "resolution"
        /// The proxy could not start serving its listener.
        case startFailed = "start_failed"
    }

    public var code: Code
    /// One line: what failed, on what, and why.
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// A failed system call: `call(object): ERRNO_NAME (text)`.
    static func syscall(_ call: String, _ object: String, errno: Int32) -> EgressProxyError {
        EgressProxyError(code: .systemCall, message: "\(call)(\(object)): \(errnoName(errno))")
    }

    public var description: String { message }
}

/// `EPERM (Operation not permitted)`: the symbolic name operators search for, plus the text.
func errnoName(_ value: Int32) -> String {
    let names: [Int32: String] = [
        1: "EPERM", 2: "ENOENT", 3: "ESRCH", 9: "EBADF", 12: "ENOMEM", 13: "EACCES", 17: "EEXIST", 22: "EINVAL",
        24: "EMFILE", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 101: "ENETUNREACH", 110: "ETIMEDOUT", 111: "ECONNREFUSED",
        113: "EHOSTUNREACH",
    ]
    let text = String(cString: strerror(value))
    return "\(names[value] ?? "errno \(value)") (\(text))"
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
