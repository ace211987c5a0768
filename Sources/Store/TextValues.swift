import Foundation
import SandboxCore

/// Values as text parameters. Nothing here builds SQL.
enum Parameter {
    static func uuid(_ value: UUID) -> String { value.uuidString.lowercased() }

    static func json(_ value: JSONValue) throws -> String {
        try JSONWriter.text(value)
    }

    /// Any Encodable as a JSONB parameter.
    static func json<T: Encodable>(encoding value: T) throws -> String {
        do {
            return String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
        } catch {
            throw StoreError(.encodingFailed, "cannot encode \(T.self) as JSON: \(error)")
        }
    }

    static func double(_ value: Double, _ column: String) throws -> String {
        guard value.isFinite else { throw StoreError(.invalidRecord, "\(column) is \(value); only finite numbers are stored") }
        return "\(value)"
    }

    static func date(_ value: Date, _ column: String) throws -> String {
        try double(value.timeIntervalSince1970, column)
    }
}

enum Decode {
    static func uuid(_ text: String?, _ column: String) throws -> UUID {
        guard let text, let value = UUID(uuidString: text) else {
            throw StoreError(.decodingFailed, "\(column) \(text ?? "NULL") is not a UUID")
        }
        return value
    }

    static func number(_ text: String, _ column: String) throws -> Double {
        guard let value = Double(text) else { throw StoreError(.decodingFailed, "\(column) \(text) is not a number") }
        return value
    }

    static func integer<T: FixedWidthInteger>(_ text: String, _ column: String) throws -> T {
        guard let value = T(text) else { throw StoreError(.decodingFailed, "\(column) \(text) is not a \(T.self)") }
        return value
    }

    static func epoch(_ text: String, _ column: String) throws -> Date {
        Date(timeIntervalSince1970: try number(text, column))
    }

    static func json(_ text: String, _ column: String) throws -> JSONValue {
        try json(JSONValue.self, text, column)
    }

    static func json<T: Decodable>(_ type: T.Type, _ text: String, _ column: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            throw StoreError(.decodingFailed, "\(column) does not decode as \(T.self): \(error)")
        }
    }
}
