#if canImport(FoundationEssentials)
import SandboxCore
import FoundationEssentials
#else
import Foundation
#endif
import DaemonMetrics
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

/// Builds the router of every `/v1` endpoint on top of a `SandboxService`.
struct ControlRoutes {
    let service: any SandboxService
    let configuration: ControlAPIConfiguration
    var metrics: DaemonMetrics? = nil

    func makeRouter() -> Router<ControlRequestContext> {
        let router = Router(context: ControlRequestContext.self)
        router.add(middleware: APIErrorMiddleware(metrics: metrics))

        // Prometheus scrape target. Admins only: the figures describe every user's work.
        if let metrics {
            router.get("/metrics") { _, context in
                guard context.caller.isAdmin else {
                    throw APIError(.forbidden, "metrics are readable by root and members of the admin group\(configuration.adminGroup.map { " \($0)" } ?? "")",
                                   details: ["uid": .integer(Int64(context.caller.uid))])
                }
                let text = metrics.exposition()
                var headers = HTTPFields()
                headers[.contentType] = DaemonMetrics.contentType
                headers[.contentLength] = String(text.count)
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
            }
        }

        router.get("/v1/health") { _, _ in
            try jsonResponse(await service.health())
        }
        router.get("/v1/info") { _, context in
            var info = await service.info(caller: context.caller)
            info.limits.maxBodyBytes = configuration.maxBodyBytes
            return try jsonResponse(info)
        }
        router.post("/v1/run") { request, context in
            let body = try await decodeBody(RunRequest.self, request, context)
            try body.validate()
            if try wantsStream(request) {
                return try await streamingResponse(channel: context.channel) { sink in
                    try await service.run(body, caller: context.caller, output: sink)
                }
            }
            return jsonResponse(try await service.run(body, caller: context.caller, output: nil))
        }
        router.post("/v1/sandboxes") { request, context in
            let body = try await decodeBody(SandboxCreateRequest.self, request, context, emptyMeans: "{}")
            try body.validate()
            return try jsonResponse(try await service.createSandbox(body, caller: context.caller), status: .created)
        }
        router.get("/v1/sandboxes") { _, context in
            try jsonResponse(SandboxList(sandboxes: try await service.listSandboxes(caller: context.caller)))
        }
        router.get("/v1/sandboxes/:id") { _, context in
            try jsonResponse(try await service.sandbox(id: try sandboxID(context), caller: context.caller))
        }
        router.delete("/v1/sandboxes/:id") { _, context in
            try await service.destroySandbox(id: try sandboxID(context), caller: context.caller)
            return Response(status: .noContent)
        }
        router.post("/v1/sandboxes/:id/exec") { request, context in
            let id = try sandboxID(context)
            let body = try await decodeBody(SandboxExecRequest.self, request, context)
            try body.validate()
            if try wantsStream(request) {
                return try await streamingResponse(channel: context.channel) { sink in
                    try await service.exec(sandboxID: id, body, caller: context.caller, output: sink)
                }
            }
            return jsonResponse(try await service.exec(sandboxID: id, body, caller: context.caller, output: nil))
        }
        router.put("/v1/sandboxes/:id/files") { request, context in
            let id = try sandboxID(context)
            let path = try filePath(request)
            if let length = request.headers[.contentLength].flatMap(Int.init), length > configuration.maxFileBytes {
                throw APIError.tooLarge(length, limit: configuration.maxFileBytes)
            }
            let buffer = try await collect(request, limit: configuration.maxFileBytes)
            let result = try await service.writeFile(sandboxID: id, path: path, contents: Array(buffer: buffer), caller: context.caller)
            return try jsonResponse(result, status: .created)
        }
        router.get("/v1/sandboxes/:id/files") { request, context in
            let id = try sandboxID(context)
            let path = try filePath(request)
            let bytes = try await service.readFile(sandboxID: id, path: path, limit: configuration.maxFileBytes, caller: context.caller)
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            headers[.contentLength] = String(bytes.count)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.get("/v1/executions") { request, context in
            let query = try executionQuery(request)
            return try jsonResponse(ExecutionList(executions: try await service.executions(query, caller: context.caller)))
        }
        router.get("/v1/executions/:id") { _, context in
            let text = context.parameters.get("id") ?? ""
            guard let id = UUID(uuidString: text) else {
                throw APIError(.notFound, "no execution with id \(text) (execution ids are UUIDs)", details: ["execution_id": .string(text)])
            }
            return try jsonResponse(try await service.execution(id: id, caller: context.caller))
        }
        router.get("/v1/executions/:id/egress") { _, context in
            let text = context.parameters.get("id") ?? ""
            guard let id = UUID(uuidString: text) else {
                throw APIError(.notFound, "no execution with id \(text) (execution ids are UUIDs)", details: ["execution_id": .string(text)])
            }
            return try jsonResponse(try await service.egressEvents(executionID: id, caller: context.caller))
        }
        router.post("/v1/sessions") { request, context in
            let body = try await decodeBody(SessionCreateRequest.self, request, context, emptyMeans: "{}")
            try body.validate()
            return try jsonResponse(try await service.createSession(body, caller: context.caller), status: .created)
        }
        router.get("/v1/policies") { _, context in
            try jsonResponse(try await service.policies(caller: context.caller))
        }
        router.post("/v1/policies/reload") { request, context in
            // No body is expected; one that is there is drained so the connection stays usable.
            _ = try await collect(request, limit: configuration.maxBodyBytes)
            guard context.caller.isAdmin else {
                throw APIError(.forbidden, "reloading policies needs root or membership in the admin group (sandboxd-admin)",
                               details: ["uid": .integer(Int64(context.caller.uid))])
            }
            return try jsonResponse(try await service.reloadPolicies(caller: context.caller))
        }
        return router
    }

    // MARK: Request parsing

    /// Decodes a JSON body strictly: `application/json` only, size-capped, time-capped, unknown fields refused.
    private func decodeBody<T: Decodable>(_ type: T.Type, _ request: Request, _ context: ControlRequestContext,
                                          emptyMeans empty: String? = nil) async throws -> T {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > configuration.maxBodyBytes {
            throw APIError.tooLarge(length, limit: configuration.maxBodyBytes)
        }
        let buffer = try await collect(request, limit: configuration.maxBodyBytes)
        var data = Data(buffer: buffer)
        if data.isEmpty {
            guard let empty else {
                throw APIError(.badRequest, "request body is empty; expected a JSON object")
            }
            data = Data(empty.utf8)
        } else {
            let contentType = request.headers[.contentType] ?? ""
            let mediaType = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
            guard mediaType == "application/json" else {
                throw APIError(.unsupportedMediaType,
                               "request body must be application/json, got \(contentType.isEmpty ? "no Content-Type" : "\"\(contentType)\"")",
                               details: ["content_type": .string(contentType)])
            }
        }
        return try APIError.decodeStrictly(T.self, from: Array(data)) { bytes in
            if let fast = (T.self as? any FastDecodable.Type)?.fastDecode(bytes) as? T { return fast }
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        }
    }

    /// The whole body, refusing more than `limit` bytes and bodies that trickle in slower than the body timeout.
    private func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        let timeout = configuration.bodyTimeoutSeconds
        let body = request.body
        return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask {
                do { return try await body.collect(upTo: limit) } catch is NIOTooManyBytesError {
                    throw APIError.tooLarge(nil, limit: limit)
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(timeout))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let buffer = first else {
                throw APIError(.timeout, "request body did not arrive within \(timeout) s", details: ["timeout_seconds": .integer(timeout)])
            }
            return buffer
        }
    }

    private func wantsStream(_ request: Request) throws -> Bool {
        guard let stream = request.uri.queryParameters["stream"] else { return false }
        guard stream == "ndjson" else {
            throw APIError(.invalidField, "query parameter \"stream\" must be \"ndjson\", got \"\(stream)\"", details: ["field": "stream"])
        }
        return true
    }

    private func sandboxID(_ context: ControlRequestContext) throws -> String {
        let id = context.parameters.get("id") ?? ""
        guard !id.isEmpty, id.count <= 100, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
            throw APIError(.notFound, "no sandbox with id \(id)", details: ["sandbox_id": .string(id)])
        }
        return id
    }

    private func filePath(_ request: Request) throws -> String {
        guard let path = request.uri.queryParameters["path"].map(String.init), !path.isEmpty else {
            throw APIError(.missingField, "query parameter \"path\" is required", details: ["field": "path"])
        }
        return path
    }

    private func executionQuery(_ request: Request) throws -> ExecutionQuery {
        let parameters = request.uri.queryParameters
        var query = ExecutionQuery()
        for (key, _) in parameters where !["sandbox_id", "session_id", "limit"].contains(String(key)) {
            throw APIError(.unknownField, "unknown query parameter \"\(key)\" (allowed: sandbox_id, session_id, limit)",
                           details: ["field": .string(String(key))])
        }
        if let sandbox = parameters["sandbox_id"], !sandbox.isEmpty { query.sandboxID = String(sandbox) }
        if let session = parameters["session_id"], !session.isEmpty {
            guard let id = UUID(uuidString: String(session)) else {
                throw APIError(.invalidField, "query parameter \"session_id\" must be a UUID, got \"\(session)\"", details: ["field": "session_id"])
            }
            query.sessionID = id
        }
        if let limit = parameters["limit"], !limit.isEmpty {
            guard let value = Int(limit), (1...configuration.maxHistoryLimit).contains(value) else {
                throw APIError(.invalidField, "query parameter \"limit\" must be an integer from 1 to \(configuration.maxHistoryLimit), got \"\(limit)\"",
                               details: ["field": "limit"])
            }
            query.limit = value
        }
        return query
    }
}

extension APIError {
    static func tooLarge(_ length: Int?, limit: Int) -> APIError {
        let got = length.map { " (\($0) bytes)" } ?? ""
        return APIError(.payloadTooLarge, "request body is larger than the limit of \(limit) bytes\(got)",
                        details: ["limit_bytes": .integer(Int64(limit))])
    }
}

// MARK: Responses

let jsonEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .iso8601
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
}()

func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try jsonEncoder.encode(value)
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    headers[.contentLength] = String(data.count)
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// A run's or exec's answer, written without `JSONEncoder` (see `JSONText`); same JSON as the generic form.
func jsonResponse(_ result: ExecutionResult, status: HTTPResponse.Status = .ok) -> Response {
    let bytes = result.jsonBytes
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    headers[.contentLength] = String(bytes.count)
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
}

/// The JSON error response for any error; internal errors are logged by the caller, never shown.
func errorResponse(_ error: APIError) -> Response {
    let data = errorBodyBytes(error)
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    headers[.contentLength] = String(data.count)
    if error.code == .payloadTooLarge || error.code == .timeout {
        // The rest of the body is not read: the connection cannot carry another request.
        headers[.connection] = "close"
    }
    return Response(status: .init(code: error.code.httpStatus), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// `{"error": {"code", "message", "details"}}` for `error`.
func errorBodyBytes(_ error: APIError) -> [UInt8] {
    guard let data = try? jsonEncoder.encode(APIErrorBody(error)) else {
        return Array(#"{"error":{"code":"internal_error","message":"","details":{}}}"#.utf8)
    }
    return Array(data)
}

/// Converts every error a handler throws into the one error shape.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = ControlRequestContext
    var metrics: DaemonMetrics?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let apiError = Self.apiError(for: error, request: request, context: context)
            // A parse error was answered (and counted) by ProtocolErrorHandler; this answer is dropped.
            if !(error is HTTPParserError) { metrics?.apiError(code: apiError.code.rawValue) }
            return errorResponse(apiError)
        }
    }

    static func apiError(for error: any Error, request: Request, context: Context) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case is NIOTooManyBytesError:
            return APIError(.payloadTooLarge, "request body is too large")
        case let error as HTTPParserError:
            return ProtocolErrorHandler.apiError(for: error)
        case let error as HTTPError:
            switch error.status {
            case .notFound:
                return APIError(.notFound, "no endpoint \(request.method) \(request.uri.path)",
                                details: ["method": .string(request.method.rawValue), "path": .string(request.uri.path)])
            case .methodNotAllowed:
                return APIError(.methodNotAllowed, "method \(request.method) is not allowed on \(request.uri.path)",
                                details: ["method": .string(request.method.rawValue), "path": .string(request.uri.path)])
            case .contentTooLarge:
                return APIError(.payloadTooLarge, "request body is too large")
            case .badRequest:
                return APIError(.badRequest, error.body ?? "bad request")
            default:
                return APIError(error.status.code >= 500 ? .internalError : .badRequest, error.body ?? error.status.reasonPhrase)
            }
        default:
            context.logger.error("request failed: \(String(reflecting: error))",
                                 metadata: ["method": "\(request.method)", "path": "\(request.uri.path)"])
            return APIError(.internalError, "internal error while handling \(request.method) \(request.uri.path); see the daemon log")
        }
    }
}
