#if canImport(FoundationEssentials)
import SandboxCore
import FoundationEssentials
#else
import Foundation
#endif

/// The one error every endpoint answers with: `{"error": {"code", "message", "details"}}`.
///
/// `code` is a stable machine-readable string; `message` is for people and names what was wrong;
/// `details` carries structured context (the field, the limit, the id). Nothing else — never a
/// stack trace or an internal type name — reaches the socket.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable error codes and the HTTP status each maps to.
    public enum Code: String, Sendable, Codable, CaseIterable {
        case badRequest = "bad_request"
        /// The bytes on the socket are not valid HTTP/1.1 (request line, header, chunked body).
        case malformedHTTP = "malformed_http"
        /// The request line and headers together are over the server's limit.
        case headersTooLarge = "headers_too_large"
        case invalidJSON = "invalid_json"
        case unknownField = "unknown_field"
        case invalidField = "invalid_field"
        case missingField = "missing_field"
        case unsupportedMediaType = "unsupported_media_type"
        case payloadTooLarge = "payload_too_large"
        case notFound = "not_found"
        case methodNotAllowed = "method_not_allowed"
        case forbidden = "forbidden"
        case conflict = "conflict"
        case tooManyRequests = "too_many_requests"
        case unsupportedLanguage = "unsupported_language"
        case levelUnavailable = "isolation_level_unavailable"
        case limitsNotEnforceable = "limits_not_enforceable"
        case pathRefused = "path_refused"
        case environmentRefused = "environment_refused"
        case invalidPolicy = "invalid_policy"
        case unavailable = "service_unavailable"
        case shuttingDown = "shutting_down"
        case timeout = "request_timeout"
        case internalError = "internal_error"

        /// The HTTP status this code is answered with.
        public var httpStatus: Int {
            switch self {
            case .badRequest, .malformedHTTP, .invalidJSON, .unknownField, .invalidField, .missingField, .pathRefused, .environmentRefused: 400
            case .forbidden: 403
            case .notFound: 404
            case .methodNotAllowed: 405
            case .timeout: 408
            case .conflict: 409
            case .payloadTooLarge: 413
            case .unsupportedMediaType: 415
            case .unsupportedLanguage, .levelUnavailable, .limitsNotEnforceable, .invalidPolicy: 422
            case .tooManyRequests: 429
            case .headersTooLarge: 431
            case .internalError: 500
            case .unavailable, .shuttingDown: 503
            }
        }
    }

    public var code: Code
    public var message: String
    public var details: [String: JSONValue]

    public init(_ code: Code, _ message: String, details: [String: JSONValue] = [:]) {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// A caller asked for something that does not exist or that it may not see. Both answer the
    /// same way so that ids of other users' sandboxes cannot be probed.
    public static func notFound(_ kind: String, id: String) -> APIError {
        APIError(.notFound, "no \(kind) with id \(id)", details: [kind + "_id": .string(id)])
    }
}

/// The JSON body of an error response.
public struct APIErrorBody: Codable, Sendable, Hashable {
    public struct Content: Codable, Sendable, Hashable {
        public var code: String
        public var message: String
        public var details: [String: JSONValue]
    }
    public var error: Content

    public init(_ error: APIError) {
        self.error = Content(code: error.code.rawValue, message: error.message, details: error.details)
    }
}
