import CLinuxSandbox
import SandboxValues

#if canImport(Glibc)
import Glibc
#endif

/// One step of building a sandbox's root, in the order the child applies them.
struct MountStep {
    var kind: sbx_mount_kind
    var flags: UInt32 = 0
    var source: String?
    /// Path inside the sandbox; the child works on `newRoot + sandboxPath`.
    var sandboxPath: String
    var data: [UInt8]?
    var attributes: UInt64 = 0
    var msFlags: UInt = 0
    /// SBX_MOUNT_ATTACH: the detached tree the daemon cloned (`sbx_open_tree`).
    var treeFD: Int32 = -1
}

/// The root filesystem of a sandbox, computed once per spec by the daemon.
///
/// A tmpfs root (read-only once built) holding: read-only binds of the host runtime (`/usr`; on
/// merged-/usr systems `/bin`, `/sbin`, `/lib*` become the same symlinks the host has), a
/// generated `/etc` (passwd, group, hosts, nsswitch.conf, an empty resolv.conf — never the
/// host's, plus a few non-secret host files the runtime needs such as `ld.so.cache`), a new
/// `/proc` with runc's masked and read-only paths, a minimal `/dev`, private size-capped tmpfs
/// `/tmp` and workspace, and the spec's extra mounts. Nothing else of the host exists inside.
enum RootfsPlan {
    static let attrReadOnly: UInt64 = 0x1, attrNoSuid: UInt64 = 0x2, attrNoDev: UInt64 = 0x4, attrNoExec: UInt64 = 0x8
    static let msReadOnly: UInt = 0x1, msNoSuid: UInt = 0x2, msNoDev: UInt = 0x4, msNoExec: UInt = 0x8

    /// runc's default masked paths (those under /proc; /sys is not mounted at all).
    static let maskedPaths = [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    ]
    /// runc's default read-only paths (`LinuxSandboxConfiguration.procReadOnlyPaths`).
    static let readOnlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    static let devices = ["null", "zero", "full", "random", "urandom", "tty"]

    /// What of the host's runtime exists, looked up once per engine (not per sandbox).
    struct HostRuntime: Sendable {
        enum Entry: Sendable {
            case directory(String)
            case file(String)
            case symlink(String, target: String)
        }
        let runtime: [Entry]
        let etc: [Entry]
        let procReadOnly: [String]

        /// `path` as it lies in the sandbox's root: a leading runtime symlink (`/bin` → `usr/bin`
        /// on merged-/usr hosts) is replaced by what it names, so a mask reaches the real place.
        func resolvingRuntimeSymlinks(_ path: String) -> String {
            for case .symlink(let link, let target) in runtime where path == link || path.hasPrefix(link + "/") {
                let base = target.hasPrefix("/") ? target : "/" + target
                return base + path.dropFirst(link.count)
            }
            return path
        }

        init(configuration: LinuxSandboxConfiguration) {
            func lookUp(_ path: String) -> Entry? {
                var st = stat()
                guard lstat(path, &st) == 0 else { return nil }
                switch st.st_mode & S_IFMT {
                case S_IFLNK:
                    var buffer = [CChar](repeating: 0, count: 4096)
                    let n = readlink(path, &buffer, buffer.count - 1)
                    guard n > 0 else { return nil }
                    return .symlink(path, target: String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
                case S_IFDIR: return .directory(path)
                case S_IFREG: return .file(path)
                default: return nil
                }
            }
            procReadOnly = configuration.procReadOnlyPaths
            runtime = configuration.runtimePaths.compactMap(lookUp).filter {
                if case .file = $0 { return false }
                return true
            }
            // /etc entries are bound, so a symlink is followed to what it names.
            etc = configuration.hostEtcPaths.compactMap { path in
                var st = stat()
                guard stat(path, &st) == 0 else { return nil }
                switch st.st_mode & S_IFMT {
                case S_IFDIR: return .directory(path)
                case S_IFREG: return .file(path)
                default: return nil
                }
            }
        }
    }

    /// A host directory the daemon cloned as a detached mount tree (fd), to appear at `sandboxPath`.
    struct AttachedTree {
        var fd: Int32
        var sandboxPath: String
    }

    static func build(spec: SandboxSpec, host: HostRuntime, attached: [AttachedTree] = []) throws(LinuxSandboxError) -> [MountStep] {
        var steps: [MountStep] = []
        var made: Set<String> = ["/"]

        func mkdirs(_ path: String) {
            var current = ""
            for component in path.split(separator: "/").dropLast() {
                current += "/" + component
                if made.insert(current).inserted { steps.append(MountStep(kind: SBX_MOUNT_MKDIR, sandboxPath: current)) }
            }
        }
        func bind(_ host: String, _ inside: String, readOnly: Bool, optional: Bool = false, isDirectory: Bool? = nil) throws(LinuxSandboxError) {
            var isDir = isDirectory ?? true
            if isDirectory == nil {
                var st = stat()
                if stat(host, &st) != 0 {
                    if optional { return }
                    throw LinuxSandboxError(.invalidRequest, "mount source \(host): \(errnoName(Sys.errno))", path: host, errno: Sys.errno)
                }
                isDir = (st.st_mode & S_IFMT) == S_IFDIR
            }
            mkdirs(inside)
            made.insert(inside)
            steps.append(MountStep(
                kind: SBX_MOUNT_BIND, flags: (isDir ? 0 : UInt32(SBX_MF_FILE.rawValue)) | (optional ? UInt32(SBX_MF_OPTIONAL.rawValue) : 0),
                source: host, sandboxPath: inside,
                attributes: (readOnly ? attrReadOnly : 0) | attrNoSuid | attrNoDev))
        }
        func tmpfs(_ inside: String, _ options: String, _ ms: UInt) {
            mkdirs(inside)
            made.insert(inside)
            steps.append(MountStep(kind: SBX_MOUNT_TMPFS, sandboxPath: inside, data: Array(options.utf8) + [0], msFlags: ms))
        }
        func symlink(_ target: String, _ inside: String) {
            mkdirs(inside)
            steps.append(MountStep(kind: SBX_MOUNT_SYMLINK, source: target, sandboxPath: inside))
        }
        func file(_ inside: String, _ text: String) {
            mkdirs(inside)
            steps.append(MountStep(kind: SBX_MOUNT_WRITE_FILE, sandboxPath: inside, data: Array(text.utf8)))
        }

        // Host runtime, read-only. Symlinks are recreated as they are (usr-merge).
        for entry in host.runtime {
            switch entry {
            case .symlink(let path, let target): symlink(target, path)
            case .directory(let path): try bind(path, path, readOnly: true, isDirectory: true)
            case .file: break
            }
        }

        // Generated /etc.
        let hostname = spec.effectiveHostname
        steps.append(MountStep(kind: SBX_MOUNT_MKDIR, sandboxPath: "/etc"))
        made.insert("/etc")
        file("/etc/passwd", "root:x:0:0:sandbox:\(spec.workspacePath):/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        file("/etc/group", "root:x:0:\nnogroup:x:65534:\n")
        file("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t\(hostname)\n")
        file("/etc/hostname", hostname + "\n")
        file("/etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n")
        file("/etc/resolv.conf", "")
        for entry in host.etc {
            switch entry {
            case .directory(let path): try bind(path, path, readOnly: true, optional: true, isDirectory: true)
            case .file(let path): try bind(path, path, readOnly: true, optional: true, isDirectory: false)
            case .symlink: break
            }
        }

        // /proc with runc's masks.
        made.insert("/proc")
        steps.append(MountStep(kind: SBX_MOUNT_PROC, sandboxPath: "/proc", msFlags: msNoSuid | msNoDev | msNoExec))

        // Minimal /dev.
        tmpfs("/dev", "mode=0755,size=65536,nr_inodes=64", msNoSuid | msNoExec)
        // Device nodes need no extra mount flags: nothing executes or setuids through them.
        for device in devices {
            steps.append(MountStep(kind: SBX_MOUNT_BIND, flags: UInt32(SBX_MF_FILE.rawValue), source: "/dev/" + device,
                                   sandboxPath: "/dev/" + device))
        }
        made.insert("/dev/pts")
        steps.append(MountStep(kind: SBX_MOUNT_DEVPTS, sandboxPath: "/dev/pts",
                               data: Array("newinstance,ptmxmode=0666,mode=0620".utf8) + [0], msFlags: msNoSuid | msNoExec))
        tmpfs("/dev/shm", "mode=1777," + Self.scratchOptions(spec.limits.tmpfsSize), msNoSuid | msNoDev)
        symlink("pts/ptmx", "/dev/ptmx")
        symlink("/proc/self/fd", "/dev/fd")
        symlink("/proc/self/fd/0", "/dev/stdin")
        symlink("/proc/self/fd/1", "/dev/stdout")
        symlink("/proc/self/fd/2", "/dev/stderr")

        // Private, size-capped scratch space.
        tmpfs("/tmp", "mode=1777," + Self.scratchOptions(spec.limits.tmpfsSize), msNoSuid | msNoDev)
        if spec.workspacePath != "/tmp" {
            tmpfs(spec.workspacePath, "mode=0755," + Self.scratchOptions(spec.limits.tmpfsSize), msNoSuid | msNoDev)
        }

        for mount in spec.mounts {
            if mount.refuseSymlinks {
                let isDirectory = try checkNoSymlinks(mount.hostPath)
                try bind(mount.hostPath, mount.sandboxPath, readOnly: mount.readOnly, isDirectory: isDirectory)
                steps[steps.count - 1].flags |= UInt32(SBX_MF_NOFOLLOW.rawValue)
            } else {
                try bind(mount.hostPath, mount.sandboxPath, readOnly: mount.readOnly)
            }
        }

        // Blocked paths, after every mount that could provide them. The child looks each up
        // beneath the new root with no symlink on the way; one that is absent needs no mask.
        for blocked in spec.maskedPaths {
            let inside = host.resolvingRuntimeSymlinks(blocked)
            try checkMaskable(inside, as: blocked, mounts: spec.mounts, host: host)
            steps.append(MountStep(kind: SBX_MOUNT_MASK, flags: UInt32(SBX_MF_OPTIONAL.rawValue), source: "/dev/null", sandboxPath: inside))
        }
        // Daemon-provided directories (the database tool's socket): read-only, nothing executes.
        for tree in attached {
            mkdirs(tree.sandboxPath)
            made.insert(tree.sandboxPath)
            steps.append(MountStep(kind: SBX_MOUNT_ATTACH, source: nil, sandboxPath: tree.sandboxPath,
                                   attributes: attrReadOnly | attrNoSuid | attrNoDev | attrNoExec, treeFD: tree.fd))
        }

        // Masks last, so an extra mount cannot uncover them.
        for path in maskedPaths {
            steps.append(MountStep(kind: SBX_MOUNT_MASK, flags: UInt32(SBX_MF_OPTIONAL.rawValue), source: "/dev/null", sandboxPath: path))
        }
        for path in host.procReadOnly {
            steps.append(MountStep(kind: SBX_MOUNT_READONLY, flags: UInt32(SBX_MF_OPTIONAL.rawValue), sandboxPath: path,
                                   attributes: attrReadOnly | attrNoSuid | attrNoDev | attrNoExec))
        }
        return steps
    }

    /// Checks that no component of the host path `path` is a symbolic link and that it exists.
    /// Returns whether it is a directory. (The child opens it again with `RESOLVE_NO_SYMLINKS`, so
    /// a link swapped in after this check fails the sandbox rather than redirecting the bind.)
    static func checkNoSymlinks(_ path: String) throws(LinuxSandboxError) -> Bool {
        var current = ""
        var st = stat()
        for component in path.split(separator: "/") {
            current += "/" + component
            guard lstat(current, &st) == 0 else {
                let e = Sys.errno
                if e == ENOENT {
                    throw LinuxSandboxError(.invalidRequest, "allowed path \(path) does not exist on this host (\(current) is missing)", path: path, errno: e)
                }
                throw LinuxSandboxError(.invalidRequest, "allowed path \(path): lstat(\"\(current)\"): \(errnoName(e))", path: path, errno: e)
            }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                throw LinuxSandboxError(.invalidRequest, "allowed path \(path) goes through a symbolic link on the host (\(current)); "
                                        + "policy paths are mounted only when no component is a link, so they cannot lead elsewhere", path: path)
            }
        }
        return (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// A blocked path that lies inside a bind of a host directory is checked on the host: a
    /// symbolic link at or below the bind point would make the mask miss what it should hide
    /// (the link still leads to it), so the sandbox is refused. Paths nothing binds are only in
    /// the sandbox's own root, which the child checks itself.
    static func checkMaskable(_ inside: String, as blocked: String, mounts: [MountSpec], host: HostRuntime) throws(LinuxSandboxError) {
        var binds: [(hostPath: String, sandboxPath: String)] = mounts.map { ($0.hostPath, $0.sandboxPath) }
        for entry in host.runtime + host.etc {
            switch entry {
            case .directory(let path), .file(let path): binds.append((path, path))
            case .symlink: break
            }
        }
        let covering = binds.filter { inside == $0.sandboxPath || inside.hasPrefix($0.sandboxPath + "/") }
            .max { $0.sandboxPath.count < $1.sandboxPath.count }
        guard let covering else { return }
        var current = covering.hostPath
        var st = stat()
        for component in inside.dropFirst(covering.sandboxPath.count).split(separator: "/") {
            current += "/" + component
            guard lstat(current, &st) == 0 else { return } // absent: nothing to hide
            if (st.st_mode & S_IFMT) == S_IFLNK {
                throw LinuxSandboxError(.invalidRequest, "blocked path \(blocked) goes through a symbolic link on the host (\(current)); "
                                        + "masking it would leave what the link points to visible, so the sandbox is refused", path: blocked)
            }
        }
    }

    /// tmpfs options of a writable scratch mount (/tmp, the workspace, /dev/shm): `size=` caps the
    /// bytes, `nr_inodes=` the files. Empty files, directories and symlinks take no blocks but
    /// each pins an inode and a dentry of kernel memory, which nothing charges on a host without
    /// a memory controller; without the cap tmpfs allows half the host's RAM pages of them.
    /// One inode per 4 KiB page: files with data hit `size=` first, so only empty ones meet the
    /// cap. At least 1024 (a tiny tmpfs still holds a small tree), at most 262144.
    static func scratchOptions(_ size: ByteCount) -> String {
        "size=\(size.bytes),nr_inodes=\(scratchInodes(size))"
    }

    static func scratchInodes(_ size: ByteCount) -> Int {
        min(max(Int(size.bytes / 4096), 1024), 262_144)
    }

    /// Checks a path given for inside the sandbox: absolute, normalized, not a system directory.
    static func validateSandboxPath(_ path: String, what: String) throws(LinuxSandboxError) {
        guard path.hasPrefix("/"), path != "/" else {
            throw LinuxSandboxError(.invalidRequest, "\(what) \"\(path)\" must be an absolute path below /", path: path)
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) || path.utf8.contains(0) {
            throw LinuxSandboxError(.invalidRequest, "\(what) \"\(path)\" must be a normalized absolute path (no //, ., .. or NUL)", path: path)
        }
        let reserved = ["/proc", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"]
        for top in reserved where path == top || path.hasPrefix(top + "/") {
            throw LinuxSandboxError(.invalidRequest, "\(what) \"\(path)\" is inside \(top), which the sandbox's root provides itself", path: path)
        }
    }
}
