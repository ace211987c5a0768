import Foundation
import SandboxCore
import Testing

/// One hostile program's run in a sandbox: the engine's result plus the attempts the program reported.
///
/// The payload prints `name=RESULT` per attempt (`OK` when the call went through, otherwise the errno
/// name) and `name:value` for observations. This type only parses; the tests decide.
struct PayloadRun: Sendable {
    let arguments: [String]
    let result: ExecResult
    let stdout: String
    let stderr: String
    private let attempts: [String: String]
    private let observations: [String: String]

    init(arguments: [String], result: ExecResult) {
        self.arguments = arguments
        self.result = result
        stdout = String(decoding: result.stdout, as: UTF8.self)
        stderr = String(decoding: result.stderr, as: UTF8.self)
        var attempts: [String: String] = [:], observations: [String: String] = [:]
        for line in stdout.split(separator: "\n") {
            // Whichever separator comes first: `name=RESULT` is an attempt, `name:value` an observation.
            guard let sep = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else { continue }
            let key = String(line[..<sep]), value = String(line[line.index(after: sep)...])
            if line[sep] == "=" { attempts[key] = value } else { observations[key] = value }
        }
        self.attempts = attempts
        self.observations = observations
        // HOSTILE_TRANSCRIPTS=1 prints what every payload reported, to see how each attack was stopped.
        if ProcessInfo.processInfo.environment["HOSTILE_TRANSCRIPTS"] != nil { print(transcript) }
    }

    /// The result of the attempt `name` (`OK`, `EPERM`, ...), or nil when the program did not get to it.
    subscript(_ name: String) -> String? { attempts[name] }

    /// Every attempt whose name starts with `prefix`, sorted by name.
    func attempts(withPrefix prefix: String) -> [(name: String, result: String)] {
        attempts.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Every observation whose name starts with `prefix`, sorted by name.
    func observations(withPrefix prefix: String) -> [(name: String, value: String)] {
        observations.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// An observation `name:value` the program printed.
    func observed(_ name: String) -> String? { observations[name] }

    /// Everything, for failure messages.
    var transcript: String {
        let how = result.signal.map { "signal \($0)" } ?? "exit \(result.exitCode.map(String.init) ?? "?")"
        return "$ \(arguments.joined(separator: " "))  [\(how)\(result.timedOut ? ", timed out" : "")]\n"
            + "--- stdout\n\(stdout.prefix(4000))\n--- stderr\n\(stderr.prefix(2000))"
    }

    /// The program ran to its end on its own (exit 0): every attempt it reports was made and answered.
    func expectCompleted(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.exitCode == 0 && result.signal == nil && !result.timedOut,
                "the payload did not run to completion\n\(transcript)", sourceLocation: sourceLocation)
    }

    /// The attempt `name` was made and refused with one of `errors` (it must not be `OK`).
    func expectRefused(_ name: String, with errors: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let got = self[name] else {
            Issue.record("attempt \(name) was not reported\n\(transcript)", sourceLocation: sourceLocation)
            return
        }
        if got == "OK" {
            Issue.record("ESCAPE: \(name) succeeded inside the sandbox\n\(transcript)", sourceLocation: sourceLocation)
        } else {
            #expect(errors.contains(got), "\(name): expected one of \(errors.sorted()), got \(got)\n\(transcript)",
                    sourceLocation: sourceLocation)
        }
    }

    /// `expectRefused` for each name.
    func expectRefused(_ names: [String], with errors: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) {
        for name in names { expectRefused(name, with: errors, sourceLocation: sourceLocation) }
    }

    /// Neither stream contains `secret`.
    func expectNotLeaked(_ secret: String, what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!stdout.contains(secret) && !stderr.contains(secret),
                "ESCAPE: \(what) was read inside the sandbox\n\(transcript)", sourceLocation: sourceLocation)
    }
}

/// Errno names, as the payload prints them.
enum Errno {
    /// The seccomp filter's answer to a forbidden call.
    static let seccomp: Set<String> = ["EPERM"]
    /// Refused for lack of privilege, by seccomp or by a missing capability.
    static let denied: Set<String> = ["EPERM", "EACCES"]
    /// Not there at all.
    static let absent: Set<String> = ["ENOENT"]
    /// Read-only, denied, or absent: any way of not being able to write.
    static let unwritable: Set<String> = ["EROFS", "EPERM", "EACCES", "ENOENT"]
}
