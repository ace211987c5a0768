import Foundation
import QEMUGuest
import SandboxCore

/// The test guest's kernel and initramfs, as built (or found) in the cache.
///
/// The initramfs holds only busybox-static, the 9p/virtio modules of the same kernel package and
/// an init that mounts the host's root read-only over 9p, gives it the writable places and a
/// real cgroup2 hierarchy with every controller, and runs one command in it (`init.sh`).
/// This is for tests only: level 3 guests must never see the host's whole root.
public struct HostRootImage: Sendable {
    /// `<cache>/test-image/<key>`.
    public var directory: String
    /// The kernel QEMU boots: the uncompressed ELF (PVH entry) when the kernel has one, else the bzImage.
    public var kernelPath: String { directory + "/kernel" }
    /// The initramfs without the per-run job archive.
    public var initramfsPath: String { directory + "/initramfs.cpio" }
    /// The content hash of every input (see `HostRootImage.cacheKey`).
    public var key: String
    /// The Debian package the kernel and modules came from.
    public var kernelPackage: DebianKernelPackage
    /// True when this process built it; false when it came from the cache.
    public var wasBuilt: Bool

    /// Modules the init loads before mounting the host root; their dependencies come along.
    /// virtio_pci is the bus the 9p device sits on; 9pnet_virtio is the transport; 9p the file system.
    public static let moduleRoots = ["virtio_pci", "9pnet_virtio", "9p"]

    /// Bumped whenever the way the image is put together changes without its inputs changing.
    static let formatVersion = "host-root-image 3"

    static let busyboxPath = "/bin/busybox"

    /// The cache key: a SHA-256 over the image format, the kernel package and version, the
    /// busybox binary, the init script and the module list. Any change gives a new image.
    static func cacheKey(kernel: DebianKernelPackage, busybox: [UInt8], initScript: String) -> String {
        var hasher = SHA256()
        hasher.update(field: formatVersion)
        hasher.update(field: kernel.name)
        hasher.update(field: kernel.version)
        hasher.update(field: SHA256.hex(of: busybox))
        hasher.update(field: initScript)
        hasher.update(field: moduleRoots.joined(separator: ","))
        return hasher.finalizeHex()
    }

    /// Finds the image for the current inputs in `cache`, or builds it (download, unpack,
    /// initramfs). Blocking; the first build takes about 15 s plus the ~70 MB download.
    static func prepare(cache: BuildCache, log: (String) -> Void) throws(GuestMachineError) -> HostRootImage {
        do {
            let busybox = try readStaticBusybox()
            let kernel: DebianKernelPackage
            do {
                kernel = try DebianKernelPackage.resolve()
            } catch where getuid() == 0 {
                // A machine whose packages were installed from an image may have empty apt lists.
                log("guest: \(error); running apt-get update once and retrying")
                try HostTool.run(["apt-get", "update", "-qq"], package: "apt")
                kernel = try DebianKernelPackage.resolve()
            }
            let initScript = HostRootInit.script
            let key = cacheKey(kernel: kernel, busybox: busybox, initScript: initScript)
            let (directory, built) = try cache.directory(kind: "test-image", key: key) { (scratch) throws(QEMUGuestError) in
                log("guest: building test image \(key.prefix(12)) from \(kernel) (once; cached under \(cache.root))")
                let download = scratch + "/download"
                do {
                    try FileManager.default.createDirectory(atPath: download, withIntermediateDirectories: true)
                } catch {
                    throw QEMUGuestError(.io, "mkdir \(download): \(error)")
                }
                let extracted = try ExtractedKernel.download(kernel, into: download)
                let modules = try extracted.loadOrder(for: moduleRoots)
                var archive = CPIOArchive()
                for directory in ["bin", "dev", "proc", "sys", "mnt", "tmp", "job", "lib", "lib/modules"] {
                    try archive.addDirectory(directory)
                }
                try archive.addFile("bin/busybox", contents: busybox, mode: 0o755)
                try archive.addFile("init", contents: Array(initScript.utf8), mode: 0o755)
                for module in modules {
                    guard let contents = FileManager.default.contents(atPath: module.path) else {
                        throw QEMUGuestError(.io, "cannot read \(module.path)")
                    }
                    try archive.addFile("lib/modules/\(module.info.name).ko", contents: [UInt8](contents))
                }
                let order = modules.map(\.info.name).joined(separator: "\n") + "\n"
                try archive.addFile("lib/modules/load-order", contents: Array(order.utf8))
                try write(archive.finished(), to: scratch + "/initramfs.cpio")
                guard let vmlinuz = FileManager.default.contents(atPath: extracted.vmlinuzPath).map({ [UInt8]($0) }) else {
                    throw QEMUGuestError(.io, "cannot read \(extracted.vmlinuzPath)")
                }
                // Booting the uncompressed kernel skips its self-decompression: seconds under TCG.
                var kernelFormat = "bzImage"
                var kernelImage = vmlinuz
                if let elf = try? KernelImage.extractELF(fromBzImage: vmlinuz, scratchDirectory: scratch), KernelImage.isPVHBootable(elf: elf) {
                    kernelImage = elf
                    kernelFormat = "ELF (PVH entry)"
                }
                try write(kernelImage, to: scratch + "/kernel")
                let manifest = """
                    key: \(key)
                    kernel: \(kernel)
                    release: \(extracted.release)
                    kernel-format: \(kernelFormat)
                    modules: \(modules.map(\.info.name).joined(separator: " "))
                    busybox-sha256: \(SHA256.hex(of: busybox))

                    """
                try write(Array(manifest.utf8), to: scratch + "/manifest.txt")
                // The unpacked package is ~400 MB; only the kernel and a few modules are kept.
                try? FileManager.default.removeItem(atPath: download)
            }
            return HostRootImage(directory: directory, key: key, kernelPackage: kernel, wasBuilt: built)
        } catch {
            throw GuestMachineError(.imageBuild, "building the test guest image: \(error)")
        }
    }

    /// The busybox binary, refused when it is the dynamically linked build: the initramfs has no libc.
    static func readStaticBusybox() throws(QEMUGuestError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: busyboxPath) else {
            throw QEMUGuestError(.toolFailed, "\(busyboxPath) not found: install the Debian package busybox-static (make test-deps)")
        }
        let bytes = [UInt8](data)
        if hasInterpreter(elf: bytes) {
            throw QEMUGuestError(.toolFailed, "\(busyboxPath) is dynamically linked: install the Debian package busybox-static instead of busybox")
        }
        return bytes
    }

    /// True when an ELF64 file asks for a dynamic loader (has a PT_INTERP program header).
    static func hasInterpreter(elf: [UInt8]) -> Bool {
        func read(_ offset: Int, _ width: Int) -> Int {
            guard offset >= 0, offset + width <= elf.count else { return 0 }
            var value = 0
            for index in (0..<width).reversed() { value = value << 8 | Int(elf[offset + index]) }
            return value
        }
        guard elf.count > 64, elf[0] == 0x7f, elf[4] == 2 else { return false }
        let table = read(0x20, 8), entrySize = read(0x36, 2), count = read(0x38, 2)
        for index in 0..<count where read(table + index * entrySize, 4) == 3 { return true }
        return false
    }

    static func write(_ bytes: [UInt8], to path: String) throws(QEMUGuestError) {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw QEMUGuestError(.io, "cannot write \(path)")
        }
    }
}
