/// Compact JSON text of a `JSONValue`, as UTF-8 bytes, object keys sorted: the one serializer behind
/// the daemon's answers (ControlAPI) and the records' jsonb parameters (Store).
///
/// It exists because Foundation's `JSONEncoder` (and its `Codable` containers) cost more CPU per
/// `/bin/true` run than the rest of the daemon's share of the request.
public enum JSONText {
    /// What to do with a NaN or infinity, which JSON cannot express.
    public enum NonFiniteNumbers: Sendable {
        /// Write `null` (an answer must still be sent).
        case null
        /// Throw `NonFiniteNumber` (a record must not be stored with a silently changed value).
        case refuse
    }

    /// A NaN or infinity met under `.refuse`.
    public struct NonFiniteNumber: Error, Sendable, CustomStringConvertible {
        public let value: Double
        public var description: String { "cannot write \(value) as JSON: only finite numbers exist there" }
    }

    /// `value` as JSON text; non-finite numbers become `null`.
    public static func bytes(_ value: JSONValue) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(512)
        // Under `.null` nothing throws.
        try? append(value, to: &output, nonFinite: .null)
        return output
    }

    /// `value` as JSON text in a String; throws on a non-finite number.
    public static func string(_ value: JSONValue) throws(NonFiniteNumber) -> String {
        var output: [UInt8] = []
        try append(value, to: &output, nonFinite: .refuse)
        return String(decoding: output, as: UTF8.self)
    }

    public static func append(_ value: JSONValue, to output: inout [UInt8], nonFinite: NonFiniteNumbers) throws(NonFiniteNumber) {
        switch value {
        case .null: output += "null".utf8
        case .bool(let flag): output += (flag ? "true" : "false").utf8
        case .integer(let number): output += String(number).utf8
        case .number(let number): try appendNumber(number, to: &output, nonFinite: nonFinite)
        case .string(let text): appendString(text, to: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                try append(element, to: &output, nonFinite: nonFinite)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                appendString(key, to: &output)
                output.append(UInt8(ascii: ":"))
                try append(members[key]!, to: &output, nonFinite: nonFinite)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    public static func appendNumber(_ number: Double, to output: inout [UInt8], nonFinite: NonFiniteNumbers) throws(NonFiniteNumber) {
        guard number.isFinite else {
            if nonFinite == .refuse { throw NonFiniteNumber(value: number) }
            output += "null".utf8
            return
        }
        // Swift prints the shortest text that reads back as the same Double ("0.1", "1e-05").
        output += "\(number)".utf8
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A Swift string is valid UTF-8 already: only quotes, backslashes and control characters need escapes.
    public static func appendString(_ text: String, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        // Most strings (ids, commands, policy names, short output) need no escape: one append.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            output += text.utf8
            output.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output += #"\""#.utf8
            case UInt8(ascii: "\\"): output += #"\\"#.utf8
            case 0x0A: output += #"\n"#.utf8
            case 0x0D: output += #"\r"#.utf8
            case 0x09: output += #"\t"#.utf8
            case 0x08: output += #"\b"#.utf8
            case 0x0C: output += #"\f"#.utf8
            case 0x00..<0x20:
                output += #"\u00"#.utf8
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0xF)])
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
