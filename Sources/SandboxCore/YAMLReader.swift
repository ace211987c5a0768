import SandboxValues
import Yams

/// Why one YAML value was refused; the reader adds file, line and key.
struct ValueError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// Collects the problems of one document so they are all reported at once.
final class DiagnosticLog {
    let file: String
    private(set) var diagnostics: [Diagnostic] = []

    init(file: String) { self.file = file }

    func report(_ message: String, key: String?, at mark: Mark?) {
        diagnostics.append(Diagnostic(file: file, line: mark?.line, column: mark?.column, key: key, message: message))
    }

    var isEmpty: Bool { diagnostics.isEmpty }
}

/// Parses `text` into a node tree, turning Yams errors into a diagnostic with the line.
///
/// Yams' own error descriptions quote the document (and its duplicate-key error carries the whole
/// text); configuration files hold passwords, so only libyaml's problem and the position are kept.
func composeYAML(_ text: String, log: DiagnosticLog) -> Node? {
    do {
        return try Yams.compose(yaml: text)
    } catch let error as YamlError {
        switch error {
        case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
            log.report("invalid YAML: \(problem)", key: nil, at: mark)
        case let .duplicatedKeysInMapping(duplicates, context):
            let names = duplicates.map { "\"\($0)\"" }.joined(separator: ", ")
            log.report("duplicate key \(names)", key: nil, at: context.mark)
        case let .reader(problem, _, _, _):
            log.report("invalid YAML: \(problem)", key: nil, at: nil)
        default:
            log.report("invalid YAML", key: nil, at: nil)
        }
        return nil
    } catch {
        log.report("invalid YAML", key: nil, at: nil)
        return nil
    }
}

extension Node {
    /// A plain `~`, `null` or empty value: treated as if the key were absent.
    var isNull: Bool {
        guard case let .scalar(scalar) = self else { return false }
        guard scalar.style == .plain || scalar.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    var kindName: String {
        switch self {
        case .scalar: "a single value"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }
}

/// A YAML mapping read against a fixed set of keys: unknown keys are reported with a suggestion,
/// typed getters report bad values with the key path and line and return `nil`.
struct YAMLMapping {
    let path: String
    let mapping: Node.Mapping
    let mark: Mark?
    let log: DiagnosticLog
    private let valuesByKey: [String: Node]
    private let keyMarks: [String: Mark]

    /// Reads `node` as a mapping whose keys must be among `known`; reports and returns `nil` otherwise.
    init?(_ node: Node, path: String, known: [String], log: DiagnosticLog) {
        guard case let .mapping(mapping) = node else {
            log.report("expected a mapping of keys (\(known.joined(separator: ", "))), found \(node.kindName)",
                       key: path.isEmpty ? nil : path, at: node.mark)
            return nil
        }
        self.path = path
        self.mapping = mapping
        self.mark = node.mark
        self.log = log
        var values: [String: Node] = [:]
        var marks: [String: Mark] = [:]
        for (keyNode, value) in mapping {
            guard case let .scalar(scalar) = keyNode else {
                log.report("keys must be plain names, found \(keyNode.kindName)", key: path.isEmpty ? nil : path, at: keyNode.mark)
                continue
            }
            let name = scalar.string
            let fullKey = path.isEmpty ? name : "\(path).\(name)"
            guard known.contains(name) else {
                var message = "unknown key"
                if let suggestion = closestMatch(to: name, among: known) { message += " (did you mean \(suggestion)?)" }
                log.report(message, key: fullKey, at: keyNode.mark)
                continue
            }
            values[name] = value
            marks[name] = keyNode.mark
        }
        valuesByKey = values
        keyMarks = marks
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Whether `key` is present with a non-null value.
    func contains(_ key: String) -> Bool { node(key) != nil }

    /// The value of `key`, `nil` when absent or null.
    func node(_ key: String) -> Node? {
        guard let node = valuesByKey[key], !node.isNull else { return nil }
        return node
    }

    /// The value of `key` parsed by `parse`; a parse failure is reported and gives `nil`.
    func value<T>(_ key: String, _ parse: (Node) throws(ValueError) -> T) -> T? {
        guard let node = node(key) else { return nil }
        do { return try parse(node) } catch {
            log.report(error.message, key: keyPath(key), at: node.mark)
            return nil
        }
    }

    /// A nested mapping with its own known keys.
    func mapping(_ key: String, known: [String]) -> YAMLMapping? {
        guard let node = node(key) else { return nil }
        return YAMLMapping(node, path: keyPath(key), known: known, log: log)
    }

    /// A list whose elements are parsed one by one; each bad element is reported as `key[i]`.
    func list<T>(_ key: String, _ parse: (Node) throws(ValueError) -> T) -> [(value: T, mark: Mark?)]? {
        guard let node = node(key) else { return nil }
        guard case let .sequence(sequence) = node else {
            log.report("expected a list, found \(node.kindName)", key: keyPath(key), at: node.mark)
            return nil
        }
        var result: [(value: T, mark: Mark?)] = []
        for (index, element) in sequence.enumerated() {
            do { result.append((try parse(element), element.mark)) } catch {
                log.report(error.message, key: "\(keyPath(key))[\(index)]", at: element.mark)
            }
        }
        return result
    }

    func report(_ message: String, key: String, at mark: Mark?) {
        log.report(message, key: keyPath(key), at: mark ?? self.mark)
    }

    /// Where the value of `key` starts.
    func mark(of key: String) -> Mark? { valuesByKey[key]?.mark }

    /// Where `key` itself is written.
    func keyMark(of key: String) -> Mark? { keyMarks[key] }
}

// MARK: - Scalar parsers

enum YAMLValue {
    static func scalarText(_ node: Node) throws(ValueError) -> String {
        guard case let .scalar(scalar) = node else { throw ValueError("expected a single value, found \(node.kindName)") }
        return scalar.string
    }

    static func string(_ node: Node) throws(ValueError) -> String {
        let text = try scalarText(node)
        guard !text.isEmpty else { throw ValueError("must not be empty") }
        guard !text.contains("\0") else { throw ValueError("must not contain NUL") }
        return text
    }

    static func bool(_ node: Node) throws(ValueError) -> Bool {
        switch try scalarText(node).lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case let other: throw ValueError("\"\(other)\" is not true or false")
        }
    }

    /// A whole number (quoted or not), `_` allowed as a digit separator.
    static func integer(_ node: Node, in range: ClosedRange<Int>) throws(ValueError) -> Int {
        let text = try scalarText(node).trimmingWhitespace()
        guard let value = Int(text.replacingUnderscores()) else { throw ValueError("\"\(text)\" is not a whole number") }
        guard range.contains(value) else {
            if value <= 0, range.lowerBound > 0 { throw ValueError("must be positive, got \(value)") }
            throw ValueError("\(value) is out of range \(range.lowerBound)…\(range.upperBound)")
        }
        return value
    }

    /// A decimal number (`0.5`, `"0.5"`, `2`).
    static func number(_ node: Node) throws(ValueError) -> Double {
        let text = try scalarText(node).trimmingWhitespace()
        guard let value = Double(text.replacingUnderscores()), value.isFinite,
              text.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" || $0 == "_" }) else {
            throw ValueError("\"\(text)\" is not a number")
        }
        return value
    }

    /// Seconds: a number (`30`, `0.5`) or a number with `ms`, `s`, `m` or `h` (`90s`, `5m`, `1h`).
    static func seconds(_ node: Node) throws(ValueError) -> Double {
        let text = try scalarText(node).trimmingWhitespace()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var multiplier = 1.0
        var numberText = text
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let candidate = String(text.dropLast(suffix.count)).trimmingWhitespace()
            if Double(candidate) != nil { numberText = candidate; multiplier = factor; break }
        }
        guard let value = Double(numberText), value.isFinite,
              numberText.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" }) else {
            throw ValueError("\"\(text)\" is not a duration (seconds, or a number with ms, s, m or h)")
        }
        let seconds = value * multiplier
        guard seconds >= 0 else { throw ValueError("must not be negative, got \(text)") }
        return seconds
    }

    static func byteCount(_ node: Node) throws(ValueError) -> ByteCount {
        let text = try scalarText(node)
        do { return try ByteCount(parsing: text.replacingUnderscores()) } catch {
            throw ValueError("invalid size \"\(text)\": \(error.reason)")
        }
    }

    /// An absolute path, normalised: `//` collapsed, trailing `/` dropped; `.` and `..` refused.
    static func absolutePath(_ node: Node) throws(ValueError) -> String {
        try normalizedAbsolutePath(try string(node))
    }

    static func normalizedAbsolutePath(_ text: String) throws(ValueError) -> String {
        guard text.hasPrefix("/") else { throw ValueError("\"\(text)\" is a relative path; paths must start with /") }
        let components = text.split(separator: "/", omittingEmptySubsequences: true)
        if components.contains(where: { $0 == "." || $0 == ".." }) {
            throw ValueError("\"\(text)\" contains . or ..; write the path without them")
        }
        return "/" + components.joined(separator: "/")
    }
}

extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}

/// Whether `path` is `ancestor` or lies below it (both normalised absolute paths).
func isPath(_ path: String, insideOrEqualTo ancestor: String) -> Bool {
    if ancestor == "/" || path == ancestor { return true }
    return path.hasPrefix(ancestor + "/")
}

/// The known name closest to a mistyped one, if it is close enough to be a likely typo.
func closestMatch(to name: String, among candidates: [String]) -> String? {
    let limit = max(2, name.count / 3)
    let scored = candidates.map { ($0, editDistance(name.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= limit else { return nil }
    return best.0
}

/// Levenshtein distance.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
