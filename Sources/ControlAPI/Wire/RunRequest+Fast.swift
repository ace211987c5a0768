#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A request type with a decoder for its common shape that does not go through `Codable`.
protocol FastDecodable {
    /// The request, or nil when `bytes` (already checked by `JSONSyntax`) holds anything beyond the
    /// plain shape: the strict `Codable` decoder then decides, and names what is wrong.
    static func fastDecode(_ bytes: [UInt8]) -> Self?
}

extension RunRequest: FastDecodable {
    /// `{"command": […], "stdin", "env", "timeout", "policy", "isolation_level", "agent_type", "session_id"}`
    /// with strings that carry no escapes: what agents send for most runs. Foundation's
    /// `JSONDecoder` took more CPU per `/bin/true` run than anything else in the daemon but the engine.
    /// `code`, escapes, duplicate or unknown keys and numbers out of range all go to the strict decoder.
    static func fastDecode(_ bytes: [UInt8]) -> RunRequest? {
        var reader = PlainJSONReader(bytes)
        var payload = ExecPayload()
        var sandbox = SandboxCreateRequest()
        var seen: Set<String> = []
        guard reader.consume(UInt8(ascii: "{")) else { return nil }
        if !reader.consume(UInt8(ascii: "}")) {
            while true {
                guard let key = reader.string(), seen.insert(key).inserted, reader.consume(UInt8(ascii: ":")) else { return nil }
                switch key {
                case "command":
                    if !reader.null() {
                        guard let command = reader.stringArray() else { return nil }
                        payload.command = command
                    }
                case "stdin":
                    if !reader.null() { guard let text = reader.string() else { return nil }; payload.stdin = text }
                case "env":
                    if !reader.null() { guard let env = reader.stringObject() else { return nil }; payload.env = env }
                case "timeout":
                    if !reader.null() {
                        guard let text = reader.number(), let value = Double(text), value.isFinite else { return nil }
                        payload.timeout = value
                    }
                case "policy":
                    if !reader.null() { guard let text = reader.string() else { return nil }; sandbox.policy = text }
                case "agent_type":
                    if !reader.null() { guard let text = reader.string() else { return nil }; sandbox.agentType = text }
                case "isolation_level":
                    if !reader.null() {
                        guard let text = reader.number(), let level = Int(text) else { return nil }
                        sandbox.isolationLevel = level
                    }
                case "session_id":
                    if !reader.null() {
                        guard let text = reader.string(), let id = UUID(uuidString: text) else { return nil }
                        sandbox.sessionID = id
                    }
                default:
                    return nil
                }
                if reader.consume(UInt8(ascii: ",")) { continue }
                guard reader.consume(UInt8(ascii: "}")) else { return nil }
                break
            }
        }
        guard reader.atEnd else { return nil }
        return RunRequest(payload: payload, sandbox: sandbox)
    }
}

/// Reads the plain parts of JSON text: strings without escapes, numbers as text, null, arrays
/// and objects of such strings. Anything else makes a read return nil.
struct PlainJSONReader {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        skipSpace()
    }

    var atEnd: Bool { index == bytes.count }

    private mutating func skipSpace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D {
            index += 1
        }
    }

    /// Consumes `byte` (and the space after it) when it is next.
    mutating func consume(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        skipSpace()
        return true
    }

    mutating func null() -> Bool {
        guard index + 4 <= bytes.count, bytes[index] == UInt8(ascii: "n"), bytes[index + 1] == UInt8(ascii: "u"),
              bytes[index + 2] == UInt8(ascii: "l"), bytes[index + 3] == UInt8(ascii: "l") else { return false }
        index += 4
        skipSpace()
        return true
    }

    /// A string without escapes or control characters, valid UTF-8.
    mutating func string() -> String? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index + 1
        var end = start
        while end < bytes.count, bytes[end] != UInt8(ascii: "\"") {
            if bytes[end] == UInt8(ascii: "\\") || bytes[end] < 0x20 { return nil }
            end += 1
        }
        guard end < bytes.count, let text = String(validating: bytes[start..<end], as: UTF8.self) else { return nil }
        index = end + 1
        skipSpace()
        return text
    }

    /// A number's text (`-`, digits, `.`, exponent), checked by the caller's conversion.
    mutating func number() -> String? {
        let start = index
        while index < bytes.count, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: ".")
            || bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")
            || (bytes[index] >= UInt8(ascii: "0") && bytes[index] <= UInt8(ascii: "9")) {
            index += 1
        }
        guard index > start else { return nil }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        skipSpace()
        return text
    }

    mutating func stringArray() -> [String]? {
        guard consume(UInt8(ascii: "[")) else { return nil }
        var elements: [String] = []
        if consume(UInt8(ascii: "]")) { return elements }
        while true {
            guard let element = string() else { return nil }
            elements.append(element)
            if consume(UInt8(ascii: ",")) { continue }
            return consume(UInt8(ascii: "]")) ? elements : nil
        }
    }

    /// An object of string values; a repeated key is left to the strict decoder.
    mutating func stringObject() -> [String: String]? {
        guard consume(UInt8(ascii: "{")) else { return nil }
        var members: [String: String] = [:]
        if consume(UInt8(ascii: "}")) { return members }
        while true {
            guard let key = string(), members[key] == nil, consume(UInt8(ascii: ":")), let value = string() else { return nil }
            members[key] = value
            if consume(UInt8(ascii: ",")) { continue }
            return consume(UInt8(ascii: "}")) ? members : nil
        }
    }
}
