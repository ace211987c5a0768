/// A size in bytes, parsed from the forms policies and configuration use.
///
/// `K`, `KB`, `KiB` all mean 1024; `M`, `MB`, `MiB` mean 1024²; `G`, `GB`, `GiB` mean 1024³;
/// `T`, `TB`, `TiB` mean 1024⁴. Memory limits are conventionally written `512MB` meaning
/// 512 × 2²⁰ (Docker's `--memory 512m` reads the same way), so sandboxd treats the decimal-looking
/// suffixes as binary everywhere, consistently. A bare number is bytes.
public struct ByteCount: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public var bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.bytes < rhs.bytes }

    /// Why a size string was refused.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var input: String
        public var reason: String
        public var description: String { "invalid size \"\(input)\": \(reason)" }
    }

    /// Parses `512MB`, `512M`, `512MiB`, `1G`, `1.5G`, `4096`, ` 64 KiB `.
    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw ParseError(input: text, reason: "empty") }
        var numberEnd = trimmed.startIndex
        while numberEnd < trimmed.endIndex, trimmed[numberEnd].isNumber || trimmed[numberEnd] == "." {
            numberEnd = trimmed.index(after: numberEnd)
        }
        let numberPart = String(trimmed[..<numberEnd])
        let unitPart = String(trimmed[numberEnd...]).trimmingWhitespace().lowercased()
        if trimmed.hasPrefix("-") { throw ParseError(input: text, reason: "must not be negative") }
        guard let value = Double(numberPart), value.isFinite else {
            throw ParseError(input: text, reason: "expected a number followed by an optional unit (B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB)")
        }
        let multiplier: Double
        switch unitPart {
        case "", "b": multiplier = 1
        case "k", "kb", "kib": multiplier = 1024
        case "m", "mb", "mib": multiplier = 1024 * 1024
        case "g", "gb", "gib": multiplier = 1024 * 1024 * 1024
        case "t", "tb", "tib": multiplier = 1024 * 1024 * 1024 * 1024
        default:
            throw ParseError(input: text, reason: "unknown unit \"\(unitPart)\" (use B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB)")
        }
        let total = (value * multiplier).rounded(.down)
        guard total < Double(UInt64.max) else { throw ParseError(input: text, reason: "too large") }
        if unitPart.isEmpty || unitPart == "b", value != value.rounded(.down) {
            throw ParseError(input: text, reason: "a byte count must be a whole number")
        }
        self.bytes = UInt64(total)
    }

    public static func kibibytes(_ n: UInt64) -> Self { .init(bytes: n * 1024) }
    public static func mebibytes(_ n: UInt64) -> Self { .init(bytes: n * 1024 * 1024) }
    public static func gibibytes(_ n: UInt64) -> Self { .init(bytes: n * 1024 * 1024 * 1024) }

    /// The shortest exact form: `512MiB`, `1GiB`, `1536B`.
    public var description: String {
        let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        for (size, name) in units where bytes >= size && bytes % size == 0 {
            return "\(bytes / size)\(name)"
        }
        return "\(bytes)B"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(UInt64.self) {
            self.bytes = n
        } else {
            let text = try container.decode(String.self)
            do { self.bytes = try ByteCount(parsing: text).bytes } catch {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(bytes)
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and newlines (no Foundation needed).
    package func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
