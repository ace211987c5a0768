import Foundation
import ProcessSpawn

/// One running `qemu-system-x86_64`, started by this process and ended only through its own pid.
///
/// Not thread-safe: one owner starts, polls and kills it (the guest harness does so from a
/// dedicated thread). `deinit` kills and reaps a QEMU that is still running, so an owner that
/// throws halfway cannot leak a guest.
public final class QEMUProcess {
    /// How QEMU ended.
    public enum Termination: Hashable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): "exited with status \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// The process id of the QEMU this object started.
    public let pid: pid_t
    /// Where QEMU's own stdout and stderr went (its errors, not the guest's console).
    public let logPath: String
    /// How QEMU ended, once it has been reaped.
    public private(set) var termination: Termination?

    /// The path of `qemu-system-x86_64`, or an error naming the package to install.
    public static func findExecutable() throws(QEMUGuestError) -> String {
        guard let path = HostTool.find("qemu-system-x86_64") else {
            throw QEMUGuestError(.toolFailed, "qemu-system-x86_64 not found: install the Debian package qemu-system-x86 (make test-deps)")
        }
        return path
    }

    /// Starts QEMU for `machine`; stdin is `/dev/null`, stdout and stderr go to `logPath`.
    public init(machine: QEMUMachine, logPath: String, executable: String? = nil) throws(QEMUGuestError) {
        let program: String
        if let executable { program = executable } else { program = try Self.findExecutable() }
        let argv = [program] + (try machine.arguments())
        self.logPath = logPath

        // One open file description for both streams, so their lines interleave instead of overwriting.
        let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard log >= 0 else { throw QEMUGuestError(.qemu, "open(\(logPath)): \(String(cString: strerror(errno)))") }
        defer { close(log) }
        var command = SpawnCommand(argv)
        command.standardOutput = .descriptor(log)
        command.standardError = .descriptor(log)
        do {
            self.pid = try command.spawn()
        } catch {
            throw QEMUGuestError(.qemu, error.message)
        }
    }

    /// Reaps QEMU if it has ended, without waiting.
    @discardableResult
    public func poll() -> Termination? {
        if let termination { return termination }
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { termination = Self.decode(status) }
        return termination
    }

    /// Waits for QEMU to end, for at most `seconds`; nil when it is still running then.
    public func wait(atMost seconds: Double) -> Termination? {
        let deadline = Date().addingTimeInterval(seconds)
        while poll() == nil, Date() < deadline { usleep(20_000) }
        return termination
    }

    /// Sends SIGKILL to this QEMU (and nothing else) and reaps it.
    public func kill() {
        guard poll() == nil else { return }
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, 0)
            if result == pid { termination = Self.decode(status); return }
            if result < 0, errno != EINTR { return }
        }
    }

    /// The last `maxBytes` of QEMU's own output (its error messages).
    public func logTail(maxBytes: Int = 4096) -> String {
        guard let data = FileManager.default.contents(atPath: logPath) else { return "" }
        return String(decoding: data.suffix(maxBytes), as: UTF8.self)
    }

    deinit { kill() }

    private static func decode(_ status: Int32) -> Termination {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }
}
