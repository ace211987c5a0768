/// Paths in the level-3 guest that the image builder (host) and the agent (guest) agree on.
public enum GuestPaths {
    /// The agent directory, shared read-only from the image (`sandbox-guest`, its libraries).
    public static let agentDirectory = "/.sandbox"
    /// The level-1 engine's spawn helper, placed next to the agent by the image builder.
    public static let spawner = agentDirectory + "/sandboxd-spawner"
}
