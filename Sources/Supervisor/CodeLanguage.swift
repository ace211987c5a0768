#if canImport(Glibc)
import Glibc
#endif
import ControlAPI

/// A language `"code": {"language", "source"}` can be written in, and how it is run: the source
/// is written into the sandbox's workspace and the runtime is started on that file.
struct CodeLanguage: Sendable, Hashable {
    var name: String
    /// The program that runs it (searched on the host, whose `/usr` the sandbox sees).
    var runtime: String
    /// File name of the source inside the workspace.
    var fileName: String
    /// Arguments after the runtime, `{}` replaced by the source path.
    var arguments: [String]
    /// Arguments that take the source itself (`-c SOURCE`), so a one-shot run needs no file;
    /// nil when the runtime needs a file.
    var inlineArguments: [String]?

    /// Sources larger than this go through a file: one argv string may not exceed 128 KiB (MAX_ARG_STRLEN).
    static let maxInlineBytes = 100_000

    static let all: [CodeLanguage] = [
        CodeLanguage(name: "python", runtime: "python3", fileName: "main.py", arguments: ["{}"], inlineArguments: ["-c", "{}"]),
        // Single-file source launch (JEP 330): no separate javac step, nothing compiled to disk.
        // By default the JVM reserves gigabytes of address space (heap, class space, code cache)
        // and would not even start under a memory limit or the best-effort RLIMIT_AS; these sizes
        // fit 512 MiB, and C1 only makes the short runs agents do start faster.
        CodeLanguage(name: "java", runtime: "java", fileName: "Main.java",
                     arguments: ["-XX:+UseSerialGC", "-Xmx96m", "-Xss512k", "-XX:ReservedCodeCacheSize=24m",
                                 "-XX:-UseCompressedClassPointers", "-XX:MaxMetaspaceSize=96m", "-XX:TieredStopAtLevel=1", "{}"],
                     inlineArguments: nil),
        CodeLanguage(name: "sh", runtime: "sh", fileName: "main.sh", arguments: ["{}"], inlineArguments: ["-c", "{}"]),
        CodeLanguage(name: "bash", runtime: "bash", fileName: "main.sh", arguments: ["{}"], inlineArguments: ["-c", "{}"]),
    ]

    func argv(sourcePath: String) -> [String] {
        [runtime] + arguments.map { $0 == "{}" ? sourcePath : $0 }
    }

    /// The argv that runs `source` without a file, when this language allows it and it fits.
    func inlineArgv(source: String) -> [String]? {
        guard let inlineArguments, source.utf8.count <= Self.maxInlineBytes else { return nil }
        return [runtime] + inlineArguments.map { $0 == "{}" ? source : $0 }
    }
}

/// Which runtimes exist on this host, found once at start.
struct RuntimeCatalog: Sendable {
    private let available: [String: String]

    init(searchPath: [String]) {
        var found: [String: String] = [:]
        for language in CodeLanguage.all {
            for directory in searchPath {
                let candidate = directory + "/" + language.runtime
                if access(candidate, X_OK) == 0 {
                    found[language.name] = candidate
                    break
                }
            }
        }
        available = found
    }

    var languages: [InfoResponse.Language] {
        CodeLanguage.all.map { .init(language: $0.name, runtime: $0.runtime, available: available[$0.name] != nil) }
    }

    /// The language to run, or the error that names why not. Never substitutes another runtime.
    func resolve(_ name: String) throws(APIError) -> CodeLanguage {
        guard let language = CodeLanguage.all.first(where: { $0.name == name }) else {
            throw APIError(.unsupportedLanguage,
                           "language \"\(name)\" is not supported (supported: \(CodeLanguage.all.map(\.name).joined(separator: ", ")))",
                           details: ["language": .string(name)])
        }
        guard available[name] != nil else {
            throw APIError(.unsupportedLanguage,
                           "language \"\(name)\" needs \(language.runtime), which is not installed on this host",
                           details: ["language": .string(name), "runtime": .string(language.runtime)])
        }
        return language
    }
}
