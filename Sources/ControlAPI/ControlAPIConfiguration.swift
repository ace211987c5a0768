/// Limits the protocol layer enforces before a request reaches the service.
public struct ControlAPIConfiguration: Sendable, Hashable {
    /// Largest JSON request body; larger is `413 payload_too_large`.
    public var maxBodyBytes: Int
    /// Largest file body for `PUT /v1/sandboxes/{id}/files` and largest file read back.
    public var maxFileBytes: Int
    /// A connection must send a complete request head within this many seconds of opening (or
    /// of its previous response); otherwise it is closed. Stops slow-header clients holding sockets.
    public var headerTimeoutSeconds: Int64
    /// A request body must arrive completely within this many seconds (`408` otherwise).
    public var bodyTimeoutSeconds: Int64
    /// Idle keep-alive connections are closed after this many seconds.
    public var idleTimeoutSeconds: Int64
    /// Members of this group (and root) see and control every sandbox and record.
    public var adminGroup: String?
    /// Largest `limit` of `GET /v1/executions`.
    public var maxHistoryLimit: Int
    /// Largest request head (request line and all headers); larger is `431 headers_too_large`.
    public var maxHeaderBytes: Int

    public init(maxBodyBytes: Int = 1 << 20, maxFileBytes: Int = 16 << 20, headerTimeoutSeconds: Int64 = 10,
                bodyTimeoutSeconds: Int64 = 30, idleTimeoutSeconds: Int64 = 60,
                adminGroup: String? = "sandboxd-admin", maxHistoryLimit: Int = 1000, maxHeaderBytes: Int = 16 << 10) {
        self.maxBodyBytes = maxBodyBytes
        self.maxFileBytes = maxFileBytes
        self.headerTimeoutSeconds = headerTimeoutSeconds
        self.bodyTimeoutSeconds = bodyTimeoutSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.adminGroup = adminGroup
        self.maxHistoryLimit = maxHistoryLimit
        self.maxHeaderBytes = maxHeaderBytes
    }
}
