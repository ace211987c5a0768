import Foundation
import QEMUGuest
import SandboxCore
import LinuxSandbox
import VMAgentProtocol

/// A built level-3 guest image: kernel, initramfs and the agent, plus the host runtime
/// directories QEMU shares read-only. Nothing in it is secret; its directory is world-readable
/// so that the jailed, unprivileged QEMU can use it.
public struct GuestImage: Sendable, Hashable {
    /// `<cache>/vm-image/<key>`.
    public var directory: String
    /// The content hash of every input.
    public var key: String
    /// The Debian kernel package it was built from.
    public var kernelPackage: DebianKernelPackage
    /// True when this call built it; false when it came from the cache.
    public var wasBuilt: Bool
    /// Host runtime directories shared read-only with the guest (tag, host path = guest path).
    public var shares: [RuntimeShare]

    /// The kernel QEMU boots (the ELF with a PVH entry when the kernel has one), in its own
    /// cache directory keyed by the kernel package (`<cache>/vm-kernel/<key>/kernel`).
    public var kernelPath: String
    /// The initramfs (busybox, modules, init, generated /etc).
    public var initramfsPath: String { directory + "/initramfs.cpio" }
    /// The directory holding `sandbox-guest`, `sandboxd-spawner` and the private libraries
    /// they load, shared read-only at `/.sandbox`.
    public var agentDirectory: String { directory + "/agent" }

    /// QEMU arguments (TCG) for the benchmark's baseline: this image booted without jail, agent
    /// or level-1 sandbox; init runs `uname -r` on the console and powers off.
    public func rawBaselineArguments(memoryMiB: Int, cpus: Int, consolePath: String) -> [String] {
        JailedQEMU.rawBaselineArguments(image: self, shape: MachineShape(memoryMiB: memoryMiB, cpus: cpus), consolePath: consolePath)
    }
}

/// One host directory the guest sees, read-only, at the same path.
public struct RuntimeShare: Sendable, Hashable {
    public var tag: String
    public var path: String
}

/// Builds (or finds in its cache) the level-3 guest image from Debian packages only.
///
/// The guest root holds only what level 1 binds read-only (`/usr`, and `/bin`, `/sbin`, `/lib*` as
/// the host has them: symlinks into `/usr` on merged-/usr hosts, else further 9p shares) and a
/// generated minimal `/etc` (plus the non-secret host files the runtime needs, the same list as
/// LinuxSandbox). Never the host's `/`: `/root`, `/home`, `/etc/shadow`, `/var/lib/sandboxd`, `/work`
/// do not exist in the guest.
public struct GuestImageBuilder: Sendable {
    /// Where images are cached (`<root>/vm-image/<key>`).
    public var cacheDirectory: String
    /// The `sandbox-guest` executable to put in the image.
    public var agentBinary: String
    /// The level-1 engine's spawn helper the agent starts (`GuestPaths.spawner` in the guest).
    public var spawnerBinary: String
    /// Host runtime paths (directories are shared, symlinks are recreated).
    public var runtimePaths: [String]
    /// Host `/etc` entries copied into the guest's generated `/etc` (not secrets).
    public var hostEtcPaths: [String]

    /// Modules the init loads; their dependencies come along.
    public static let moduleRoots = ["virtio_pci", "9pnet_virtio", "9p", "virtio_console"]
    static let formatVersion = "vm-image 1"
    static let busyboxPath = "/bin/busybox"

    public init(
        cacheDirectory: String,
        agentBinary: String,
        spawnerBinary: String? = nil,
        runtimePaths: [String] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"],
        hostEtcPaths: [String] = [
            "/etc/ld.so.cache", "/etc/alternatives", "/etc/ssl/certs", "/etc/ca-certificates",
            "/etc/java-17-openjdk", "/etc/localtime", "/etc/mime.types",
        ]
    ) {
        self.cacheDirectory = cacheDirectory
        self.agentBinary = agentBinary
        self.spawnerBinary = spawnerBinary ?? Self.defaultSpawnerBinary(agentBinary: agentBinary)
        self.runtimePaths = runtimePaths
        self.hostEtcPaths = hostEtcPaths
    }

    /// The `sandbox-guest` built next to the running executable (or `SANDBOXD_GUEST_AGENT`).
    public static func defaultAgentBinary() -> String {
        if let path = ProcessInfo.processInfo.environment["SANDBOXD_GUEST_AGENT"], !path.isEmpty { return path }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        // A test bundle sits one level below the products (…/debug/x.xctest/…/x).
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("sandbox-guest").path
            if access(candidate, X_OK) == 0 { return candidate }
            directory.deleteLastPathComponent()
        }
        return "/usr/local/libexec/sandboxd/sandbox-guest"
    }

    /// Where the agent's image takes the spawn helper from: `SANDBOXD_SPAWNER` if set, else
    /// `sandboxd-spawner` next to the agent (both are products of the same build, and both are
    /// installed in `/usr/local/libexec/sandboxd`).
    public static func defaultSpawnerBinary(agentBinary: String) -> String {
        if let path = ProcessInfo.processInfo.environment["SANDBOXD_SPAWNER"], !path.isEmpty { return path }
        return URL(fileURLWithPath: agentBinary).deletingLastPathComponent().appendingPathComponent("sandboxd-spawner").path
    }

    /// Finds or builds the image. Blocking; `progress` gets one line per step. The first build
    /// downloads the kernel package (~70 MB) and takes 20–30 s; later calls hash the inputs (~2 s).
    public func build(progress: (String) -> Void = { _ in }) throws(VMSandboxError) -> GuestImage {
        do {
            return try buildImage(progress: progress)
        } catch let error as VMSandboxError {
            throw error
        } catch {
            throw VMSandboxError(.imageBuild, "building the guest image: \(error)")
        }
    }

    private func buildImage(progress: (String) -> Void) throws -> GuestImage {
        do {
            progress("image: reading inputs")
            guard let agent = FileManager.default.contents(atPath: agentBinary).map({ [UInt8]($0) }) else {
                throw VMSandboxError(.imageBuild, "cannot read the guest agent \(agentBinary): build it (swift build --product sandbox-guest)")
            }
            let busybox = try Self.readStaticBusybox()
            // Libraries the agent links from outside the shared runtime (the Swift runtime):
            // copied next to it, so the guest sees those files and not the toolchain. A fully
            // static agent (`-static-executable`, what `Benchmarks/run` builds) links none and is
            // started directly: no dynamic loader, no library loaded over 9p, no symbol lookups.
            let agentIsStatic = Self.isStaticExecutable(agent)
            let agentLibraries = agentIsStatic ? [] : try privateLibraries(of: agentBinary)
            // The spawn helper is started directly (not through ld.so with --library-path): what
            // it loads from outside the runtime (libswiftCore, which every SwiftPM executable
            // links) goes into lib/ too, and its RUNPATH's $ORIGIN finds it through a symlink.
            guard access(spawnerBinary, X_OK) == 0 else {
                throw VMSandboxError(.imageBuild, "cannot run the spawn helper \(spawnerBinary): build it (swift build --product sandboxd-spawner) or set SANDBOXD_SPAWNER")
            }
            let spawnerLibraries = Self.isStaticExecutable(path: spawnerBinary) ? [] : try privateLibraries(of: spawnerBinary)
            var libraries = agentLibraries
            for library in spawnerLibraries where !libraries.contains(where: { $0.name == library.name }) {
                libraries.append(library)
            }
            libraries.sort { $0.name < $1.name }
            let kernel: DebianKernelPackage
            do {
                kernel = try DebianKernelPackage.resolve()
            } catch {
                guard getuid() == 0 else { throw error }
                progress("image: \(error); running apt-get update once")
                try HostTool.run(["apt-get", "update", "-qq"], package: "apt")
                kernel = try DebianKernelPackage.resolve()
            }
            let (shares, links) = try runtimeLayout()
            var base = CPIOArchive()
            try addGuestEtc(to: &base)
            let guestShares = shares + [RuntimeShare(tag: "agent", path: "/.sandbox")]
            try base.addFile("shares", contents: Array(guestShares.map { "\($0.tag) \($0.path)\n" }.joined().utf8))
            try base.addFile("links", contents: Array(links.map { "\($0.0) \($0.1)\n" }.joined().utf8))
            try base.addFile("init", contents: Array(GuestInit.script.utf8), mode: 0o755)
            if agentIsStatic { try base.addFile(GuestInit.staticAgentMarker, contents: []) }
            try base.addFile("bin/busybox", contents: busybox, mode: 0o755)
            let baseBytes = base.bytes

            let cache = BuildCache(root: cacheDirectory)
            // Stage 1, keyed by the kernel package alone: kernel and module archive. A new agent
            // or runtime does not download the kernel again.
            var kernelHasher = SHA256()
            kernelHasher.update(field: Self.formatVersion + " kernel")
            kernelHasher.update(field: kernel.name)
            kernelHasher.update(field: kernel.version)
            kernelHasher.update(field: Self.moduleRoots.joined(separator: ","))
            let kernelKey = kernelHasher.finalizeHex()
            let (kernelDirectory, _) = try cache.directory(kind: "vm-kernel", key: kernelKey) { (scratch) throws(QEMUGuestError) in
                let download = scratch + "/download"
                try Self.mkdir(download)
                progress("image: downloading and unpacking \(kernel) (apt-get download, dpkg-deb -x)")
                let extracted = try ExtractedKernel.download(kernel, into: download)
                let modules = try extracted.loadOrder(for: Self.moduleRoots)
                progress("image: module archive (\(modules.count) modules)")
                var archive = CPIOArchive()
                for directory in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
                    try archive.addDirectory(directory)
                }
                for module in modules {
                    guard let contents = FileManager.default.contents(atPath: module.path) else {
                        throw QEMUGuestError(.io, "cannot read \(module.path)")
                    }
                    try archive.addFile("lib/modules/\(module.info.name).ko", contents: [UInt8](contents))
                }
                try archive.addFile("lib/modules/load-order", contents: Array((modules.map(\.info.name).joined(separator: "\n") + "\n").utf8))
                try Self.write(archive.finished(), to: scratch + "/modules.cpio")
                progress("image: kernel")
                guard let vmlinuz = FileManager.default.contents(atPath: extracted.vmlinuzPath).map({ [UInt8]($0) }) else {
                    throw QEMUGuestError(.io, "cannot read \(extracted.vmlinuzPath)")
                }
                // The uncompressed ELF through its PVH entry: TCG skips the kernel's own decompression.
                var kernelFormat = "bzImage"
                var kernelImage = vmlinuz
                if let elf = try? KernelImage.extractELF(fromBzImage: vmlinuz, scratchDirectory: scratch), KernelImage.isPVHBootable(elf: elf) {
                    kernelImage = elf
                    kernelFormat = "ELF (PVH entry)"
                }
                try Self.write(kernelImage, to: scratch + "/kernel")
                let manifest = "kernel: \(kernel)\nrelease: \(extracted.release)\nkernel-format: \(kernelFormat)\nmodules: \(modules.map(\.info.name).joined(separator: " "))\n"
                try Self.write(Array(manifest.utf8), to: scratch + "/manifest.txt")
                try? FileManager.default.removeItem(atPath: download)
                chmod(scratch, 0o755)
            }

            // Stage 2: the initramfs (modules + init, busybox, /etc) and the agent.
            var hasher = SHA256()
            hasher.update(field: Self.formatVersion)
            hasher.update(field: kernelKey)
            hasher.update(field: SHA256.hex(of: baseBytes))
            let agentDigest = try Self.fileDigest(agentBinary)
            hasher.update(field: agentDigest)
            let spawnerDigest = try Self.fileDigest(spawnerBinary)
            hasher.update(field: spawnerDigest)
            // The level-1 seccomp program, compiled here once instead of by libseccomp in every
            // guest (tens of milliseconds under TCG on each cold create); the guest checks it.
            let seccompProgram: [UInt8]
            do { seccompProgram = try SeccompProgram.exportStandard() } catch {
                throw VMSandboxError(.imageBuild, "exporting the level-1 seccomp program: \(error.message)")
            }
            hasher.update(field: SHA256.hex(of: seccompProgram))
            for library in libraries {
                hasher.update(field: library.name)
                hasher.update(field: try Self.fileDigest(library.path))
            }
            let key = hasher.finalizeHex()
            let (directory, built) = try cache.directory(kind: "vm-image", key: key) { (scratch) throws(QEMUGuestError) in
                progress("image: building \(key.prefix(12)) (initramfs, agent)")
                guard let modules = FileManager.default.contents(atPath: kernelDirectory + "/modules.cpio").map({ [UInt8]($0) }) else {
                    throw QEMUGuestError(.io, "cannot read \(kernelDirectory)/modules.cpio")
                }
                // The base part (etc, init, busybox) goes last: an archive's trailer ends it,
                // and the kernel reads concatenated archives one after another.
                try Self.write(modules + base.finished(), to: scratch + "/initramfs.cpio")
                try Self.mkdir(scratch + "/agent")
                try Self.write(agent, to: scratch + "/agent/sandbox-guest", mode: 0o755)
                try Self.mkdir(scratch + "/agent/lib")
                for library in libraries {
                    guard let contents = FileManager.default.contents(atPath: library.path) else {
                        throw QEMUGuestError(.io, "cannot read \(library.path), which \(agentBinary) or \(spawnerBinary) links")
                    }
                    try Self.write([UInt8](contents), to: scratch + "/agent/lib/" + library.name, mode: 0o755)
                }
                // The engine in the guest refuses a helper not owned by root or writable by others:
                // the image is written by root, 0755, and 9p (security_model=none) shows that.
                guard let spawner = FileManager.default.contents(atPath: spawnerBinary) else {
                    throw QEMUGuestError(.io, "cannot read the spawn helper \(spawnerBinary)")
                }
                try Self.write([UInt8](spawner), to: scratch + "/agent/sandboxd-spawner", mode: 0o755)
                try Self.write(seccompProgram, to: scratch + "/agent/" + String(GuestPaths.seccompProgram.dropFirst(GuestPaths.agentDirectory.count + 1)))
                for library in spawnerLibraries {
                    do {
                        try FileManager.default.createSymbolicLink(atPath: scratch + "/agent/" + library.name, withDestinationPath: "lib/" + library.name)
                    } catch {
                        throw QEMUGuestError(.io, "symlink \(scratch)/agent/\(library.name): \(error)")
                    }
                }
                let kernelManifest = (try? String(contentsOfFile: kernelDirectory + "/manifest.txt", encoding: .utf8)) ?? ""
                let manifest = """
                    key: \(key)
                    kernel-directory: \(kernelDirectory)
                    \(kernelManifest)shares: \(shares.map(\.path).joined(separator: " "))
                    agent-sha256: \(agentDigest)
                    spawner-sha256: \(spawnerDigest)

                    """
                try Self.write(Array(manifest.utf8), to: scratch + "/manifest.txt")
                chmod(scratch, 0o755)
            }
            // The jailed QEMU runs as an unprivileged uid and must reach the image.
            chmod(cacheDirectory, 0o755)
            chmod(cacheDirectory + "/vm-image", 0o755)
            chmod(cacheDirectory + "/vm-kernel", 0o755)
            progress(built ? "image: built \(directory)" : "image: up to date (\(key.prefix(12)))")
            return GuestImage(directory: directory, key: key, kernelPackage: kernel, wasBuilt: built, shares: guestShares,
                              kernelPath: kernelDirectory + "/kernel")
        }
    }

    /// Whether `bytes` are a statically linked executable: a 64-bit little-endian ELF file whose
    /// program headers lie inside it and none of which names a dynamic loader (`PT_INTERP`).
    /// Anything else counts as dynamic, so that ldd looks at it (and reports what is wrong).
    static func isStaticExecutable(_ bytes: [UInt8]) -> Bool {
        func field(_ offset: Int, _ size: Int) -> Int? {
            guard offset >= 0, offset + size <= bytes.count else { return nil }
            return (0..<size).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) }
        }
        guard bytes.count >= 64, bytes[0..<4] == [0x7f, 0x45, 0x4c, 0x46], bytes[4] == 2, bytes[5] == 1,
              let tableOffset = field(0x20, 8), let entrySize = field(0x36, 2), let count = field(0x38, 2),
              entrySize >= 4, count > 0, tableOffset < bytes.count else { return false }
        for index in 0..<count {
            guard let type = field(tableOffset + index * entrySize, 4) else { return false }
            if type == 3 { return false }  // PT_INTERP
        }
        return true
    }

    /// `isStaticExecutable` of a file (its first 64 KiB hold the program headers of any
    /// executable the linker writes); false when it cannot be read.
    static func isStaticExecutable(path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: 1 << 16) else { return false }
        return isStaticExecutable([UInt8](data))
    }

    /// The shared libraries `binary` loads from outside the runtime directories (ldd).
    func privateLibraries(of binary: String) throws(VMSandboxError) -> [(name: String, path: String)] {
        let output: HostTool.Output
        do {
            output = try HostTool.run(["ldd", binary], package: "libc-bin")
        } catch {
            throw VMSandboxError(.imageBuild, "ldd \(binary): \(error)")
        }
        var libraries: [(name: String, path: String)] = []
        for line in output.standardOutput.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard let arrow = parts.firstIndex(of: "=>"), arrow + 1 < parts.count else { continue }
            let path = String(parts[arrow + 1])
            guard path.hasPrefix("/"), !runtimePaths.contains(where: { path.hasPrefix($0 + "/") }) else { continue }
            libraries.append((String(path.split(separator: "/").last!), path))
        }
        return libraries.sorted { $0.name < $1.name }
    }

    /// Directories to share and symlinks to recreate, from the host's runtime layout.
    func runtimeLayout() throws(VMSandboxError) -> ([RuntimeShare], [(String, String)]) {
        var shares: [RuntimeShare] = []
        var links: [(String, String)] = []
        for path in runtimePaths {
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            guard path.hasPrefix("/"), !path.contains(" "), path != "/", !path.dropFirst().contains("/") else {
                throw VMSandboxError(.invalidRequest, "runtime path \(path) must be a top-level directory like /usr")
            }
            if info.st_mode & S_IFMT == S_IFLNK {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path), !target.contains(" ") else { continue }
                links.append((path, target))
            } else if info.st_mode & S_IFMT == S_IFDIR {
                shares.append(RuntimeShare(tag: "rt" + path.dropFirst(), path: path))
            }
        }
        guard shares.contains(where: { $0.path == "/usr" }) else {
            throw VMSandboxError(.imageBuild, "the host has no /usr directory to share")
        }
        return (shares, links)
    }

    /// The guest's /etc: generated identity files plus the listed non-secret host files.
    func addGuestEtc(to archive: inout CPIOArchive) throws {
        try archive.addDirectory("guest-etc")
        let generated: [(String, String)] = [
            ("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
            ("group", "root:x:0:\nnogroup:x:65534:\n"),
            ("hosts", "127.0.0.1 localhost\n::1 localhost\n"),
            ("hostname", "sandbox\n"),
            ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"),
            ("resolv.conf", ""),
        ]
        for (name, contents) in generated { try archive.addFile("guest-etc/\(name)", contents: Array(contents.utf8)) }
        for path in hostEtcPaths where path.hasPrefix("/etc/") {
            try addHostTree(path, as: "guest-etc/" + path.dropFirst("/etc/".count), to: &archive)
        }
    }

    /// Regular files, directories and symlinks only; other kinds are skipped.
    private func addHostTree(_ path: String, as name: String, to archive: inout CPIOArchive) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        let parent = (name as NSString).deletingLastPathComponent
        if parent != "guest-etc", !parent.isEmpty { try archive.addDirectory(parent) }
        switch info.st_mode & S_IFMT {
        case S_IFLNK:
            try archive.addSymlink(name, target: try FileManager.default.destinationOfSymbolicLink(atPath: path))
        case S_IFREG:
            guard let data = FileManager.default.contents(atPath: path) else { return }
            try archive.addFile(name, contents: [UInt8](data), mode: 0o644)
        case S_IFDIR:
            try archive.addDirectory(name)
            for entry in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                try addHostTree(path + "/" + entry, as: name + "/" + entry, to: &archive)
            }
        default:
            return
        }
    }

    /// A complete image found in a cache directory (`sandboxctl image status`), from its manifest.
    public struct CachedImage: Sendable, Hashable, Encodable {
        public var key: String
        public var directory: String
        /// The Debian kernel package and the kernel release it boots.
        public var kernel: String?
        public var release: String?
        /// SHA-256 of the agent inside: the image is current when it equals the agent's on disk.
        public var agentSHA256: String?

        enum CodingKeys: String, CodingKey { case key, directory, kernel, release, agentSHA256 = "agent_sha256" }
    }

    /// The complete images under `<cacheDirectory>/vm-image` (normally one: a new build prunes the old).
    public static func cachedImages(in cacheDirectory: String) -> [CachedImage] {
        let root = cacheDirectory + "/vm-image"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return entries.filter { !$0.hasPrefix(".") && access(root + "/" + $0 + "/.complete", F_OK) == 0 }.sorted().map { key in
            let manifest = (try? String(contentsOfFile: root + "/" + key + "/manifest.txt", encoding: .utf8)) ?? ""
            var fields: [String: String] = [:]
            for line in manifest.split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            return CachedImage(key: key, directory: root + "/" + key, kernel: fields["kernel"], release: fields["release"],
                               agentSHA256: fields["agent-sha256"])
        }
    }

    /// SHA-256 of a file by coreutils' sha256sum: the Swift runtime libraries are ~80 MB, and
    /// hashing them at every daemon start must not take seconds.
    public static func fileDigest(_ path: String) throws(VMSandboxError) -> String {
        do {
            let output = try HostTool.run(["sha256sum", "--", path], package: "coreutils")
            guard let digest = output.standardOutput.split(separator: " ").first, digest.count == 64 else {
                throw VMSandboxError(.imageBuild, "sha256sum \(path): unexpected output")
            }
            return String(digest)
        } catch let error as VMSandboxError {
            throw error
        } catch {
            throw VMSandboxError(.imageBuild, "sha256sum \(path): \(error)")
        }
    }

    static func readStaticBusybox() throws(VMSandboxError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: busyboxPath) else {
            throw VMSandboxError(.imageBuild, "\(busyboxPath) not found: install the Debian package busybox-static")
        }
        return [UInt8](data)
    }

    /// 0755 whatever the umask (systemd's UMask=0077): the jailed QEMU's uid reads the image.
    static func mkdir(_ path: String) throws(QEMUGuestError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw QEMUGuestError(.io, "mkdir \(path): \(error)")
        }
        chmod(path, 0o755)
    }

    static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws(QEMUGuestError) {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: Int(mode)]) else {
            throw QEMUGuestError(.io, "cannot write \(path)")
        }
    }
}
