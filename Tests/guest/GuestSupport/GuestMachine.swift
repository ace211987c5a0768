import Foundation
import QEMUGuest

/// What a command run in the test guest produced.
public struct GuestResult: Sendable {
    /// The command's exit status; 128 + N when signal N killed it.
    public var exitCode: Int32
    /// stdout and stderr together, in the order written, as UTF-8 (invalid bytes replaced).
    public var output: String
    /// Seconds from QEMU's start until the command started (kernel boot + init).
    public var bootSeconds: Double
    /// Seconds the command ran.
    public var commandSeconds: Double
    /// Seconds from QEMU's start until QEMU was gone.
    public var totalSeconds: Double
    /// The guest's console (kernel and init messages).
    public var console: String

    /// "boot 7.1 s, command 0.2 s, total 8.0 s", for logs.
    public var timingSummary: String {
        "boot \(GuestMachine.seconds(bootSeconds)), command \(GuestMachine.seconds(commandSeconds)), total \(GuestMachine.seconds(totalSeconds))"
    }
}

/// Why a guest run gave no result. `description` carries the guest console's tail.
public struct GuestMachineError: Error, CustomStringConvertible, Sendable {
    /// The kinds of failure.
    public enum Code: String, Sendable {
        /// The kernel/initramfs could not be built (download, unpack, missing tool).
        case imageBuild = "image_build"
        /// Something on the host side failed before QEMU started (temp files, QEMU missing).
        case setup
        /// The command had not started when the boot time box ran out.
        case bootTimedOut = "boot_timed_out"
        /// The command had not finished when its time box ran out.
        case commandTimedOut = "command_timed_out"
        /// The guest ended without reporting a status (kernel panic, init failure, QEMU error).
        case guestEnded = "guest_ended"
        /// The calling task was cancelled.
        case cancelled
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened, with the time box or QEMU's exit status.
    public var message: String
    /// What the command printed before the failure, if it started.
    public var partialOutput: String = ""
    /// The last lines of the guest's console.
    public var consoleTail: String = ""

    public init(_ code: Code, _ message: String, partialOutput: String = "", consoleTail: String = "") {
        self.code = code
        self.message = message
        self.partialOutput = partialOutput
        self.consoleTail = consoleTail
    }

    public var description: String {
        var text = "\(code.rawValue): \(message)"
        if !partialOutput.isEmpty { text += "\n--- command output so far ---\n" + partialOutput }
        if !consoleTail.isEmpty { text += "\n--- guest console (tail) ---\n" + consoleTail }
        return text
    }
}

/// The QEMU test guest: the Debian generic kernel under TCG, the host's root shared read-only
/// over 9p, a real cgroup2 hierarchy, one command per boot.
///
/// Inside, the command runs as root in `chroot` of the host root with a clean environment.
/// Writable: `/tmp`, `/var/tmp`, `/run`, `/dev/shm` (tmpfs, empty at boot), `/sys/fs/cgroup`.
/// Host binaries (including those under `.build`) run at their host paths. Each `run` boots a
/// fresh machine and powers it off; nothing persists between runs.
///
/// ```swift
/// let result = try await GuestMachine().run(["cat", "/sys/fs/cgroup/cgroup.controllers"])
/// ```
public struct GuestMachine: Sendable {
    /// Guest RAM; the cgroup checks' bombs need well above their limits.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var cpus: Int

    public init(memoryMiB: Int = 1024, cpus: Int = 2) {
        self.memoryMiB = memoryMiB
        self.cpus = cpus
    }

    /// The checkout this file belongs to (`Package.swift`'s directory).
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// Where kernel images and run files are kept: `.build-guest/` in the checkout.
    public static var cacheRoot: String { packageRoot + "/.build-guest" }

    /// The kernel and initramfs, built on first use and cached (see `HostRootImage`).
    public static func image() async throws(GuestMachineError) -> HostRootImage {
        try await ImageStore.shared.image()
    }

    /// Runs `command` (program and arguments, no shell) in a freshly booted guest.
    /// - Parameters:
    ///   - timeout: seconds the command may run once started; then QEMU is killed.
    ///   - bootTimeout: seconds allowed from QEMU's start until the command starts.
    /// - Returns: the exit status and output; throws `GuestMachineError` when the guest gave none.
    public func run(_ command: [String], timeout: Double = 120, bootTimeout: Double = 180) async throws(GuestMachineError) -> GuestResult {
        guard !command.isEmpty else { throw GuestMachineError(.setup, "empty command") }
        return try await run(shell: "exec " + command.map(SerialFrame.shellQuoted).joined(separator: " "), timeout: timeout, bootTimeout: bootTimeout)
    }

    /// Runs shell text with the host's `/bin/sh -c` in a freshly booted guest.
    public func run(shell script: String, timeout: Double = 120, bootTimeout: Double = 180) async throws(GuestMachineError) -> GuestResult {
        let image = try await Self.image()
        let memoryMiB = self.memoryMiB, cpus = self.cpus
        let cancellation = CancellationFlag()
        let outcome: Result<GuestResult, GuestMachineError> = await withTaskCancellationHandler {
            await onDedicatedThread {
                Result { () throws(GuestMachineError) -> GuestResult in
                    try Self.boot(image: image, script: script, memoryMiB: memoryMiB, cpus: cpus,
                                  timeout: timeout, bootTimeout: bootTimeout, isCancelled: cancellation.isSet)
                }
            }
        } onCancel: {
            cancellation.set()
        }
        return try outcome.get()
    }

    /// One boot, blocking.
    static func boot(
        image: HostRootImage, script: String, memoryMiB: Int, cpus: Int,
        timeout: Double, bootTimeout: Double, isCancelled: @escaping @Sendable () -> Bool
    ) throws(GuestMachineError) -> GuestResult {
        let runsDirectory = cacheRoot + "/runs"
        let runDirectory: String
        do {
            try FileManager.default.createDirectory(atPath: runsDirectory, withIntermediateDirectories: true)
            var template = Array((runsDirectory + "/run-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw GuestMachineError(.setup, "mkdtemp in \(runsDirectory): \(String(cString: strerror(errno)))")
            }
            runDirectory = String(cString: made)
        } catch let error as GuestMachineError {
            throw error
        } catch {
            throw GuestMachineError(.setup, "mkdir \(runsDirectory): \(error)")
        }
        defer { try? FileManager.default.removeItem(atPath: runDirectory) }

        let frame = SerialFrame.random()
        // The init's cwd is the host root, which it moved onto the namespace's "/".
        let chrootCommand = "chroot . /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            + " HOME=/root TERM=dumb LANG=C.UTF-8 /bin/sh -c " + SerialFrame.shellQuoted(script)
        // If this process dies without killing QEMU, the guest still ends itself a little after
        // the host's time boxes would have (busybox sleep and poweroff, outside the host root).
        let watchdogSeconds = Int((bootTimeout + timeout).rounded(.up)) + 30
        let watchdog = "( sleep \(watchdogSeconds); echo 'guest watchdog: time box passed, powering off'; poweroff -f ) &\n"
        let jobScript = watchdog + keepVisibleScript() + frame.shellScript(running: chrootCommand, to: "/dev/ttyS1")
        let initrdPath = runDirectory + "/initrd.cpio"
        do {
            var job = CPIOArchive()
            try job.addDirectory("job")
            try job.addFile("job/run", contents: Array(jobScript.utf8), mode: 0o644)
            guard let base = FileManager.default.contents(atPath: image.initramfsPath) else {
                throw QEMUGuestError(.io, "cannot read \(image.initramfsPath)")
            }
            // The kernel unpacks concatenated cpio archives in order; the job lands beside the image's files.
            guard FileManager.default.createFile(atPath: initrdPath, contents: base + Data(job.finished())) else {
                throw QEMUGuestError(.io, "cannot write \(initrdPath)")
            }
        } catch {
            throw GuestMachineError(.setup, "writing the run's initramfs: \(error)")
        }

        var machine = QEMUMachine(
            kernel: image.kernelPath, initrd: initrdPath,
            // no_timer_check: a TCG guest on a loaded host can fail the IO-APIC timer check and panic.
            // acpi=noirq: routing each PCI device's interrupt pin through ACPI costs ≈0.2 s of guest
            // CPU under TCG, and virtio uses MSI-X (docs/vm-sandbox.md, "Transport and boot path").
            kernelArguments: ["console=ttyS0", "quiet", "panic=-1", "no_timer_check", "acpi=noirq"])
        machine.memoryMiB = memoryMiB
        machine.cpus = cpus
        machine.firmware = QEMUMachine.fastFirmware
        machine.shares = [.init(hostPath: "/", tag: "hostroot", readOnly: true)]
        let boot = FramedBoot(machine: machine, frame: frame, runDirectory: runDirectory,
                              bootTimeout: bootTimeout, commandTimeout: timeout)
        let outcome: FramedBoot.Outcome
        do {
            outcome = try boot.run(isCancelled: isCancelled)
        } catch {
            throw GuestMachineError(.setup, "starting QEMU: \(error)")
        }
        let output = String(decoding: outcome.output, as: UTF8.self)
        var tail = outcome.consoleTail()
        if !outcome.qemuLog.isEmpty { tail += "\n--- qemu ---\n" + outcome.qemuLog }
        switch outcome.ending {
        case .finished(let exitCode):
            return GuestResult(
                exitCode: exitCode, output: output, bootSeconds: outcome.bootSeconds ?? 0,
                commandSeconds: outcome.commandSeconds ?? 0, totalSeconds: outcome.totalSeconds, console: outcome.console)
        case .bootTimedOut:
            throw GuestMachineError(.bootTimedOut, "the guest did not start the command within \(bootTimeout) s of QEMU's start; QEMU was killed",
                                    consoleTail: tail)
        case .commandTimedOut:
            throw GuestMachineError(.commandTimedOut, "the command did not finish within \(timeout) s of starting (boot took \(Self.seconds(outcome.bootSeconds))); QEMU was killed",
                                    partialOutput: output, consoleTail: tail)
        case .guestEnded(let termination):
            throw GuestMachineError(.guestEnded, "QEMU \(termination) before the command reported a status",
                                    partialOutput: output, consoleTail: tail)
        case .cancelled:
            throw GuestMachineError(.cancelled, "cancelled; QEMU was killed", partialOutput: output, consoleTail: tail)
        }
    }

    static func seconds(_ value: Double?) -> String {
        guard let value else { return "?" }
        return String(format: "%.1f s", value)
    }
}

/// Builds the image once per test process, however many tests ask at the same time.
private actor ImageStore {
    static let shared = ImageStore()
    private var pending: Task<Result<HostRootImage, GuestMachineError>, Never>?

    func image() async throws(GuestMachineError) -> HostRootImage {
        if let pending { return try await pending.value.get() }
        let task = Task {
            await onDedicatedThread {
                Result { () throws(GuestMachineError) -> HostRootImage in
                    try HostRootImage.prepare(cache: BuildCache(root: GuestMachine.cacheRoot)) { line in
                        FileHandle.standardError.write(Data((line + "\n").utf8))
                    }
                }
            }
        }
        pending = task
        return try await task.value.get()
    }
}

/// Runs blocking work (QEMU supervision, downloads) on a thread of its own, off the cooperative pool.
func onDedicatedThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// Set from a cancellation handler, read by the supervising thread.
final class CancellationFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    @Sendable func isSet() -> Bool { lock.withLock { value } }
}

extension GuestMachine {
    /// The path of an executable product built beside the running test binary
    /// (`.build/<triple>/debug/NAME`). The guest sees the host root, so the same path runs there.
    /// Binds the test's own checkout back into the guest when it lives under `/tmp` or `/var/tmp`,
    /// which the guest covers with empty tmpfs mounts (the init keeps the host's copies at `/keep`).
    static func keepVisibleScript() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return "" }
        let path = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        for volatile in ["/tmp/", "/var/tmp/"] where path.hasPrefix(volatile) {
            guard let top = path.dropFirst(volatile.count).split(separator: "/").first else { return "" }
            let kept = SerialFrame.shellQuoted(volatile + top)
            return "mkdir -p .\(kept) && mount --bind /keep\(kept) .\(kept) || echo 'guest: cannot bind \(volatile)\(top)'\n"
        }
        return ""
    }

    public static func builtProduct(named name: String) throws(GuestMachineError) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { throw GuestMachineError(.setup, "readlink(/proc/self/exe): \(String(cString: strerror(errno)))") }
        var directory = URL(fileURLWithPath: String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self))
        directory.deleteLastPathComponent()
        // On Linux the test runner is `<bin>/<package>PackageTests.xctest`, an executable in the bin directory.
        let candidate = directory.appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: candidate) else {
            throw GuestMachineError(.setup, "\(candidate) is missing: build every product first (swift build --build-tests, as make test does)")
        }
        return candidate
    }
}
