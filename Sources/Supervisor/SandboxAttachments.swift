import LinuxSandbox

/// What the daemon's own tools add to a sandbox beyond its policy: variables it sets (which no
/// request can override), host directories it mounts read-only, and a hook run once the sandbox's
/// network namespace exists and before its workload starts. Level 1 only; other engines must
/// refuse a spec whose attachments are not empty (the Supervisor does not send them any).
public struct SandboxAttachments: Sendable, Hashable {
    /// A host directory shown read-only at `sandboxPath` (mounted by the daemon as root): the
    /// level-1 engine's own type, handed to it unchanged.
    public typealias Directory = LaunchAttachments.Directory

    /// Called with the host pid of the sandbox's init while it waits for the go-ahead.
    public final class NamespaceHook: Sendable, Hashable {
        public let body: @Sendable (_ initPID: Int32) throws -> Void

        public init(_ body: @escaping @Sendable (_ initPID: Int32) throws -> Void) { self.body = body }

        public static func == (lhs: NamespaceHook, rhs: NamespaceHook) -> Bool { lhs === rhs }
        public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
    }

    /// Set over the request's and the policy's variables: these always win.
    public var environment: [String: String]
    public var readOnlyDirectories: [Directory]
    public var beforeWorkload: NamespaceHook?

    public init(environment: [String: String] = [:], readOnlyDirectories: [Directory] = [], beforeWorkload: NamespaceHook? = nil) {
        self.environment = environment
        self.readOnlyDirectories = readOnlyDirectories
        self.beforeWorkload = beforeWorkload
    }

    public var isEmpty: Bool { environment.isEmpty && readOnlyDirectories.isEmpty && beforeWorkload == nil }

    /// `base` with these variables set over it.
    public func environment(over base: [String: String]) -> [String: String] {
        base.merging(environment) { _, daemon in daemon }
    }
}
