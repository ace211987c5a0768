#if canImport(Glibc)
import Glibc
#endif

/// Unmaps the program text that only start-up ran, so that idle memory is what serving uses.
///
/// Parsing the configuration, initdb, migrations, policy loading and the engines' set-up run
/// code that serving never runs again; each page of it touched stays mapped (and counted in the
/// resident set), and the kernel maps 16 pages around every one touched. For every executable
/// mapping of a file that holds no private (written) page — program and library text, never
/// relocated data — `MADV_DONTNEED` drops the mapping's pages; the file's pages stay in the page
/// cache, and what serving runs is mapped back on first use. Data is never touched: a mapping
/// holding any anonymous (copied-on-write) page is skipped.
enum StartupPages {
    /// Returns the number of bytes unmapped.
    @discardableResult
    static func release() -> Int {
        guard let file = fopen("/proc/self/smaps", "r") else { return 0 }
        defer { fclose(file) }
        var candidates: [(start: UInt, end: UInt)] = []
        var current: (start: UInt, end: UInt, executableFile: Bool)?
        var clean = true
        var line = [CChar](repeating: 0, count: 4096)
        func finish() {
            if let mapping = current, mapping.executableFile, clean { candidates.append((mapping.start, mapping.end)) }
        }
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            let fields = text.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), fields.count >= 5, !range.hasSuffix(":") {
                finish()
                let bounds = range.split(separator: "-")
                guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16) else {
                    current = nil
                    continue
                }
                let permissions = fields[1]
                // Private, executable, read-only, backed by a file (inode ≠ 0): text.
                let path = fields.count >= 6 ? String(fields[5]).trimmingCharacters(in: "\n") : ""
                current = (start, end, permissions == "r-xp" && fields[4] != "0" && path.hasPrefix("/"))
                clean = true
            } else if text.hasPrefix("Anonymous:") {
                // Copies the process wrote (relocations, breakpoints) are anonymous; file pages that are
                // merely dirty in the page cache (a binary just written) stay the file's and are safe to drop.
                let value = fields.count >= 2 ? Int(fields[1]) ?? 1 : 1
                if value != 0 { clean = false }
            }
        }
        finish()
        var released = 0
        for mapping in candidates {
            if madvise(UnsafeMutableRawPointer(bitPattern: mapping.start), Int(mapping.end - mapping.start), MADV_DONTNEED) == 0 {
                released += Int(mapping.end - mapping.start)
            }
        }
        return released
    }
}

private extension String {
    func trimmingCharacters(in characters: String) -> String {
        var result = Substring(self)
        while let last = result.last, characters.contains(last) { result.removeLast() }
        return String(result)
    }
}
