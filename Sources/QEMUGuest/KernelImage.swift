import Foundation

/// Turns a compressed x86 kernel (`bzImage`, Debian's `vmlinuz`) into the uncompressed ELF
/// `vmlinux` inside it, which QEMU starts through its PVH entry point.
///
/// Under TCG, the kernel decompressing itself (xz, ~8 MB → ~65 MB) and the real-mode setup
/// take most of a boot: measured here, booting `vmlinux` reached the first command in 5.6 s
/// where the same kernel as `vmlinuz` took 11–17 s. This works only when the kernel has a
/// PVH entry (`CONFIG_PVH`, set in Debian's); `isPVHBootable` checks that first.
public enum KernelImage {
    /// Extracts the ELF kernel from a bzImage.
    ///
    /// The payload's place comes from the boot protocol header (`setup_sects`, `payload_offset`,
    /// `payload_length`, protocol 2.08 and later); xz and gzip payloads are unpacked with the
    /// `xz` and `gzip` programs.
    /// - Parameters:
    ///   - bzImage: the compressed kernel's bytes.
    ///   - scratchDirectory: a writable directory for the payload while it is unpacked.
    /// - Returns: the ELF file's bytes.
    public static func extractELF(fromBzImage bzImage: [UInt8], scratchDirectory: String) throws(QEMUGuestError) -> [UInt8] {
        func fail(_ why: String) -> QEMUGuestError { QEMUGuestError(.kernelPackage, "cannot unpack the kernel image: \(why)") }
        func read(_ offset: Int, _ width: Int) throws(QEMUGuestError) -> Int {
            guard offset >= 0, offset + width <= bzImage.count else { throw fail("truncated header") }
            var value = 0
            for index in (0..<width).reversed() { value = value << 8 | Int(bzImage[offset + index]) }
            return value
        }
        // "HdrS" at 0x202 marks the boot protocol header.
        guard try read(0x202, 4) == 0x5372_6448 else { throw fail("no bzImage boot header") }
        guard try read(0x206, 2) >= 0x0208 else { throw fail("boot protocol older than 2.08 (no payload fields)") }
        var setupSectors = try read(0x1f1, 1)
        if setupSectors == 0 { setupSectors = 4 }
        let payloadStart = (setupSectors + 1) * 512 + (try read(0x248, 4))
        let payloadLength = try read(0x24c, 4)
        guard payloadLength > 0, payloadStart + payloadLength <= bzImage.count else { throw fail("payload outside the file") }
        let payload = Array(bzImage[payloadStart..<payloadStart + payloadLength])

        let tool: [String]
        let package: String
        if payload.starts(with: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
            // The build appends the uncompressed size after the stream; --single-stream ignores it.
            tool = ["xz", "--decompress", "--stdout", "--single-stream"]
            package = "xz-utils"
        } else if payload.starts(with: [0x1f, 0x8b]) {
            tool = ["gzip", "--decompress", "--stdout", "--quiet"]
            package = "gzip"
        } else {
            throw fail("payload compression not supported (first bytes \(payload.prefix(4).map { String($0, radix: 16) }))")
        }
        let payloadPath = scratchDirectory + "/kernel-payload"
        let elfPath = scratchDirectory + "/kernel-payload.elf"
        defer {
            unlink(payloadPath)
            unlink(elfPath)
        }
        guard FileManager.default.createFile(atPath: payloadPath, contents: Data(payload)) else {
            throw QEMUGuestError(.io, "cannot write \(payloadPath)")
        }
        let quoted = (tool + [payloadPath]).map { "'" + $0 + "'" }.joined(separator: " ")
        // gzip exits 2 for the trailing size ("trailing garbage ignored"); the ELF check below
        // decides whether the output is whole.
        try HostTool.run(["/bin/sh", "-c", "\(quoted) > '\(elfPath)'; test -s '\(elfPath)'"], package: package)
        guard let elf = FileManager.default.contents(atPath: elfPath).map({ [UInt8]($0) }) else {
            throw QEMUGuestError(.io, "cannot read \(elfPath)")
        }
        guard elf.count > 64, elf.starts(with: [0x7f, 0x45, 0x4c, 0x46]) else { throw fail("the payload is not an ELF file") }
        return elf
    }

    /// True when an ELF64 kernel carries the Xen PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`),
    /// which is what QEMU's `-kernel` needs to start an uncompressed ELF kernel.
    public static func isPVHBootable(elf: [UInt8]) -> Bool {
        func read(_ offset: Int, _ width: Int) -> Int? {
            guard offset >= 0, offset + width <= elf.count else { return nil }
            var value = 0
            for index in (0..<width).reversed() { value = value << 8 | Int(elf[offset + index]) }
            return value
        }
        guard elf.count > 64, elf.starts(with: [0x7f, 0x45, 0x4c, 0x46]), elf[4] == 2, elf[5] == 1,
              let table = read(0x20, 8), let entrySize = read(0x36, 2), let count = read(0x38, 2)
        else { return false }
        let physicalEntryNote = 18
        for index in 0..<count {
            let header = table + index * entrySize
            guard read(header, 4) == 4, var offset = read(header + 8, 8), let size = read(header + 32, 8) else { continue }
            let end = offset + size
            while offset + 12 <= end {
                guard let nameSize = read(offset, 4), let descriptorSize = read(offset + 4, 4), let type = read(offset + 8, 4) else { break }
                let name = offset + 12
                if type == physicalEntryNote, nameSize == 4, name + 4 <= elf.count,
                   Array(elf[name..<name + 4]) == [0x58, 0x65, 0x6e, 0x00] {  // "Xen\0"
                    return true
                }
                offset = name + (nameSize + 3) / 4 * 4 + (descriptorSize + 3) / 4 * 4
            }
        }
        return false
    }
}
