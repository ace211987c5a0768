import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Answers malformed HTTP — a bad request line, a bad header, a head over the size limit, a bad
/// chunked body — with the JSON error shape instead of a bare `400`, then closes the connection.
///
/// It sits after the HTTP/1 decoder, sees every response part going out and every decode error
/// coming in. When a parse error arrives and no response is half written, it writes
/// `{"error": {...}}` itself (with `Connection: close`) and drops whatever the request handler
/// writes afterwards (the request is void: the framework's own bare 400 and any answer to a body
/// that was cut short never reach the socket). When a response is half written, the connection
/// cannot carry another message, so it is only closed. The error still travels on, so the request
/// handler sees its body fail rather than end early (a truncated body is never acted on).
final class ProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// A response head went out and its end has not.
    private var responseOpen = false
    /// A parse error was seen: nothing but the rest of an open response goes out after it.
    private var failed = false
    private let onError: @Sendable (APIError) -> Void

    init(onError: @escaping @Sendable (APIError) -> Void = { _ in }) {
        self.onError = onError
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        if failed {
            // Only the tail of a response that was already open may still go out.
            guard responseOpen, !isHead(part) else {
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
        }
        switch part {
        case .head(let head): if head.status.kind != .informational { responseOpen = true }
        case .end: responseOpen = false
        case .body: break
        }
        context.write(data, promise: promise)
        if failed, !responseOpen {
            let channel = context.channel
            context.flush()
            channel.close(promise: nil)
        }
    }

    private func isHead(_ part: HTTPResponsePart) -> Bool {
        if case .head = part { return true }
        return false
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, !failed else {
            context.fireErrorCaught(error)
            return
        }
        failed = true
        if !responseOpen {
            let apiError = Self.apiError(for: parserError)
            onError(apiError)
            let body = errorBodyBytes(apiError)
            var fields = HTTPFields()
            fields[.contentType] = "application/json"
            fields[.contentLength] = String(body.count)
            fields[.connection] = "close"
            let head = HTTPResponse(status: .init(code: apiError.code.httpStatus), headerFields: fields)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(bytes: body))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
        context.fireErrorCaught(error)
    }

    /// What was wrong with the bytes, for people; the code says which part of the message it was.
    static func apiError(for error: HTTPParserError) -> APIError {
        if case .headerOverflow = error {
            return APIError(.headersTooLarge, "request head (request line and headers) is larger than the server accepts",
                            details: ["part": "head"])
        }
        let (part, what): (String, String) = switch error {
        case .invalidMethod: ("request line", "the method is not a valid HTTP method")
        case .invalidURL: ("request line", "the request target is not a valid URL path")
        case .invalidVersion: ("request line", "the HTTP version is not HTTP/1.x")
        case .invalidHeaderToken: ("header", "a header name or value has characters HTTP does not allow")
        case .lfExpected, .invalidConstant, .invalidCharactersUsed, .strictModeAssertion:
            ("head", "line endings or characters do not follow HTTP/1.1 syntax")
        case .invalidContentLength, .unexpectedContentLength:
            ("header", "Content-Length is invalid, repeated or combined with Transfer-Encoding")
        case .invalidChunkSize: ("body", "a chunk of the chunked body has an invalid size line")
        case .invalidEOFState, .closedConnection: ("body", "the connection ended in the middle of the request")
        case .trailingGarbage: ("body", "bytes follow the request that are not another request")
        default: ("message", "the request is not valid HTTP/1.1 (\(error))")
        }
        return APIError(.malformedHTTP, "malformed HTTP request \(part): \(what)", details: ["part": .string(part)])
    }
}
