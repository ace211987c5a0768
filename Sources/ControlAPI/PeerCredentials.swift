#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// `struct ucred` as `getsockopt(SO_PEERCRED)` fills it: pid, uid, gid (three 32-bit fields).
struct PeerCredentials: Sendable, Hashable {
    var pid: Int32 = 0
    var uid: UInt32 = UInt32.max
    var gid: UInt32 = UInt32.max
}

/// Room for the peer's supplementary groups from `getsockopt(SO_PEERGROUPS)` (Linux ≥ 4.13).
/// A peer with more groups than this fails the read with `ERANGE` and is judged on its primary gid.
struct PeerGroups: Sendable {
    typealias Storage = (
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    var storage: Storage = (
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    /// True when `gid` is among the groups read. Unused slots are 0, so gid 0 is never looked up here.
    func contains(_ gid: UInt32) -> Bool {
        guard gid != 0 else { return false }
        return withUnsafeBytes(of: storage) { raw in raw.bindMemory(to: UInt32.self).contains(gid) }
    }
}

/// Linux option numbers (asm-generic/socket.h); Glibc's module does not export them to Swift.
private let soPeerCred: Int32 = 17
private let soPeerGroups: Int32 = 59

extension Channel {
    /// The connecting process's credentials as the kernel recorded them at `connect()`.
    /// Fails closed: a channel whose credentials cannot be read gets no caller.
    func readCaller(adminGroup: UInt32?) -> EventLoopFuture<Caller> {
        guard let provider = self as? any SocketOptionProvider else {
            return eventLoop.makeFailedFuture(APIError(.forbidden, "peer credentials are not available on this connection"))
        }
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(soPeerCred))
        return credentials.flatMap { credentials -> EventLoopFuture<Caller> in
            guard credentials.uid != UInt32.max else {
                return self.eventLoop.makeFailedFuture(APIError(.forbidden, "peer credentials are not available on this connection"))
            }
            let isRoot = credentials.uid == 0
            guard !isRoot, let adminGroup else {
                return self.eventLoop.makeSucceededFuture(
                    Caller(uid: credentials.uid, gid: credentials.gid, pid: credentials.pid, isAdmin: isRoot))
            }
            let isAdmin = credentials.gid == adminGroup
            let groups: EventLoopFuture<PeerGroups> = provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(soPeerGroups))
            return groups.map { groups in
                Caller(uid: credentials.uid, gid: credentials.gid, pid: credentials.pid,
                       isAdmin: isAdmin || groups.contains(adminGroup))
            }.flatMapErrorThrowing { _ in
                Caller(uid: credentials.uid, gid: credentials.gid, pid: credentials.pid, isAdmin: isAdmin)
            }
        }
    }
}
