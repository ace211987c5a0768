import CLinuxSandbox
import SystemPackage
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Thin wrappers that retry EINTR and throw errors naming the call and the object.
enum Sys {
    static var errno: Int32 { Glibc.errno }

    @discardableResult
    static func check(_ call: String, _ object: String? = nil, _ body: () -> Int32) throws(LinuxSandboxError) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw .system(call, object, e)
        }
    }

    /// Reads a whole small file (cgroup and proc files).
    static func readFile(_ path: String, limit: Int = 1 << 20) throws(LinuxSandboxError) -> String {
        let fd = try check("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw .system("read", path, Glibc.errno)
            }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes `text` to an existing file in one write (cgroup control files need that).
    static func writeFile(_ path: String, _ text: String) throws(LinuxSandboxError) {
        let fd = try check("open", path) { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        var utf8 = Array(text.utf8)
        let n = try check("write", "\(path) ← \(text)") {
            Int32(truncatingIfNeeded: utf8.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) })
        }
        if Int(n) != utf8.count { throw .system("write", path, EIO) }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func monotonicNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Entries of a directory, without `.` and `..`.
    static func listDirectory(_ path: String) -> [(name: String, isDirectory: Bool)] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var result: [(String, Bool)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            result.append((name, entry.pointee.d_type == UInt8(DT_DIR)))
        }
        return result
    }
}

/// Owns C memory handed to the child: strings and arrays live until the arena is released
/// (right after clone returns, or the spawner has its copy).
///
/// Everything lies in one block, reserved at `capacity` and touched only as used, so a create
/// request goes to the spawner as it is. Allocations past the capacity come from malloc
/// (`isContiguous` turns false); only direct clones can use such an arena.
final class CArena {
    /// The spawner's request limit.
    static let capacity = Int(SBX_SPAWNER_MAX_REQUEST)

    /// Start of the block (nil: no block could be reserved; everything comes from malloc).
    let base: UnsafeMutableRawPointer?
    /// Bytes of the block in use.
    private(set) var used = 0
    /// Bytes reserved for the block.
    let reserved: Int
    private var overflow: [UnsafeMutableRawPointer] = []

    var isContiguous: Bool { base != nil && overflow.isEmpty }

    init() {
        if let spare = Self.spareBlocks.withLock({ $0.popLast() }) {
            base = UnsafeMutableRawPointer(bitPattern: spare.address)
            reserved = spare.size
            return
        }
        // Address space only (pages are touched as used); where overcommit is strict and even
        // 1 MiB cannot be had, the arena still works for direct clones.
        var block: UnsafeMutableRawPointer?
        var size = 0
        for candidate in [Self.capacity, 1 << 20] {
            let p = mmap(nil, candidate, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            if let p, p != MAP_FAILED { block = p; size = candidate; break }
        }
        base = block
        reserved = size
    }

    deinit {
        for p in overflow { free(p) }
        guard let base else { return }
        // Kept for the next launch: mapping a block, faulting in its first pages and unmapping
        // it (a TLB shootdown across the daemon's threads) cost every launch. Pages past the
        // first `keptBytes` go back to the kernel, so a rare big request does not stay resident.
        if used > Self.keptBytes {
            _ = madvise(base + Self.keptBytes, reserved - Self.keptBytes, MADV_DONTNEED)
        }
        let kept = Self.spareBlocks.withLock { spares in
            guard spares.count < Self.maximumSpares else { return false }
            spares.append((UInt(bitPattern: base), reserved))
            return true
        }
        if !kept { munmap(base, reserved) }
    }

    /// Blocks of finished arenas, ready for reuse (addresses; only one arena owns a block).
    private static let spareBlocks = Mutex<[(address: UInt, size: Int)]>([])
    /// Spare blocks kept at most (more launches at once than this map their own).
    private static let maximumSpares = 16
    /// Bytes of a spare block left resident (a typical launch uses a few KiB).
    private static let keptBytes = 64 * 1024

    /// Uninitialized memory for `bytes` bytes at a multiple of `alignment` (≤ 16).
    func allocate(_ bytes: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let size = max(1, bytes)
        let offset = (used + alignment - 1) & ~(alignment - 1)
        if let base, offset + size <= reserved {
            // A reused block holds an earlier request's bytes: no stale byte goes out as padding.
            if offset > used { (base + used).initializeMemory(as: UInt8.self, repeating: 0, count: offset - used) }
            used = offset + size
            return base + offset
        }
        let p = malloc(size)!
        overflow.append(p)
        return p
    }

    func string(_ s: String) -> UnsafePointer<CChar> {
        var s = s
        return s.withUTF8 { utf8 in
            let p = allocate(utf8.count + 1, alignment: 1)
            if let source = utf8.baseAddress { p.copyMemory(from: source, byteCount: utf8.count) }
            p.storeBytes(of: 0, toByteOffset: utf8.count, as: UInt8.self)
            return UnsafePointer(p.assumingMemoryBound(to: CChar.self))
        }
    }

    func optionalString(_ s: String?) -> UnsafePointer<CChar>? { s.map { string($0) } }

    func array<T>(_ items: [T]) -> UnsafeMutablePointer<T> {
        let raw = allocate(max(1, items.count) * MemoryLayout<T>.stride, alignment: max(8, MemoryLayout<T>.alignment))
        let p = raw.bindMemory(to: T.self, capacity: max(1, items.count))
        for (i, item) in items.enumerated() { (p + i).initialize(to: item) }
        return p
    }

    /// A NULL-terminated `char *const *` array (argv, envp).
    func stringArray(_ items: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let pointers: [UnsafeMutablePointer<CChar>?] = items.map { UnsafeMutablePointer(mutating: string($0)) } + [nil]
        return array(pointers)
    }

    func bytes(_ data: [UInt8]) -> UnsafePointer<CChar> {
        let raw = allocate(data.count, alignment: 1)
        data.withUnsafeBytes { if let source = $0.baseAddress { raw.copyMemory(from: source, byteCount: data.count) } }
        return UnsafePointer(raw.assumingMemoryBound(to: CChar.self))
    }

    /// A copy of a seccomp program (the `sock_fprog` and its filter) inside the arena.
    func program(_ source: UnsafePointer<sock_fprog>) -> UnsafePointer<sock_fprog> {
        let count = Int(source.pointee.len)
        let filter = allocate(count * MemoryLayout<sock_filter>.stride, alignment: 8)
        filter.copyMemory(from: source.pointee.filter, byteCount: count * MemoryLayout<sock_filter>.stride)
        var copy = source.pointee
        copy.filter = filter.assumingMemoryBound(to: sock_filter.self)
        return UnsafePointer(array([copy]))
    }
}

/// Runs blocking work on one of the engine's own threads (`BlockingThreads`), never on the
/// cooperative pool; it starts at once, whatever else is blocked.
func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        BlockingThreads.shared.submit { continuation.resume(returning: body()) }
    }
}
