#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Where the control socket comes from: a path sandboxd binds itself, or a listening socket
/// handed over by systemd (`LISTEN_FDS`).
public enum ControlListener: Sendable, Hashable {
    /// Bind `path`, then give it `mode` and group `group` (by name; `nil` keeps root's group).
    case path(String, mode: UInt32 = 0o660, group: String? = "sandboxd")
    /// An already bound and listening socket, e.g. fd 3 from socket activation.
    case inherited(fd: Int32)

    /// The first socket systemd passed, if `LISTEN_PID` is this process and `LISTEN_FDS` ≥ 1.
    /// Unsets the variables so children never see them (sd_listen_fds(3) does the same).
    public static func fromSocketActivation() -> ControlListener? {
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }),
              let pid = Int32(pidText), pid == getpid(),
              let countText = getenv("LISTEN_FDS").map({ String(cString: $0) }),
              let count = Int(countText), count >= 1
        else { return nil }
        let fd: Int32 = 3 // SD_LISTEN_FDS_START
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return .inherited(fd: fd)
    }
}

/// Why the control socket could not be set up. Every case names the call and the path.
public struct ControlListenerError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }

    static func errno(_ call: String, _ path: String, _ code: Int32 = Glibc.errno) -> ControlListenerError {
        ControlListenerError("\(call)(\"\(path)\"): \(String(cString: strerror(code)))")
    }
}

/// A listening socket ready to hand to NIO, and the path to remove when the server stops.
struct BoundListener {
    var fd: Int32
    var ownedPath: String?
}

extension ControlListener {
    /// Opens the listening socket.
    ///
    /// For a path: refuses when a live server already answers there, removes a stale socket
    /// file, refuses to replace anything that is not a socket. The socket is bound under a
    /// private temporary directory, given its mode and group there and only then renamed into
    /// place, so there is no moment at which the final path accepts connections with wider
    /// permissions than requested.
    func open(backlog: Int32 = 256) throws(ControlListenerError) -> BoundListener {
        switch self {
        case .inherited(let fd):
            var type: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else {
                throw .errno("getsockopt(SO_TYPE) on inherited fd", "\(fd)")
            }
            guard type == Int32(SOCK_STREAM.rawValue) else {
                throw ControlListenerError("inherited fd \(fd) is not a stream socket")
            }
            return BoundListener(fd: fd, ownedPath: nil)

        case .path(let path, let mode, let group):
            try Self.clearStale(path)
            var groupID: gid_t? = nil
            if let group {
                guard let entry = getgrnam(group) else {
                    throw ControlListenerError("group \"\(group)\" for \(path) does not exist (create it: groupadd --system \(group))")
                }
                groupID = entry.pointee.gr_gid
            }
            let directory = Self.parentDirectory(of: path)
            if mkdir(directory, 0o755) != 0, errno != EEXIST { throw .errno("mkdir", directory) }
            let name = String(path.split(separator: "/").last ?? "sandboxd.sock")
            var template = Array("\(directory)/.\(name).bind-XXXXXX".utf8CString)
            guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
                throw .errno("mkdtemp", "\(directory)/.\(name).bind-XXXXXX")
            }
            let privateDirectory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            defer { rmdir(privateDirectory) }
            let temporaryPath = privateDirectory + "/" + name

            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .errno("socket(AF_UNIX)", path) }
            var keep = false
            defer { if !keep { close(fd); unlink(temporaryPath) } }

            let address: SocketAddress
            do { address = try SocketAddress(unixDomainSocketPath: temporaryPath) } catch {
                throw ControlListenerError("socket path \(path) is too long for a Unix socket address")
            }
            let bound = address.withSockAddr { pointer, length in bind(fd, pointer, socklen_t(length)) }
            guard bound == 0 else { throw .errno("bind", temporaryPath) }
            guard chmod(temporaryPath, mode_t(mode)) == 0 else { throw .errno("chmod", temporaryPath) }
            if let groupID {
                guard chown(temporaryPath, uid_t.max, groupID) == 0 else { throw .errno("chown", temporaryPath) }
            }
            guard listen(fd, backlog) == 0 else { throw .errno("listen", temporaryPath) }
            guard rename(temporaryPath, path) == 0 else { throw .errno("rename(\(temporaryPath) →)", path) }
            keep = true
            return BoundListener(fd: fd, ownedPath: path)
        }
    }

    /// Removes a socket file nobody listens on; refuses a live one or a non-socket.
    public static func clearStale(_ path: String) throws(ControlListenerError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw .errno("lstat", path)
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw ControlListenerError("\(path) exists and is not a socket; refusing to replace it")
        }
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { throw .errno("socket(AF_UNIX)", path) }
        defer { close(probe) }
        guard let address = try? SocketAddress(unixDomainSocketPath: path) else {
            throw ControlListenerError("socket path \(path) is too long for a Unix socket address")
        }
        let connected = address.withSockAddr { pointer, length in connect(probe, pointer, socklen_t(length)) }
        if connected == 0 {
            throw ControlListenerError("another server is already listening on \(path); refusing to start")
        }
        let code = errno
        guard code == ECONNREFUSED || code == ENOENT else { throw .errno("connect", path, code) }
        guard unlink(path) == 0 || errno == ENOENT else { throw .errno("unlink stale socket", path) }
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }
}
