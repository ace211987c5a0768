#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Dispatch
import SandboxCore

/// Where the daemon's policies come from: the `*.yaml` / `*.yml` files of a directory, or the
/// bundled presets when that directory does not exist.
public struct PolicyDirectory: Sendable, Hashable {
    /// `policy_directory` from the configuration; nil: the bundled presets only.
    public var path: String?
    /// CPUs of this host, for the `cpu_limit` check.
    public var hostCores: Int?

    public init(path: String?, hostCores: Int? = PolicyDirectory.onlineCores) {
        self.path = path
        self.hostCores = hostCores
    }

    public static var onlineCores: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Largest policy file read (a policy is a page of YAML; anything bigger is a mistake).
    static let maxFileBytes = 1 << 20

    /// Reads and validates every file; all load or the error carries every problem of every file.
    /// Blocking (file reads): call it off the cooperative pool, as ``PolicyStore`` does.
    public func load(at time: Date = Date()) throws(SandboxCoreError) -> PolicySet {
        guard let path, let handle = opendir(path) else {
            if let path, errno != ENOENT {
                throw SandboxCoreError(code: .invalidPolicy, message: "policies not loaded: opendir(\"\(path)\"): \(String(cString: strerror(errno)))",
                                       diagnostics: [Diagnostic(file: path, message: "cannot read the policy directory: \(String(cString: strerror(errno)))")])
            }
            return try PolicySet.bundled(hostCores: hostCores, at: time)
        }
        defer { closedir(handle) }
        var sources: [PolicySource] = []
        var unreadable: [Diagnostic] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard !name.hasPrefix("."), name.hasSuffix(".yaml") || name.hasSuffix(".yml") else { continue }
            let file = path + "/" + name
            switch Self.readFile(file) {
            case .success(let text): sources.append(PolicySource(file: file, text: text))
            case .failure(let problem): unreadable.append(Diagnostic(file: file, message: problem.reason))
            }
        }
        do throws(SandboxCoreError) {
            let set = try PolicySet(loading: sources, hostCores: hostCores, at: time)
            guard unreadable.isEmpty else {
                throw SandboxCoreError(code: .invalidPolicy, message: "policies not loaded: \(unreadable.count) unreadable files", diagnostics: unreadable)
            }
            return set
        } catch {
            guard !unreadable.isEmpty else { throw error }
            throw SandboxCoreError(code: .invalidPolicy, message: error.message, diagnostics: unreadable + error.diagnostics)
        }
    }

    /// A regular file's text (no symlinks, at most ``maxFileBytes``), or why not.
    static func readFile(_ path: String) -> Result<String, ReadProblem> {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return .failure(ReadProblem("open: \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return .failure(ReadProblem("not a regular file")) }
        guard st.st_size <= maxFileBytes else { return .failure(ReadProblem("larger than \(maxFileBytes) bytes")) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var total = 0
        while total < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, $0.count - total) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return .failure(ReadProblem("read: \(String(cString: strerror(errno)))")) }
            if n == 0 { break }
            total += n
        }
        guard total <= maxFileBytes else { return .failure(ReadProblem("larger than \(maxFileBytes) bytes")) }
        guard let text = String(validating: bytes[..<total], as: UTF8.self) else { return .failure(ReadProblem("not UTF-8 text")) }
        return .success(text)
    }
}

/// Why a policy file could not be read.
struct ReadProblem: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

/// The policy set in force. A reload replaces it whole or not at all; sandboxes keep the
/// ``LoadedPolicy`` they were created with (it is copied into their spec), so a reload changes
/// only what new sandboxes get.
public actor PolicyStore {
    public private(set) var current: PolicySet?
    public let directory: PolicyDirectory?

    /// - Parameters:
    ///   - initial: the set loaded at start (nil: none; requests run under `Policy()`'s defaults).
    ///   - directory: where reloads read from; nil: reloads are refused.
    public init(initial: PolicySet?, directory: PolicyDirectory?) {
        current = initial
        self.directory = directory
    }

    /// The policy called `name`, or nil when no set is loaded at all.
    /// - Throws: the names in force when a set is loaded and has no such policy.
    public func policy(named name: String) throws(PolicyLookupError) -> LoadedPolicy? {
        guard let current else { return nil }
        guard let loaded = current[name] else { throw PolicyLookupError(name: name, loaded: current.names) }
        return loaded
    }

    /// Re-reads every file (off the cooperative pool). On success the new set is in force and
    /// returned; on failure nothing changed and the error carries every diagnostic.
    public func reload() async throws(SandboxCoreError) -> PolicySet {
        guard let directory else {
            throw SandboxCoreError(code: .invalidPolicy, message: "this sandboxd has no policy directory to reload from")
        }
        let result: Result<PolicySet, SandboxCoreError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result { () throws(SandboxCoreError) in try directory.load() })
            }
        }
        let set = try result.get()
        current = set
        return set
    }
}

/// A request named a policy the set in force does not have.
public struct PolicyLookupError: Error, Sendable {
    public var name: String
    public var loaded: [String]
}
