import Foundation
import Testing
@testable import ControlAPI

/// Run requests of the plain shape skip Codable; they must decode to exactly what the strict decoder gives,
/// and everything else must be left to it.
struct FastDecodingTests {
    private func strict(_ json: String) throws -> RunRequest {
        try JSONDecoder().decode(RunRequest.self, from: Data(json.utf8))
    }

    @Test("plain requests decode to the same value as the strict decoder", arguments: [
        #"{"command": ["/bin/true"]}"#,
        #"{"command":["python3","-c","print(1)"],"stdin":"x y","env":{"LANG":"C.UTF-8","A":""},"policy":"default","isolation_level":1,"agent_type":"python","timeout":2.5}"#,
        #" { "command" : [ ] , "timeout" : 30 , "session_id" : "0E0B2C7A-1D43-4F4B-9D2A-3C5E6F708192" } "#,
        #"{"command":null,"stdin":null,"env":null,"timeout":null,"policy":null,"isolation_level":null,"agent_type":null,"session_id":null}"#,
        #"{}"#,
        #"{"command":["é ✓ 😀"],"isolation_level":-0,"timeout":1e2}"#,
    ])
    func sameAsStrict(_ json: String) throws {
        let fast = try #require(RunRequest.fastDecode(Array(json.utf8)))
        #expect(fast == (try strict(json)))
    }

    @Test("escapes, code, unknown or repeated keys and odd numbers are left to the strict decoder", arguments: [
        #"{"command":["echo","a\"b"]}"#,
        #"{"command":["echo","a\nb"]}"#,
        #"{"code":{"language":"python","source":"1"}}"#,
        #"{"command":["true"],"timout":5}"#,
        #"{"command":["true"],"command":["false"]}"#,
        #"{"command":["true"],"env":{"A":"1","A":"2"}}"#,
        #"{"command":["true"],"isolation_level":1.0}"#,
        #"{"command":["true"],"isolation_level":99999999999999999999999}"#,
        #"{"command":["true"],"timeout":1e999}"#,
        #"{"command":["true"],"session_id":"not-a-uuid"}"#,
        #"{"command":"true"}"#,
        #"{"command":[1]}"#,
        #"[]"#,
    ])
    func leftToStrict(_ json: String) {
        #expect(RunRequest.fastDecode(Array(json.utf8)) == nil)
    }
}
