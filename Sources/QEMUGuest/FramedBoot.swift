import Foundation

/// Boots a machine whose init runs one command and reports it with a `SerialFrame` on a
/// serial port of its own, and watches it under two time boxes: one for the boot (until the
/// `begin` marker) and one for the command. Whichever passes first gets QEMU killed by its pid.
///
/// Blocking; run it on a dedicated thread. The machine's serial ports are set here:
/// `ttyS0` → `consolePath`, `ttyS1` → `resultPath`.
public struct FramedBoot: Sendable {
    /// The machine to boot; its `serialFiles` are replaced by the console and result files.
    public var machine: QEMUMachine
    /// The markers the guest's init writes around the command's output on ttyS1.
    public var frame: SerialFrame
    /// The directory for the run's files (console, result port, QEMU's log); it must exist.
    public var runDirectory: String
    /// Seconds from QEMU's start until the command starts.
    public var bootTimeout: Double
    /// Seconds the command may run.
    public var commandTimeout: Double

    public init(machine: QEMUMachine, frame: SerialFrame, runDirectory: String, bootTimeout: Double, commandTimeout: Double) {
        self.machine = machine
        self.frame = frame
        self.runDirectory = runDirectory
        self.bootTimeout = bootTimeout
        self.commandTimeout = commandTimeout
    }

    /// ttyS0: kernel and init messages.
    public var consolePath: String { runDirectory + "/console.log" }
    /// ttyS1: the framed result.
    public var resultPath: String { runDirectory + "/result.log" }
    /// QEMU's own stdout and stderr.
    public var qemuLogPath: String { runDirectory + "/qemu.log" }

    /// How a run ended.
    public enum Ending: Hashable, Sendable {
        /// The command finished and reported its status.
        case finished(exitCode: Int32)
        /// The command did not start within `bootTimeout`; QEMU was killed.
        case bootTimedOut
        /// The command started but did not finish within `commandTimeout`; QEMU was killed.
        case commandTimedOut
        /// QEMU ended before the command reported a status (panic, crash, bad arguments).
        case guestEnded(QEMUProcess.Termination)
        /// The caller gave up; QEMU was killed.
        case cancelled
    }

    /// What a run produced.
    public struct Outcome: Sendable {
        /// Why the run ended.
        public var ending: Ending
        /// The framed output (complete when finished, partial otherwise).
        public var output: [UInt8]
        /// Seconds from QEMU's start to the `begin` marker, if it came.
        public var bootSeconds: Double?
        /// Seconds from the `begin` marker to the `end` marker (or to the kill).
        public var commandSeconds: Double?
        /// Seconds from QEMU's start until it was gone.
        public var totalSeconds: Double
        /// The guest console (kernel and init messages), escape sequences removed.
        public var console: String
        /// QEMU's own messages.
        public var qemuLog: String

        /// The last `lines` lines of the console, for error messages. When the kernel panicked or
        /// oopsed before that, the tail starts at its last such line instead (a stack trace or stall
        /// warnings after it would otherwise push out the line that says why), with at most
        /// `lines` more lines after it and an ellipsis marking what was left out.
        public func consoleTail(lines: Int = 40) -> String {
            let all = console.split(separator: "\n", omittingEmptySubsequences: false)
            let tailStart = max(0, all.count - lines)
            guard let last = all[..<tailStart].lastIndex(where: Self.saysWhyTheKernelDied) else {
                return all[tailStart...].joined(separator: "\n")
            }
            if all.count - last <= 2 * lines { return all[last...].joined(separator: "\n") }
            return (all[last..<(last + lines)] + ["…"] + all[tailStart...]).joined(separator: "\n")
        }

        static func saysWhyTheKernelDied(_ line: Substring) -> Bool {
            line.contains("Kernel panic") || line.contains("Oops") || line.contains("BUG:")
        }
    }

    /// Boots, waits and reaps. `isCancelled` is polled; when it returns true QEMU is killed.
    public func run(isCancelled: () -> Bool = { false }) throws(QEMUGuestError) -> Outcome {
        var machine = self.machine
        machine.serialFiles = [consolePath, resultPath]
        for path in [consolePath, resultPath] {
            guard FileManager.default.createFile(atPath: path, contents: Data()) else {
                throw QEMUGuestError(.io, "cannot create \(path)")
            }
        }
        let started = Date()
        let qemu = try QEMUProcess(machine: machine, logPath: qemuLogPath)
        var commandStarted: Date?
        var ending: Ending?
        var commandEnded: Date?
        var output: [UInt8] = []

        var resultSize = -1
        var progress = SerialFrame.Progress.notStarted
        while ending == nil {
            let exited = qemu.poll()
            // Read after polling, so that whatever QEMU wrote before it exited is seen;
            // parse again only when the port received something.
            let size = fileSize(resultPath)
            if size != resultSize {
                resultSize = size
                progress = frame.progress(in: readBytes(resultPath))
            }
            switch progress {
            case .notStarted:
                break
            case .running(let partial):
                output = partial
                if commandStarted == nil { commandStarted = Date() }
            case .finished(let complete, let exitCode):
                output = complete
                if commandStarted == nil { commandStarted = Date() }
                commandEnded = Date()
                ending = .finished(exitCode: exitCode)
                continue
            }
            if let exited {
                ending = .guestEnded(exited)
            } else if isCancelled() {
                ending = .cancelled
            } else if let commandStarted, Date().timeIntervalSince(commandStarted) > commandTimeout {
                ending = .commandTimedOut
            } else if commandStarted == nil, Date().timeIntervalSince(started) > bootTimeout {
                ending = .bootTimedOut
            } else {
                usleep(50_000)
            }
        }
        if case .finished = ending {
            // The init powers off right after the end marker; give it a moment, then stop waiting.
            if qemu.wait(atMost: 10) == nil { qemu.kill() }
        } else {
            qemu.kill()
            commandEnded = commandStarted.map { _ in Date() }
        }
        return Outcome(
            ending: ending ?? .cancelled,
            output: output,
            bootSeconds: commandStarted.map { $0.timeIntervalSince(started) },
            commandSeconds: commandStarted.flatMap { start in commandEnded.map { $0.timeIntervalSince(start) } },
            totalSeconds: Date().timeIntervalSince(started),
            console: Self.readable(readBytes(consolePath)),
            qemuLog: qemu.logTail())
    }

    private func fileSize(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : -1
    }

    private func readBytes(_ path: String) -> [UInt8] {
        FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
    }

    /// Console bytes as text without terminal escape sequences and carriage returns.
    static func readable(_ bytes: [UInt8]) -> String {
        var cleaned: [UInt8] = []
        cleaned.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x1b {
                // ESC [ parameters final-byte, or ESC + one character.
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "[") {
                    index += 1
                    while index < bytes.count, !(0x40...0x7e).contains(bytes[index]) { index += 1 }
                }
                index += 1
                continue
            }
            if byte != UInt8(ascii: "\r") { cleaned.append(byte) }
            index += 1
        }
        return String(decoding: cleaned, as: UTF8.self)
    }
}
