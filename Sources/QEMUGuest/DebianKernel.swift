import Foundation

/// A Debian kernel image package, named exactly (`linux-image-6.1.0-56-amd64` at `6.1.192-2`).
public struct DebianKernelPackage: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The binary package name (`linux-image-6.1.0-56-amd64`).
    public var name: String
    /// The Debian version (`6.1.192-2`).
    public var version: String

    public init(name: String, version: String) {
        self.name = name
        self.version = version
    }

    public var description: String { "\(name)=\(version)" }

    /// The package a kernel meta-package currently depends on, read from the local apt lists.
    ///
    /// The generic flavour is required: `-cloud-amd64` kernels are built without 9p, and a guest
    /// that shares host directories needs it.
    /// - Parameter metaPackage: `linux-image-amd64` unless a caller pins another.
    public static func resolve(metaPackage: String = "linux-image-amd64") throws(QEMUGuestError) -> Self {
        let depends = try HostTool.run(["apt-cache", "depends", metaPackage], package: "apt")
        let target = depends.standardOutput.split(separator: "\n").lazy
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .first { $0.hasPrefix("Depends:") && !$0.contains("<") }
            .map { String($0.dropFirst("Depends:".count)).trimmingCharacters(in: .whitespaces) }
        guard let target, target.hasPrefix("linux-image-") else {
            throw QEMUGuestError(.kernelPackage, "apt-cache depends \(metaPackage) names no kernel package; run apt-get update")
        }
        guard !target.contains("-cloud-") else {
            throw QEMUGuestError(.kernelPackage, "\(target) is the cloud flavour, which has no 9p support; use the generic flavour")
        }
        let show = try HostTool.run(["apt-cache", "show", "--no-all-versions", target], package: "apt")
        guard let versionLine = show.standardOutput.split(separator: "\n").first(where: { $0.hasPrefix("Version:") }) else {
            throw QEMUGuestError(.kernelPackage, "apt-cache show \(target) gives no version; run apt-get update")
        }
        let version = String(versionLine.dropFirst("Version:".count)).trimmingCharacters(in: .whitespaces)
        return Self(name: target, version: version)
    }
}

/// A kernel package unpacked into a directory: its `vmlinuz` and its modules.
public struct ExtractedKernel: Sendable {
    /// The package it was unpacked from.
    public var package: DebianKernelPackage
    /// Where the package's file tree was unpacked.
    public var root: String
    /// The kernel release (`uname -r` inside the guest), the name of its `lib/modules` directory.
    public var release: String

    /// The compressed kernel image QEMU boots with `-kernel`.
    public var vmlinuzPath: String { "\(root)/boot/vmlinuz-\(release)" }
    /// The kernel's build configuration (`CONFIG_*=y|m`).
    public var configPath: String { "\(root)/boot/config-\(release)" }
    /// `lib/modules/<release>` of the unpacked tree.
    public var modulesDirectory: String { "\(root)/\(Self.modulesParent)/\(release)" }

    // Debian 12 ships modules under /lib/modules; later releases under /usr/lib/modules.
    private static let modulesParent = "lib/modules"

    /// Downloads the package with `apt-get download` (checked against the apt lists' hashes)
    /// and unpacks it with `dpkg-deb -x`. Blocking; takes seconds.
    /// - Parameters:
    ///   - package: the exact package and version.
    ///   - directory: an empty, writable directory; the `.deb` and the unpacked tree go there.
    public static func download(_ package: DebianKernelPackage, into directory: String) throws(QEMUGuestError) -> ExtractedKernel {
        var arguments = ["apt-get", "download", "-q"]
        // apt drops to the _apt user to download, and _apt cannot write to a root-owned build tree.
        if getuid() == 0 { arguments += ["-o", "APT::Sandbox::User=root"] }
        try HostTool.run(arguments + ["\(package.name)=\(package.version)"], package: "apt", directory: directory)
        let debs = (try? FileManager.default.contentsOfDirectory(atPath: directory))?.filter { $0.hasSuffix(".deb") } ?? []
        guard debs.count == 1, let deb = debs.first else {
            throw QEMUGuestError(.kernelPackage, "apt-get download \(package) left \(debs.count) .deb files in \(directory)")
        }
        let root = directory + "/tree"
        try HostTool.run(["dpkg-deb", "-x", directory + "/" + deb, root], package: "dpkg")
        return try ExtractedKernel(unpackedAt: root, package: package)
    }

    /// A kernel package already unpacked at `root`.
    public init(unpackedAt root: String, package: DebianKernelPackage) throws(QEMUGuestError) {
        let parent = "\(root)/\(Self.modulesParent)"
        let releases = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        guard releases.count == 1, let release = releases.first else {
            throw QEMUGuestError(.kernelPackage, "\(package) has \(releases.count) module directories under /\(Self.modulesParent), expected one")
        }
        self.package = package
        self.root = root
        self.release = release
        guard FileManager.default.fileExists(atPath: vmlinuzPath) else {
            throw QEMUGuestError(.kernelPackage, "\(package) has no /boot/vmlinuz-\(release)")
        }
    }

    /// Names of modules compiled into the kernel image (they need no loading).
    public func builtinModules() -> Set<String> {
        guard let text = try? String(contentsOfFile: modulesDirectory + "/modules.builtin", encoding: .utf8) else { return [] }
        return Set(text.split(separator: "\n").compactMap { line in
            line.split(separator: "/").last.map { KernelModuleInfo.canonicalName(String($0.dropLast($0.hasSuffix(".ko") ? 3 : 0))) }
        })
    }

    /// Every loadable module in the package, by canonical name, as a path relative to `modulesDirectory`.
    public func moduleIndex() throws(QEMUGuestError) -> [String: String] {
        guard let walker = FileManager.default.enumerator(atPath: modulesDirectory + "/kernel") else {
            throw QEMUGuestError(.kernelPackage, "\(package) has no \(modulesDirectory)/kernel")
        }
        var index: [String: String] = [:]
        while let relative = walker.nextObject() as? String {
            let fileName = relative.split(separator: "/").last.map(String.init) ?? relative
            if fileName.hasSuffix(".ko") {
                index[KernelModuleInfo.canonicalName(String(fileName.dropLast(3)))] = "kernel/" + relative
            } else if fileName.contains(".ko.") {
                throw QEMUGuestError(.kernelModule, "\(relative) is compressed; only uncompressed modules are supported")
            }
        }
        return index
    }

    /// A module to put into an initramfs: its facts and where its file is.
    public struct Module: Sendable, Hashable {
        /// Its name and dependencies.
        public var info: KernelModuleInfo
        /// Absolute path of the `.ko` file on the host.
        public var path: String
    }

    /// The modules to load, in order, so that `roots` and all they depend on are present.
    /// Roots compiled into the kernel are left out; a root in neither place is an error.
    public func loadOrder(for roots: [String]) throws(QEMUGuestError) -> [Module] {
        let index = try moduleIndex()
        let builtin = builtinModules()
        var paths: [String: String] = [:]
        let wanted = roots.map(KernelModuleInfo.canonicalName).filter { !builtin.contains($0) }
        let modulesDirectory = self.modulesDirectory
        let ordered = try KernelModuleInfo.loadOrder(for: wanted) { (name) throws(QEMUGuestError) -> KernelModuleInfo in
            guard let relative = index[name] else {
                throw QEMUGuestError(.kernelModule, "module \(name) is neither built into \(release) nor shipped as a .ko")
            }
            let path = modulesDirectory + "/" + relative
            guard let data = FileManager.default.contents(atPath: path) else {
                throw QEMUGuestError(.io, "cannot read \(path)")
            }
            let info = try KernelModuleInfo(elf: [UInt8](data), fileName: relative)
            paths[info.name] = path
            return info
        }
        return ordered.map { Module(info: $0, path: paths[$0.name] ?? "") }
    }
}
