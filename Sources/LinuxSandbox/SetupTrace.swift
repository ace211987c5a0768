/// TEMPORARY (guestfast measurements): stage stamps from inside the engine.
public enum SetupTrace {
    nonisolated(unsafe) public static var hook: (@Sendable (String) -> Void)?
}
@inline(__always) func trace(_ label: @autoclosure () -> String) { SetupTrace.hook?(label()) }
