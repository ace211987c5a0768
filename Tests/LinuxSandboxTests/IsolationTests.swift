import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    @Suite("isolation")
    struct IsolationTests {
        /// Runs a shell script in a fresh one-shot sandbox.
        func sh(_ script: String, spec: SandboxSpec = TestEngine.spec()) async throws -> (ExecResult, TestEngine) {
            let t = try TestEngine()
            let r = try await t.engine.run(spec, ExecRequest(["/bin/sh", "-c", script]))
            return (r, t)
        }

        @Test("the hostname is sbx- and the start of the id")
        func hostname() async throws {
            guard Host.canRunSandboxes else { return }
            let spec = SandboxSpec(id: "abcdef1234567890xyz", limits: .unlimited)
            let (r, t) = try await sh("cat /proc/sys/kernel/hostname; cat /etc/hostname", spec: spec)
            #expect(r.out == "sbx-abcdef123456\nsbx-abcdef123456\n")
            var name = [CChar](repeating: 0, count: 256)
            gethostname(&name, 255)
            #expect(String(decoding: name.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) != "sbx-abcdef123456")
            #expect(await t.finish())
        }

        @Test("root inside is an unprivileged host id from the configured range")
        func userNamespace() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; id -G"]))
            let lines = r.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
            #expect(lines == ["0", "0", "0 \(sandbox.hostID) 1", "0 \(sandbox.hostID) 1", "0"])
            let config = t.engine.configuration
            #expect(sandbox.hostID >= config.idBase && sandbox.hostID < config.idBase + config.idCount)
            // The host sees the sandbox's processes under that uid.
            let status = try String(decoding: readAll("/proc/\(sandbox.initPID)/status"), as: UTF8.self)
            #expect(status.contains("Uid:\t\(sandbox.hostID)\t\(sandbox.hostID)\t\(sandbox.hostID)\t\(sandbox.hostID)"))
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("two live sandboxes run as different host ids")
        func distinctIDs() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let a = try await t.engine.create(TestEngine.spec("a"))
            let b = try await t.engine.create(TestEngine.spec("b"))
            #expect(a.hostID != b.hostID)
            await a.destroy()
            await b.destroy()
            #expect(await t.finish())
        }

        @Test("the network has only lo, and it is up")
        func loopbackOnly() async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /proc/net/route | wc -l")
            #expect(r.out == "lo\n1\n")
            #expect(await t.finish())
            let py = "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname()); print('connected')"
            guard access("/usr/bin/python3", X_OK) == 0 else { print("skipping the loopback connect: no /usr/bin/python3"); return }
            let t2 = try TestEngine()
            let r2 = try await t2.engine.run(TestEngine.spec(), ExecRequest(["/usr/bin/python3", "-c", py]))
            #expect(r2.out == "connected\n", "\(r2.err)")
            #expect(await t2.finish())
        }

        @Test("/etc is generated: passwd and group are sandboxd's, no shadow")
        func generatedEtc() async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("cat /etc/passwd; echo ---; cat /etc/group; echo ---; wc -c < /etc/resolv.conf; test -e /etc/shadow || echo no-shadow; whoami")
            #expect(r.out == "root:x:0:0:sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n---\nroot:x:0:\nnogroup:x:65534:\n---\n0\nno-shadow\nroot\n")
            #expect(await t.finish())
        }

        @Test("host directories outside the runtime are not reachable", arguments: ["/root", "/home", "/var", "/run", "/work", "/etc/shadow", "/srv", "/opt", "/sys", "/boot", "/mnt"])
        func unreachable(path: String) async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("ls -A \(path) 2>/dev/null | head -3; test -e \(path) && echo exists || echo absent")
            #expect(r.out == "absent\n")
            #expect(await t.finish())
        }

        @Test("/proc/1/root and the old root lead nowhere outside")
        func noWayBack() async throws {
            guard Host.canRunSandboxes else { return }
            // A one-shot sandbox's PID 1 is not dumpable: its /proc entries are closed to the
            // sandbox, and its command line shows no daemon arguments. The sandbox's own root, seen
            // through /proc/self/root, is the sandbox's, and no old root is mounted.
            let (r, t) = try await sh("tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc/1/root/ 2>/dev/null || echo closed; ls /proc/self/root/ | tr '\\n' ' '; echo; cut -d' ' -f2 /proc/self/mounts | grep -c -E '^/(oldroot|work|home|root)(/|$)' ")
            #expect(r.out.hasPrefix("sandboxd-init "))
            #expect(r.out.hasSuffix("\nclosed\nbin dev etc lib lib64 proc sbin tmp usr workspace \n0\n"), "\(r.out)")
            #expect(await t.finish())
        }

        @Test("a one-shot sandbox's PID 1 is locked down like the command")
        func oneShotInitLockedDown() async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/1/status | tr -s '\\t' ' '")
            #expect(r.out == "CapPrm: 0000000000000000\nCapEff: 0000000000000000\nCapBnd: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n", "\(r.out)")
            #expect(await t.finish())
        }

        @Test("the root and the runtime are read-only; /tmp and the workspace are writable tmpfs")
        func readOnlyRoot() async throws {
            guard Host.canRunSandboxes else { return }
            let script = """
            for p in /x /usr/x /etc/x /bin/x; do touch $p 2>/dev/null && echo "wrote $p"; done
            touch /tmp/a /workspace/b && echo scratch-ok
            grep -E ' / | /tmp | /workspace | /usr ' /proc/self/mounts | cut -d' ' -f2,3,4 | cut -d, -f1 | sort
            """
            let (r, t) = try await sh(script)
            #expect(r.out == "scratch-ok\n/ tmpfs ro\n/tmp tmpfs rw\n/usr ext4 ro\n/workspace tmpfs rw\n" || r.out.contains("scratch-ok\n/ tmpfs ro\n"), "\(r.out)")
            #expect(!r.out.contains("wrote"))
            #expect(await t.finish())
        }

        @Test("the tmpfs size cap holds")
        func tmpfsCap() async throws {
            guard Host.canRunSandboxes else { return }
            var spec = TestEngine.spec()
            spec.limits.tmpfsSize = .mebibytes(1)
            let (r, t) = try await sh("head -c 3000000 /dev/zero > /workspace/big; echo rc=$?; wc -c < /workspace/big", spec: spec)
            #expect(r.out.hasPrefix("rc=1\n"))
            #expect((Int(r.out.split(separator: "\n").last ?? "") ?? .max) <= 1 << 20)
            #expect(await t.finish())
        }

        @Test("runc's masked paths are empty and its read-only paths are read-only")
        func procMasks() async throws {
            guard Host.canRunSandboxes else { return }
            let script = """
            cat /proc/kcore 2>/dev/null | wc -c; cat /proc/keys | wc -c; cat /proc/timer_list | wc -c; ls /proc/acpi 2>/dev/null | wc -l
            echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written
            echo x > /proc/sys/kernel/hostname 2>/dev/null && echo sys-written
            grep -E ' /proc/sys ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1
            """
            let (r, t) = try await sh(script)
            #expect(r.out == "0\n0\n0\n0\nro\n", "\(r.out)")
            #expect(await t.finish())
        }

        @Test("/dev has only the minimal devices")
        func minimalDev() async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("ls -A /dev | tr '\\n' ' '; echo; echo x > /dev/null && head -c 4 /dev/zero | wc -c; test -e /dev/sda || echo no-disk; test -e /dev/mem || echo no-mem")
            #expect(r.out == "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n4\nno-disk\nno-mem\n", "\(r.out)")
            #expect(await t.finish())
        }

        @Test("no descriptors beyond stdio are inherited")
        func onlyStdio() async throws {
            guard Host.canRunSandboxes else { return }
            // readlink holds nothing but what it inherited: any fd above 2 would resolve.
            let t = try TestEngine()
            let probe = (3...40).map { "/proc/self/fd/\($0)" }
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["/usr/bin/readlink"] + probe))
            #expect(r.out == "")
            #expect(r.exitCode == 1)
            let stdio = try await t.engine.run(TestEngine.spec(), ExecRequest(["/usr/bin/readlink", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]))
            #expect(stdio.out.split(separator: "\n").count == 3)
            #expect(await t.finish())
        }

        @Test("every capability set is empty, no_new_privs is set, seccomp filters")
        func privileges() async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '")
            #expect(r.out == """
                CapInh: 0000000000000000
                CapPrm: 0000000000000000
                CapEff: 0000000000000000
                CapBnd: 0000000000000000
                CapAmb: 0000000000000000
                NoNewPrivs: 1
                Seccomp: 2

                """, "\(r.out)")
            #expect(await t.finish())
        }

        @Test("core dumps are off and the open-files cap is applied")
        func rlimits() async throws {
            guard Host.canRunSandboxes else { return }
            var spec = TestEngine.spec()
            spec.limits.openFiles = 77
            let (r, t) = try await sh("ulimit -c; ulimit -n", spec: spec)
            #expect(r.out == "0\n77\n")
            #expect(await t.finish())
        }

        @Test("the init's ids and securebits are locked down too")
        func initLockedDown() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let sandbox = try await t.engine.create(TestEngine.spec())
            let status = try String(decoding: readAll("/proc/\(sandbox.initPID)/status"), as: UTF8.self)
            #expect(status.contains("CapEff:\t0000000000000000"))
            #expect(status.contains("CapBnd:\t0000000000000000"))
            #expect(status.contains("NoNewPrivs:\t1"))
            #expect(status.contains("Seccomp:\t2"))
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("denied syscalls fail with EPERM instead of crashing", arguments: [
            "unshare -U true", "unshare -m true", "unshare -n true", "mount -t tmpfs none /tmp", "umount /usr", "chroot / true",
        ])
        func deniedSyscalls(command: String) async throws {
            guard Host.canRunSandboxes else { return }
            let (r, t) = try await sh("\(command); echo rc=$?")
            #expect(r.out.hasPrefix("rc=") && r.out != "rc=0\n", "\(command): \(r.out) \(r.err)")
            #expect(["operation not permitted", "must be superuser", "permission denied"].contains { r.err.lowercased().contains($0) }, "\(command): \(r.err)")
            #expect(r.signal == nil)
            #expect(await t.finish())
        }

        @Test("TIOCSTI is refused by the filter even with junk in the high bits")
        func tiocsti() async throws {
            guard Host.canRunSandboxes, access("/usr/bin/python3", X_OK) == 0 else { return }
            let t = try TestEngine()
            let py = """
            import fcntl, errno
            for cmd in (0x5412, 0x100005412, 0x541C):
                try:
                    fcntl.ioctl(0, cmd, b'x')
                    print('allowed')
                except OSError as e:
                    print(errno.errorcode[e.errno])
            """
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["/usr/bin/python3", "-c", py]))
            #expect(r.out == "EPERM\nEPERM\nEPERM\n", "\(r.out) \(r.err)")
            #expect(await t.finish())
        }

        @Test("an i386 syscall (int 0x80) kills the process")
        func i386Killed() async throws {
            guard Host.canRunSandboxes, access("/usr/bin/python3", X_OK) == 0 else { return }
            let t = try TestEngine()
            // mmap an executable page holding `mov eax, 20 (getpid); int 0x80; ret` and call it.
            let py = """
            import ctypes, mmap
            code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])
            m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            m.write(code)
            f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
            print('before', flush=True)
            f()
            print('survived')
            """
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["/usr/bin/python3", "-c", py]))
            #expect(r.out == "before\n")
            #expect(r.signal == SIGSYS)
            #expect(await t.finish())
        }
    }
}

func readAll(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw LinuxSandboxError(.system, "open \(path) failed") }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    return out
}
