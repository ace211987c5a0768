import Foundation
import ProcessSpawn
import QEMUGuest

/// How level-3 guests run here, and why (`sandboxctl info`).
public struct AcceleratorChoice: Sendable, Hashable, CustomStringConvertible {
    public var accelerator: QEMUMachine.Accelerator
    public var reason: String

    public init(_ accelerator: QEMUMachine.Accelerator, reason: String) {
        self.accelerator = accelerator
        self.reason = reason
    }

    public var description: String { "\(accelerator.rawValue): \(reason)" }

    /// Which accelerator to use.
    public enum Preference: String, Sendable, Hashable {
        /// KVM when the probe shows it works, else TCG.
        case auto
        /// Always software emulation.
        case tcg
        /// KVM, failing when it does not work.
        case kvm
    }

    /// Decides by running a 16-byte guest under KVM in a time-boxed QEMU: it writes 0x2a to an
    /// `isa-debug-exit` port, so QEMU exits with (0x2a << 1) | 1 = 85 only if guest code really
    /// ran. On nested hosts `/dev/kvm` can exist and still hang; the probe is killed after
    /// `timeout` seconds and TCG is used. Blocking.
    public static func probe(_ preference: Preference, scratchDirectory: String, timeout: Double = 5) -> AcceleratorChoice {
        switch preference {
        case .tcg: return AcceleratorChoice(.tcg, reason: "configured")
        case .auto, .kvm: break
        }
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            return AcceleratorChoice(.tcg, reason: "open(/dev/kvm): \(String(cString: strerror(errno)))")
        }
        close(fd)
        let firmware = scratchDirectory + "/kvm-probe.rom"
        // 64 KiB of hlt; at the reset vector (last 16 bytes): mov al,0x2a; out 0xf4,al; hlt; jmp $-1.
        var rom = [UInt8](repeating: 0xF4, count: 65536)
        rom.replaceSubrange(65520..<65527, with: [0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
        guard FileManager.default.createFile(atPath: firmware, contents: Data(rom)) else {
            return AcceleratorChoice(.tcg, reason: "cannot write the KVM probe firmware \(firmware)")
        }
        defer { unlink(firmware) }
        guard let qemu = try? QEMUProcess.findExecutable() else {
            return AcceleratorChoice(.tcg, reason: "qemu-system-x86_64 not found")
        }
        let arguments = [qemu, "-accel", "kvm", "-M", "pc", "-nodefaults", "-no-user-config", "-display", "none",
                         "-m", "16", "-bios", firmware, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        let started = Date()
        guard let pid = try? spawnQuiet(arguments) else { return AcceleratorChoice(.tcg, reason: "cannot start the KVM probe") }
        let deadline = started.addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { break }
            if Date() >= deadline {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0, errno == EINTR {}
                return AcceleratorChoice(.tcg, reason: "the KVM probe did not finish within \(Int(timeout)) s (/dev/kvm present but hangs: nested virtualisation?)")
            }
            usleep(10_000)
        }
        let elapsed = String(format: "%.2f", Date().timeIntervalSince(started))
        if status & 0x7f == 0, (status >> 8) & 0xff == 85 {
            return AcceleratorChoice(.kvm, reason: "/dev/kvm ran the probe guest in \(elapsed) s")
        }
        return AcceleratorChoice(.tcg, reason: "the KVM probe failed (wait status \(status)) after \(elapsed) s")
    }

    private static func spawnQuiet(_ argv: [String]) throws -> pid_t {
        do {
            return try SpawnCommand(argv).spawn()
        } catch {
            throw VMSandboxError(.launch, error.message)
        }
    }
}
