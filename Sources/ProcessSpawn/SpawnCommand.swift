#if canImport(Glibc)
import Glibc
#endif

/// A program to start with `posix_spawn`, and exactly what it gets from us: the descriptors
/// named here and nothing else (every other one is closed in the child, close-on-exec or not),
/// default signal dispositions, no blocked signals, and the environment given.
///
/// One wrapper for every helper program the daemon, its tools and its tests start (initdb,
/// QEMU, host tools, test servers): a thread of ours that blocks signals (Dispatch workers do),
/// or another thread's pipe created without O_CLOEXEC, never leaks into a child.
public struct SpawnCommand: Sendable {
    /// Where one of the child's standard streams goes.
    public enum Stream: Sendable, Hashable {
        /// `/dev/null`.
        case null
        /// A descriptor of ours (duplicated; ours stays open).
        case descriptor(Int32)
        /// A file opened for writing (created 0644 if missing), appended to or truncated.
        case file(String, append: Bool)
    }

    /// `argv`, `[0]` included; `[0]` is the executable (a path: no `PATH` lookup) unless `spawn`
    /// is given another.
    public var arguments: [String]
    /// `KEY=value` entries: the child's whole environment.
    public var environment: [String]
    public var standardInput: Stream = .null
    public var standardOutput: Stream = .null
    public var standardError: Stream = .null
    /// Descriptors of ours the child gets as 3, 4, … in this order (ours stay open).
    public var passedDescriptors: [Int32] = []
    /// The child's working directory; nil keeps ours.
    public var workingDirectory: String?
    /// Its own process group (a terminal's or a supervisor's group signal does not reach it).
    public var newProcessGroup = false
    /// Its own session (and process group).
    public var newSession = false

    /// - Parameters:
    ///   - arguments: `argv`; `arguments[0]` is the executable's path.
    ///   - environment: `KEY=value` entries; nil passes ours on.
    public init(_ arguments: [String], environment: [String]? = nil) {
        self.arguments = arguments
        self.environment = environment ?? Self.currentEnvironment()
    }

    /// Starts the program and returns its pid; the caller reaps it (`SpawnCommand.wait`).
    /// - Parameter executable: the file to run when it is not `arguments[0]` (which is then only a name).
    public func spawn(executable: String? = nil) throws(SpawnError) -> pid_t {
        guard let executable = executable ?? arguments.first, !executable.isEmpty, !arguments.isEmpty else {
            throw SpawnError("posix_spawn: no program given")
        }
        // Sources first moved above every target, so one dup2 cannot overwrite another's source;
        // these copies are close-on-exec and closed again below.
        let sources: [(target: Int32, stream: Stream)] = [(0, standardInput), (1, standardOutput), (2, standardError)]
            + passedDescriptors.enumerated().map { (Int32(3 + $0.offset), Stream.descriptor($0.element)) }
        let floor = Int32(3 + passedDescriptors.count)
        var moved: [Int32] = []
        defer { for fd in moved { close(fd) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, stream) in sources {
            switch stream {
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .file(let path, let append):
                posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
            case .descriptor(let fd):
                let high = fcntl(fd, F_DUPFD_CLOEXEC, floor)
                guard high >= 0 else { throw SpawnError("fcntl(\(fd), F_DUPFD_CLOEXEC) for \(executable)", errno) }
                moved.append(high)
                posix_spawn_file_actions_adddup2(&actions, high, target)
            }
        }
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, floor) }
        if let workingDirectory {
            guard let addChdir = Self.addChdir else { throw SpawnError("posix_spawn_file_actions_addchdir_np is missing (glibc < 2.29)") }
            _ = addChdir(&actions, workingDirectory)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var allSignals = sigset_t(), noSignals = sigset_t()
        sigfillset(&allSignals)
        sigemptyset(&noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var flags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        if newSession {
            flags |= Self.setSessionFlag
        } else if newProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let cEnvironment: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in cArguments { free(pointer) }
            for pointer in cEnvironment { free(pointer) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, cArguments, cEnvironment)
        guard rc == 0 else { throw SpawnError("posix_spawn(\(executable))", rc) }
        return pid
    }

    /// Runs the program to completion, its stdout and stderr in unlinked temporary files (not
    /// pipes: a daemon it leaves behind, like pg_ctl's server, cannot keep us waiting for EOF,
    /// and neither stream can fill up and stall it). Blocking: call it from a dedicated thread.
    /// - Parameters:
    ///   - input: the program's stdin (from a file too), instead of `standardInput`, when not empty.
    ///   - mergingStandardError: stderr goes where stdout goes (`output.standardError` is empty).
    public func run(input: [UInt8] = [], mergingStandardError: Bool = false) throws(SpawnError) -> SpawnOutput {
        var command = self
        var inputFD: Int32 = -1
        defer { if inputFD >= 0 { close(inputFD) } }
        if !input.isEmpty {
            inputFD = try Self.scratchFile()
            var written = 0
            while written < input.count {
                let n = input[written...].withUnsafeBytes { write(inputFD, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { throw SpawnError("write(the input of \(arguments.first ?? ""))", errno) }
                written += n
            }
            lseek(inputFD, 0, SEEK_SET)
            command.standardInput = .descriptor(inputFD)
        }
        let out = try Self.scratchFile()
        defer { close(out) }
        command.standardOutput = .descriptor(out)
        var err = out
        if !mergingStandardError { err = try Self.scratchFile() }
        defer { if err != out { close(err) } }
        command.standardError = .descriptor(err)
        let termination = try Self.wait(command.spawn())
        return SpawnOutput(termination: termination, standardOutput: Self.readAll(out),
                           standardError: err == out ? [] : Self.readAll(err))
    }

    /// Waits for (and reaps) a child of ours.
    public static func wait(_ pid: pid_t) throws(SpawnError) -> SpawnTermination {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw SpawnError("waitpid(\(pid))", errno) }
        }
        return SpawnTermination(waitStatus: status)
    }

    // MARK: glibc extras Swift's Glibc module does not export

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    /// glibc ≥ 2.34.
    private static let addCloseFrom: AddCloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: AddCloseFrom.self) }
    /// glibc ≥ 2.29.
    private static let addChdir: AddChdir? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np")
        .map { unsafeBitCast($0, to: AddChdir.self) }
    /// POSIX_SPAWN_SETSID (glibc ≥ 2.26), hidden behind _GNU_SOURCE.
    private static let setSessionFlag: Int32 = 0x80

    private static func currentEnvironment() -> [String] {
        var entries: [String] = []
        var pointer = environ
        while let entry = pointer.pointee {
            entries.append(String(cString: entry))
            pointer += 1
        }
        return entries
    }

    private static func scratchFile() throws(SpawnError) -> Int32 {
        var template = Array("/tmp/spawn-output-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw SpawnError("mkstemp(/tmp/spawn-output-XXXXXX)", errno) }
        // (mkostemp is hidden behind _GNU_SOURCE; spawn() closes it in children anyway.)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }

    private static func readAll(_ fd: Int32) -> [UInt8] {
        var output: [UInt8] = []
        lseek(fd, 0, SEEK_SET)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            output += buffer[0..<count]
        }
        return output
    }
}

/// How a child ended.
public struct SpawnTermination: Sendable, Hashable, CustomStringConvertible {
    /// The exit status, or nil when a signal ended it.
    public var exitCode: Int32?
    /// The signal that ended it, if one did.
    public var signal: Int32?

    /// From a `waitpid` status (WIFEXITED and friends are macros Swift cannot import).
    public init(waitStatus status: Int32) {
        if status & 0x7f == 0 {
            exitCode = (status >> 8) & 0xff
        } else {
            signal = status & 0x7f
        }
    }

    /// The shell's convention: the exit status, or 128 + the signal.
    public var status: Int32 { exitCode ?? 128 + (signal ?? 0) }
    /// True when it exited with status 0.
    public var succeeded: Bool { exitCode == 0 }

    public var description: String { exitCode.map { "exit status \($0)" } ?? "signal \(signal ?? 0)" }
}

/// What a program run to completion printed, and how it ended.
public struct SpawnOutput: Sendable {
    public var termination: SpawnTermination
    public var standardOutput: [UInt8]
    public var standardError: [UInt8]

    /// stdout as UTF-8 (invalid bytes replaced).
    public var outputText: String { String(decoding: standardOutput, as: UTF8.self) }
    /// stderr as UTF-8 (invalid bytes replaced).
    public var errorText: String { String(decoding: standardError, as: UTF8.self) }
}

/// A failed spawn or wait: the call, the program and the errno name the cause.
public struct SpawnError: Error, CustomStringConvertible, Sendable {
    /// errno, when a call failed.
    public var errno: Int32?
    public var message: String

    init(_ call: String, _ code: Int32? = nil) {
        errno = code
        message = code.map { "\(call): \(String(cString: strerror($0)))" } ?? call
    }

    public var description: String { message }
}
