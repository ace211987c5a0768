import Foundation

/// A QEMU x86_64 machine that boots a kernel directly (no disk, no firmware menu), as a
/// command line.
///
/// Defaults suit a throwaway guest: no default devices, no user configuration files, no
/// network card, no display, no reboot (a reboot or a kernel panic with `panic=-1` ends QEMU).
public struct QEMUMachine: Hashable, Sendable {
    /// How guest instructions run.
    public enum Accelerator: String, Hashable, Sendable {
        /// Software emulation; works everywhere, several times slower.
        case tcg
        /// Hardware virtualisation through `/dev/kvm`; probe before choosing it.
        case kvm
    }

    /// A host directory shown to the guest over virtio-9p.
    public struct Share: Hashable, Sendable {
        /// The host directory shared.
        public var hostPath: String
        /// The name the guest mounts it by (`mount -t 9p TAG /where`).
        public var tag: String
        /// QEMU refuses every write from the guest (`readonly=on`).
        public var readOnly: Bool

        public init(hostPath: String, tag: String, readOnly: Bool = true) {
            self.hostPath = hostPath
            self.tag = tag
            self.readOnly = readOnly
        }
    }

    /// The kernel image (`-kernel`), e.g. a Debian `vmlinuz`.
    public var kernel: String
    /// The initramfs (`-initrd`), if any.
    public var initrd: String?
    /// The kernel command line, one argument per element.
    public var kernelArguments: [String]
    /// Guest RAM (`-m`).
    public var memoryMiB: Int = 1024
    /// Virtual CPUs (`-smp`).
    public var cpus: Int = 2
    /// `max` gives a TCG guest every CPU feature QEMU can emulate.
    public var cpuModel: String = "max"
    /// TCG unless a probe showed KVM works.
    public var accelerator: Accelerator = .tcg
    /// The firmware (`-bios`); nil keeps QEMU's SeaBIOS. qboot (`/usr/share/qemu/qboot.rom`,
    /// shipped with qemu-system-data) only loads the kernel and starts it, a second or more
    /// sooner under TCG.
    public var firmware: String?
    /// Host directories shared over virtio-9p.
    public var shares: [Share] = []
    /// Host files that receive the guest's serial ports, in order: `ttyS0`, `ttyS1`, …
    public var serialFiles: [String] = []
    /// Appended as they are (e.g. `-sandbox on,...`).
    public var extraArguments: [String] = []

    public init(kernel: String, initrd: String?, kernelArguments: [String]) {
        self.kernel = kernel
        self.initrd = initrd
        self.kernelArguments = kernelArguments
    }

    /// The arguments for `qemu-system-x86_64`, without the program name.
    public func arguments() throws(QEMUGuestError) -> [String] {
        guard memoryMiB >= 64, cpus >= 1 else {
            throw QEMUGuestError(.invalidArgument, "a guest needs at least 64 MiB and 1 CPU (got \(memoryMiB) MiB, \(cpus) CPUs)")
        }
        for argument in kernelArguments where argument.contains(" ") || argument.isEmpty {
            throw QEMUGuestError(.invalidArgument, "kernel argument \"\(argument)\" must be non-empty and contain no space")
        }
        var arguments = [
            "-accel", accelerator.rawValue,
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-nic", "none",
            "-m", String(memoryMiB),
            "-smp", String(cpus),
            "-cpu", cpuModel,
            "-kernel", kernel,
        ]
        if let firmware { arguments += ["-bios", firmware] }
        if let initrd { arguments += ["-initrd", initrd] }
        arguments += ["-append", kernelArguments.joined(separator: " ")]
        for share in shares {
            var options = "local,path=\(Self.escape(share.hostPath)),mount_tag=\(Self.escape(share.tag)),security_model=none"
            if share.readOnly { options += ",readonly=on" }
            // Files from several host file systems under one share would otherwise collide on inode numbers.
            options += ",multidevs=remap"
            arguments += ["-virtfs", options]
        }
        for file in serialFiles { arguments += ["-serial", "file:\(file)"] }
        return arguments + extraArguments
    }

    /// qboot when this host's QEMU ships it, else nil (SeaBIOS).
    public static var fastFirmware: String? {
        let path = "/usr/share/qemu/qboot.rom"
        return access(path, R_OK) == 0 ? path : nil
    }

    /// QEMU option values separate keys with commas; a literal comma is written twice.
    static func escape(_ value: String) -> String {
        String(value.flatMap { $0 == "," ? [",", ","] as [Character] : [$0] })
    }
}
