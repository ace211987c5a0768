import Foundation
import VMAgentProtocol

/// The host end of one guest's agent port: a socket whose peer QEMU holds (virtserialport).
///
/// A dedicated thread reads frames (blocking reads never run on Swift's cooperative pool) and
/// hands them to the one request in flight. When the socket reaches end of file — QEMU exited,
/// the guest panicked, destroy killed it — every waiting and later request fails with `guestGone`.
final class AgentConnection: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var waiter: Waiter?
    private var pending: [AgentFrame] = []
    private var closedReason: String?
    private let gate = AsyncGate()

    private struct Waiter {
        var id: UInt64
        var onFrame: (AgentFrame) -> Bool
        var continuation: CheckedContinuation<Void, any Error>
    }
    private var nextWaiterID: UInt64 = 0

    /// Takes ownership of `fd`.
    init(fd: Int32) {
        self.fd = fd
        let thread = Thread { [self] in readLoop() }
        thread.name = "vm-agent-reader"
        thread.start()
    }

    /// Why the connection ended, nil while open.
    var closed: String? { lock.withLock { closedReason } }

    /// Sends `frame` (if any) and feeds every reply to `onFrame` until it returns true.
    /// Fails with `guestGone` when the guest goes away, with `bootTimedOut`/`guestGone` when
    /// `timeout` passes first (the caller then kills the VM).
    func request(_ frame: AgentFrame?, timeout: Double, onFrame: @escaping (AgentFrame) -> Bool) async throws {
        await gate.enter()
        defer { Task { await gate.leave() } }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let id: UInt64 = lock.withLock {
                nextWaiterID += 1
                return nextWaiterID
            }
            lock.lock()
            if let reason = closedReason {
                lock.unlock()
                continuation.resume(throwing: VMSandboxError(.guestGone, reason))
                return
            }
            // Frames that arrived before anyone waited (the hello) are delivered first.
            var finished = false
            while !pending.isEmpty, !finished { finished = onFrame(pending.removeFirst()) }
            if finished {
                lock.unlock()
                continuation.resume()
                return
            }
            waiter = Waiter(id: id, onFrame: onFrame, continuation: continuation)
            lock.unlock()
            if let frame, !send(frame) {
                fail(id, VMSandboxError(.guestGone, "write to the agent socket: \(String(cString: strerror(errno)))"))
                return
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [self] in
                fail(id, VMSandboxError(.bootTimedOut, "no answer from the guest agent within \(Int(timeout)) s"))
            }
        }
    }

    private func fail(_ id: UInt64, _ error: VMSandboxError) {
        let waiting: Waiter? = lock.withLock {
            guard let current = waiter, current.id == id else { return nil }
            waiter = nil
            return current
        }
        waiting?.continuation.resume(throwing: error)
    }

    private func send(_ frame: AgentFrame) -> Bool {
        let bytes = frame.encoded()
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written > 0 { offset += written; continue }
            if written < 0, errno == EINTR { continue }
            return false
        }
        return true
    }

    /// Shuts the socket down; the reader thread then closes it.
    func shutdown() {
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    private func readLoop() {
        var decoder = AgentFrameDecoder()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var reason = "the guest closed the agent connection (QEMU exited)"
        loop: while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 {
                if count < 0 { reason = "read from the agent socket: \(String(cString: strerror(errno)))" }
                break
            }
            decoder.append(buffer[0..<count])
            do {
                while let frame = try decoder.next() {
                    guard deliver(frame) else {
                        reason = "protocol violation from the guest: more than \(Self.pendingLimit) frames or \(Self.pendingByteLimit) bytes that no request asked for"
                        break loop
                    }
                }
            } catch {
                reason = "protocol violation from the guest: \(error)"
                break loop
            }
        }
        let waiting: Waiter? = lock.withLock {
            closedReason = reason
            defer { waiter = nil }
            return waiter
        }
        close(fd)
        waiting?.continuation.resume(throwing: VMSandboxError(.guestGone, reason))
    }

    /// Frames kept while no request waits: the hello, the answer to a boot spec. A guest that
    /// sends more than this unasked is hostile or broken, and its connection ends.
    static let pendingLimit = 8
    static let pendingByteLimit = 1 << 20

    /// False when the frame was unasked for and the pending limits are exceeded.
    private func deliver(_ frame: AgentFrame) -> Bool {
        lock.lock()
        guard let current = waiter else {
            pending.append(frame)
            let withinLimits = pending.count <= Self.pendingLimit && pending.reduce(0, { $0 + $1.payload.count }) <= Self.pendingByteLimit
            lock.unlock()
            return withinLimits
        }
        let done = current.onFrame(frame)
        if done { waiter = nil }
        lock.unlock()
        if done { current.continuation.resume() }
        return true
    }
}

/// One request at a time per guest, in arrival order.
actor AsyncGate {
    private var busy = false
    private var queue: [CheckedContinuation<Void, Never>] = []

    func enter() async {
        if !busy { busy = true; return }
        await withCheckedContinuation { queue.append($0) }
    }

    func leave() {
        if queue.isEmpty { busy = false } else { queue.removeFirst().resume() }
    }
}
