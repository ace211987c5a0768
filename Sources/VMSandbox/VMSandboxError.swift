import Foundation

/// Every failure of the level-3 engine: a stable code and a message naming the call and object.
public struct VMSandboxError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// The spec or request is malformed.
        case invalidRequest = "invalid_request"
        /// The guest image could not be built (download, unpack, initramfs).
        case imageBuild = "image_build"
        /// QEMU could not be started or jailed (spawn, cgroup, socket).
        case launch
        /// The guest did not greet the host in time.
        case bootTimedOut = "boot_timed_out"
        /// The guest went away (kernel panic, QEMU exit, destroy): the sandbox is in status `error`.
        case guestGone = "guest_gone"
        /// The guest agent refused the request; `guestCode` holds its reason.
        case guest
        /// The guest sent something that is not the protocol.
        case protocolViolation = "protocol"
        /// A host syscall failed.
        case system
    }

    public var code: Code
    public var message: String
    /// The agent's own code when `code == .guest` (`workspace_path`, `child_setup`, …).
    public var guestCode: String?

    public init(_ code: Code, _ message: String, guestCode: String? = nil) {
        self.code = code
        self.message = message
        self.guestCode = guestCode
    }

    public var description: String { message }

    static func system(_ call: String, _ object: String, errno value: Int32 = errno) -> VMSandboxError {
        VMSandboxError(.system, "\(call)(\(object)): \(String(cString: strerror(value)))")
    }
}
