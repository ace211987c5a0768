import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    /// Limits enforced by cgroup v2 controllers. They need a hierarchy with `cpu`, `memory` and
    /// `pids` (the QEMU guest of Tests/guest/); on a host without them they skip and say so.
    /// Destructive payloads (memory and fork bombs) run only after the harmless check that the
    /// sandbox's pid namespace and limits are in place.
    @Suite("cgroup v2 limits")
    struct CgroupLimitTests {
        static func engineWithControllers() async throws -> TestEngine? {
            guard Host.canRunSandboxes else { return nil }
            let t = try TestEngine()
            let missing = Set(["cpu", "memory", "pids"]).subtracting(t.engine.availableControllers)
            if !missing.isEmpty {
                print("skipping: cgroup v2 controllers \(missing.sorted().joined(separator: ", ")) are not available under \(Host.cgroupRoot!) (run in the QEMU guest)")
                _ = await t.finish()
                return nil
            }
            return t
        }

        /// Proves the pid namespace and the limit files before anything destructive runs.
        static func harmlessCheck(_ sandbox: LinuxSandbox, pids: Int, memory: ByteCount) async throws {
            let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"]))
            try #require(r.out.hasSuffix("sandboxd-init infinity "), "\(r.out)")
            let pidsMax = try String(decoding: readAll(sandbox.cgroupPath + "/pids.max"), as: UTF8.self)
            let memoryMax = try String(decoding: readAll(sandbox.cgroupPath + "/memory.max"), as: UTF8.self)
            try #require(pidsMax == "\(pids)\n")
            try #require(memoryMax == "\(memory.bytes)\n")
        }

        @Test("limits are written to the sandbox's cgroup and results say they are enforced")
        func limitsWritten() async throws {
            guard let t = try await Self.engineWithControllers() else { return }
            let limits = ResourceLimits(memory: .mebibytes(96), cpu: 0.5, pids: 40, executionTimeout: 30)
            let sandbox = try await t.engine.create(TestEngine.spec(limits: limits))
            #expect(try String(decoding: readAll(sandbox.cgroupPath + "/cpu.max"), as: UTF8.self) == "50000 100000\n")
            if access(sandbox.cgroupPath + "/memory.swap.max", F_OK) == 0 {
                #expect(try String(decoding: readAll(sandbox.cgroupPath + "/memory.swap.max"), as: UTF8.self) == "0\n")
            }
            try await Self.harmlessCheck(sandbox, pids: 40, memory: .mebibytes(96))
            let r = try await sandbox.exec(ExecRequest(["/bin/true"]))
            #expect(r.limitsEnforced)
            let cgroup = sandbox.cgroupPath
            await sandbox.destroy()
            #expect(access(cgroup, F_OK) != 0)
            #expect(await t.finish())
        }

        @Test("a memory bomb is OOM-killed and reported as such; the sandbox survives")
        func memoryBomb() async throws {
            guard let t = try await Self.engineWithControllers() else { return }
            let limits = ResourceLimits(memory: .mebibytes(64), cpu: nil, pids: 64, executionTimeout: 60)
            let sandbox = try await t.engine.create(TestEngine.spec(limits: limits))
            try await Self.harmlessCheck(sandbox, pids: 64, memory: .mebibytes(64))
            // Touch page after page until the kernel steps in.
            let bomb = "b = []\nwhile True:\n    b.append(bytearray(16 << 20))\n"
            let r = try await sandbox.exec(ExecRequest(["/usr/bin/python3", "-c", bomb]))
            #expect(r.oomKilled)
            #expect(r.signal == SIGKILL)
            #expect(r.status == .oom)
            #expect((r.usage.memoryPeakBytes ?? 0) >= 32 << 20)
            // memory.max can be overshot by the per-CPU charge batches while the OOM kill happens.
            #expect((r.usage.memoryPeakBytes ?? .max) <= 80 << 20)
            let after = try await sandbox.exec(ExecRequest(["/bin/echo", "alive"]))
            #expect(after.out == "alive\n")
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("a fork bomb stops at pids.max and the host is unaffected")
        func forkBomb() async throws {
            guard let t = try await Self.engineWithControllers() else { return }
            let limits = ResourceLimits(memory: .mebibytes(128), cpu: nil, pids: 32, executionTimeout: 10)
            let sandbox = try await t.engine.create(TestEngine.spec(limits: limits))
            try await Self.harmlessCheck(sandbox, pids: 32, memory: .mebibytes(128))
            let hostPidsBefore = try listProc().count
            let bomb = "bomb() { bomb | bomb & }; bomb; sleep 3; ls /proc | grep -c -E '^[0-9]+$'"
            let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", bomb], timeout: 8))
            // Forks past pids.max failed inside (the shell says it cannot fork).
            #expect(r.err.lowercased().contains("fork"), "\(r.err)")
            let current = Int(try String(decoding: readAll(sandbox.cgroupPath + "/pids.current"), as: UTF8.self)
                .split(separator: "\n").first ?? "") ?? .max
            #expect(current <= 32)
            _ = r
            await sandbox.destroy()
            // Everything the bomb made is gone; the host's process count is back where it was.
            #expect(processesInIDRange(t.engine.configuration).isEmpty)
            #expect(abs(try listProc().count - hostPidsBefore) < 16)
            #expect(await t.finish())
        }

        @Test("cpu 0.5 throttles a busy loop (cpu.stat nr_throttled)")
        func cpuThrottled() async throws {
            guard let t = try await Self.engineWithControllers() else { return }
            let limits = ResourceLimits(memory: .mebibytes(64), cpu: 0.5, pids: 16, executionTimeout: 30)
            let sandbox = try await t.engine.create(TestEngine.spec(limits: limits))
            let r = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done"]))
            #expect(r.exitCode == 0)
            let stat = try String(decoding: readAll(sandbox.cgroupPath + "/cpu.stat"), as: UTF8.self)
            let throttled = stat.split(separator: "\n").first { $0.hasPrefix("nr_throttled ") }
                .flatMap { Int($0.split(separator: " ")[1]) } ?? 0
            #expect(throttled > 0, "\(stat)")
            // Half a core over ~2 s of wall time: well under 2 s of CPU.
            #expect((r.usage.cpuMicroseconds ?? 0) > 200_000)
            #expect((r.usage.cpuMicroseconds ?? .max) < 1_600_000)
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("memory.peak of a one-shot is reported")
        func memoryPeak() async throws {
            guard let t = try await Self.engineWithControllers() else { return }
            let limits = ResourceLimits(memory: .mebibytes(128), cpu: nil, pids: 16, executionTimeout: 30)
            let r = try await t.engine.run(TestEngine.spec(limits: limits),
                                           ExecRequest(["/usr/bin/python3", "-c", "b = bytearray(48 << 20); print(len(b))"]))
            #expect(r.exitCode == 0)
            #expect((r.usage.memoryPeakBytes ?? 0) >= 48 << 20)
            #expect(r.limitsEnforced)
            #expect(await t.finish())
        }
    }
}
