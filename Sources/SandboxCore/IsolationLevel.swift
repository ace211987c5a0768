/// How strongly a sandbox is separated from the host (design.md, "Isolation levels").
public enum IsolationLevel: Int, Codable, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    /// Native Linux sandbox: namespaces, cgroup v2, seccomp, no capabilities.
    case native = 1
    /// A Kubernetes Pod carrying the same policy.
    case kubernetes = 2
    /// A QEMU virtual machine with a guest agent; level 1 applied again inside.
    case virtualMachine = 3
    /// A hardware-isolated VM (SEV-SNP / TDX).
    case hardware = 4

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .native: "1 (native Linux sandbox)"
        case .kubernetes: "2 (Kubernetes Pod)"
        case .virtualMachine: "3 (QEMU virtual machine)"
        case .hardware: "4 (hardware-isolated VM)"
        }
    }
}
