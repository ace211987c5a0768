/// Writes a cpio archive in the "newc" format the Linux kernel unpacks as an initramfs.
///
/// Entries get fixed inode numbers, owner root and mtime 0, so the same inputs always give the
/// same bytes. Parent directories must be added before their contents. The kernel also accepts
/// several archives concatenated, which is how per-boot files are added to a cached image
/// without rebuilding it: append a second `finished()` archive to the first.
public struct CPIOArchive: Sendable {
    /// The archive so far, without its trailer (see `finished()`).
    public private(set) var bytes: [UInt8] = []
    private var nextInode: UInt32 = 1

    public init() {}

    /// Adds a directory (`mode` holds only the permission bits).
    public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) throws(QEMUGuestError) {
        try append(path: path, mode: 0o040000 | (mode & 0o7777), contents: [])
    }

    /// Adds a regular file.
    public mutating func addFile(_ path: String, contents: [UInt8], mode: UInt32 = 0o644) throws(QEMUGuestError) {
        try append(path: path, mode: 0o100000 | (mode & 0o7777), contents: contents)
    }

    /// Adds a symbolic link pointing at `target`.
    public mutating func addSymlink(_ path: String, target: String) throws(QEMUGuestError) {
        try append(path: path, mode: 0o120777, contents: Array(target.utf8))
    }

    /// The complete archive: the entries followed by the `TRAILER!!!` entry.
    public func finished() -> [UInt8] {
        var copy = self
        copy.appendEntry(name: "TRAILER!!!", mode: 0, inode: 0, nlink: 1, contents: [])
        return copy.bytes
    }

    private mutating func append(path: String, mode: UInt32, contents: [UInt8]) throws(QEMUGuestError) {
        var name = path
        while name.hasPrefix("/") { name.removeFirst() }
        guard !name.isEmpty, !name.utf8.contains(0), !name.split(separator: "/").contains("..") else {
            throw QEMUGuestError(.invalidArgument, "cpio entry name \"\(path)\" must be a non-empty relative path without '..' or NUL")
        }
        guard contents.count <= Int(UInt32.max) else {
            throw QEMUGuestError(.invalidArgument, "cpio entry \"\(path)\" is larger than 4 GiB")
        }
        let isDirectory = mode & 0o170000 == 0o040000
        appendEntry(name: name, mode: mode, inode: nextInode, nlink: isDirectory ? 2 : 1, contents: contents)
        nextInode += 1
    }

    private mutating func appendEntry(name: String, mode: UInt32, inode: UInt32, nlink: UInt32, contents: [UInt8]) {
        let nameBytes = Array(name.utf8) + [0]
        // c_magic, then ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check.
        let fields: [UInt32] = [inode, mode, 0, 0, nlink, 0, UInt32(contents.count), 0, 0, 0, 0, UInt32(nameBytes.count), 0]
        bytes += Array("070701".utf8)
        for field in fields { bytes += Self.hex8(field) }
        bytes += nameBytes
        padToFour()
        bytes += contents
        padToFour()
    }

    private mutating func padToFour() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    private static func hex8(_ value: UInt32) -> [UInt8] {
        let digits = Array("0123456789ABCDEF".utf8)
        return stride(from: 28, through: 0, by: -4).map { digits[Int((value >> UInt32($0)) & 0xf)] }
    }
}
