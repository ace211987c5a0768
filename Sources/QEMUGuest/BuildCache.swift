import Foundation

/// Directories built once and kept, named by a content hash of everything that went into them.
///
/// `directory(kind:key:build:)` returns `<root>/<kind>/<key>` when a complete build is there;
/// otherwise it builds into a scratch directory beside it, under an exclusive `flock` so that
/// two processes never build the same thing at once, marks it complete and renames it into
/// place, so a build cut short is never mistaken for a finished one. Older builds of the same
/// kind are removed after a new one succeeds: a changed input means a new key, and the disk
/// holds one image per kind.
public struct BuildCache: Sendable {
    /// The cache's top directory (`.build-guest` in a checkout).
    public var root: String

    public init(root: String) { self.root = root }

    private static let completeMarker = ".complete"

    /// The finished directory for `key`, building it first if needed. Blocking.
    /// - Parameters:
    ///   - kind: a subdirectory per kind of artefact (`test-image`), so kinds prune separately.
    ///   - key: the content hash of every input (see `SHA256`).
    ///   - build: fills the empty directory it is given; throwing leaves nothing behind.
    /// - Returns: the path of the complete directory, and whether it was built by this call.
    public func directory(
        kind: String, key: String, build: (String) throws(QEMUGuestError) -> Void
    ) throws(QEMUGuestError) -> (path: String, built: Bool) {
        guard !kind.isEmpty, !key.isEmpty, !kind.contains("/"), !key.contains("/"), !key.hasPrefix(".") else {
            throw QEMUGuestError(.invalidArgument, "cache kind \"\(kind)\" and key \"\(key)\" must be plain names")
        }
        let kindDirectory = "\(root)/\(kind)"
        let target = "\(kindDirectory)/\(key)"
        if isComplete(target) { return (target, false) }
        do {
            try FileManager.default.createDirectory(atPath: kindDirectory, withIntermediateDirectories: true)
        } catch {
            throw QEMUGuestError(.io, "mkdir \(kindDirectory): \(error)")
        }
        let lockPath = "\(kindDirectory)/.lock"
        let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else { throw QEMUGuestError(.io, "open(\(lockPath)): \(String(cString: strerror(errno)))") }
        defer { close(lockFD) }
        while flock(lockFD, LOCK_EX) != 0 {
            guard errno == EINTR else { throw QEMUGuestError(.io, "flock(\(lockPath)): \(String(cString: strerror(errno)))") }
        }
        defer { flock(lockFD, LOCK_UN) }
        // Another process may have finished it while this one waited for the lock.
        if isComplete(target) { return (target, false) }

        let scratch = "\(kindDirectory)/.partial-\(key)-\(getpid())"
        try? FileManager.default.removeItem(atPath: scratch)
        try? FileManager.default.removeItem(atPath: target)
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        } catch {
            throw QEMUGuestError(.io, "mkdir \(scratch): \(error)")
        }
        do throws(QEMUGuestError) {
            try build(scratch)
            guard FileManager.default.createFile(atPath: "\(scratch)/\(Self.completeMarker)", contents: Data()) else {
                throw QEMUGuestError(.io, "cannot write \(scratch)/\(Self.completeMarker)")
            }
            guard rename(scratch, target) == 0 else {
                throw QEMUGuestError(.io, "rename(\(scratch) → \(target)): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: scratch)
            throw error
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: kindDirectory)) ?? [] where entry != key && entry != ".lock" {
            try? FileManager.default.removeItem(atPath: "\(kindDirectory)/\(entry)")
        }
        return (target, true)
    }

    private func isComplete(_ directory: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(directory)/\(Self.completeMarker)")
    }
}
