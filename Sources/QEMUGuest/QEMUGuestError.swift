/// Why building a guest image or running QEMU failed.
public struct QEMUGuestError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, machine-readable kind of failure.
    public enum Code: String, Hashable, Sendable {
        /// A tool the build needs (apt-get, dpkg-deb, qemu-system-x86_64) is missing or failed.
        case toolFailed = "tool_failed"
        /// The kernel package could not be resolved, downloaded or unpacked, or lacks a needed part.
        case kernelPackage = "kernel_package"
        /// A kernel module file is unreadable, malformed or missing from the package.
        case kernelModule = "kernel_module"
        /// A file or directory operation on the host failed.
        case io
        /// QEMU could not be started, or ended in a way the caller did not ask for.
        case qemu
        /// The caller passed something unusable (an empty path, a bad size).
        case invalidArgument = "invalid_argument"
    }

    /// What kind of failure this is.
    public var code: Code
    /// What failed, naming the tool, file or package.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
