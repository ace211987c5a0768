/// One message between the daemon and `sandbox-guest`, on the virtio-serial port.
///
/// Wire format: a 4-byte big-endian length `n` (kind + payload), one kind byte, `n - 1` payload
/// bytes. JSON payloads carry SandboxValues' Codable values (`AgentJSON`: the guest agent links no
/// Foundation, not even FoundationEssentials); stream and file payloads are raw
/// bytes. One request is in flight at a time; the guest answers every request with `ok`,
/// `error`, `execResult` (after any `stdout`/`stderr` chunks) or `fileData`.
public struct AgentFrame: Hashable, Sendable {
    /// What a frame means.
    public enum Kind: UInt8, Hashable, Sendable {
        /// guest → host, once, when the agent is ready: JSON `AgentHello`.
        case hello = 1
        /// host → guest: JSON `SandboxSpec`; the agent builds its level-1 sandbox from it.
        case configure = 2
        /// host → guest: JSON `ExecRequest`.
        case exec = 3
        /// guest → host: a chunk of the running command's stdout.
        case stdout = 4
        /// guest → host: a chunk of the running command's stderr.
        case stderr = 5
        /// guest → host: JSON `ExecResult`, the end of an exec, with empty `stdout` and `stderr`:
        /// the output crossed as `stdout`/`stderr` frames (the kept part, at most the sandbox's
        /// output limit), and the host puts it back together (version 2).
        case execResult = 6
        /// host → guest: `AgentFilePut` header length (4 bytes BE), JSON header, file bytes.
        case putFile = 7
        /// host → guest: JSON `AgentFileGet`.
        case getFile = 8
        /// guest → host: the bytes of a file asked for with `getFile`.
        case fileData = 9
        /// host → guest: power the guest off.
        case shutdown = 10
        /// guest → host: the request succeeded; optional JSON detail.
        case ok = 11
        /// guest → host: JSON `AgentFailure`.
        case error = 12
        /// host → guest, honoured only when the kernel command line has `sandboxd.test_hooks=1`:
        /// the agent panics the guest kernel (`c` into `/proc/sysrq-trigger`).
        case panicForTesting = 13
    }

    /// Frames larger than this are refused on both sides (a file put/get is capped below it).
    public static let maximumPayload = 64 << 20

    public var kind: Kind
    public var payload: [UInt8]

    public init(_ kind: Kind, _ payload: [UInt8] = []) {
        self.kind = kind
        self.payload = payload
    }

    /// A frame whose payload is `value` as JSON.
    public init<Value: Encodable>(_ kind: Kind, json value: Value) throws {
        self.kind = kind
        self.payload = try AgentJSON.encode(value)
    }

    /// The payload decoded from JSON.
    public func decode<Value: Decodable>(_ type: Value.Type) throws -> Value {
        try AgentJSON.decode(type, from: payload)
    }

    /// The bytes on the wire.
    public func encoded() -> [UInt8] {
        let length = UInt32(payload.count + 1)
        var bytes: [UInt8] = [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), kind.rawValue]
        bytes.reserveCapacity(5 + payload.count)
        bytes += payload
        return bytes
    }
}

/// Splits a byte stream into frames; refuses unknown kinds and oversized frames.
public struct AgentFrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    /// Adds bytes read from the port.
    public mutating func append(_ bytes: some Collection<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, nil when more bytes are needed.
    public mutating func next() throws(AgentProtocolError) -> AgentFrame? {
        let available = buffer.count - start
        guard available >= 4 else { compact(); return nil }
        let length = Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16 | Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
        guard length >= 1, length - 1 <= AgentFrame.maximumPayload else {
            throw AgentProtocolError("frame length \(length) out of range (1...\(AgentFrame.maximumPayload + 1))")
        }
        guard available >= 4 + length else { compact(); return nil }
        guard let kind = AgentFrame.Kind(rawValue: buffer[start + 4]) else {
            throw AgentProtocolError("unknown frame kind \(buffer[start + 4])")
        }
        let payload = Array(buffer[(start + 5)..<(start + 4 + length)])
        start += 4 + length
        return AgentFrame(kind, payload)
    }

    private mutating func compact() {
        if start > 0 {
            buffer.removeFirst(start)
            start = 0
        }
    }
}

/// A malformed frame or message.
public struct AgentProtocolError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The agent's greeting: what the guest is and can enforce.
public struct AgentHello: Codable, Hashable, Sendable {
    /// Protocol version; the host refuses a guest that speaks another.
    public var version: Int
    /// `uname -r` of the guest kernel.
    public var kernelRelease: String
    /// cgroup2 controllers available at the guest's root.
    public var controllers: [String]
    /// 2: `execResult` carries no output, and a cold guest answers its boot spec after the hello.
    public static let currentVersion = 2

    public init(version: Int = Self.currentVersion, kernelRelease: String, controllers: [String]) {
        self.version = version
        self.kernelRelease = kernelRelease
        self.controllers = controllers
    }
}

/// The header of a `putFile` frame.
public struct AgentFilePut: Codable, Hashable, Sendable {
    /// Relative to the workspace, or absolute under it.
    public var path: String
    public init(path: String) { self.path = path }

    /// header length (4 bytes BE) + JSON header + contents.
    public func frame(contents: [UInt8]) throws -> AgentFrame {
        let header = try AgentJSON.encode(self)
        let count = UInt32(header.count)
        return AgentFrame(.putFile, [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + header + contents)
    }

    /// Splits a `putFile` payload.
    public static func parse(_ payload: [UInt8]) throws -> (AgentFilePut, [UInt8]) {
        guard payload.count >= 4 else { throw AgentProtocolError("putFile payload shorter than its header length") }
        let count = Int(payload[0]) << 24 | Int(payload[1]) << 16 | Int(payload[2]) << 8 | Int(payload[3])
        guard count <= payload.count - 4 else { throw AgentProtocolError("putFile header length \(count) exceeds the payload") }
        let header = try AgentJSON.decode(AgentFilePut.self, from: Array(payload[4..<(4 + count)]))
        return (header, Array(payload[(4 + count)...]))
    }
}

/// A `getFile` request.
public struct AgentFileGet: Codable, Hashable, Sendable {
    public var path: String
    public var limit: Int
    public init(path: String, limit: Int) {
        self.path = path
        self.limit = limit
    }
}

/// Why a guest request failed.
public struct AgentFailure: Codable, Hashable, Sendable {
    /// A stable code (`invalid_request`, `workspace_path`, `child_setup`, `not_configured`, …).
    public var code: String
    public var message: String
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}
