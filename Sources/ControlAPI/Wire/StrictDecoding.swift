#if canImport(FoundationEssentials)
import SandboxCore
import FoundationEssentials
#else
import Foundation
#endif

/// A coding key for any field name, used to list what a request actually sent.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

/// A request carried a field the API does not define. Requests are decoded strictly so that a
/// typo (`"timout": 5`) is an error instead of a silently ignored limit.
public struct UnknownFieldError: Error, Sendable {
    /// Dotted path of the unknown field, e.g. `code.lang`.
    public var path: String
    /// The fields allowed at that place.
    public var allowed: [String]
}

extension Decoder {
    /// Throws `UnknownFieldError` when the object being decoded has a key outside `keys`.
    func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) throws {
        let container = try self.container(keyedBy: AnyCodingKey.self)
        let known = Keys.allCases.map(\.stringValue)
        for key in container.allKeys where !known.contains(key.stringValue) {
            throw UnknownFieldError(path: codingPathString(codingPath + [key]), allowed: known)
        }
    }
}

/// `a.b[2].c` for a coding path.
func codingPathString(_ path: [any CodingKey]) -> String {
    var text = ""
    for key in path {
        if let index = key.intValue {
            text += "[\(index)]"
        } else {
            text += text.isEmpty ? key.stringValue : "." + key.stringValue
        }
    }
    return text
}

extension APIError {
    /// Turns whatever decoding a request body threw into the API error that names what was wrong.
    public static func decoding(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as UnknownFieldError:
            return APIError(
                .unknownField, "unknown field \"\(error.path)\" (allowed here: \(error.allowed.joined(separator: ", ")))",
                details: ["field": .string(error.path), "allowed": .array(error.allowed.map { .string($0) })])
        case let error as DecodingError:
            switch error {
            case .dataCorrupted(let context):
                if context.codingPath.isEmpty {
                    // JSON syntax error; the underlying error names line and column.
                    let position = context.underlyingError.map { underlyingDescription($0) } ?? context.debugDescription
                    return APIError(.invalidJSON, "request body is not valid JSON: \(position)",
                                    details: ["position": .string(position)])
                }
                let field = codingPathString(context.codingPath)
                return APIError(.invalidField, "field \"\(field)\": \(context.debugDescription)",
                                details: ["field": .string(field)])
            case .typeMismatch(let type, let context):
                let field = codingPathString(context.codingPath)
                if field.isEmpty {
                    return APIError(.invalidJSON, "request body must be a JSON object")
                }
                return APIError(.invalidField, "field \"\(field)\": expected \(jsonTypeName(type))",
                                details: ["field": .string(field), "expected": .string(jsonTypeName(type))])
            case .valueNotFound(let type, let context):
                let field = codingPathString(context.codingPath)
                return APIError(.invalidField, "field \"\(field)\": expected \(jsonTypeName(type)), got null",
                                details: ["field": .string(field)])
            case .keyNotFound(let key, let context):
                let field = codingPathString(context.codingPath + [key])
                return APIError(.missingField, "missing field \"\(field)\"", details: ["field": .string(field)])
            @unknown default:
                return APIError(.badRequest, "request body could not be decoded")
            }
        default:
            return APIError(.badRequest, "request body could not be decoded")
        }
    }
}

private func underlyingDescription(_ error: any Error) -> String {
    String(describing: error)
}

private func jsonTypeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Bool.Type: "a boolean"
    case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type, is UInt32.Type: "an integer"
    case is Double.Type, is Float.Type: "a number"
    case is UUID.Type: "a UUID string"
    default:
        String(describing: type).hasPrefix("Array") ? "an array" :
            String(describing: type).hasPrefix("Dictionary") ? "an object" : "a value of the documented type"
    }
}
