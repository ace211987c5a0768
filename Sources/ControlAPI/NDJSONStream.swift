#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// One line of an NDJSON exec stream.
///
/// `{"stream":"stdout","data":"…"}` and `{"stream":"stderr","data":"…"}` while the exec runs, then
/// exactly one of `{"result":{…ExecutionResult…}}` or `{"error":{"code","message","details"}}`.
public enum StreamLine: Sendable, Hashable, Codable {
    case output(OutputChunk.Stream, String)
    case result(ExecutionResult)
    case error(APIErrorBody.Content)

    enum CodingKeys: String, CodingKey { case stream, data, result, error }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let result = try c.decodeIfPresent(ExecutionResult.self, forKey: .result) {
            self = .result(result)
        } else if let error = try c.decodeIfPresent(APIErrorBody.Content.self, forKey: .error) {
            self = .error(error)
        } else {
            self = .output(try c.decode(OutputChunk.Stream.self, forKey: .stream), try c.decode(String.self, forKey: .data))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .output(let stream, let data):
            try c.encode(stream, forKey: .stream)
            try c.encode(data, forKey: .data)
        case .result(let result): try c.encode(result, forKey: .result)
        case .error(let error): try c.encode(error, forKey: .error)
        }
    }
}

extension ExecutionResult {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let usage = try c.nestedContainer(keyedBy: UsageKeys.self, forKey: .resourceUsage)
        self.init(
            executionID: try c.decode(UUID.self, forKey: .executionID),
            sandboxID: try c.decode(String.self, forKey: .sandboxID),
            status: try c.decode(ExecutionStatusWire.self, forKey: .status).status,
            exitCode: try c.decodeIfPresent(Int32.self, forKey: .exitCode),
            signal: try c.decodeIfPresent(Int32.self, forKey: .signal),
            stdout: try c.decode(String.self, forKey: .stdout),
            stderr: try c.decode(String.self, forKey: .stderr),
            stdoutTruncated: try c.decode(Bool.self, forKey: .stdoutTruncated),
            stderrTruncated: try c.decode(Bool.self, forKey: .stderrTruncated),
            executionTime: try c.decode(Double.self, forKey: .executionTime),
            isolationLevel: try c.decode(Int.self, forKey: .isolationLevel),
            policy: try c.decode(String.self, forKey: .policy),
            limitsEnforced: try c.decode(Bool.self, forKey: .limitsEnforced),
            resourceUsage: .init(cpuMicroseconds: try usage.decodeIfPresent(UInt64.self, forKey: .cpuMicroseconds),
                                 memoryPeakBytes: try usage.decodeIfPresent(UInt64.self, forKey: .memoryPeakBytes)),
            errorMessage: try c.decodeIfPresent(String.self, forKey: .errorMessage),
            requestedIsolationLevel: try c.decodeIfPresent(Int.self, forKey: .requestedIsolationLevel),
            levelRaisedBy: try c.decodeIfPresent(String.self, forKey: .levelRaisedBy),
            policyDigest: try c.decodeIfPresent(String.self, forKey: .policyDigest))
    }
}

import SandboxCore

private struct ExecutionStatusWire: Decodable {
    var status: ExecutionStatus
    init(from decoder: any Decoder) throws {
        status = try decoder.singleValueContainer().decode(ExecutionStatus.self)
    }
}

/// Turns byte chunks into text without splitting a multi-byte character across two lines:
/// an incomplete sequence at the end of a chunk waits for the next one. Invalid bytes become U+FFFD.
struct UTF8ChunkDecoder {
    private var pending: [UInt8] = []

    mutating func decode(_ bytes: [UInt8]) -> String {
        pending.append(contentsOf: bytes)
        let cut = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a multi-byte sequence.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        var index = bytes.count
        var continuation = 0
        while index > 0 && continuation < 4 {
            let byte = bytes[index - 1]
            if byte & 0xC0 == 0x80 { // continuation byte
                continuation += 1
                index -= 1
                continue
            }
            let needed = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return needed > continuation + 1 ? index - 1 : bytes.count
        }
        return bytes.count
    }
}

private enum StreamEvent: Sendable {
    case output(OutputChunk)
    case finished(ExecutionResult)
    case failed(any Error)
}

/// Holds the event iterator while it passes from the handler (which reads the first event to
/// choose the status) to the body writer (which reads the rest). Only one task uses it at a time.
private final class EventIteratorBox: @unchecked Sendable {
    var iterator: AsyncStream<StreamEvent>.AsyncIterator
    init(_ iterator: AsyncStream<StreamEvent>.AsyncIterator) { self.iterator = iterator }
}

/// Runs an exec and answers with NDJSON. The exec runs in its own task: a client that goes away
/// mid-stream stops receiving, but the exec still finishes (bounded by its timeout) and is recorded.
/// An error before any output is an ordinary error response with its status.
func streamingResponse(channel: any Channel,
                       run: @escaping @Sendable (@escaping OutputSink) async throws -> ExecutionResult) async throws -> Response {
    let (events, continuation) = AsyncStream<StreamEvent>.makeStream()
    Task {
        do {
            let result = try await run { chunk in continuation.yield(.output(chunk)) }
            continuation.yield(.finished(result))
        } catch {
            continuation.yield(.failed(error))
        }
        continuation.finish()
    }
    var iterator = events.makeAsyncIterator()
    guard let first = await iterator.next() else {
        throw APIError(.internalError, "exec ended without a result")
    }
    if case .failed(let error) = first { throw error }
    let box = EventIteratorBox(iterator)
    var headers = HTTPFields()
    headers[.contentType] = "application/x-ndjson"
    return Response(status: .ok, headers: headers, body: .init { writer in
        var decoders = [OutputChunk.Stream.stdout: UTF8ChunkDecoder(), .stderr: UTF8ChunkDecoder()]
        var event: StreamEvent? = first
        while let current = event {
            let line: StreamLine
            switch current {
            case .output(let chunk):
                let text = decoders[chunk.stream]!.decode(chunk.bytes)
                event = await box.iterator.next()
                if text.isEmpty { continue }
                line = .output(chunk.stream, text)
            case .finished(let result):
                line = .result(result)
                event = nil
            case .failed(let error):
                let apiError = (error as? APIError) ?? APIError(.internalError, "exec failed inside the daemon; see the daemon log")
                line = .error(APIErrorBody(apiError).error)
                event = nil
            }
            var data = try jsonEncoder.encode(line)
            data.append(UInt8(ascii: "\n"))
            try await writer.write(ByteBuffer(bytes: data))
        }
        try await writer.finish(nil)
    })
}
