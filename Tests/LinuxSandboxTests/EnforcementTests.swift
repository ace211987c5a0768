import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    @Suite("limits, enforcement and teardown")
    struct EnforcementTests {
        static let withLimits = ResourceLimits(memory: .mebibytes(256), cpu: 0.5, pids: 64, executionTimeout: 30)

        @Test("strict enforcement without the controllers fails and names what is missing")
        func strictWithoutControllers() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let missing = ["cpu", "memory", "pids"].filter { !t.engine.availableControllers.contains($0) }
            if missing.isEmpty {
                // A host with every controller: strict limits are simply applied.
                let r = try await t.engine.run(TestEngine.spec(limits: Self.withLimits), ExecRequest(["/bin/true"]))
                #expect(r.limitsEnforced)
                #expect(await t.finish())
                return
            }
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(TestEngine.spec(limits: Self.withLimits, enforcement: .strict), ExecRequest(["/bin/true"]))
            }
            #expect(error?.code == .controllersMissing)
            for controller in missing { #expect(error?.message.contains(controller) == true, "\(error?.message ?? "")") }
            #expect(error?.message.contains(Host.cgroupRoot!) == true)
            #expect(error?.message.contains("resources.enforcement: best-effort") == true)
            // Nothing was created.
            #expect(t.engine.listCgroups().isEmpty)
            await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.create(TestEngine.spec(limits: Self.withLimits, enforcement: .strict))
            }
            #expect(await t.finish())
        }

        @Test("best-effort runs with rlimits and says limits_enforced: false in every result")
        func bestEffort() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let missing = ["cpu", "memory", "pids"].filter { !t.engine.availableControllers.contains($0) }
            guard !missing.isEmpty else { print("skipping: this host enforces every limit with cgroup v2"); return }
            let spec = TestEngine.spec(limits: Self.withLimits, enforcement: .bestEffort)
            let oneShot = try await t.engine.run(spec, ExecRequest(["/bin/cat", "/proc/self/limits"]))
            #expect(!oneShot.limitsEnforced)
            func limit(_ name: String) -> String? {
                oneShot.out.split(separator: "\n").first { $0.hasPrefix(name) }
                    .map { $0.dropFirst(name.count).split(separator: " ").first.map(String.init) ?? "" }
            }
            if missing.contains("memory") { #expect(limit("Max address space") == "\(256 << 20)") }
            if missing.contains("pids") { #expect(limit("Max processes") == "64") }
            if missing.contains("cpu") { #expect(limit("Max cpu time") == "16") }   // 0.5 cores × 30 s, rounded up, + 1
            let sandbox = try await t.engine.create(TestEngine.spec(limits: Self.withLimits, enforcement: .bestEffort))
            #expect(!sandbox.limitsEnforced)
            let r = try await sandbox.exec(ExecRequest(["/bin/true"]))
            #expect(!r.limitsEnforced)
            await sandbox.destroy()
            #expect(await t.finish())
        }

        @Test("best-effort memory: an allocation beyond the limit fails inside, the host is untouched")
        func bestEffortMemory() async throws {
            guard Host.canRunSandboxes, access("/usr/bin/python3", X_OK) == 0 else { return }
            let t = try TestEngine()
            guard !t.engine.availableControllers.contains("memory") else { print("skipping: memory is enforced by cgroup v2 here"); return }
            let limits = ResourceLimits(memory: .mebibytes(128), cpu: nil, pids: nil, executionTimeout: 30)
            let r = try await t.engine.run(
                TestEngine.spec(limits: limits, enforcement: .bestEffort),
                ExecRequest(["/usr/bin/python3", "-c", "b = bytearray(512 * 1024 * 1024)\nprint('allocated')"]))
            #expect(r.err.contains("MemoryError"))
            #expect(r.exitCode == 1)
            #expect(await t.finish())
        }

        @Test("resource usage is reported")
        func usage() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]))
            #expect((r.usage.cpuMicroseconds ?? 0) > 0)
            #expect((r.usage.memoryPeakBytes ?? 0) > 0)
            #expect(r.wallTime > 0)
            #expect(await t.finish())
        }

        @Test("a one-shot leaves no cgroup, process, mount or descriptor behind")
        func oneShotTeardown() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let mountsBefore = try readAll("/proc/self/mountinfo")
            _ = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/true"]))   // warm-up: lazy globals
            let fdsBefore = engineDescriptors(of: t)
            let r = try await t.engine.run(TestEngine.spec(), ExecRequest(["/bin/sh", "-c", "sleep 1005 & sleep 1006 & echo $$"]))
            #expect(r.exitCode == 0)
            #expect(t.engine.listCgroups().isEmpty)
            #expect(try readAll("/proc/self/mountinfo") == mountsBefore)
            // No process runs as a sandbox uid any more.
            #expect(processesInIDRange(t.engine.configuration).isEmpty)
            #expect(await engineDescriptorsSettle(t, since: fdsBefore))
            #expect(await t.finish())
        }

        @Test("concurrent one-shots and execs all succeed and leave nothing behind")
        func concurrency() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let persistent = try await t.engine.create(TestEngine.spec("p"))
            let results = try await withThrowingTaskGroup(of: String.self) { group in
                for i in 0..<12 {
                    group.addTask {
                        if i % 3 == 0 {
                            return try await persistent.exec(ExecRequest(["/bin/echo", "exec\(i)"])).out
                        }
                        return try await t.engine.run(TestEngine.spec("c"), ExecRequest(["/bin/echo", "run\(i)"])).out
                    }
                }
                var all: [String] = []
                for try await out in group { all.append(out) }
                return all
            }
            #expect(Set(results) == Set((0..<12).map { $0 % 3 == 0 ? "exec\($0)\n" : "run\($0)\n" }))
            await persistent.destroy()
            #expect(t.engine.listCgroups().isEmpty)
            #expect(processesInIDRange(t.engine.configuration).isEmpty)
            #expect(await t.finish())
        }

        @Test("leftovers of a previous daemon are found and reaped")
        func reapLeftovers() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            // A "crashed daemon": sandboxes whose handles are leaked, so nothing destroys them.
            var leaked: [LinuxSandbox] = []
            for _ in 0..<2 {
                let sandbox = try await t.engine.create(TestEngine.spec("leftover"))
                _ = try await sandbox.exec(ExecRequest(["/bin/sh", "-c", "sleep 1007 > /dev/null 2>&1 &"]))
                leaked.append(sandbox)
            }
            #expect(t.engine.listCgroups().count == 2)
            let reaped = await t.engine.reapLeftovers()
            #expect(Set(reaped) == Set(leaked.map(\.id)))
            #expect(t.engine.listCgroups().isEmpty)
            #expect(processesInIDRange(t.engine.configuration).isEmpty)
            for sandbox in leaked { await sandbox.destroy() }   // idempotent on a reaped sandbox
            leaked.removeAll()
            #expect(await t.finish())
        }
    }
}

/// Pids of live processes whose uid is in the engine's sandbox id range (each test engine has a range
/// of its own, so only the test's own sandboxes can match). Processes already
/// SIGKILLed may take a moment to finish exiting: a few looks are taken.
func processesInIDRange(_ configuration: LinuxSandboxConfiguration) -> [Int32] {
    var found = processesInIDRangeNow(configuration)
    for _ in 0..<20 where !found.isEmpty {
        usleep(50_000)
        found = processesInIDRangeNow(configuration)
    }
    return found
}

func processesInIDRangeNow(_ configuration: LinuxSandboxConfiguration) -> [Int32] {
    var found: [Int32] = []
    for entry in (try? listProc()) ?? [] {
        guard let status = try? readAll("/proc/\(entry)/status") else { continue }
        let text = String(decoding: status, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { continue }
        let uid = UInt32(line.split(separator: "\t").dropFirst().first ?? "") ?? 0
        if uid >= configuration.idBase && uid < configuration.idBase + configuration.idCount,
           !text.contains("State:\tZ") {
            found.append(entry)
        }
    }
    return found
}

func listProc() throws -> [Int32] {
    guard let dir = opendir("/proc") else { return [] }
    defer { closedir(dir) }
    var pids: [Int32] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        if let pid = Int32(name) { pids.append(pid) }
    }
    return pids
}
