/// Markers that frame one command's output and exit status on a guest serial port.
///
/// The guest writes `begin`, then the command's output, then a newline and `end` with the exit
/// status. Each run draws a fresh random nonce, so neither kernel messages nor a line the
/// command prints can pass for a marker of this run. Runs put the frame on a serial port of its
/// own (ttyS1) that the kernel never logs to; the console (ttyS0) stays for diagnosis.
public struct SerialFrame: Hashable, Sendable {
    /// 32 hexadecimal digits.
    public let nonce: String

    public init(nonce: String) { self.nonce = nonce }

    /// A frame with a nonce from the system's random number generator.
    public static func random() -> SerialFrame {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        return SerialFrame(nonce: String((0..<32).map { _ in digits[Int(generator.next() % 16)] }))
    }

    /// The line written before the output.
    public var beginMarker: String { "@@sandboxd-guest:\(nonce):begin@@" }
    /// The line written after the output, up to the exit status and the closing `@@`.
    public var endMarkerPrefix: String { "@@sandboxd-guest:\(nonce):end:" }

    /// POSIX shell that runs `command` in a subshell (shell text whose stdout and stderr become
    /// the framed output; stdin is /dev/null; `exit N` ends only the subshell) and prints the frame to `port`, leaving the status in `$status`.
    public func shellScript(running command: String, to port: String) -> String {
        """
        exec 3>\(Self.shellQuoted(port))
        printf '\\n%s\\n' '\(beginMarker)' >&3
        (
        \(command)
        ) >&3 2>&3 </dev/null
        status=$?
        printf '\\n%s%s@@\\n' '\(endMarkerPrefix)' "$status" >&3
        exec 3>&-
        """
    }

    /// `word` as one single-quoted POSIX shell word.
    public static func shellQuoted(_ word: String) -> String {
        "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// How far a run has got, judged from everything the port has received so far.
    public enum Progress: Hashable, Sendable {
        /// No `begin` marker yet: the guest is still booting.
        case notStarted
        /// The command runs; its output so far.
        case running(output: [UInt8])
        /// The command ended with `exitCode`; its complete output.
        case finished(output: [UInt8], exitCode: Int32)
    }

    /// Reads the frame out of `bytes` (the port's contents, from the start).
    public func progress(in bytes: [UInt8]) -> Progress {
        let begin = Array((beginMarker + "\n").utf8)
        guard let beginRange = Self.find(begin, in: bytes, from: 0) else { return .notStarted }
        let outputStart = beginRange.upperBound
        let end = Array(("\n" + endMarkerPrefix).utf8)
        guard let endRange = Self.find(end, in: bytes, from: outputStart) else {
            return .running(output: Array(bytes[outputStart...]))
        }
        var cursor = endRange.upperBound
        var digits = ""
        while cursor < bytes.count, bytes[cursor] >= UInt8(ascii: "0"), bytes[cursor] <= UInt8(ascii: "9"), digits.count < 10 {
            digits.append(Character(Unicode.Scalar(bytes[cursor])))
            cursor += 1
        }
        let closing = Array("@@".utf8)
        guard !digits.isEmpty, cursor + closing.count <= bytes.count, Array(bytes[cursor..<cursor + closing.count]) == closing,
              let exitCode = Int32(digits)
        else {
            // The end line is still arriving.
            return .running(output: Array(bytes[outputStart..<endRange.lowerBound]))
        }
        return .finished(output: Array(bytes[outputStart..<endRange.lowerBound]), exitCode: exitCode)
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Range<Int>? {
        guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0], haystack[index..<index + needle.count].elementsEqual(needle) {
                return index..<index + needle.count
            }
            index += 1
        }
        return nil
    }
}
