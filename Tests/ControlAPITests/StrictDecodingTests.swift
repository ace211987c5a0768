import Foundation
import Testing
@testable import ControlAPI

/// Request bodies are decoded strictly and every refusal names what was wrong.
struct StrictDecodingTests {
    private func decodeError<T: Decodable>(_ type: T.Type, _ json: String) -> APIError? {
        do {
            _ = try APIError.decodeStrictly(T.self, from: Array(json.utf8)) { try JSONDecoder().decode(T.self, from: Data($0)) }
            return nil
        } catch {
            return error
        }
    }

    @Test("an unknown top-level field is refused by name, with the allowed fields listed")
    func unknownTopLevelField() throws {
        let error = try #require(decodeError(RunRequest.self, #"{"command":["true"],"timout":5}"#))
        #expect(error.code == .unknownField)
        #expect(error.details["field"] == .string("timout"))
        #expect(error.message.contains("\"timout\""))
        #expect(error.message.contains("timeout"))
    }

    @Test("an unknown field inside code is refused with its dotted path")
    func unknownNestedField() throws {
        let error = try #require(decodeError(RunRequest.self, #"{"code":{"language":"python","source":"1","lang":"x"}}"#))
        #expect(error.code == .unknownField)
        #expect(error.details["field"] == .string("code.lang"))
    }

    @Test("malformed JSON is refused as invalid_json and says where", arguments: [#"{"command": ["true"],}"#, #"{"command": ["true"]"#, "{not json", "", #"{"command": [tru]}"#])
    func malformedJSON(_ body: String) throws {
        let error = try #require(decodeError(RunRequest.self, body))
        #expect(error.code == .invalidJSON)
        #expect(error.message.hasPrefix("request body is not valid JSON"))
        #expect(error.message.contains("line 1, column"))
        #expect(error.details["line"] == .integer(1))
    }

    @Test("the position of a syntax error is line and column")
    func position() throws {
        let error = try #require(decodeError(RunRequest.self, "{\n  \"command\": [\"a\",]\n}"))
        #expect(error.details["line"] == .integer(2))
        #expect(error.details["column"] == .integer(19))
    }

    @Test("hostile nesting depth is refused before decoding")
    func deepNesting() throws {
        let body = #"{"env":"# + String(repeating: "[", count: 10000) + String(repeating: "]", count: 10000) + "}"
        let error = try #require(decodeError(RunRequest.self, body))
        #expect(error.code == .invalidJSON)
        #expect(error.message.contains("nesting"))
    }

    @Test("a wrong type names the field and the expected type")
    func wrongType() throws {
        let error = try #require(decodeError(RunRequest.self, #"{"command":"true"}"#))
        #expect(error.code == .invalidField)
        #expect(error.details["field"] == .string("command"))
        #expect(error.message.contains("array"))
        let timeout = try #require(decodeError(RunRequest.self, #"{"command":["true"],"timeout":"soon"}"#))
        #expect(timeout.details["field"] == .string("timeout"))
        #expect(timeout.message.contains("number"))
    }

    @Test("a body that is not an object is refused")
    func notAnObject() throws {
        let error = try #require(decodeError(RunRequest.self, "[1,2]"))
        #expect(error.code == .invalidJSON)
    }

    @Test("a missing required field of code is named")
    func missingField() throws {
        let error = try #require(decodeError(RunRequest.self, #"{"code":{"language":"python"}}"#))
        #expect(error.code == .missingField)
        #expect(error.details["field"] == .string("code.source"))
    }

    @Test("a valid run request decodes every documented field")
    func validRunRequest() throws {
        let json = #"""
        {"command":["python3","-c","print(1)"],"stdin":"x","env":{"LANG":"C.UTF-8"},"policy":"default",
         "isolation_level":1,"agent_type":"python","session_id":"7d0e9a1c-7b5e-4c1a-9a57-2f7c3d1e5b10","timeout":30}
        """#
        let request = try JSONDecoder().decode(RunRequest.self, from: Data(json.utf8))
        #expect(request.payload.command == ["python3", "-c", "print(1)"])
        #expect(request.payload.env == ["LANG": "C.UTF-8"])
        #expect(request.payload.timeout == 30)
        #expect(request.sandbox.isolationLevel == 1)
        #expect(request.sandbox.agentType == "python")
        #expect(request.sandbox.sessionID == UUID(uuidString: "7d0e9a1c-7b5e-4c1a-9a57-2f7c3d1e5b10"))
        try request.validate()
    }

    @Test("validation refuses both or neither of command and code, NUL bytes, bad levels and bad env names")
    func validation() throws {
        #expect(throws: APIError.self) { try ExecPayload().validate() }
        #expect(throws: APIError.self) { try ExecPayload(command: ["a"], code: .init(language: "sh", source: "")).validate() }
        #expect(throws: APIError.self) { try ExecPayload(command: ["a\u{0}b"]).validate() }
        #expect(throws: APIError.self) { try ExecPayload(command: [""]).validate() }
        #expect(throws: APIError.self) { try ExecPayload(command: ["a"], env: ["A=B": "x"]).validate() }
        #expect(throws: APIError.self) { try ExecPayload(command: ["a"], timeout: -1).validate() }
        #expect(throws: APIError.self) { try SandboxCreateRequest(isolationLevel: 7).validate() }
        #expect(throws: APIError.self) { try SandboxCreateRequest(policy: "../etc").validate() }
        try ExecPayload(command: ["true"], env: ["PATH_X": "1"], timeout: 1).validate()
    }

    @Test("the error body has exactly code, message and details")
    func errorShape() throws {
        let data = try JSONEncoder().encode(APIErrorBody(APIError(.notFound, "no sandbox with id x", details: ["sandbox_id": "x"])))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let error = try #require(object["error"] as? [String: Any])
        #expect(Set(error.keys) == ["code", "message", "details"])
        #expect(error["code"] as? String == "not_found")
        #expect(APIError.Code.notFound.httpStatus == 404)
        #expect(APIError.Code.tooManyRequests.httpStatus == 429)
    }
}

/// Streamed output never splits a character across lines.
struct UTF8ChunkDecoderTests {
    @Test("a multi-byte character split across chunks comes out whole")
    func splitCharacter() {
        var decoder = UTF8ChunkDecoder()
        let bytes = Array("héllo ✓ 😀".utf8)
        var text = ""
        for byte in bytes { text += decoder.decode([byte]) }
        text += decoder.flush()
        #expect(text == "héllo ✓ 😀")
    }

    @Test("invalid bytes become U+FFFD instead of failing")
    func invalidBytes() {
        var decoder = UTF8ChunkDecoder()
        let text = decoder.decode([0x61, 0xFF, 0x62]) + decoder.flush()
        #expect(text == "a\u{FFFD}b")
    }
}
