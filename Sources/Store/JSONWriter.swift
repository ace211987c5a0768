import SandboxCore

/// jsonb parameters for record inserts, written with SandboxCore's `JSONText` (the hot path of
/// record inserts, where `JSONEncoder` and `Codable` containers cost more than the round trip).
/// A non-finite number is refused rather than stored as something else.
enum JSONWriter {
    static func text(_ value: JSONValue) throws -> String {
        do { return try JSONText.string(value) } catch { throw refused(error) }
    }

    private static func refused(_ error: JSONText.NonFiniteNumber) -> StoreError {
        StoreError(.encodingFailed, "cannot store \(error.value) in JSON: only finite numbers exist there")
    }

    /// Builds one JSON object field by field; nil values are left out.
    struct Object {
        private var bytes: [UInt8] = [UInt8(ascii: "{")]
        private var empty = true

        init() { bytes.reserveCapacity(1024) }

        private mutating func key(_ name: String) {
            if !empty { bytes.append(UInt8(ascii: ",")) }
            empty = false
            JSONText.appendString(name, to: &bytes)
            bytes.append(UInt8(ascii: ":"))
        }

        mutating func string(_ name: String, _ value: String?) {
            guard let value else { return }
            key(name)
            JSONText.appendString(value, to: &bytes)
        }

        mutating func integer<T: BinaryInteger>(_ name: String, _ value: T?) {
            guard let value else { return }
            key(name)
            bytes += String(value).utf8
        }

        mutating func number(_ name: String, _ value: Double?) throws {
            guard let value else { return }
            key(name)
            do { try JSONText.appendNumber(value, to: &bytes, nonFinite: .refuse) } catch { throw JSONWriter.refused(error) }
        }

        mutating func bool(_ name: String, _ value: Bool?) {
            guard let value else { return }
            key(name)
            bytes += (value ? "true" : "false").utf8
        }

        /// A JSON value wrapped in a one-element array, so that JSON null survives jsonb_to_recordset.
        mutating func wrapped(_ name: String, _ value: JSONValue?) throws {
            guard let value else { return }
            key(name)
            bytes.append(UInt8(ascii: "["))
            do { try JSONText.append(value, to: &bytes, nonFinite: .refuse) } catch { throw JSONWriter.refused(error) }
            bytes.append(UInt8(ascii: "]"))
        }

        mutating func close() -> String {
            bytes.append(UInt8(ascii: "}"))
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}
