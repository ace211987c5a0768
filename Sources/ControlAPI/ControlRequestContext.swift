import Hummingbird
import Logging
import NIOCore

/// What the server knows about a connection when a request arrives on it.
public struct ControlRequestContextSource: RequestContextSource {
    public var channel: any Channel
    public var logger: Logger
    /// From `SO_PEERCRED`, read once per connection.
    public var caller: Caller
}

/// The request context of every control endpoint: the caller and the body limit.
public struct ControlRequestContext: RequestContext {
    public typealias Source = ControlRequestContextSource
    public var coreContext: CoreRequestContextStorage
    public var caller: Caller
    public var channel: any Channel

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.caller = source.caller
        self.channel = source.channel
    }
}
