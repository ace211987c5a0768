/// A value that must never be printed: `description`, `debugDescription` and reflection all show
/// `<redacted>`. Read the value only where it is used (`revealed`), never to log it.
///
/// Not `Codable` on purpose, so a configuration holding one cannot be serialised into `info`
/// output by accident.
public struct Secret: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The secret itself. Pass it to the one call that needs it; do not interpolate it.
    public let revealed: String

    public init(_ value: String) { self.revealed = value }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
