#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// User names for peer uids. `getpwuid_r` may block on NSS, so it runs on a private queue, never
/// on the cooperative pool; answers are cached for the daemon's life.
actor UserDirectory {
    private var cache: [UInt32: String] = [:]
    private let queue = DispatchQueue(label: "sandboxd.user-directory")

    /// The account name of `uid`, or `uid-<n>` when the user database has none.
    func name(of uid: UInt32) async -> String {
        if let cached = cache[uid] { return cached }
        let name = await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            queue.async { continuation.resume(returning: Self.lookup(uid)) }
        }
        cache[uid] = name
        return name
    }

    private static func lookup(_ uid: UInt32) -> String {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let status = getpwuid_r(uid, &entry, &buffer, buffer.count, &result)
        guard status == 0, result != nil, let name = entry.pw_name else { return "uid-\(uid)" }
        // users.username is VARCHAR(50).
        return String(String(cString: name).prefix(50))
    }
}
