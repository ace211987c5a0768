import Foundation
import ProcessSpawn
import QEMUGuest
import VMAgentProtocol

/// How a guest machine is shaped.
struct MachineShape: Hashable, Sendable {
    var memoryMiB: Int
    var cpus: Int
}

/// One QEMU, started jailed, with its agent connection and bounded console log.
///
/// The jail, as Firecracker's jailer does it but with util-linux's tools instead of a setuid
/// helper: `sh` puts itself into the VM's own cgroup (so QEMU is in it from its first
/// instruction), `unshare` gives new mount, pid, network, IPC and UTS namespaces (QEMU is
/// PID 1 of its pid namespace and has no network at all), `setpriv` switches to the VM's own
/// unprivileged uid/gid with no supplementary groups, no capabilities (bounding set emptied)
/// and no_new_privs, then QEMU's own seccomp filter (`-sandbox on,…`) closes spawn, setuid,
/// obsolete and resource-control calls. QEMU opens nothing by path that is private: the kernel,
/// initramfs and both sockets are inherited file descriptors; the 9p shares are world-readable
/// runtime directories. It is killed through its cgroup (`cgroup.kill`), which reaches it
/// whatever the uid switch did to parent-death signals.
final class JailedQEMU: @unchecked Sendable {
    let name: String
    let shape: MachineShape
    let accelerator: QEMUMachine.Accelerator
    let uid: UInt32
    let stateDirectory: String
    let cgroupDirectory: String
    /// The launcher shell (our child; it stays in the VM's cgroup, watching `watchFD`).
    let launcherPID: pid_t
    /// The write end of the launcher's watch pipe; closing it makes the launcher kill the cgroup.
    private let watchFD: Int32
    let connection: AgentConnection
    let console: ConsoleLog
    private let lock = NSLock()
    private var reaped = false

    struct Settings: Sendable {
        var image: GuestImage
        var stateRoot: String
        var cgroupParent: String
        var consoleLogLimit: Int
        var testHooks: Bool
        /// Kernel command line `sandboxd.test_sysrq=1`: sandboxed commands may write /proc/sysrq-trigger.
        var testSysrq: Bool = false
    }

    /// `bootSpec` (JSON `SandboxSpec`) goes into this guest's initramfs: its agent builds the
    /// level-1 sandbox from it as it starts and answers it after its hello as it would a
    /// `configure`, so that the host does not wait a round trip to send it.
    init(name: String, shape: MachineShape, accelerator: QEMUMachine.Accelerator, uid: UInt32, settings: Settings,
         bootSpec: [UInt8]? = nil) throws(VMSandboxError) {
        self.name = name
        self.shape = shape
        self.accelerator = accelerator
        self.uid = uid
        stateDirectory = settings.stateRoot + "/" + name
        cgroupDirectory = settings.cgroupParent + "/" + name
        var cleanup: [() -> Void] = []
        func unwind() { for step in cleanup.reversed() { step() } }

        guard mkdir(stateDirectory, 0o700) == 0 else { throw .system("mkdir", stateDirectory) }
        cleanup.append { [stateDirectory] in try? FileManager.default.removeItem(atPath: stateDirectory) }
        guard mkdir(cgroupDirectory, 0o755) == 0 else { unwind(); throw .system("mkdir", cgroupDirectory) }
        cleanup.append { [cgroupDirectory] in rmdir(cgroupDirectory) }
        // Where the host offers the controllers (not on the build machines' hybrid cgroup2): QEMU
        // gets guest RAM plus room for itself (TCG's translation cache), and a bounded thread count.
        Self.writeIfPresent(cgroupDirectory + "/memory.max", String((shape.memoryMiB + 1024) << 20))
        Self.writeIfPresent(cgroupDirectory + "/memory.swap.max", "0")
        Self.writeIfPresent(cgroupDirectory + "/pids.max", "256")

        var agentPair: [Int32] = [-1, -1], consolePair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &agentPair) == 0 else { unwind(); throw .system("socketpair", "agent port") }
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &consolePair) == 0 else {
            close(agentPair[0]); close(agentPair[1]); unwind(); throw .system("socketpair", "console")
        }
        // The launcher shell holds the read end; when this end closes (destroy, or the daemon
        // died), it kills the VM's cgroup. A QEMU never outlives its daemon.
        var watchPipe: [Int32] = [-1, -1]
        guard pipe(&watchPipe) == 0, fcntl(watchPipe[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(watchPipe[1], F_SETFD, FD_CLOEXEC) == 0 else {
            close(agentPair[0]); close(agentPair[1]); close(consolePair[0]); close(consolePair[1]); unwind()
            throw .system("pipe", "launcher watch")
        }
        defer { close(watchPipe[0]) }
        let kernelFD = open(settings.image.kernelPath, O_RDONLY | O_CLOEXEC)
        let initrdFD: Int32
        if let bootSpec {
            do {
                initrdFD = try Self.initramfs(settings.image.initramfsPath, withBootSpec: bootSpec, in: stateDirectory)
            } catch {
                if kernelFD >= 0 { close(kernelFD) }
                close(agentPair[0]); close(agentPair[1]); close(consolePair[0]); close(consolePair[1])
                close(watchPipe[1]); unwind()
                throw error
            }
        } else {
            initrdFD = open(settings.image.initramfsPath, O_RDONLY | O_CLOEXEC)
        }
        defer {
            close(agentPair[1]); close(consolePair[1])
            if kernelFD >= 0 { close(kernelFD) }
            if initrdFD >= 0 { close(initrdFD) }
        }
        guard kernelFD >= 0, initrdFD >= 0 else {
            close(agentPair[0]); close(consolePair[0]); close(watchPipe[1]); unwind()
            throw .system("open", kernelFD < 0 ? settings.image.kernelPath : settings.image.initramfsPath)
        }

        let qemuArguments = Self.qemuArguments(image: settings.image, shape: shape, accelerator: accelerator, testHooks: settings.testHooks, testSysrq: settings.testSysrq)
        let argv: [String]
        do {
            argv = try Self.jailedCommand(cgroup: cgroupDirectory, uid: uid, kvm: accelerator == .kvm, qemu: qemuArguments)
        } catch {
            close(agentPair[0]); close(consolePair[0]); close(watchPipe[1]); unwind()
            throw error
        }
        let logPath = stateDirectory + "/qemu.log"
        // stdout and stderr share one open file description; fds 3–7 are the agent port, the
        // console, kernel, initramfs and the launcher's watch pipe (nothing else of ours crosses).
        let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard log >= 0 else {
            close(agentPair[0]); close(consolePair[0]); close(watchPipe[1]); unwind()
            throw .system("open", logPath)
        }
        defer { close(log) }
        var command = SpawnCommand(argv, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        command.standardOutput = .descriptor(log)
        command.standardError = .descriptor(log)
        command.passedDescriptors = [agentPair[1], consolePair[1], kernelFD, initrdFD, watchPipe[0]]
        let pid: pid_t
        do {
            pid = try command.spawn()
        } catch {
            close(agentPair[0]); close(consolePair[0]); close(watchPipe[1]); unwind()
            throw VMSandboxError(.launch, error.message)
        }
        launcherPID = pid
        watchFD = watchPipe[1]
        connection = AgentConnection(fd: agentPair[0])
        console = ConsoleLog(fd: consolePair[0], path: stateDirectory + "/console.log", limit: settings.consoleLogLimit)
    }

    /// The image's initramfs with one more archive appended holding `GuestPaths.initramfsBootSpec`
    /// (the kernel unpacks concatenated archives in order). Written into the VM's root-only state
    /// directory and unlinked at once: QEMU reopens it through the inherited descriptor
    /// (`/proc/self/fd/6`), which checks only the file's own mode, and nothing is left on disk.
    static func initramfs(_ basePath: String, withBootSpec spec: [UInt8], in directory: String) throws(VMSandboxError) -> Int32 {
        var archive = CPIOArchive()
        do {
            try archive.addFile(String(GuestPaths.initramfsBootSpec.dropFirst()), contents: spec, mode: 0o600)
        } catch {
            throw VMSandboxError(.invalidRequest, "boot spec: \(error)")
        }
        let path = directory + "/initramfs.cpio"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("open", path) }
        unlink(path)
        fchmod(fd, 0o644)
        // The base archive (megabytes) goes file to file in the kernel: read into the daemon's heap
        // it stayed resident after the copy was freed (the idle daemon grew by ≈14 MiB).
        let base = open(basePath, O_RDONLY | O_CLOEXEC)
        guard base >= 0 else {
            close(fd)
            throw .system("open", basePath)
        }
        defer { close(base) }
        guard Self.copyAll(from: base, to: fd) else {
            let error = VMSandboxError.system("sendfile", basePath)
            close(fd)
            throw error
        }
        guard Self.writeAll(fd, archive.finished()) else {
            let error = VMSandboxError.system("write", path)
            close(fd)
            throw error
        }
        return fd
    }

    private static func copyAll(from source: Int32, to destination: Int32) -> Bool {
        while true {
            let count = sendfile(destination, source, nil, 1 << 20)
            if count > 0 { continue }
            if count == 0 { return true }
            if errno == EINTR { continue }
            return false
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if count > 0 { offset += count; continue }
            if count < 0, errno == EINTR { continue }
            return false
        }
        return true
    }

    /// `sh` (into the cgroup, then watching the daemon) → `unshare` (namespaces) → `setpriv`
    /// (uid, no caps) → QEMU.
    static func jailedCommand(cgroup: String, uid: UInt32, kvm: Bool, qemu: [String]) throws(VMSandboxError) -> [String] {
        func tool(_ name: String, _ package: String) throws(VMSandboxError) -> String {
            guard let path = HostTool.find(name) else { throw VMSandboxError(.launch, "\(name) not found: install the Debian package \(package)") }
            return path
        }
        let shell = "/bin/sh"
        let unshare = try tool("unshare", "util-linux")
        let setpriv = try tool("setpriv", "util-linux")
        let qemuPath: String
        do { qemuPath = try QEMUProcess.findExecutable() } catch { throw VMSandboxError(.launch, error.description) }
        // Its only supplementary group, and only under KVM: the owner group of /dev/kvm.
        var groups = "--clear-groups"
        var info = stat()
        if kvm, stat("/dev/kvm", &info) == 0, info.st_gid != 0 { groups = "--groups=\(info.st_gid)" }
        // fd 7 is the watch pipe: its read returns when the daemon's end closes.
        // The shell drops QEMU's descriptors itself, so that QEMU's exit closes the agent socket.
        let launcher = #"echo $$ > "$0/cgroup.procs" || exit 1; "$@" 7<&- & exec 3<&- 4<&- 5<&- 6<&-; read _ <&7; echo 1 > "$0/cgroup.kill""#
        return [shell, "-c", launcher, cgroup,
                unshare, "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child", "--",
                setpriv, "--reuid=\(uid)", "--regid=\(uid)", groups, "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--",
                qemuPath] + qemu
    }

    static func qemuArguments(image: GuestImage, shape: MachineShape, accelerator: QEMUMachine.Accelerator, testHooks: Bool,
                              testSysrq: Bool = false) -> [String] {
        // no_timer_check: on a loaded host a TCG guest can miss the kernel's IO-APIC timer check
        // and panic at boot ("IO-APIC + timer doesn't work!"); the check guards real hardware only.
        // acpi=noirq: PCI interrupts are not routed through ACPI. Under TCG, evaluating the
        // interrupt-link AML took ≈0.2 s of guest CPU per PCI device in virtio_pci's probe
        // (≈87M instructions each, measured with -icount and initcall_debug), i.e. ≈0.6 s for the two
        // 9p shares and the agent's port; virtio devices use MSI-X and need no INTx routing.
        // Under TCG the vCPU hides ERMS and FSRM ("fast" rep movsb/stosb): TCG runs a rep string
        // instruction one element per iteration, so with them the guest kernel cleared every new
        // page and copied to and from user memory a byte per iteration (clear_page_erms,
        // copy_user with rep movsb), and with them hidden 8 bytes (rep stosq/movsq). Measured in
        // the same 12 rounds: root ready → first exec's end 0.58 s instead of 0.70 s (p50), cold
        // create+exec 1.11× the raw boot instead of 1.24× (per-pair median), the raw boot getting the
        // same vCPU. Under KVM they are the host's own and fast.
        let cpu = accelerator == .tcg ? "max,erms=off,fsrm=off" : "max"
        var kernelArguments = ["console=ttyS0", "quiet", "panic=-1", "no_timer_check", "acpi=noirq", "sandboxd.agent=1"]
        if testHooks { kernelArguments.append("sandboxd.test_hooks=1") }
        if testSysrq { kernelArguments.append("sandboxd.test_sysrq=1") }
        var arguments = [
            "-accel", accelerator.rawValue,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-nic", "none",
            "-m", String(shape.memoryMiB),
            "-smp", String(shape.cpus),
            "-cpu", cpu,
            "-kernel", "/proc/self/fd/5",
            "-initrd", "/proc/self/fd/6",
            "-append", kernelArguments.joined(separator: " "),
        ]
        if let firmware = QEMUMachine.fastFirmware { arguments += ["-bios", firmware] }
        for share in image.shares {
            let path = share.path == "/.sandbox" ? image.agentDirectory : share.path
            arguments += ["-virtfs", "local,path=\(path),mount_tag=\(share.tag),security_model=none,readonly=on,multidevs=remap"]
        }
        arguments += [
            "-chardev", "socket,id=console,fd=4", "-serial", "chardev:console",
            "-device", "virtio-serial-pci,id=vs0",
            "-chardev", "socket,id=agent,fd=3",
            "-device", "virtserialport,bus=vs0.0,chardev=agent,name=\(agentPortName)",
            "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]
        return arguments
    }

    static let agentPortName = "org.sandboxd.agent"

    /// The benchmark's baseline: the same machine, kernel, initramfs and shares, unjailed, with
    /// no agent port, and `sandboxd.raw=1` so that init runs `uname -r` itself and powers off.
    static func rawBaselineArguments(image: GuestImage, shape: MachineShape, consolePath: String) -> [String] {
        var arguments = qemuArguments(image: image, shape: shape, accelerator: .tcg, testHooks: false)
        if let index = arguments.firstIndex(of: "-kernel") { arguments[index + 1] = image.kernelPath }
        if let index = arguments.firstIndex(of: "-initrd") { arguments[index + 1] = image.initramfsPath }
        if let index = arguments.firstIndex(of: "-append") { arguments[index + 1] += " sandboxd.raw=1" }
        if let index = arguments.firstIndex(of: "-chardev") { arguments.removeSubrange(index...) }
        return arguments + ["-serial", "file:\(consolePath)"]
    }

    /// QEMU's own pid (a member of the VM's cgroup other than the launcher), nil once gone.
    var qemuPID: pid_t? {
        let procs = (try? String(contentsOfFile: cgroupDirectory + "/cgroup.procs", encoding: .utf8)) ?? ""
        for line in procs.split(separator: "\n") {
            guard let pid = pid_t(line), pid != launcherPID else { continue }
            if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"), exe.contains("qemu-system") {
                return pid
            }
        }
        return nil
    }

    /// Kills everything in the VM's cgroup, reaps the launcher, removes the cgroup, sockets and
    /// state directory. Idempotent; blocking (at most a few seconds).
    func terminate() {
        let first = lock.withLock {
            defer { reaped = true }
            return !reaped
        }
        guard first else { return }
        connection.shutdown()
        // QEMU first, by its pid: unshare (its parent, our child) then reaps it and exits. Killing
        // the whole cgroup at once could take unshare first, and QEMU would linger as a zombie
        // of the host's init.
        if let qemu = qemuPID {
            kill(qemu, SIGKILL)
            // Until unshare has reaped it (the /proc entry goes), so no zombie is left to init.
            let deadline = Date().addingTimeInterval(5)
            while access("/proc/\(qemu)", F_OK) == 0, Date() < deadline { usleep(5_000) }
        }
        // The launcher wakes up and kills what is left of the cgroup (unshare, itself).
        close(watchFD)
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(5)
        while true {
            let result = waitpid(launcherPID, &status, WNOHANG)
            if result == launcherPID || (result < 0 && errno != EINTR) { break }
            if Date() >= deadline {
                Self.killCgroup(cgroupDirectory)
                while waitpid(launcherPID, &status, 0) < 0, errno == EINTR {}
                break
            }
            usleep(5_000)
        }
        Self.killCgroup(cgroupDirectory)
        Self.removeCgroup(cgroupDirectory)
        console.stop()
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }

    static func writeIfPresent(_ path: String, _ value: String) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = value.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    static func killCgroup(_ directory: String) {
        let fd = open(directory + "/cgroup.kill", O_WRONLY | O_CLOEXEC)
        if fd >= 0 {
            _ = write(fd, "1", 1)
            close(fd)
        } else {
            // Kernels before 5.14 have no cgroup.kill: signal each member.
            let procs = (try? String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8)) ?? ""
            for line in procs.split(separator: "\n") { if let pid = pid_t(line) { kill(pid, SIGKILL) } }
        }
    }

    static func removeCgroup(_ directory: String) {
        for _ in 0..<500 {
            if rmdir(directory) == 0 || errno == ENOENT { return }
            killCgroup(directory)
            usleep(10_000)
        }
    }
}

/// The guest's serial console, kept in a file of at most `limit` bytes (the newest half survives).
final class ConsoleLog: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let limit: Int

    init(fd: Int32, path: String, limit: Int) {
        self.fd = fd
        self.path = path
        self.limit = max(limit, 4096)
        let thread = Thread { [self] in run() }
        thread.name = "vm-console"
        thread.start()
    }

    func stop() { shutdown(fd, Int32(SHUT_RDWR)) }

    /// The last `maxBytes` of the console.
    func tail(maxBytes: Int = 4096) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data.suffix(maxBytes), as: UTF8.self)
    }

    private func run() {
        let out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        var size = 0
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            guard out >= 0 else { continue }
            // Never more than `limit` bytes: beyond it, the newest half of file + chunk is kept.
            var chunk = Array(buffer[0..<count])
            if size + chunk.count > limit {
                let data = FileManager.default.contents(atPath: path) ?? Data()
                let combined = [UInt8](data) + chunk
                chunk = Array(combined.suffix(limit / 2))
                ftruncate(out, 0)
                size = 0
            }
            _ = chunk.withUnsafeBytes { write(out, $0.baseAddress, $0.count) }
            size += chunk.count
        }
        if out >= 0 { close(out) }
        close(fd)
    }
}
