import Foundation
import Glibc
import SandboxCore
import Testing

// MARK: - Network

extension HostileSandboxTests {
    @Test("connecting to the host's 127.0.0.1 fails: the sandbox has only its own loopback")
    func hostLoopbackIsUnreachable() async throws {
        try await HostileScenario.run { s in
            let tcp = try HostListener.loopbackTCP()
            let abstract = try HostListener.unix(name: "sandboxd-hostile-\(s.tag)", abstract: true)
            let run = try await s.hostile("connect", String(tcp.port), abstract.unixName!, HostFiles.externalIPv4() ?? "")
            run.expectCompleted()
            run.expectRefused("tcp_loopback", with: ["ECONNREFUSED"])
            run.expectRefused("tcp6_loopback", with: ["ECONNREFUSED", "EADDRNOTAVAIL", "ENETUNREACH", "EAFNOSUPPORT"])
            if run["tcp_host_ip"] != nil {
                run.expectRefused("tcp_host_ip", with: ["ENETUNREACH", "EHOSTUNREACH", "ETIMEDOUT", "ECONNREFUSED"])
            }
            #expect(!tcp.wasReached, "ESCAPE: the host's 127.0.0.1:\(tcp.port) listener accepted a connection from the sandbox")
            #expect(!abstract.wasReached, "ESCAPE: the host's abstract socket accepted a connection from the sandbox")
            #expect(run.observed("netdevs") == "lo,", "network devices other than lo inside: \(run.observed("netdevs") ?? "none")")
        }
    }

    @Test("the host's Unix sockets, abstract and on disk, are unreachable")
    func hostUnixSocketsAreUnreachable() async throws {
        try await HostileScenario.run { s in
            let abstract = try HostListener.unix(name: "sandboxd-hostile-unix-\(s.tag)", abstract: true)
            let path = s.scratchDirectory + "/host.sock"
            let onDisk = try HostListener.unix(name: path, abstract: false)
            chmod(s.scratchDirectory, 0o755)
            chmod(path, 0o777)
            let run = try await s.hostile("connect", "9", abstract.unixName!, "", path)
            run.expectCompleted()
            run.expectRefused("unix_abstract", with: ["ECONNREFUSED"])
            run.expectRefused("unix_path", with: Errno.absent)
            #expect(!abstract.wasReached && !onDisk.wasReached, "ESCAPE: a host Unix socket accepted a connection from the sandbox")
        }
    }

    @Test("AF_VSOCK sockets are refused: vsock ignores network namespaces and leads to the hypervisor")
    func vsockIsRefused() async throws {
        try await HostileScenario.run { s in
            // socket, bind and listen only: connecting to the hypervisor would touch this machine's own infrastructure.
            let run = try await s.hostile("vsock", String(Int.random(in: 40_000..<60_000)))
            run.expectCompleted()
            // EAFNOSUPPORT where the kernel has no vsock at all; EPERM from the filter otherwise.
            run.expectRefused(["vsock_socket", "vsock_seqpacket", "vsock_socket_high_bits"], with: ["EPERM", "EAFNOSUPPORT"])
            #expect(run["vsock_listen"] == nil, "ESCAPE: the sandbox listens on a vsock port of this machine\n\(run.transcript)")
        }
    }

    @Test("the host's SysV IPC objects and POSIX message queues are not visible")
    func hostIPCIsInvisible() async throws {
        try await HostileScenario.run { s in
            let key = "0x5bd0" + String(format: "%04x", Int.random(in: 0..<0x10000))
            let queue = "/sandboxd-hostile-\(s.tag)"
            let hostile = s.payloads.hostDirectory + "/hostile"
            // The payload's host-side helper only creates (and removes) the objects.
            let created = try HostCommand.run(hostile, ["ipc-host", key, queue])
            defer { _ = try? HostCommand.run(hostile, ["ipc-host", key, queue, "remove"]) }
            try #require(["shm_create=OK", "msg_create=OK", "sem_create=OK", "mq_create=OK"].allSatisfy(created.contains),
                         "could not create the host's IPC objects: \(created)")
            let run = try await s.hostile("ipc", key, queue)
            run.expectCompleted()
            run.expectRefused(["shmget_host", "msgget_host", "semget_host", "mq_open_host"], with: Errno.absent)
        }
    }

    @Test("raw and packet sockets are refused")
    func rawSocketsAreRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("rawsock")
            run.expectCompleted()
            run.expectRefused(["af_packet_raw", "af_packet_dgram", "inet_raw_icmp", "inet_raw", "inet6_raw"], with: Errno.seccomp)
        }
    }
}

// MARK: - Terminals

extension HostileSandboxTests {
    @Test("TIOCSTI injection is refused on stdin and on the sandbox's own terminal; TIOCLINUX too")
    func tiocstiIsRefused() async throws {
        try await HostileScenario.run { s in
            let run = try await s.hostile("tiocsti")
            run.expectCompleted()
            // Filtered by ioctl command, so EPERM whatever the descriptor is (not ENOTTY from a pipe).
            // `_high_bits`: the command with bit 32 set, which the kernel drops (it reads 32 bits).
            run.expectRefused(["tiocsti_stdin", "tiocsti_stdin_high_bits", "tioclinux_stdin"], with: Errno.seccomp)
            if run["pty_slave_open"] == "OK" {
                // A terminal that is the payload's controlling tty: here only the filter stands in the way.
                run.expectRefused(["tiocsti_pty", "tiocsti_pty_high_bits", "tioclinux_pty"], with: Errno.seccomp)
            }
            if run["dev_tty_open"] == "OK" { run.expectRefused("tiocsti_dev_tty", with: Errno.seccomp) }
        }
    }
}

// MARK: - Descriptors and output

extension HostileSandboxTests {
    @Test("a descriptor the daemon holds without CLOEXEC is not inherited: only 0, 1, 2 inside")
    func leakedDescriptorIsNotInherited() async throws {
        try await HostileScenario.run { s in
            // Deliberately without O_CLOEXEC, as a careless daemon would hold it.
            let fd = open(s.secretPath, O_RDONLY)
            try #require(fd >= 0, "open(\(s.secretPath)): \(errnoText())")
            defer { close(fd) }
            let run = try await s.hostile("fds", String(fd))
            run.expectCompleted()
            #expect(run.observed("fds") == "0,1,2", "descriptors inside beyond stdio: \(run.transcript)")
            run.expectRefused("leaked_fd", with: ["EBADF"])
            run.expectNotLeaked(s.secret, what: "the host file behind a leaked descriptor")
        }
    }

    @Test("a 100 MB stdout flood is capped, flagged truncated, and the daemon's memory stays flat")
    func stdoutFloodIsCapped() async throws {
        try await HostileScenario.run { s in
            let limit = ByteCount.mebibytes(1)
            _ = try await s.hostile("status", outputLimit: limit) // warm up the engine's own first-use allocations
            let before = HostFiles.residentBytes()
            let run = try await s.hostile("flood", String(100 * 1024 * 1024), "both", timeout: 60, outputLimit: limit)
            let after = HostFiles.residentBytes()
            #expect(!run.result.timedOut, "the flood did not finish: \(run.result)")
            #expect(UInt64(run.result.stdout.count) <= limit.bytes, "stdout kept \(run.result.stdout.count) bytes, over the \(limit) cap")
            #expect(UInt64(run.result.stderr.count) <= limit.bytes, "stderr kept \(run.result.stderr.count) bytes, over the \(limit) cap")
            #expect(run.result.stdoutTruncated && run.result.stderrTruncated, "the output was not flagged truncated")
            let growth = Int64(after) - Int64(before)
            print("stdout flood: 100 MiB on each stream, kept \(run.result.stdout.count) + \(run.result.stderr.count) bytes, test process RSS \(before / 1024) KiB → \(after / 1024) KiB")
            #expect(growth < 48 * 1024 * 1024, "the test process grew by \(growth / 1024) KiB while the sandbox flooded 200 MiB of output")
        }
    }

    @Test("many sandboxes leave no descriptors, cgroups or processes behind")
    func repeatedRunsLeakNothing() async throws {
        try await HostileScenario.run { s in
            _ = try await s.hostile("status")
            let before = HostFiles.openDescriptors()
            for _ in 0..<20 {
                let run = try await s.hostile("status")
                run.expectCompleted()
            }
            // Every suite of this process runs at the same time and opens descriptors of its own, so
            // the count proves nothing. What a sandbox could leak: the engine's own descriptors
            // (pidfds of its processes, cgroup and state directory fds) and pipes (stdio, report,
            // status) whose every end is held by this process alone, nobody on the other side.
            func leaked() -> [Int32: String] {
                let now = HostFiles.openDescriptors()
                let orphans = HostFiles.pipesHeldOnlyByThisProcess(now)
                return now.filter { fd, target in
                    before[fd] != target && (s.engine.isEngineDescriptor(fd, target) || orphans.contains(target))
                }
            }
            var left = leaked()
            for _ in 0..<20 where !left.isEmpty {
                try await Task.sleep(for: .milliseconds(100))
                left = leaked()
            }
            #expect(left.isEmpty, "descriptors left open over 20 sandboxes: \(left.sorted { $0.key < $1.key })")
        }
    }
}

// MARK: - Lifetime

extension HostileSandboxTests {
    @Test("setsid + double fork does not survive the timeout: nothing of it runs on the host afterwards")
    func doubleForkDiesWithTimeout() async throws {
        try await HostileScenario.run { s in
            let marker = "hostile-linger-\(s.tag)"
            let run = try await s.hostile("linger", marker, "wait", timeout: 2)
            #expect(run.result.timedOut, "the wall-clock limit did not fire: \(run.transcript)")
            #expect(run.observed("linger_started") == marker, "the payload did not get to fork its descendants: \(run.transcript)")
            try await expectGone(marker: marker)
        }
    }

    @Test("descendants left behind by a command that exits die with the one-shot sandbox")
    func orphansDieWithOneShot() async throws {
        try await HostileScenario.run { s in
            let marker = "hostile-orphan-\(s.tag)"
            let run = try await s.hostile("linger", marker, "exit", timeout: 20)
            run.expectCompleted()
            #expect(run.observed("linger_started") == marker, "the payload did not get to fork its descendants: \(run.transcript)")
            try await expectGone(marker: marker)
        }
    }

    @Test("in a persistent sandbox, an exec's setsid + double-forked descendants die with its timeout")
    func doubleForkDiesWithExecTimeout() async throws {
        try await HostileScenario.run { s in
            let marker = "hostile-exec-linger-\(s.tag)"
            try await s.withSandbox { sandbox in
                let result = try await sandbox.exec(ExecRequest([s.payloads.hostile, "linger", marker, "wait"], timeout: 2))
                let run = PayloadRun(arguments: ["hostile", "linger", marker, "wait"], result: result)
                #expect(run.result.timedOut, "the wall-clock limit did not fire: \(run.transcript)")
                #expect(run.observed("linger_started") == marker, "the payload did not get to fork its descendants: \(run.transcript)")
                // The sandbox stays up; the exec's processes must not.
                let atReturn = HostFiles.processes(withMarker: marker)
                if !atReturn.isEmpty { print("exec timeout: \(atReturn.count) descendants still present when exec returned: \(atReturn)") }
                try await expectGone(marker: marker)
                let after = try await sandbox.exec(ExecRequest(["/bin/true"]))
                #expect(after.exitCode == 0, "the sandbox no longer runs commands after an exec timed out: \(after)")
            }
        }
    }

    /// No process with `marker` in its command line exists on the host. The engine must have killed
    /// them before returning; a short grace covers SIGKILL delivery. Any found are killed by pid
    /// (they carry this test's unique marker, so this test started them).
    private func expectGone(marker: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        var survivors = HostFiles.processes(withMarker: marker)
        for _ in 0..<10 where !survivors.isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            survivors = HostFiles.processes(withMarker: marker)
        }
        #expect(survivors.isEmpty, "ESCAPE: processes of the sandbox survive on the host: \(survivors)", sourceLocation: sourceLocation)
        for pid in survivors { kill(pid, SIGKILL) }
    }
}

// MARK: - Host name

extension HostileSandboxTests {
    @Test("sethostname changes only the sandbox; the host's hostname is unchanged")
    func sethostnameStaysInside() async throws {
        try await HostileScenario.run { s in
            let hostBefore = HostFiles.hostname()
            let run = try await s.hostile("hostname", hostBefore)
            run.expectCompleted()
            #expect(run.observed("uts") == nil, "the sandbox shares the host's UTS namespace: \(run.transcript)")
            #expect(run.observed("nodename")?.hasPrefix("sbx-") == true, "unexpected sandbox hostname: \(run.transcript)")
            // Capabilities are dropped, so even the sandbox's own name is fixed.
            run.expectRefused(["sethostname", "setdomainname"], with: Errno.seccomp)
            #expect(HostFiles.hostname() == hostBefore, "the host's hostname changed")
        }
    }
}
