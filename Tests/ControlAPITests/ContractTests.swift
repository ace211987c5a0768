import Foundation
import Testing
@testable import ControlAPI
import NIOHTTP1

/// openapi.yaml stays the contract of what the code answers.
struct ContractTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    private func contract() throws -> String {
        try String(contentsOf: Self.packageRoot.appendingPathComponent("openapi.yaml"), encoding: .utf8)
    }

    @Test("every error code is listed in openapi.yaml with the status it is answered with")
    func errorCodesListed() throws {
        let text = try contract()
        let start = try #require(text.range(of: "Any error. Codes and statuses:"))
        let end = try #require(text.range(of: "content:", range: start.upperBound..<text.endIndex))
        // "a, b (400); c (403); …" → code → status
        let listing = text[start.upperBound..<end.lowerBound].split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        var listed: [String: Int] = [:]
        for group in listing.split(separator: ";") {
            guard let open = group.lastIndex(of: "("), let close = group.lastIndex(of: ")"),
                  let status = Int(group[group.index(after: open)..<close]) else { continue }
            for code in group[..<open].split(separator: ",") {
                listed[code.trimmingCharacters(in: .whitespaces.union(.init(charactersIn: ".")))] = status
            }
        }
        for code in APIError.Code.allCases {
            #expect(listed[code.rawValue] == code.httpStatus, "\(code.rawValue) is answered with \(code.httpStatus); openapi.yaml says \(String(describing: listed[code.rawValue]))")
        }
        #expect(listed.count == APIError.Code.allCases.count, "openapi.yaml lists codes the server never sends: \(Set(listed.keys).subtracting(APIError.Code.allCases.map(\.rawValue)))")
    }

    @Test("GET /metrics is in the contract, with who may read it")
    func metricsListed() throws {
        let text = try contract()
        #expect(text.contains("\n  /metrics:\n    get:"))
        #expect(text.contains("sandboxd-admin only"))
    }

    @Test("malformed HTTP maps to the JSON codes the contract names")
    func malformedHTTPCodes() {
        #expect(ProtocolErrorHandler.apiError(for: .headerOverflow).code == .headersTooLarge)
        #expect(ProtocolErrorHandler.apiError(for: .invalidChunkSize).code == .malformedHTTP)
        #expect(ProtocolErrorHandler.apiError(for: .invalidChunkSize).message.contains("chunk"))
        #expect(APIError.Code.headersTooLarge.httpStatus == 431)
    }
}
