#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import ControlAPI

/// Prints `value` as indented JSON with sorted keys.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    let data = try encoder.encode(value)
    print(String(decoding: data, as: UTF8.self))
}

/// Columns padded to their widest cell (the apple/container TableOutput shape).
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    var widths = [Int](repeating: 0, count: header.count)
    for row in all { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
    for row in all {
        let line = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
        }.joined(separator: "  ")
        print(line)
    }
}

/// Writes raw bytes to a file descriptor (stdout/stderr) without going through `print`.
func writeAll(_ bytes: some Collection<UInt8>, to fd: Int32) {
    var buffer = Array(bytes)
    var offset = 0
    while offset < buffer.count {
        let written = buffer.withUnsafeMutableBytes { raw in write(fd, raw.baseAddress! + offset, raw.count - offset) }
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}

/// The exit status sandboxctl reports for an exec: the command's own, 128+signal when killed,
/// 124 on timeout (like timeout(1)), 125 when it could not run.
func exitStatus(of result: ExecutionResult) -> Int32 {
    switch result.status {
    case .ok: return result.exitCode ?? 0
    case .timeout: return 124
    case .killed, .oom: return 128 + (result.signal ?? 9)
    case .error, .aborted, .running: return 125
    }
}

/// Formats a date the short way for tables.
func shortDate(_ date: Date?) -> String {
    guard let date else { return "-" }
    return date.formatted(.iso8601)
}

/// Reads all of standard input.
func readStandardInput() -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
        if count < 0, errno == EINTR { continue }
        if count <= 0 { break }
        bytes.append(contentsOf: chunk[..<count])
    }
    return bytes
}
