import Foundation
import Glibc
import ProcessSpawn

/// What a hostile program must not be able to change on the host, read before and after it runs.
struct HostSnapshot: Equatable, CustomStringConvertible {
    var hostname: String
    var kernelSettings: [String: String]
    /// `/proc/self/mountinfo` of the test process (the host's mount namespace), without mount ids.
    var mounts: [String]
    var files: [String: FileStamp]
    /// Directories under the engine's cgroup subtree.
    var cgroups: [String]

    static let watchedSettings = [
        "/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname", "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe", "/proc/sys/kernel/sysrq", "/proc/sys/vm/drop_caches",
        "/proc/sys/vm/overcommit_memory",
        // Not ip_forward: the egress tests may switch it on the host while these run.
    ]

    /// Mount points that other programs on this machine create and remove while tests run (named
    /// network namespaces of the egress tests, `ip netns`); a level-1 sandbox never makes one.
    static func isForeignMount(_ line: String) -> Bool {
        let fields = line.split(separator: " ")
        return fields.count > 2 && fields[2].hasPrefix("/run/netns/")
    }

    static func take(sentinels: [String], cgroupParent: String?) -> HostSnapshot {
        var settings: [String: String] = [:]
        for path in watchedSettings { settings[path] = HostFiles.read(path) ?? "<absent>" }
        var files: [String: FileStamp] = [:]
        for path in sentinels { files[path] = FileStamp(path: path) }
        return HostSnapshot(
            hostname: HostFiles.hostname(),
            kernelSettings: settings,
            mounts: HostFiles.mountTable().filter { !isForeignMount($0) },
            files: files,
            cgroups: cgroupParent.map(HostFiles.subdirectories(of:)) ?? []
        )
    }

    /// Human-readable differences, empty when equal.
    func differences(to after: HostSnapshot) -> [String] {
        var out: [String] = []
        if hostname != after.hostname { out.append("hostname \(hostname) → \(after.hostname)") }
        for (key, value) in kernelSettings where after.kernelSettings[key] != value {
            out.append("\(key): \(value) → \(after.kernelSettings[key] ?? "nil")")
        }
        let gone = Set(mounts).subtracting(after.mounts), new = Set(after.mounts).subtracting(mounts)
        for line in gone.sorted() { out.append("mount gone: \(line)") }
        for line in new.sorted() { out.append("mount new: \(line)") }
        for (path, stamp) in files where after.files[path] != stamp {
            out.append("\(path): \(stamp) → \(after.files[path].map(String.init(describing:)) ?? "nil")")
        }
        for dir in Set(after.cgroups).subtracting(cgroups).sorted() { out.append("cgroup left behind: \(dir)") }
        return out
    }

    var description: String { "hostname=\(hostname) mounts=\(mounts.count) cgroups=\(cgroups.count)" }
}

/// The parts of `stat(2)` that change when anyone touches a file (ctime moves even for a no-op chmod).
struct FileStamp: Equatable, CustomStringConvertible {
    var exists: Bool
    var device: UInt64 = 0, inode: UInt64 = 0
    var mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
    var size: Int64 = 0
    var mtime: timespec = timespec(), ctime: timespec = timespec()

    init(path: String) {
        var st = stat()
        exists = lstat(path, &st) == 0
        guard exists else { return }
        device = UInt64(st.st_dev); inode = UInt64(st.st_ino)
        mode = st.st_mode; uid = st.st_uid; gid = st.st_gid
        size = Int64(st.st_size)
        mtime = st.st_mtim; ctime = st.st_ctim
    }

    static func == (a: Self, b: Self) -> Bool {
        a.exists == b.exists && a.device == b.device && a.inode == b.inode && a.mode == b.mode
            && a.uid == b.uid && a.gid == b.gid && a.size == b.size
            && a.mtime.tv_sec == b.mtime.tv_sec && a.mtime.tv_nsec == b.mtime.tv_nsec
            && a.ctime.tv_sec == b.ctime.tv_sec && a.ctime.tv_nsec == b.ctime.tv_nsec
    }

    var description: String {
        exists ? "mode=\(String(mode, radix: 8)) uid=\(uid) gid=\(gid) size=\(size) ctime=\(ctime.tv_sec).\(ctime.tv_nsec)"
            : "absent"
    }
}

/// Small readers of host state.
enum HostFiles {
    static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return String(cBuffer: buf)
    }

    /// Mount table lines without the per-mount ids (fields 1 and 2), which are stable anyway but noisy.
    static func mountTable() -> [String] {
        (read("/proc/self/mountinfo") ?? "").split(separator: "\n").map { line in
            line.split(separator: " ").dropFirst(2).joined(separator: " ")
        }
    }

    static func subdirectories(of path: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [] }
        var out: [String] = []
        while let entry = enumerator.nextObject() as? String {
            if enumerator.fileAttributes?[.type] as? FileAttributeType == .typeDirectory { out.append(entry) }
        }
        return out.sorted()
    }

    /// `VmRSS` of this test process, in bytes.
    static func residentBytes() -> UInt64 {
        for line in (read("/proc/self/status") ?? "").split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kib = line.split(separator: " ").compactMap { UInt64($0) }.first ?? 0
            return kib * 1024
        }
        return 0
    }

    /// This process's open descriptors and what they point at.
    static func openDescriptors() -> [Int32: String] {
        var out: [Int32: String] = [:]
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return out }
        for name in names {
            guard let fd = Int32(name) else { continue }
            var buf = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/self/fd/\(name)", &buf, buf.count - 1)
            out[fd] = n >= 0 ? String(cBuffer: buf) : "?"
        }
        return out
    }

    /// The `pipe:[inode]` targets among `descriptors` (this process's) that no other process on
    /// the host holds an end of: nobody can ever read or write the other side.
    static func pipesHeldOnlyByThisProcess(_ descriptors: [Int32: String]) -> Set<String> {
        var candidates = Set(descriptors.values.filter { $0.hasPrefix("pipe:[") })
        guard !candidates.isEmpty, let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        for name in names {
            guard let pid = pid_t(name), pid != getpid(),
                  let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(name)/fd") else { continue }
            for fd in fds {
                var buf = [CChar](repeating: 0, count: 64)
                let n = readlink("/proc/\(name)/fd/\(fd)", &buf, buf.count - 1)
                if n > 0 { candidates.remove(String(cBuffer: buf)) }
            }
            if candidates.isEmpty { break }
        }
        return candidates
    }

    /// Host pids whose command line contains `marker`. The markers are unique per test run, so a match
    /// is a process this test itself caused to exist.
    static func processes(withMarker marker: String) -> [pid_t] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: [pid_t] = []
        for name in names {
            guard let pid = pid_t(name), pid != getpid(),
                  let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { continue }
            let cmdline = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if cmdline.contains(marker) { out.append(pid) }
        }
        return out.sorted()
    }

    /// A non-loopback IPv4 address of this host, if it has one.
    static func externalIPv4() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let addr = entry.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var sin = sockaddr_in()
            memcpy(&sin, addr, MemoryLayout<sockaddr_in>.size)
            var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &sin.sin_addr, &buf, socklen_t(buf.count))
            let text = String(cBuffer: buf)
            if !text.hasPrefix("127.") { return text }
        }
        return nil
    }
}

/// A host process the test starts so that the sandbox can try to reach it (`sleep`, with a secret in
/// its environment). Only this pid is ever signalled by the test.
final class HostVictim: @unchecked Sendable {
    let pid: pid_t
    let secret: String

    init() throws {
        secret = "victim-secret-" + UUID().uuidString
        // Nothing else of this test process (other tests' descriptors included) goes to the victim.
        let pid = try SpawnCommand(["/bin/sleep", "600"], environment: ["HOSTILE_VICTIM_SECRET=\(secret)", "PATH=/usr/bin:/bin"]).spawn()
        self.pid = pid
        // Wait until it is sleep, not still our copy between fork and exec.
        for _ in 0..<200 where (HostFiles.read("/proc/\(pid)/comm") ?? "") != "sleep" { usleep(5000) }
    }

    /// Alive, not a zombie, not stopped or traced.
    var isAliveAndUntouched: Bool {
        guard kill(pid, 0) == 0, let stat = HostFiles.read("/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        let tracer = (HostFiles.read("/proc/\(pid)/status") ?? "").split(separator: "\n")
            .first { $0.hasPrefix("TracerPid:") }?.split(separator: "\t").last.map(String.init) ?? "?"
        return (state == "S" || state == "R") && tracer == "0"
    }

    func stop() {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// A listening socket on the host, to prove that nothing from the sandbox reached it.
final class HostListener: @unchecked Sendable {
    let fd: Int32
    /// TCP port on 127.0.0.1, or 0 for a Unix socket.
    let port: Int
    /// Abstract Unix name (without the leading NUL) or the path of a pathname socket.
    let unixName: String?

    /// TCP on 127.0.0.1, any free port.
    static func loopbackTCP() throws -> HostListener {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw HostileTestError("socket(AF_INET): \(errnoText())") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { close(fd); throw HostileTestError("bind/listen 127.0.0.1: \(errnoText())") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return HostListener(fd: fd, port: Int(UInt16(bigEndian: addr.sin_port)), unixName: nil)
    }

    /// A Unix socket in the abstract namespace (`abstract: true`) or at a path.
    static func unix(name: String, abstract: Bool) throws -> HostListener {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw HostileTestError("socket(AF_UNIX): \(errnoText())") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        let offset = abstract ? 1 : 0
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.prefix(raw.count - 2).enumerated() { raw[i + offset] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + offset + min(bytes.count, 106))
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { close(fd); throw HostileTestError("bind/listen unix \(name): \(errnoText())") }
        return HostListener(fd: fd, port: 0, unixName: name)
    }

    private init(fd: Int32, port: Int, unixName: String?) {
        self.fd = fd
        self.port = port
        self.unixName = unixName
    }

    /// True when some peer connected (the listener is non-blocking: EAGAIN means nobody came).
    var wasReached: Bool {
        let conn = accept(fd, nil, nil)
        if conn >= 0 { close(conn); return true }
        return false
    }

    deinit { close(fd) }
}

/// `setxattr(2)`, which Glibc's Swift module does not export (sys/xattr.h): looked up in libc.
func setExtendedAttribute(_ path: String, _ name: String, _ value: [UInt8]) -> Int32 {
    typealias SetXattr = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer, Int, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setxattr") else { errno = ENOSYS; return -1 }
    let call = unsafeBitCast(symbol, to: SetXattr.self)
    return value.withUnsafeBytes { call(path, name, $0.baseAddress!, value.count, 0) }
}

extension String {
    /// The text up to the first NUL of a C buffer.
    init(cBuffer: [CChar]) {
        let bytes = cBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self = String(decoding: bytes, as: UTF8.self)
    }
}

func errnoText(_ code: Int32 = errno) -> String {
    let name = String(cString: strerror(code))
    return "\(name) (errno \(code))"
}
