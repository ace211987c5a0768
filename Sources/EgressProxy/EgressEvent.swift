import Foundation

/// One connection through a sandbox's egress proxy, allowed or not.
///
/// Denied requests produce their event at once; allowed ones when the connection closes, with
/// the bytes relayed each way. The daemon records these against the execution that made them.
public struct EgressEvent: Hashable, Sendable, Codable {
    /// What the proxy did with the request.
    public enum Decision: String, Hashable, Sendable, Codable {
        /// Allowed by the policy and relayed to the upstream.
        case allowed
        /// Refused by the policy or by the proxy's limits (403, 400, 431, 503, 408).
        case denied
        /// Allowed by the policy, but the upstream could not be resolved or reached (502).
        case failed
    }

    /// When the request arrived.
    public var time: Date
    /// The sandbox (or execution) this proxy serves, as given to ``EgressProxy/Configuration``.
    public var sandboxID: String
    /// `CONNECT` for tunnels, the HTTP method for forwarded plain-HTTP requests; empty when the
    /// request could not be parsed.
    public var method: String
    /// Host name as the client asked for it (normalised: lower case, no trailing dot); empty when
    /// the request could not be parsed.
    public var host: String
    /// Requested port; 0 when unknown.
    public var port: Int
    /// The address connected to (allowed) or refused (denied by address), `nil` otherwise.
    public var address: String?
    public var decision: Decision
    /// Why: `allowed by *.example.com`, `host not allowed: example.org`, `port 22 is blocked`.
    public var reason: String
    /// HTTP status the proxy itself answered with (200 for an established tunnel, 403, 502, …);
    /// `nil` for forwarded plain-HTTP requests, whose status comes from the upstream.
    public var status: Int?
    /// Bytes relayed from the sandbox to the upstream (request head and body, or tunnel bytes).
    public var bytesUp: Int
    /// Bytes relayed from the upstream to the sandbox.
    public var bytesDown: Int
    /// Seconds from the request's arrival to the connection's close.
    public var duration: Double

    public init(time: Date, sandboxID: String, method: String, host: String, port: Int, address: String?,
                decision: Decision, reason: String, status: Int?, bytesUp: Int = 0, bytesDown: Int = 0,
                duration: Double = 0) {
        self.time = time
        self.sandboxID = sandboxID
        self.method = method
        self.host = host
        self.port = port
        self.address = address
        self.decision = decision
        self.reason = reason
        self.status = status
        self.bytesUp = bytesUp
        self.bytesDown = bytesDown
        self.duration = duration
    }
}
