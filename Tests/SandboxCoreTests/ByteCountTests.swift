import Testing
@testable import SandboxCore

struct ByteCountTests {
    @Test("sizes parse with binary units", arguments: [
        ("512MB", UInt64(512 << 20)), ("512M", 512 << 20), ("512MiB", 512 << 20), ("1G", 1 << 30),
        ("4096", 4096), (" 64 KiB ", 64 << 10), ("1.5G", 3 << 29), ("0", 0), ("10b", 10),
    ])
    func parses(input: String, expected: UInt64) throws {
        #expect(try ByteCount(parsing: input).bytes == expected)
    }

    @Test("bad sizes are refused with the reason", arguments: ["", "-1M", "12XB", "MB", "1.5", "abc"])
    func refuses(input: String) {
        #expect(throws: ByteCount.ParseError.self) { try ByteCount(parsing: input) }
    }

    @Test("description is the shortest exact form")
    func describes() {
        #expect(ByteCount.mebibytes(512).description == "512MiB")
        #expect(ByteCount(bytes: 1536).description == "1536B")
        #expect(ByteCount.gibibytes(2).description == "2GiB")
    }
}
