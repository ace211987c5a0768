/// What a kernel module file says about itself in its `.modinfo` ELF section.
///
/// Debian's kernel package ships no `modules.dep` (depmod writes it at install time), so the
/// load order of the modules an initramfs needs is worked out from each module's `depends=`.
public struct KernelModuleInfo: Hashable, Sendable {
    /// The module's name as the kernel knows it (`9pnet_virtio`).
    public var name: String
    /// Names of the modules that must be loaded first.
    public var dependencies: [String]
    /// The `vermagic=` string: the kernel release the module was built for, and its options.
    public var vermagic: String?

    public init(name: String, dependencies: [String], vermagic: String?) {
        self.name = name
        self.dependencies = dependencies
        self.vermagic = vermagic
    }

    /// Reads the `.modinfo` section of an uncompressed ELF64 little-endian module (`.ko`).
    /// - Parameters:
    ///   - elf: the module file's bytes.
    ///   - fileName: used for the name when the section has no `name=`, and in errors.
    public init(elf: [UInt8], fileName: String) throws(QEMUGuestError) {
        func fail(_ why: String) -> QEMUGuestError { QEMUGuestError(.kernelModule, "\(fileName): \(why)") }
        func read(_ offset: Int, _ width: Int) throws(QEMUGuestError) -> UInt64 {
            guard offset >= 0, width <= 8, offset + width <= elf.count else { throw fail("truncated ELF file") }
            var value: UInt64 = 0
            for index in (0..<width).reversed() { value = value << 8 | UInt64(elf[offset + index]) }
            return value
        }
        guard elf.count >= 64, elf[0] == 0x7f, elf[1] == 0x45, elf[2] == 0x4c, elf[3] == 0x46 else {
            throw fail("not an ELF file (compressed modules are not supported)")
        }
        guard elf[4] == 2, elf[5] == 1 else { throw fail("not a 64-bit little-endian ELF file") }
        let sectionTable = Int(try read(0x28, 8))
        let entrySize = Int(try read(0x3a, 2))
        let sectionCount = Int(try read(0x3c, 2))
        let namesIndex = Int(try read(0x3e, 2))
        guard entrySize >= 64, namesIndex < sectionCount else { throw fail("malformed section header table") }
        func section(_ index: Int) throws(QEMUGuestError) -> (name: Int, offset: Int, size: Int) {
            let base = sectionTable + index * entrySize
            return (Int(try read(base, 4)), Int(try read(base + 0x18, 8)), Int(try read(base + 0x20, 8)))
        }
        let names = try section(namesIndex)
        var modinfo: (offset: Int, size: Int)?
        for index in 0..<sectionCount {
            let candidate = try section(index)
            let nameStart = names.offset + candidate.name
            let wanted = Array(".modinfo".utf8) + [0]
            guard nameStart >= 0, nameStart + wanted.count <= elf.count else { continue }
            if Array(elf[nameStart..<nameStart + wanted.count]) == wanted {
                modinfo = (candidate.offset, candidate.size)
                break
            }
        }
        guard let modinfo, modinfo.offset >= 0, modinfo.size >= 0, modinfo.offset + modinfo.size <= elf.count else {
            throw fail("no .modinfo section")
        }
        var fields: [String: String] = [:]
        for entry in elf[modinfo.offset..<modinfo.offset + modinfo.size].split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { continue }
            let key = String(text[..<equals])
            if fields[key] == nil { fields[key] = String(text[text.index(after: equals)...]) }
        }
        var baseName = fileName.split(separator: "/").last.map(String.init) ?? fileName
        if baseName.hasSuffix(".ko") { baseName.removeLast(3) }
        self.name = fields["name"] ?? Self.canonicalName(baseName)
        self.dependencies = (fields["depends"] ?? "").split(separator: ",").map { Self.canonicalName(String($0)) }
        self.vermagic = fields["vermagic"]
    }

    /// The kernel treats `-` and `_` in module names alike; file names use either.
    public static func canonicalName(_ name: String) -> String {
        String(name.map { $0 == "-" ? "_" : $0 })
    }

    /// Orders modules so that each comes after everything it depends on.
    /// - Parameters:
    ///   - roots: the modules wanted, in the order they should load when nothing else decides.
    ///   - info: looks a module up by name; throws when it is not in the package.
    /// - Returns: every module needed, dependencies first, each once.
    public static func loadOrder(
        for roots: [String],
        info: (String) throws(QEMUGuestError) -> KernelModuleInfo
    ) throws(QEMUGuestError) -> [KernelModuleInfo] {
        var ordered: [KernelModuleInfo] = []
        var done: Set<String> = []
        var inProgress: [String] = []
        func visit(_ rawName: String) throws(QEMUGuestError) {
            let name = canonicalName(rawName)
            if done.contains(name) { return }
            if inProgress.contains(name) {
                throw QEMUGuestError(.kernelModule, "module dependency cycle: \((inProgress + [name]).joined(separator: " → "))")
            }
            inProgress.append(name)
            let module = try info(name)
            for dependency in module.dependencies { try visit(dependency) }
            inProgress.removeLast()
            done.insert(name)
            ordered.append(module)
        }
        for root in roots { try visit(root) }
        return ordered
    }
}
