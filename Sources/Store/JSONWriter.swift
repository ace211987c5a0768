import SandboxCore

/// Writes JSON text directly into a String: the hot path of record inserts, where going through
/// `JSONEncoder` and `Codable` containers costs more than the database round trip.
enum JSONWriter {
    static func text(_ value: JSONValue) throws -> String {
        var output = ""
        try append(value, to: &output)
        return output
    }

    static func append(_ value: JSONValue, to output: inout String) throws {
        switch value {
        case .null: output += "null"
        case .bool(let flag): output += flag ? "true" : "false"
        case .integer(let number): output += String(number)
        case .number(let number): try appendNumber(number, to: &output)
        case .string(let text): appendString(text, to: &output)
        case .array(let elements):
            output += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { output += "," }
                try append(element, to: &output)
            }
            output += "]"
        case .object(let members):
            output += "{"
            var first = true
            for (key, member) in members {
                if !first { output += "," }
                first = false
                appendString(key, to: &output)
                output += ":"
                try append(member, to: &output)
            }
            output += "}"
        }
    }

    static func appendNumber(_ number: Double, to output: inout String) throws {
        guard number.isFinite else {
            throw StoreError(.encodingFailed, "cannot store \(number) in JSON: only finite numbers exist there")
        }
        // Swift prints the shortest text that reads back as the same Double ("0.1", "1e+300").
        output += "\(number)"
    }

    static func appendString(_ text: String, to output: inout String) {
        output += "\""
        // Most strings (ids, commands, policy names, short output) need no escape: one append.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            output += text
            output += "\""
            return
        }
        var start = text.unicodeScalars.startIndex
        var index = start
        let scalars = text.unicodeScalars
        while index < scalars.endIndex {
            let scalar = scalars[index]
            let escape: String?
            switch scalar.value {
            case 0x22: escape = "\\\""
            case 0x5C: escape = "\\\\"
            case 0x0A: escape = "\\n"
            case 0x0D: escape = "\\r"
            case 0x09: escape = "\\t"
            case 0x08: escape = "\\b"
            case 0x0C: escape = "\\f"
            case 0x00..<0x20:
                let hex = String(scalar.value, radix: 16)
                escape = "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: escape = nil
            }
            if let escape {
                output.unicodeScalars.append(contentsOf: scalars[start..<index])
                output += escape
                start = scalars.index(after: index)
            }
            index = scalars.index(after: index)
        }
        output.unicodeScalars.append(contentsOf: scalars[start..<scalars.endIndex])
        output += "\""
    }

    /// Builds one JSON object field by field; nil values are left out.
    struct Object {
        private(set) var text = "{"
        private var empty = true

        private mutating func key(_ name: String) {
            if !empty { text += "," }
            empty = false
            text += "\""
            text += name  // names are our own column names: nothing to escape
            text += "\":"
        }

        mutating func string(_ name: String, _ value: String?) {
            guard let value else { return }
            key(name)
            JSONWriter.appendString(value, to: &text)
        }

        mutating func integer<T: BinaryInteger>(_ name: String, _ value: T?) {
            guard let value else { return }
            key(name)
            text += String(value)
        }

        mutating func number(_ name: String, _ value: Double?) throws {
            guard let value else { return }
            key(name)
            try JSONWriter.appendNumber(value, to: &text)
        }

        mutating func bool(_ name: String, _ value: Bool?) {
            guard let value else { return }
            key(name)
            text += value ? "true" : "false"
        }

        /// A JSON value wrapped in a one-element array, so that JSON null survives jsonb_to_recordset.
        mutating func wrapped(_ name: String, _ value: JSONValue?) throws {
            guard let value else { return }
            key(name)
            text += "["
            try JSONWriter.append(value, to: &text)
            text += "]"
        }

        mutating func close() -> String {
            text += "}"
            return text
        }
    }
}
