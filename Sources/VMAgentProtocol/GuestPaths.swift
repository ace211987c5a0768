/// Paths in the level-3 guest that the image builder (host) and the agent (guest) agree on.
public enum GuestPaths {
    /// The agent directory, shared read-only from the image (`sandbox-guest`, its libraries).
    public static let agentDirectory = "/.sandbox"
    /// The level-1 engine's spawn helper, placed next to the agent by the image builder.
    public static let spawner = agentDirectory + "/sandboxd-spawner"
    /// The level-1 seccomp program, exported on the host by the image builder (`SeccompProgram.exportStandard`):
    /// the agent's engine checks and loads it instead of compiling one under TCG.
    public static let seccompProgram = agentDirectory + "/seccomp.bpf"
    /// Where the host's spec for the first sandbox sits in a cold guest's initramfs, when it is there.
    public static let initramfsBootSpec = "/boot-spec.json"
    /// Where init leaves it for the agent (a root-only tmpfs file; the agent reads and removes it).
    public static let bootSpec = "/run/sandboxd-boot-spec.json"
}
