#if canImport(Glibc)
import Glibc
#endif
import ControlAPI
import Dispatch

/// Reads and writes files under a sandbox's workspace from the host, never outside it.
///
/// The path is walked one component at a time with `openat(…, O_NOFOLLOW)` from a directory fd of
/// the workspace root: `..` is refused outright, a symlink anywhere on the way fails the open
/// (`ELOOP`/`ENOTDIR`) and is refused, and only regular files are read or written (a FIFO planted
/// by the sandbox cannot block the daemon: opens are non-blocking). This gives the guarantees of
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` without depending on it. Files are created
/// owned by the sandbox's root (its mapped host uid/gid) so the sandbox can change them.
public struct ConfinedFiles: Sendable {
    /// The workspace as the host reaches it, e.g. `/proc/<init pid>/root/workspace` or a state dir.
    public var hostRoot: String
    /// The workspace as the sandbox sees it, e.g. `/workspace`.
    public var sandboxRoot: String
    /// Host uid/gid that root inside the sandbox maps to; created files and directories get it.
    public var owner: (uid: UInt32, gid: UInt32)?

    private static let queue = DispatchQueue(label: "sandboxd.confined-files", attributes: .concurrent)

    public init(hostRoot: String, sandboxRoot: String, owner: (uid: UInt32, gid: UInt32)?) {
        self.hostRoot = hostRoot
        self.sandboxRoot = sandboxRoot
        self.owner = owner
    }

    /// The components of `path` under the workspace, or the refusal that says why.
    /// Relative paths are relative to the workspace; absolute ones must lie inside it.
    public func components(of path: String) throws(APIError) -> [String] {
        var relative = Substring(path)
        if path.hasPrefix("/") {
            let root = sandboxRoot.hasSuffix("/") ? String(sandboxRoot.dropLast()) : sandboxRoot
            guard path == root || path.hasPrefix(root + "/") else {
                throw APIError(.pathRefused, "path \"\(path)\" is outside the sandbox workspace \(root)", details: ["path": .string(path)])
            }
            relative = path.dropFirst(root.count)
        }
        let parts = relative.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }.map(String.init)
        if parts.contains("..") {
            throw APIError(.pathRefused, "path \"\(path)\" contains \"..\"", details: ["path": .string(path)])
        }
        if parts.isEmpty {
            throw APIError(.pathRefused, "path \"\(path)\" names the workspace itself, not a file", details: ["path": .string(path)])
        }
        if path.utf8.contains(0) || parts.contains(where: { $0.utf8.count > 255 }) {
            throw APIError(.pathRefused, "path \"\(path)\" is not a valid file name", details: ["path": .string(path)])
        }
        return parts
    }

    /// Writes `contents` to `path` (creating parent directories), returns the path inside the sandbox.
    public func write(_ path: String, contents: [UInt8]) async throws -> String {
        let parts = try components(of: path)
        let this = self
        try await Self.onQueue { try this.writeBlocking(parts, contents: contents, requested: path) }
        return sandboxPath(parts)
    }

    /// Reads at most `limit` bytes of `path`.
    public func read(_ path: String, limit: Int) async throws -> [UInt8] {
        let parts = try components(of: path)
        let this = self
        return try await Self.onQueue { try this.readBlocking(parts, limit: limit, requested: path) }
    }

    func sandboxPath(_ parts: [String]) -> String {
        (sandboxRoot.hasSuffix("/") ? String(sandboxRoot.dropLast()) : sandboxRoot) + "/" + parts.joined(separator: "/")
    }

    private static func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    private func refusal(_ requested: String, _ call: String, _ code: Int32) -> APIError {
        switch code {
        case ELOOP, ENOTDIR:
            return APIError(.pathRefused, "path \"\(requested)\" goes through a symbolic link or a non-directory; refused",
                            details: ["path": .string(requested)])
        case ENOENT:
            return APIError(.notFound, "no file \"\(requested)\" in the sandbox workspace", details: ["path": .string(requested)])
        case ENOSPC, EDQUOT:
            return APIError(.payloadTooLarge, "the sandbox workspace is full", details: ["path": .string(requested)])
        default:
            return APIError(.internalError, "\(call)(\"\(requested)\"): \(String(cString: strerror(code)))", details: ["path": .string(requested)])
        }
    }

    /// Opens the directory holding the last component; creates missing directories when asked.
    private func openParent(_ parts: [String], create: Bool, requested: String) throws -> Int32 {
        var directory = open(hostRoot, openPathOnly | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { throw refusal(requested, "open workspace", errno) }
        for part in parts.dropLast() {
            var next = openat(directory, part, openPathOnly | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0, errno == ENOENT, create {
                // O_PATH fds cannot be used with mkdirat on all kernels: reopen the parent for real.
                let real = openat(directory, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                if real >= 0 {
                    if mkdirat(real, part, 0o755) == 0, let owner {
                        _ = fchownat(real, part, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW)
                    }
                    close(real)
                }
                next = openat(directory, part, openPathOnly | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            let code = errno
            close(directory)
            guard next >= 0 else { throw refusal(requested, "openat", code) }
            directory = next
        }
        return directory
    }

    private func writeBlocking(_ parts: [String], contents: [UInt8], requested: String) throws {
        let parent = try openParent(parts, create: true, requested: requested)
        defer { close(parent) }
        let fd = openat(parent, parts.last!, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw refusal(requested, "openat", errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw APIError(.pathRefused, "path \"\(requested)\" is not a regular file", details: ["path": .string(requested)])
        }
        if let owner { _ = fchown(fd, owner.uid, owner.gid) }
        var offset = 0
        while offset < contents.count {
            let written = contents.withUnsafeBytes { raw in Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw refusal(requested, "write", errno)
            }
            offset += written
        }
    }

    private func readBlocking(_ parts: [String], limit: Int, requested: String) throws -> [UInt8] {
        let parent = try openParent(parts, create: false, requested: requested)
        defer { close(parent) }
        let fd = openat(parent, parts.last!, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw refusal(requested, "openat", errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw APIError(.pathRefused, "path \"\(requested)\" is not a regular file", details: ["path": .string(requested)])
        }
        guard Int(info.st_size) <= limit else {
            throw APIError(.payloadTooLarge, "file \"\(requested)\" is \(info.st_size) bytes, above the limit of \(limit)",
                           details: ["path": .string(requested), "limit_bytes": .integer(Int64(limit))])
        }
        // One byte more than the size seen: filling it means the file changed under us.
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size) + 1)
        var total = 0
        while total < bytes.count {
            let count = bytes.withUnsafeMutableBytes { raw in Glibc.read(fd, raw.baseAddress! + total, raw.count - total) }
            if count < 0 {
                if errno == EINTR { continue }
                throw refusal(requested, "read", errno)
            }
            if count == 0 { break }
            total += count
        }
        guard total < bytes.count else {
            throw APIError(.conflict, "file \"\(requested)\" changed while being read; retry", details: ["path": .string(requested)])
        }
        return Array(bytes[..<total])
    }
}

/// `O_PATH` (Linux, generic value 010000000): Glibc exports it only under `_GNU_SOURCE`.
private let openPathOnly: Int32 = 0o10000000
