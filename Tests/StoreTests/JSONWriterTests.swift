import Foundation
import SandboxCore
import Testing
@testable import Store

struct JSONWriterTests {
    @Test("record rows are SandboxCore's JSON text; a non-finite number is a StoreError naming the value")
    func rows() throws {
        var row = JSONWriter.Object()
        row.string("s", "a\"b\n")
        row.integer("i", Int64.min)
        try row.number("n", 0.1)
        try row.wrapped("j", ["k": nil])
        row.string("absent", nil)
        let text = row.close()
        #expect(text == #"{"s":"a\"b\n","i":-9223372036854775808,"n":0.1,"j":[{"k":null}]}"#)
        #expect(try JSONWriter.text(["b": 1, "a": "x"]) == #"{"a":"x","b":1}"#)

        let error = try #require(throws: StoreError.self) { try JSONWriter.text(.number(.nan)) }
        #expect("\(error)".contains("nan"))
        #expect(throws: StoreError.self) { try JSONWriter.text(["x": .number(.infinity)]) }
        var bad = JSONWriter.Object()
        #expect(throws: StoreError.self) { try bad.number("t", -.infinity) }
        #expect(throws: StoreError.self) { try bad.wrapped("j", [.number(.nan)]) }
    }
}
