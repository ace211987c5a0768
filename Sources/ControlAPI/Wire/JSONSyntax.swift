/// A strict RFC 8259 syntax check that says where the first error is.
///
/// Foundation's decoder reports only "not valid JSON" and accepts some non-JSON (trailing commas);
/// this runs first so that a client is told the line and column of its mistake, and so that hostile
/// nesting depth is refused before any decoder recurses into it.
struct JSONSyntax {
    struct Failure: Error, Equatable {
        var reason: String
        var line: Int
        var column: Int
        var description: String { "\(reason) at line \(line), column \(column)" }
    }

    static let maxDepth = 64

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    static func validate(_ bytes: [UInt8]) throws(Failure) {
        var parser = JSONSyntax(bytes)
        parser.skipSpace()
        try parser.value()
        parser.skipSpace()
        if parser.index < bytes.count { throw parser.failure("unexpected data after the JSON value") }
    }

    private func failure(_ reason: String) -> Failure {
        var line = 1
        var column = 1
        for byte in bytes[..<min(index, bytes.count)] {
            if byte == UInt8(ascii: "\n") { line += 1; column = 1 } else if byte & 0xC0 != 0x80 { column += 1 }
        }
        return Failure(reason: reason, line: line, column: column)
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipSpace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws(Failure) {
        guard current == byte else { throw failure(current == nil ? "unexpected end of input, expected \(what)" : "expected \(what)") }
        index += 1
    }

    private mutating func value() throws(Failure) {
        guard let byte = current else { throw failure("unexpected end of input, expected a value") }
        switch byte {
        case UInt8(ascii: "{"): try object()
        case UInt8(ascii: "["): try array()
        case UInt8(ascii: "\""): try string()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
        default: throw failure("unexpected character '\(Character(Unicode.Scalar(byte)))', expected a value")
        }
    }

    private mutating func nest() throws(Failure) {
        depth += 1
        if depth > Self.maxDepth { throw failure("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func object() throws(Failure) {
        try nest()
        index += 1
        skipSpace()
        if current == UInt8(ascii: "}") { index += 1; depth -= 1; return }
        while true {
            skipSpace()
            guard current == UInt8(ascii: "\"") else { throw failure("expected a field name in double quotes") }
            try string()
            skipSpace()
            try expect(UInt8(ascii: ":"), "':' after the field name")
            skipSpace()
            try value()
            skipSpace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "}"), "',' or '}'")
            depth -= 1
            return
        }
    }

    private mutating func array() throws(Failure) {
        try nest()
        index += 1
        skipSpace()
        if current == UInt8(ascii: "]") { index += 1; depth -= 1; return }
        while true {
            skipSpace()
            try value()
            skipSpace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "]"), "',' or ']'")
            depth -= 1
            return
        }
    }

    private mutating func string() throws(Failure) {
        index += 1
        while let byte = current {
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return
            case UInt8(ascii: "\\"):
                index += 1
                guard let escaped = current else { break }
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    index += 1
                    for _ in 0..<4 {
                        guard let hex = current, (hex >= 0x30 && hex <= 0x39) || (hex | 0x20 >= 0x61 && hex | 0x20 <= 0x66) else {
                            throw failure("expected four hex digits after \\u")
                        }
                        index += 1
                    }
                default:
                    throw failure("invalid escape in string")
                }
            case 0x00..<0x20:
                throw failure("control character in string (escape it)")
            default:
                index += 1
            }
        }
        throw failure("unterminated string")
    }

    private mutating func literal(_ word: String) throws(Failure) {
        for expected in word.utf8 {
            guard current == expected else { throw failure("invalid literal, expected '\(word)'") }
            index += 1
        }
    }

    private mutating func number() throws(Failure) {
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, first >= 0x30, first <= 0x39 else { throw failure("expected a digit") }
        index += 1
        if first != 0x30 { while let digit = current, digit >= 0x30, digit <= 0x39 { index += 1 } }
        if current == UInt8(ascii: ".") {
            index += 1
            guard let digit = current, digit >= 0x30, digit <= 0x39 else { throw failure("expected a digit after '.'") }
            while let digit = current, digit >= 0x30, digit <= 0x39 { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let digit = current, digit >= 0x30, digit <= 0x39 else { throw failure("expected a digit in the exponent") }
            while let digit = current, digit >= 0x30, digit <= 0x39 { index += 1 }
        }
    }
}

extension APIError {
    /// Checks syntax first (for a precise position), then decodes strictly.
    static func decodeStrictly<T: Decodable>(_ type: T.Type, from bytes: [UInt8], using decode: ([UInt8]) throws -> T) throws(APIError) -> T {
        do { try JSONSyntax.validate(bytes) } catch {
            throw APIError(.invalidJSON, "request body is not valid JSON: \(error.description)",
                           details: ["line": .integer(Int64(error.line)), "column": .integer(Int64(error.column)), "reason": .string(error.reason)])
        }
        do { return try decode(bytes) } catch { throw APIError.decoding(error) }
    }
}
