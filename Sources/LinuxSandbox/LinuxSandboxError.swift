import SystemPackage

/// Every error the level-1 engine throws: a stable code and a message naming the call and object.
public struct LinuxSandboxError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// The spec or request is malformed (bad id, relative path, NUL byte, empty argv …).
        case invalidRequest = "invalid_request"
        /// Limits were requested, enforcement is strict and the host lacks the controllers.
        case controllersMissing = "controllers_missing"
        /// A cgroup file or directory operation failed.
        case cgroup
        /// The child failed while building the sandbox or starting the command; `step` and
        /// `path` say where.
        case childSetup = "child_setup"
        /// A syscall in the daemon failed.
        case system
        /// The sandbox was destroyed (or its init died) before or during the call.
        case sandboxGone = "sandbox_gone"
        /// A workspace path was refused (absolute, escaping, magic link) or not found.
        case workspacePath = "workspace_path"
        /// No free user-id slot in the configured range.
        case exhausted
        /// libseccomp refused the policy.
        case seccomp
    }

    public var code: Code
    public var message: String
    /// For `childSetup`: the step that failed (`mount`, `pivot_root`, `exec` …).
    public var step: String?
    /// For `childSetup`: the path involved, as seen inside the sandbox when there is one.
    public var path: String?
    /// The errno, when a syscall failed.
    public var errno: Int32?

    public init(_ code: Code, _ message: String, step: String? = nil, path: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.step = step
        self.path = path
        self.errno = errno
    }

    public var description: String { message }

    static func system(_ call: String, _ object: String?, _ err: Int32) -> Self {
        let target = object.map { "(\"\($0)\")" } ?? ""
        return .init(.system, "\(call)\(target): \(errnoName(err))", errno: err)
    }
}

/// `EACCES (Permission denied)`: the symbolic name first, because logs are grepped for it.
func errnoName(_ err: Int32) -> String {
    let names: [Int32: String] = [
        1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 6: "ENXIO", 7: "E2BIG", 8: "ENOEXEC",
        9: "EBADF", 10: "ECHILD", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 14: "EFAULT", 16: "EBUSY",
        17: "EEXIST", 18: "EXDEV", 19: "ENODEV", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 23: "ENFILE",
        24: "EMFILE", 25: "ENOTTY", 26: "ETXTBSY", 27: "EFBIG", 28: "ENOSPC", 30: "EROFS", 31: "EMLINK",
        32: "EPIPE", 36: "ENAMETOOLONG", 38: "ENOSYS", 39: "ENOTEMPTY", 40: "ELOOP", 75: "EOVERFLOW",
        95: "EOPNOTSUPP", 110: "ETIMEDOUT",
    ]
    let text = Errno(rawValue: err).description
    if let name = names[err] { return "\(name) (\(text))" }
    return "errno \(err) (\(text))"
}
