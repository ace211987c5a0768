import Foundation
import Testing
import SandboxCore

struct JSONTextTests {
    static let awkward: String = {
        var scalars = (1..<0x80).map { Character(Unicode.Scalar($0)!) }
        scalars += ["한", "🚀", "\u{2028}", "\u{FEFF}", "é", "👩‍💻", "\u{0}"]
        return String(scalars)
    }()

    @Test("every control character, quote, backslash and non-ASCII text survives writing and reading back")
    func escaping() throws {
        let value: JSONValue = .array([.string(Self.awkward), ["key \"q\" \\ \n": .string(Self.awkward)]])
        let written = JSONText.bytes(value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(written)) == value)
        #expect(!written.contains { $0 < 0x20 }, "raw control characters must be escaped")
        #expect(try JSONText.string(value) == String(decoding: written, as: UTF8.self))
    }

    @Test("the text is what JSONEncoder with sorted keys writes")
    func matchesJSONEncoder() throws {
        let value: JSONValue = ["b": [1, 2.5, "x\ty"], "a": nil, "c": ["z": true, "y": false], "d": .integer(.min)]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(String(decoding: JSONText.bytes(value), as: UTF8.self) == String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    @Test("numbers read back exactly; non-finite ones become null in answers and are refused for records")
    func numbers() throws {
        let values: [JSONValue] = [.integer(.max), .integer(.min), .number(0.1), .number(1e300), .number(-Double.leastNonzeroMagnitude), .number(123.456)]
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(JSONText.bytes(.array(values)))) == .array(values))
        #expect(String(decoding: JSONText.bytes(["x": .number(.infinity), "y": .number(.nan)]), as: UTF8.self) == #"{"x":null,"y":null}"#)
        let refused = try #require(throws: JSONText.NonFiniteNumber.self) { try JSONText.string(["x": .number(.infinity)]) }
        #expect(refused.value == .infinity)
        #expect(throws: JSONText.NonFiniteNumber.self) { try JSONText.string(.array([.number(.nan)])) }
    }
}
