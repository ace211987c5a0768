import Foundation
import SandboxCore
import Testing
@testable import Store

struct JSONWriterTests {
    @Test("every control character, quote, backslash and non-ASCII text survives writing and reading back")
    func escaping() throws {
        var scalars = (1..<0x80).map { Character(Unicode.Scalar($0)!) }
        scalars += ["한", "🚀", "\u{2028}", "\u{FEFF}", "é", "👩‍💻"]
        let text = String(scalars)
        let written = try JSONWriter.text(.array([.string(text), ["key \"q\" \\ \n": .string(text)]]))
        let decoded = try JSONDecoder().decode(JSONValue.self, from: Data(written.utf8))
        #expect(decoded == .array([.string(text), ["key \"q\" \\ \n": .string(text)]]))
        #expect(!written.unicodeScalars.contains { $0.value < 0x20 }, "raw control characters must be escaped")
    }

    @Test("numbers are written so that they read back exactly; non-finite numbers are refused")
    func numbers() throws {
        let values: [JSONValue] = [.integer(.max), .integer(.min), .number(0.1), .number(1e300), .number(-Double.leastNonzeroMagnitude), .number(123.456)]
        let decoded = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONWriter.text(.array(values)).utf8))
        #expect(decoded == .array(values))
        #expect(throws: StoreError.self) { try JSONWriter.text(.number(.nan)) }
        #expect(throws: StoreError.self) { try JSONWriter.text(["x": .number(.infinity)]) }
    }
}
