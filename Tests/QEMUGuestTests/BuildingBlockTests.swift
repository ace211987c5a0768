import Foundation
import Testing
@testable import QEMUGuest

struct CPIOArchiveTests {
    @Test("the archive is newc that GNU cpio lists and unpacks byte for byte")
    func readableByCpio() throws {
        guard let cpio = HostTool.find("cpio") else {
            Issue.record("cpio is not installed (Debian package cpio, in APT_TEST)")
            return
        }
        var archive = CPIOArchive()
        try archive.addDirectory("bin")
        try archive.addFile("bin/tool", contents: Array("#!/bin/sh\necho hi\n".utf8), mode: 0o755)
        try archive.addFile("odd-size", contents: [1, 2, 3])
        try archive.addSymlink("bin/link", target: "tool")
        let bytes = archive.finished()
        #expect(bytes.count % 4 == 0)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cpio-test-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let archivePath = directory + "/a.cpio"
        _ = FileManager.default.createFile(atPath: archivePath, contents: Data(bytes))
        let listing = try HostTool.run(["/bin/sh", "-c", "\(cpio) -it --quiet < a.cpio"], package: "cpio", directory: directory)
        #expect(listing.standardOutput.split(separator: "\n") == ["bin", "bin/tool", "odd-size", "bin/link"])
        try FileManager.default.createDirectory(atPath: directory + "/out", withIntermediateDirectories: true)
        try HostTool.run(["/bin/sh", "-c", "\(cpio) -id --quiet < ../a.cpio"], package: "cpio", directory: directory + "/out")
        #expect(FileManager.default.contents(atPath: directory + "/out/bin/tool") == Data("#!/bin/sh\necho hi\n".utf8))
        #expect(FileManager.default.contents(atPath: directory + "/out/odd-size") == Data([1, 2, 3]))
        #expect(FileManager.default.isExecutableFile(atPath: directory + "/out/bin/tool"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: directory + "/out/bin/link") == "tool")
    }

    @Test("the same entries always give the same bytes")
    func deterministic() throws {
        func make() throws -> [UInt8] {
            var archive = CPIOArchive()
            try archive.addFile("init", contents: Array("x".utf8), mode: 0o755)
            return archive.finished()
        }
        #expect(try make() == make())
    }

    @Test("names that escape the archive root are refused", arguments: ["", "/", "../etc/passwd", "a/../../b"])
    func refusesBadNames(name: String) {
        var archive = CPIOArchive()
        #expect(throws: QEMUGuestError.self) { try archive.addFile(name, contents: []) }
    }
}

struct KernelModuleTests {
    /// A minimal ELF64 little-endian file with a section-name table and a `.modinfo` section.
    static func moduleELF(modinfo: [String]) -> [UInt8] {
        let names: [UInt8] = [0] + Array(".shstrtab".utf8) + [0] + Array(".modinfo".utf8) + [0]
        let info: [UInt8] = modinfo.flatMap { (entry: String) -> [UInt8] in Array(entry.utf8) + [0] }
        let namesOffset = 64, infoOffset = namesOffset + names.count
        let sectionTable = (infoOffset + info.count + 7) / 8 * 8
        var elf = [UInt8](repeating: 0, count: sectionTable + 3 * 64)
        func put(_ value: Int, at offset: Int, width: Int) {
            for index in 0..<width { elf[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        elf[0...5] = [0x7f, 0x45, 0x4c, 0x46, 2, 1]
        put(sectionTable, at: 0x28, width: 8)
        put(64, at: 0x3a, width: 2)
        put(3, at: 0x3c, width: 2)
        put(1, at: 0x3e, width: 2)
        elf.replaceSubrange(namesOffset..<namesOffset + names.count, with: names)
        elf.replaceSubrange(infoOffset..<infoOffset + info.count, with: info)
        // Section 1: .shstrtab (name at 1), section 2: .modinfo (name at 11).
        put(1, at: sectionTable + 64, width: 4); put(namesOffset, at: sectionTable + 64 + 0x18, width: 8); put(names.count, at: sectionTable + 64 + 0x20, width: 8)
        put(11, at: sectionTable + 128, width: 4); put(infoOffset, at: sectionTable + 128 + 0x18, width: 8); put(info.count, at: sectionTable + 128 + 0x20, width: 8)
        return elf
    }

    @Test("name, dependencies and vermagic are read from .modinfo")
    func readsModinfo() throws {
        let elf = Self.moduleELF(modinfo: ["license=GPL", "depends=virtio,virtio_ring,virtio-pci-modern-dev", "name=virtio_pci", "vermagic=6.1.0-56-amd64 SMP"])
        let info = try KernelModuleInfo(elf: elf, fileName: "kernel/drivers/virtio/virtio_pci.ko")
        #expect(info.name == "virtio_pci")
        #expect(info.dependencies == ["virtio", "virtio_ring", "virtio_pci_modern_dev"])
        #expect(info.vermagic == "6.1.0-56-amd64 SMP")
    }

    @Test("a module without dependencies and without name= is named after its file")
    func nameFromFile() throws {
        let info = try KernelModuleInfo(elf: Self.moduleELF(modinfo: ["depends="]), fileName: "kernel/net/9p/9pnet-virtio.ko")
        #expect(info.name == "9pnet_virtio")
        #expect(info.dependencies.isEmpty)
    }

    @Test("compressed or truncated modules are refused with the file named")
    func refusesGarbage() {
        #expect(throws: QEMUGuestError.self) { try KernelModuleInfo(elf: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0], fileName: "x.ko.xz") }
        let truncated = Array(Self.moduleELF(modinfo: ["depends="]).prefix(100))
        do {
            _ = try KernelModuleInfo(elf: truncated, fileName: "cut.ko")
            Issue.record("a truncated module was accepted")
        } catch {
            #expect(error.message.contains("cut.ko"))
        }
    }

    @Test("load order puts every dependency first, each module once")
    func loadOrder() throws {
        let graph: [String: [String]] = [
            "9p": ["9pnet", "netfs", "fscache"], "fscache": ["netfs"], "netfs": [], "9pnet": [],
            "9pnet_virtio": ["9pnet", "virtio", "virtio_ring"], "virtio": [], "virtio_ring": [],
            "virtio_pci": ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_ring"],
            "virtio_pci_modern_dev": [], "virtio_pci_legacy_dev": [],
        ]
        let order = try KernelModuleInfo.loadOrder(for: ["virtio_pci", "9pnet_virtio", "9p"]) { (name) throws(QEMUGuestError) in
            guard let deps = graph[name] else { throw QEMUGuestError(.kernelModule, "no \(name)") }
            return KernelModuleInfo(name: name, dependencies: deps, vermagic: nil)
        }.map(\.name)
        #expect(Set(order) == Set(graph.keys))
        #expect(order.count == graph.count)
        for (module, deps) in graph {
            for dep in deps { #expect(order.firstIndex(of: dep)! < order.firstIndex(of: module)!, "\(dep) before \(module)") }
        }
    }

    @Test("a dependency cycle is reported, not looped on")
    func cycle() {
        #expect(throws: QEMUGuestError.self) {
            try KernelModuleInfo.loadOrder(for: ["a"]) { (name) throws(QEMUGuestError) in
                KernelModuleInfo(name: name, dependencies: name == "a" ? ["b"] : ["a"], vermagic: nil)
            }
        }
    }
}

struct QEMUMachineTests {
    @Test("the command line carries the throwaway-guest defaults and the shares")
    func arguments() throws {
        var machine = QEMUMachine(kernel: "/k/vmlinuz", initrd: "/k/initrd", kernelArguments: ["console=ttyS0", "panic=-1"])
        machine.shares = [.init(hostPath: "/odd,path", tag: "hostroot")]
        machine.serialFiles = ["/run/console.log"]
        let arguments = try machine.arguments()
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] { #expect(arguments.contains(flag)) }
        let pairs = Dictionary(zip(arguments, arguments.dropFirst()), uniquingKeysWith: { first, _ in first })
        #expect(pairs["-accel"] == "tcg")
        #expect(pairs["-nic"] == "none")
        #expect(pairs["-m"] == "1024")
        #expect(pairs["-smp"] == "2")
        #expect(pairs["-cpu"] == "max")
        #expect(pairs["-append"] == "console=ttyS0 panic=-1")
        #expect(pairs["-virtfs"] == "local,path=/odd,,path,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        #expect(pairs["-serial"] == "file:/run/console.log")
    }

    @Test("kernel arguments with spaces and tiny machines are refused")
    func refuses() {
        var machine = QEMUMachine(kernel: "/k", initrd: nil, kernelArguments: ["a b"])
        #expect(throws: QEMUGuestError.self) { try machine.arguments() }
        machine.kernelArguments = ["quiet"]
        machine.memoryMiB = 16
        #expect(throws: QEMUGuestError.self) { try machine.arguments() }
    }
}

struct BuildCacheTests {
    func temporaryRoot() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("build-cache-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("a key is built once; the next call finds it; a new key replaces the old build")
    func buildsOnce() throws {
        let root = try temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = BuildCache(root: root)
        var builds = 0
        let build: (String) throws(QEMUGuestError) -> Void = { directory in
            builds += 1
            _ = FileManager.default.createFile(atPath: directory + "/artefact", contents: Data("v".utf8))
        }
        let first = try cache.directory(kind: "image", key: "aaa", build: build)
        let second = try cache.directory(kind: "image", key: "aaa", build: build)
        #expect(first.built && !second.built && builds == 1)
        #expect(first.path == root + "/image/aaa")
        #expect(FileManager.default.fileExists(atPath: first.path + "/artefact"))
        let third = try cache.directory(kind: "image", key: "bbb", build: build)
        #expect(third.built && builds == 2)
        #expect(!FileManager.default.fileExists(atPath: first.path), "the old key's build is pruned")
    }

    @Test("a build that throws leaves nothing that passes for complete")
    func failedBuild() throws {
        let root = try temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = BuildCache(root: root)
        #expect(throws: QEMUGuestError.self) {
            try cache.directory(kind: "image", key: "k") { (directory) throws(QEMUGuestError) in
                _ = FileManager.default.createFile(atPath: directory + "/half", contents: Data())
                throw QEMUGuestError(.io, "disk full")
            }
        }
        let entries = try FileManager.default.contentsOfDirectory(atPath: root + "/image").filter { $0 != ".lock" }
        #expect(entries.isEmpty, "\(entries)")
        let retry = try cache.directory(kind: "image", key: "k") { _ in }
        #expect(retry.built)
    }
}
