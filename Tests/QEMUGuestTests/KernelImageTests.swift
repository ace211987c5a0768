import Foundation
import Testing
@testable import QEMUGuest

struct KernelImageTests {
    /// A minimal ELF64 file with one PT_NOTE program header holding one note.
    static func elf(noteName: [UInt8], noteType: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 64 + 56)
        func put(_ value: Int, at offset: Int, width: Int) {
            for index in 0..<width { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        bytes[0...5] = [0x7f, 0x45, 0x4c, 0x46, 2, 1]
        put(64, at: 0x20, width: 8)   // e_phoff
        put(56, at: 0x36, width: 2)   // e_phentsize
        put(1, at: 0x38, width: 2)    // e_phnum
        let noteOffset = bytes.count
        var note = [UInt8](repeating: 0, count: 12)
        note[0] = UInt8(noteName.count); note[4] = 4; note[8] = UInt8(noteType)
        note += noteName + [UInt8](repeating: 0, count: (4 - noteName.count % 4) % 4) + [0, 0, 0, 1]
        put(4, at: 64, width: 4)                  // p_type PT_NOTE
        put(noteOffset, at: 64 + 8, width: 8)     // p_offset
        put(note.count, at: 64 + 32, width: 8)    // p_filesz
        return bytes + note
    }

    /// A fake bzImage: a boot header pointing at `payload`, followed by 4 size bytes as the build appends.
    static func bzImage(payload: [UInt8]) -> [UInt8] {
        var image = [UInt8](repeating: 0, count: 2 * 512)
        func put(_ value: Int, at offset: Int, width: Int) {
            for index in 0..<width { image[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(1, at: 0x1f1, width: 1)             // setup_sects: protected-mode code at 1024
        put(0x5372_6448, at: 0x202, width: 4)   // "HdrS"
        put(0x020f, at: 0x206, width: 2)        // protocol 2.15
        put(16, at: 0x248, width: 4)            // payload_offset
        put(payload.count, at: 0x24c, width: 4) // payload_length
        return image + [UInt8](repeating: 0xaa, count: 16) + payload + [1, 2, 3, 4]
    }

    @Test("the xz payload of a bzImage is unpacked to the ELF inside, and its PVH note is found")
    func extractsXZ() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kernel-image-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let elf = Self.elf(noteName: Array("Xen".utf8) + [0], noteType: 18)
        _ = FileManager.default.createFile(atPath: directory + "/elf", contents: Data(elf))
        try HostTool.run(["xz", "--keep", "--check=crc32", directory + "/elf"], package: "xz-utils")
        let payload = try #require(FileManager.default.contents(atPath: directory + "/elf.xz").map { [UInt8]($0) })
        let extracted = try KernelImage.extractELF(fromBzImage: Self.bzImage(payload: payload), scratchDirectory: directory)
        #expect(extracted == elf)
        #expect(KernelImage.isPVHBootable(elf: extracted))
    }

    @Test("an ELF without the Xen PVH note, or with another note, is not PVH-bootable")
    func noPVHNote() {
        #expect(!KernelImage.isPVHBootable(elf: Self.elf(noteName: Array("GNU".utf8) + [0], noteType: 18)))
        #expect(!KernelImage.isPVHBootable(elf: Self.elf(noteName: Array("Xen".utf8) + [0], noteType: 17)))
        #expect(!KernelImage.isPVHBootable(elf: Array("not an elf at all, just some text".utf8)))
    }

    @Test("a file without a boot header is refused, not guessed at")
    func refusesNonBzImage() {
        #expect(throws: QEMUGuestError.self) {
            try KernelImage.extractELF(fromBzImage: [UInt8](repeating: 0, count: 4096), scratchDirectory: "/tmp")
        }
    }
}
