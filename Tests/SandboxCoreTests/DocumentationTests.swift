import Testing
@testable import SandboxCore

/// The reference tables must list exactly the keys the parsers accept.
struct DocumentationTests {
    /// First-column keys of markdown table rows: "| `socket.path` | …" → "socket.path".
    static func tableKeys(_ markdown: String, prefixingSectionsFrom headingMarker: String? = nil) -> Set<String> {
        var keys = Set<String>()
        var section = ""
        for line in markdown.split(separator: "\n") {
            if let headingMarker, line.hasPrefix(headingMarker) {
                section = line.dropFirst(headingMarker.count).filter { $0 != "`" }.trimmingCharacters()
                continue
            }
            guard line.hasPrefix("| `") else { continue }
            let cell = line.dropFirst(3).prefix { $0 != "`" }
            keys.insert(section.isEmpty ? String(cell) : "\(section).\(cell)")
        }
        return keys
    }

    @Test("docs/configuration.md lists every configuration key and no other")
    func configurationKeys() throws {
        let documented = Self.tableKeys(try RepositoryFiles.text("docs/configuration.md"))
            .filter { !$0.hasPrefix("POSTGRES_") && $0 != "SQLITE_DB" }
        #expect(documented == Set(DaemonConfiguration.allKeys))
    }

    @Test("policies/README.md documents every policy key and no other")
    func policyKeys() throws {
        var documented = Self.tableKeys(try RepositoryFiles.text("policies/README.md"), prefixingSectionsFrom: "### ")
        documented = documented.filter { !$0.hasPrefix("description.") && $0.contains(".") }
        #expect(documented == Set(Policy.allKeys.filter { $0 != "description" }))
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters() -> String { String(self).trimmingWhitespace() }
}
