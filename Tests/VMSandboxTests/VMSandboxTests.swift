import Foundation
import SandboxCore
import Testing
@testable import VMSandbox
import VMAgentProtocol

@Suite("VMSandbox (level 3, TCG)", .serialized, .enabled(if: VMTestEnvironment.available))
struct VMSandboxTests {
    @Test("exec round trip: guest kernel, exit status, stdin, streamed stdout and stderr")
    func execRoundTrip() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        let uname = try await sandbox.exec(ExecRequest(["uname", "-r"]))
        #expect(uname.exitCode == 0)
        #expect(uname.out.trimmingCharacters(in: .whitespacesAndNewlines) == sandbox.guestKernelRelease)
        #expect(sandbox.guestKernelRelease.hasSuffix("-amd64"), "a Debian generic kernel: \(sandbox.guestKernelRelease)")

        let streamed = NSLockedValue<[OutputChunk]>([])
        let result = try await sandbox.exec(ExecRequest(["sh", "-c", "cat; echo to-stderr >&2; exit 7"], stdin: Array("hello from stdin\n".utf8))) { chunk in
            streamed.withLock { $0.append(chunk) }
        }
        #expect(result.exitCode == 7)
        #expect(result.out == "hello from stdin\n")
        #expect(result.err == "to-stderr\n")
        let chunks = streamed.withLock { $0 }
        #expect(chunks.filter { $0.stream == .stdout }.flatMap(\.bytes) == result.stdout)
        #expect(chunks.filter { $0.stream == .stderr }.flatMap(\.bytes) == result.stderr)

        do {
            _ = try await sandbox.exec(ExecRequest(["/no/such/program"]))
            Issue.record("a missing program ran")
        } catch {
            #expect(error.code == .guest, "\(error)")
        }
    }

    @Test("under TCG the guest's vCPU has no ERMS or FSRM: rep string copies run 8 bytes per TCG iteration, not 1")
    func tcgVCPUWithoutFastStrings() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        let flags = try await sandbox.exec(ExecRequest(["sh", "-c", "grep -m1 '^flags' /proc/cpuinfo"]))
        #expect(flags.exitCode == 0 && flags.out.contains(" sse2 "), "\(flags.out)\(flags.err)")
        let words = Set(flags.out.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
        #expect(!words.contains("erms") && !words.contains("fsrm"), "\(flags.out)")
    }

    @Test("a mebibyte of binary output and a mebibyte file cross the agent's channel byte-exact")
    func largeTransfersAreExact() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        // Every byte value, including the ones a tty in cooked mode would eat or rewrite (NUL,
        // XON 0x11, XOFF 0x13, CR, LF, ^C, ^D, DEL), in a pattern that never repeats with a short period.
        func pattern(_ count: Int, seed: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ ($0 >> 8) &+ seed) } }
        let stdoutSize = 1 << 20, stderrSize = 64 << 10
        let script = """
            import sys
            def pattern(n, seed): return bytes(((i * 131 + (i >> 8) + seed) & 0xff) for i in range(n))
            sys.stdout.buffer.write(pattern(\(stdoutSize), 0)); sys.stdout.flush()
            sys.stderr.buffer.write(pattern(\(stderrSize), 7)); sys.stderr.flush()
            """
        let streamed = NSLockedValue<[UInt8]>([])
        var started = Date()
        let result = try await sandbox.exec(ExecRequest(["python3", "-c", script], timeout: 240)) { chunk in
            if chunk.stream == .stdout { streamed.withLock { $0 += chunk.bytes } }
        }
        print(String(format: "vm test: %d + %d bytes of output in %.2f s", stdoutSize, stderrSize, Date().timeIntervalSince(started)))
        #expect(result.exitCode == 0, "\(result.err.prefix(500))")
        #expect(result.stdout.count == stdoutSize)
        #expect(result.stdout == pattern(stdoutSize, seed: 0), "stdout differs from the pattern")
        #expect(result.stderr == pattern(stderrSize, seed: 7), "stderr differs from the pattern")
        #expect(!result.stdoutTruncated && !result.stderrTruncated)
        #expect(streamed.withLock { $0 } == result.stdout, "the streamed chunks are the result's stdout")

        // Host → guest in one frame much larger than the port's buffers, then back.
        let file = pattern(1 << 20, seed: 3)
        started = Date()
        try await sandbox.writeWorkspaceFile("pattern.bin", contents: file)
        let sum = try await sandbox.exec(ExecRequest(["sha256sum", "pattern.bin"]))
        #expect(sum.out.split(separator: " ").first.map(String.init) == SHA256.hex(of: file), "\(sum.out) \(sum.err)")
        let back = try await sandbox.readWorkspaceFile("pattern.bin")
        print(String(format: "vm test: 1 MiB file put, summed and read back in %.2f s", Date().timeIntervalSince(started)))
        #expect(back == file, "the file read back differs (\(back.count) bytes)")
    }

    @Test("files persist between execs and file put/get stay inside the workspace")
    func filesPersist() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        try await sandbox.writeWorkspaceFile("input.txt", contents: Array("42\n".utf8))
        let first = try await sandbox.exec(ExecRequest(["sh", "-c", "read n < input.txt; echo $((n * 2)) > doubled.txt"]))
        #expect(first.exitCode == 0, "\(first.err)")
        let second = try await sandbox.exec(ExecRequest(["cat", "doubled.txt"]))
        #expect(second.out == "84\n")
        #expect(try await sandbox.readWorkspaceFile("doubled.txt") == Array("84\n".utf8))
        for escape in ["../etc/passwd", "/etc/passwd", "../../.sandbox/sandbox-guest"] {
            do {
                _ = try await sandbox.readWorkspaceFile(escape)
                Issue.record("read \(escape) outside the workspace")
            } catch {
                #expect(error.guestCode == "workspace_path", "\(escape): \(error)")
            }
        }
    }

    @Test("host secrets, the state directory and /work are not in the guest at all")
    func hostSecretsUnreadable() async throws {
        let engine = try await SharedVMEngine.shared.get()
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        // The paths exist on the host, so the test can fail.
        let secrets = ["/etc/shadow", "/root", "/work", engine.configuration.stateDirectory, VMTestEnvironment.imageCache]
        for path in secrets { #expect(access(path, F_OK) == 0, "\(path) should exist on the host for this test") }
        var script = ""
        for path in secrets + ["/home", "/var/lib/sandboxd"] {
            script += "if [ -e '\(path)' ]; then echo 'VISIBLE \(path)'; ls -la '\(path)' 2>&1 | head -3; fi\n"
        }
        script += "ls -a /; echo ---; cat /etc/passwd"
        let result = try await sandbox.exec(ExecRequest(["sh", "-c", script]))
        #expect(!result.out.contains("VISIBLE"), "\(result.out)")
        #expect(!result.out.contains("x:1000:"), "only the generated passwd: \(result.out)")
        // The guest root holds the runtime and nothing of the host's other top-level directories.
        let top = Set(result.out.components(separatedBy: "---")[0].split(separator: "\n").map(String.init))
        for hostOnly in ["home", "root", "work", "var", "opt", "srv", "mnt", "boot"] where top.contains(hostOnly) {
            Issue.record("host directory /\(hostOnly) is in the guest sandbox: \(top.sorted())")
        }
        // And not from the agent's side either: the guest root itself (outside level 1) has no
        // /root contents, /work or /var/lib from the host; the 9p shares are /usr and the agent.
        let allowed: Set = ["/usr", "/.sandbox", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"]
        #expect(engine.image.shares.allSatisfy { allowed.contains($0.path) }, "\(engine.image.shares)")
    }

    @Test("the guest cannot reach the host's loopback")
    func noHostLoopback() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        let listener = try LoopbackListener()
        defer { listener.close() }
        let script = """
            import socket, sys
            for host in ("127.0.0.1", "10.0.2.2"):
                try:
                    socket.create_connection((host, \(listener.port)), timeout=3)
                    print("CONNECTED", host)
                except OSError as error:
                    print("refused", host, error)
            """
        let result = try await sandbox.exec(ExecRequest(["python3", "-c", script], timeout: 60))
        #expect(result.exitCode == 0, "\(result.err)")
        #expect(!result.out.contains("CONNECTED"), "\(result.out)")
        #expect(listener.acceptedCount() == 0, "the host listener saw a connection from the guest")
        // The listener does accept from the host, so the check above can fail.
        try listener.selfTest()
    }

    @Test("a memory bomb is contained by the guest's cgroup and the VM keeps serving")
    func memoryBombContained() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        let harmless = try await sandbox.exec(ExecRequest(["sh", "-c", "echo $$; cat /proc/self/cgroup"]))
        #expect(harmless.exitCode == 0)
        #expect(sandbox.limitsEnforced, "guest controllers: \(sandbox.guestControllers)")
        let bomb = try await sandbox.exec(ExecRequest(["python3", "-c", "b = []\nwhile True: b.append(bytearray(16 << 20))"], timeout: 60))
        #expect(bomb.oomKilled, "exit \(String(describing: bomb.exitCode)) signal \(String(describing: bomb.signal)) \(bomb.err)")
        #expect(bomb.status == .oom)
        if let peak = bomb.usage.memoryPeakBytes { #expect(peak <= 64 << 20, "peak \(peak)") }
        let after = try await sandbox.exec(ExecRequest(["echo", "still serving"]))
        #expect(after.out == "still serving\n")
        #expect(sandbox.state == .running)
    }

    @Test("QEMU runs as its own unprivileged uid, in its own namespaces and cgroup, with no capabilities")
    func qemuIsJailed() async throws {
        let sandbox = try await SharedVMEngine.shared.servingSandbox()
        let pid = try #require(sandbox.qemuPID)
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> String {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) } ?? ""
        }
        let uid = String(sandbox.qemuUID)
        #expect(field("Uid").split(separator: "\t").allSatisfy { $0 == uid }, "Uid: \(field("Uid"))")
        #expect(field("Gid").split(separator: "\t").allSatisfy { $0 == uid }, "Gid: \(field("Gid"))")
        #expect(field("Groups").isEmpty, "Groups: \(field("Groups"))")
        #expect(sandbox.qemuUID != 0)
        for capability in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(field(capability) == "0000000000000000", "\(capability): \(field(capability))")
        }
        #expect(field("NoNewPrivs") == "1")
        #expect(field("Seccomp") == "2", "QEMU's -sandbox filter")
        for namespace in ["mnt", "pid", "net", "ipc", "uts"] {
            let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/\(namespace)")
            let qemu = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(namespace)")
            #expect(own != qemu, "QEMU shares the host's \(namespace) namespace (\(qemu))")
        }
        // PID 1 of its own pid namespace.
        #expect(field("NSpid").split(separator: "\t").last == "1", "NSpid: \(field("NSpid"))")
        let cgroup = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        let vmName = (sandbox.cgroupPath as NSString).lastPathComponent
        #expect(cgroup.contains(vmName), "\(cgroup)")
        let commandLine = try String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8).replacingOccurrences(of: "\0", with: " ")
        #expect(commandLine.contains("-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"))
        #expect(commandLine.contains("-nodefaults -no-user-config"))
        #expect(!commandLine.contains("path=/,"), "the host root must never be shared: \(commandLine)")
    }

    @Test("a guest kernel panic ends that sandbox with an error, and nothing else")
    func guestPanicEndsOnlyThatSandbox() async throws {
        let engine = try await SharedVMEngine.shared.get()
        let serving = try await SharedVMEngine.shared.servingSandbox()
        let victim = try await engine.create(SandboxSpec(id: "vmtest-panic"))
        let pid = try #require(victim.qemuPID)
        // Inside level 1, sysrq is out of reach: the guest survives the attempt.
        let attempt = try await victim.exec(ExecRequest(["sh", "-c", "echo c > /proc/sysrq-trigger; echo survived"]))
        #expect(attempt.out.contains("survived"), "\(attempt.out) \(attempt.err)")
        #expect(victim.state == .running)
        // The agent itself (test hook) panics the guest kernel.
        do {
            try await victim.panicGuestForTesting()
            Issue.record("the guest answered after a kernel panic")
        } catch {
            #expect(error.code == .guestGone, "\(error)")
        }
        #expect(victim.state == .failed)
        #expect(victim.failureReason != nil)
        do {
            _ = try await victim.exec(ExecRequest(["true"]))
            Issue.record("exec on a panicked guest succeeded")
        } catch {
            #expect(error.code == .guestGone, "\(error)")
        }
        #expect(kill(pid, 0) != 0, "QEMU \(pid) still exists after the panic")
        #expect(!FileManager.default.fileExists(atPath: victim.cgroupPath))
        #expect(!FileManager.default.fileExists(atPath: victim.stateDirectory))
        await victim.destroy()
        let other = try await serving.exec(ExecRequest(["echo", "unaffected"]))
        #expect(other.out == "unaffected\n")
    }

    @Test("destroy leaves nothing behind: process, cgroup, state directory, sockets")
    func destroyLeavesNothing() async throws {
        let engine = try await SharedVMEngine.shared.get()
        let sandbox = try await engine.create(SandboxSpec(id: "vmtest-destroy"))
        let pid = try #require(sandbox.qemuPID)
        #expect(FileManager.default.fileExists(atPath: sandbox.cgroupPath))
        #expect(FileManager.default.fileExists(atPath: sandbox.consoleLogPath))
        _ = try await sandbox.exec(ExecRequest(["sh", "-c", "sleep 1000 & echo started"]))
        await sandbox.destroy()
        #expect(kill(pid, 0) != 0, "QEMU \(pid) survived destroy")
        #expect(!FileManager.default.fileExists(atPath: sandbox.cgroupPath))
        #expect(!FileManager.default.fileExists(atPath: sandbox.stateDirectory))
        #expect(sandbox.state == .destroyed)
        await sandbox.destroy()  // idempotent
        do {
            _ = try await sandbox.exec(ExecRequest(["true"]))
            Issue.record("exec after destroy succeeded")
        } catch {
            #expect(error.code == .guestGone)
        }
    }

    @Test("leftovers of a previous daemon (a VM cgroup with a process in it) are reaped")
    func reapLeftovers() async throws {
        let engine = try await SharedVMEngine.shared.get()
        let leftover = engine.cgroupParent + "/vm-leftover\(getpid())"
        #expect(mkdir(leftover, 0o755) == 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "echo $$ > \(leftover)/cgroup.procs && exec sleep 1000"]
        try process.run()
        var populated = false
        for _ in 0..<200 where !populated {
            populated = ((try? String(contentsOfFile: leftover + "/cgroup.procs", encoding: .utf8)) ?? "").contains(String(process.processIdentifier))
            if !populated { usleep(10_000) }
        }
        #expect(populated)
        let reaped = await engine.reapLeftovers()
        #expect(reaped.contains("vm-leftover\(getpid())"), "\(reaped)")
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(!FileManager.default.fileExists(atPath: leftover))
        // The engine's own live guests were spared.
        let serving = try await SharedVMEngine.shared.servingSandbox()
        #expect(try await serving.exec(ExecRequest(["true"])).exitCode == 0)
    }

    @Test("the warm pool hands out pre-booted guests and refills")
    func warmPool() async throws {
        let engine = try await SharedVMEngine.shared.get()
        var waited = 0.0
        while engine.pooledCount == 0, waited < 240 {
            try await Task.sleep(for: .milliseconds(200))
            waited += 0.2
        }
        #expect(engine.pooledCount == 1)
        let started = Date()
        let sandbox = try await engine.create(SandboxSpec(id: "vmtest-pool", limits: ResourceLimits(memory: .mebibytes(128))))
        let result = try await sandbox.exec(ExecRequest(["echo", "warm"]))
        print(String(format: "vm test: warm create+exec %.3f s", Date().timeIntervalSince(started)))
        #expect(sandbox.fromPool)
        #expect(result.out == "warm\n")
        await sandbox.destroy()
    }
}

/// A TCP listener on the host's 127.0.0.1 that counts accepted connections.
final class LoopbackListener: @unchecked Sendable {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard fd >= 0, bound == 0, listen(fd, 16) == 0 else { throw VMSandboxError(.system, "listener: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        port = UInt16(bigEndian: address.sin_port)
    }

    /// Connections accepted so far (drains the queue).
    func acceptedCount() -> Int {
        var count = 0
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 { return count }
            Glibc.close(client)
            count += 1
        }
    }

    /// Connects from the host and checks it is accepted.
    func selfTest() throws {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(client) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(connected == 0)
        usleep(50_000)
        #expect(acceptedCount() == 1, "the listener must see a host connection")
    }

    func close() { Glibc.close(fd) }
}

@Suite("VMSandbox: no QEMU outlives its daemon", .enabled(if: VMTestEnvironment.available))
struct OrphanTests {
    @Test("when the process that started a guest is killed, the guest's QEMU dies too")
    func qemuDiesWithItsDaemon() async throws {
        let tool = URL(fileURLWithPath: GuestImageBuilder.defaultAgentBinary()).deletingLastPathComponent().appendingPathComponent("sandbox-vm").path
        try #require(access(tool, X_OK) == 0, "sandbox-vm is built next to sandbox-guest: \(tool)")
        let root = try #require(VMSandboxEngine.detectCgroupRoot())
        // Named per test process: a concurrent run's sandbox-vm reaps its own subtree, not this one.
        let subtree = "sandboxd-vm-test-orphan-\(getpid())"
        let parent = root + "/" + subtree
        let state = NSTemporaryDirectory() + "sandboxd-vm-test-orphan-\(getpid())"
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: tool)
        daemon.arguments = ["run", "--cache", VMTestEnvironment.imageCache, "--tcg", "--state", state, "--subtree", subtree, "--", "sleep", "1000"]
        daemon.standardOutput = FileHandle.nullDevice
        daemon.standardError = FileHandle.nullDevice
        try daemon.run()
        // Its guest is up once a QEMU runs in one of the subtree's VM cgroups.
        var qemu: pid_t?
        for _ in 0..<2400 where qemu == nil {
            for vm in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where vm.hasPrefix("vm-") {
                let procs = (try? String(contentsOfFile: "\(parent)/\(vm)/cgroup.procs", encoding: .utf8)) ?? ""
                for line in procs.split(separator: "\n") {
                    if let pid = pid_t(line), ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? "").contains("qemu-system") { qemu = pid }
                }
            }
            if qemu == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let pid = try #require(qemu, "no QEMU appeared under \(parent)")
        kill(daemon.processIdentifier, SIGKILL)
        daemon.waitUntilExit()
        var gone = false
        for _ in 0..<300 where !gone {
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            gone = stat.isEmpty || stat.contains(") Z ")
            if !gone { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(gone, "QEMU \(pid) outlived the process that started it")
        // The next daemon's start would reap these; this test cleans up after itself.
        for vm in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where vm.hasPrefix("vm-") {
            JailedQEMU.killCgroup(parent + "/" + vm)
            JailedQEMU.removeCgroup(parent + "/" + vm)
        }
        rmdir(parent)
        try? FileManager.default.removeItem(atPath: state)
    }
}
