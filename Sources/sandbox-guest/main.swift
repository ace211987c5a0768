// sandbox-guest: PID 1 of a level-3 guest and the daemon's agent inside it.
//
// The initramfs's /init (busybox) has loaded the virtio modules, mounted the runtime shares
// read-only, the generated /etc, proc, sysfs, cgroup2 (every controller enabled), devtmpfs and the
// tmpfs scratch places, and switched root. This program greets the host on the virtio-serial port
// "org.sandboxd.agent" and serves one request at a time (AgentFrame): configure builds a level-1
// sandbox (LinuxSandbox: namespaces, real cgroup v2 limits, seccomp, no capabilities) from the
// host's spec; exec runs commands in it, streaming output; putFile/getFile stay inside its
// workspace; shutdown powers off.
//
// It links no Foundation (and so no ICU) and no Yams: only the standard library, Glibc,
// Synchronization and what LinuxSandbox and VMAgentProtocol (no Foundation either) need, and it
// serves requests on its main thread without Swift concurrency. Its start (an executable paged in
// over 9p under TCG; `Benchmarks/run` links it fully static, so no dynamic loader runs) and every
// piece of code its first request runs for the first time are on every cold create's path.
import LinuxSandbox
import SandboxValues
import Synchronization
import VMAgentProtocol
#if canImport(Glibc)
import Glibc
#endif

let portName = "org.sandboxd.agent"

/// Writes all of `bytes`; false (errno set) when a write fails.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written > 0 { offset += written; continue }
        if written < 0, errno == EINTR || errno == EAGAIN { usleep(1000); continue }
        return false
    }
    return true
}

func log(_ message: String) {
    _ = writeAll(2, Array("sandbox-guest: \(message)\n".utf8))
}

/// The contents of a small file (procfs, sysfs, the boot spec); nil when it cannot be read.
func readBytes(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 { bytes += chunk[0..<count]; continue }
        if count < 0, errno == EINTR { continue }
        return count == 0 ? bytes : nil
    }
}

/// The words of a small file split at ASCII spaces, tabs and newlines; empty when it cannot be
/// read. Bytes, not `Character`s: the grapheme and Unicode-property code `String.split` and
/// `isWhitespace` would run is translated by TCG on first use, on every cold create's path.
func words(_ path: String) -> [String] {
    guard let bytes = readBytes(path) else { return [] }
    return bytes.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d })
        .map { String(decoding: $0, as: UTF8.self) }
}

/// The entry names of a directory, sorted; empty when it cannot be read.
func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        if name != ".", name != ".." { names.append(name) }
    }
    return names.sorted()
}

func powerOff(_ reason: String) -> Never {
    log("powering off: \(reason)")
    sync()
    // sysrq "o" powers off; should it not, PID 1 exiting panics the kernel and panic=-1 with
    // QEMU's -no-reboot ends the machine as well.
    let fd = open("/proc/sysrq-trigger", O_WRONLY)
    _ = write(fd, "o", 1)
    sleep(5)
    exit(1)
}

/// /dev/vportNpM whose /sys/class/virtio-ports name is `portName`; waits for udev-less devtmpfs.
func findPort() -> String? {
    for _ in 0..<500 {
        for entry in directoryEntries("/sys/class/virtio-ports") {
            if words("/sys/class/virtio-ports/\(entry)/name") == [portName], access("/dev/\(entry)", F_OK) == 0 {
                return "/dev/\(entry)"
            }
        }
        usleep(10_000)
    }
    return nil
}

/// Serialises frame writes from the request loop and the exec's output thread.
final class PortWriter: @unchecked Sendable {
    private let fd: Int32
    private let lock = Mutex(())
    init(fd: Int32) { self.fd = fd }

    func send(_ frame: AgentFrame) {
        let bytes = frame.encoded()
        lock.withLock { _ in
            // The host end went away: nothing left to serve.
            guard writeAll(fd, bytes) else { powerOff("write to the agent port: \(String(cString: strerror(errno)))") }
        }
    }

    func fail(_ code: String, _ message: String) {
        send((try? AgentFrame(.error, json: AgentFailure(code: code, message: message))) ?? AgentFrame(.error))
    }
}

/// The level-1 sandbox the host configured; requests run one at a time.
final class AgentState: @unchecked Sendable {
    let engine: LinuxSandboxEngine
    var sandbox: LinuxSandbox?
    /// The first exec's end goes to the console (the benchmark's time breakdown); later ones do not.
    var execLogged = false
    init(engine: LinuxSandboxEngine) { self.engine = engine }
}

func failure(_ error: any Error) -> (String, String) {
    if let error = error as? LinuxSandboxError { return (error.code.rawValue, error.message) }
    return ("invalid_request", "\(error)")
}

func handle(_ frame: AgentFrame, state: AgentState, writer: PortWriter) {
    switch frame.kind {
    case .configure:
        do {
            let spec = try frame.decodeSandboxSpec()
            if let old = state.sandbox { old.destroyOnCallingThread(); state.sandbox = nil }
            state.sandbox = try state.engine.createOnCallingThread(spec)
            log("sandbox configured at \(uptime()) s")
            writer.send(AgentFrame(.ok))
        } catch {
            let (code, message) = failure(error)
            writer.fail(code, message)
        }
    case .exec:
        guard let sandbox = state.sandbox else { return writer.fail("not_configured", "exec before configure") }
        do {
            let request = try frame.decodeExecRequest()
            // The result goes out as soon as it is known; the exec's tidy-up (its first process's
            // exit, its cgroup) follows, before the next request is read.
            _ = try sandbox.execOnCallingThread(request, onOutput: { chunk in
                writer.send(AgentFrame(chunk.stream == .stdout ? .stdout : .stderr, chunk.bytes))
            }, answer: { result in
                // The output went out as stdout/stderr frames already; the host puts it back together.
                var summary = result
                summary.stdout = []
                summary.stderr = []
                do { writer.send(try AgentFrame(.execResult, json: summary)) } catch {
                    writer.fail("internal", "encoding the exec result: \(error)")
                }
                if !state.execLogged {
                    state.execLogged = true
                    log("first exec done at \(uptime()) s")
                }
            })
        } catch {
            let (code, message) = failure(error)
            writer.fail(code, message)
        }
    case .putFile:
        guard let sandbox = state.sandbox else { return writer.fail("not_configured", "putFile before configure") }
        do {
            let (header, contents) = try AgentFilePut.parse(frame.payload)
            try sandbox.writeWorkspaceFileOnCallingThread(header.path, contents: contents)
            writer.send(AgentFrame(.ok))
        } catch {
            let (code, message) = failure(error)
            writer.fail(code, message)
        }
    case .getFile:
        guard let sandbox = state.sandbox else { return writer.fail("not_configured", "getFile before configure") }
        do {
            let request = try frame.decode(AgentFileGet.self)
            let limit = min(max(request.limit, 0), AgentFrame.maximumPayload)
            writer.send(AgentFrame(.fileData, try sandbox.readWorkspaceFileOnCallingThread(request.path, limit: limit)))
        } catch {
            let (code, message) = failure(error)
            writer.fail(code, message)
        }
    case .shutdown:
        if let sandbox = state.sandbox { sandbox.destroyOnCallingThread() }
        writer.send(AgentFrame(.ok))
        powerOff("shutdown requested")
    case .panicForTesting:
        guard testHooks else {
            return writer.fail("invalid_request", "test hooks are disabled")
        }
        sync()
        let fd = open("/proc/sysrq-trigger", O_WRONLY)
        _ = write(fd, "c", 1)
        writer.fail("system", "the guest is still alive after sysrq c")
    case .hello, .stdout, .stderr, .execResult, .fileData, .ok, .error:
        writer.fail("invalid_request", "frame kind \(frame.kind) is not a request")
    }
}

// MARK: - main

func uptime() -> String {
    // CLOCK_BOOTTIME is /proc/uptime's clock, read to the millisecond.
    var now = timespec()
    clock_gettime(CLOCK_BOOTTIME, &now)
    let millis = Int(now.tv_sec) * 1000 + Int(now.tv_nsec) / 1_000_000
    let fraction = String(millis % 1000)
    return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}
log("started at \(uptime()) s")
signal(SIGPIPE, SIG_IGN)

/// Starts reading the dynamic loader, the C library and the level-1 sandbox's init (what the
/// sandbox's init and every dynamically linked command load first) into the page cache on a thread
/// of its own: QEMU serves those 9p reads on the host while this guest's one vCPU runs the agent,
/// instead of the sandbox's init and first command waiting for them later (measured: the guest's
/// span from "root ready" to the first exec's end 0.18 s shorter, p50 of 8 interleaved rounds
/// while the host was short of CPU; no difference at load ≈1). Best effort: a file that is not
/// there is skipped; nothing else depends on it.
func prefetchRuntime() {
    var thread = pthread_t()
    let started = pthread_create(&thread, nil, { _ in
        let files = ["/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"] + LinuxSandboxConfiguration().initCommand.prefix(1)
        for path in files {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED)
            close(fd)
        }
        return nil
    }, nil)
    if started == 0 { pthread_detach(thread) }
}
prefetchRuntime()
guard let portPath = findPort() else { powerOff("no virtio-serial port named \(portName)") }
let portFD = open(portPath, O_RDWR | O_CLOEXEC)
guard portFD >= 0 else { powerOff("open(\(portPath)): \(String(cString: strerror(errno)))") }
let writer = PortWriter(fd: portFD)

var uts = utsname()
uname(&uts)
let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
let controllers = words("/sys/fs/cgroup/cgroup.controllers")

/// Test switches on the kernel command line: `sandboxd.test_hooks=1` lets the host ask for a
/// panic; `sandboxd.test_sysrq=1` (the daemon's `vm.test_hooks`) lets a sandboxed command write
/// `/proc/sysrq-trigger`, so a test can crash this guest from inside with `echo c > /proc/sysrq-trigger`.
let kernelCommandLine = words("/proc/cmdline")
let testHooks = kernelCommandLine.contains("sandboxd.test_hooks=1")
let testSysrq = kernelCommandLine.contains("sandboxd.test_sysrq=1")

// The hello goes out before the engine is set up: the host's answer (`configure`) then travels
// while this guest builds the engine (cgroup subtree, seccomp filter, spawn helper: 0.1-0.2 s
// under TCG), and waits in the port until the loop below reads it. Should the engine fail, its
// error frame answers that first request, and the guest powers off.
writer.send(try! AgentFrame(.hello, json: AgentHello(kernelRelease: release, controllers: controllers)))

let engine: LinuxSandboxEngine
do {
    var configuration = LinuxSandboxConfiguration(cgroupRoot: "/sys/fs/cgroup", stateDirectory: "/run/sandboxd")
    // Not found next to the executable: this process runs as the dynamic loader (/proc/self/exe
    // is ld.so), and the helper must be the image's, not one the host happens to have in /usr.
    configuration.spawnerPath = GuestPaths.spawner
    // Requests come one at a time: one helper, not one per CPU (each is a process start under TCG).
    configuration.spawnerCount = 1
    // The seccomp program comes compiled from the host with the image; the engine checks it. No
    // image without one is valid: an engine without its filter does not start.
    guard let seccompProgram = readBytes(GuestPaths.seccompProgram) else {
        throw LinuxSandboxError(.seccomp, "the image has no seccomp program at \(GuestPaths.seccompProgram) (rebuild the guest image)")
    }
    configuration.seccompProgram = seccompProgram
    if testSysrq {
        configuration.procReadOnlyPaths.removeAll { $0 == "/proc/sysrq-trigger" }
        chmod("/proc/sysrq-trigger", 0o222)
    }
    engine = try LinuxSandboxEngine(configuration: configuration)
} catch {
    writer.fail("engine", "LinuxSandboxEngine: \(error)")
    powerOff("LinuxSandboxEngine: \(error)")
}
let state = AgentState(engine: engine)
log("ready at \(uptime()) s after boot")

/// Handles one request to its end before the next is read, on this thread: the engine's calls
/// for a caller that owns its thread, no Swift concurrency (starting its runtime cost 40–70 ms of
/// the first request under TCG).
func serve(_ frame: AgentFrame) {
    handle(frame, state: state, writer: writer)
}

// A cold guest's first spec came in the initramfs (GuestPaths.bootSpec): it is answered after
// the hello exactly as a configure the host sent would be, without waiting for the host.
if let spec = readBytes(GuestPaths.bootSpec) {
    unlink(GuestPaths.bootSpec)
    serve(AgentFrame(.configure, spec))
}

var decoder = AgentFrameDecoder()
var buffer = [UInt8](repeating: 0, count: 1 << 16)
while true {
    let count = buffer.withUnsafeMutableBytes { read(portFD, $0.baseAddress, $0.count) }
    if count < 0 {
        if errno == EINTR || errno == EAGAIN { continue }
        powerOff("read from the agent port: \(String(cString: strerror(errno)))")
    }
    // The port is connected from QEMU's start (a socket QEMU inherits); end of file means the
    // daemon's end closed: it exited or dropped this guest. Nobody is left to serve.
    if count == 0 { powerOff("the host closed the agent port") }
    decoder.append(buffer[0..<count])
    do {
        while let frame = try decoder.next() { serve(frame) }
    } catch {
        powerOff("malformed frame from the host: \(error)")
    }
}
