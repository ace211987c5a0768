import Foundation
import QEMUGuest
import SandboxCore
import VMAgentProtocol

/// How the level-3 engine runs.
public struct VMSandboxConfiguration: Sendable, Hashable {
    /// Per-VM state (console log, QEMU log); root-only.
    public var stateDirectory: String
    /// Where the guest image is cached (`<dir>/vm-image/<key>`); must be world-traversable.
    public var imageCacheDirectory: String
    /// The `sandbox-guest` executable put into the image.
    public var agentBinary: String
    /// The cgroup2 mount; nil picks `/sys/fs/cgroup` on pure cgroup v2 hosts, else `/sys/fs/cgroup/unified`.
    public var cgroupRoot: String?
    /// The directory below it holding one cgroup per VM.
    public var cgroupSubtree: String
    /// QEMU runs as `qemuUIDBase + slot` (uid = gid), one per live VM.
    public var qemuUIDBase: UInt32
    public var qemuUIDCount: UInt32
    /// Guest RAM unless a spec needs more (its memory limit + `memoryOverheadMiB`); pooled guests
    /// have this size and serve every spec that fits. The default fits the default 512 MiB limit.
    public var memoryMiB: Int
    public var memoryOverheadMiB: Int
    /// vCPUs unless a spec's cpu limit needs more.
    public var cpus: Int
    /// auto (probe /dev/kvm, time-boxed), tcg or kvm.
    public var accelerator: AcceleratorChoice.Preference
    /// Pre-booted guests kept ready; 0 disables the pool.
    public var poolSize: Int
    /// Pooled guests hold a ready level-1 sandbox with these limits; a spec with the same limits
    /// (and no mounts, extra environment or own hostname) takes it as it is, without a configure
    /// round trip. Set it to the default policy's limits.
    public var poolLimits: ResourceLimits
    /// Seconds between handing out a pooled guest and starting to boot its replacement.
    public var poolRefillDelay: Double
    /// From QEMU's start to the agent's hello.
    public var bootTimeout: Double
    /// The console log is cut to its newest half beyond this many bytes.
    public var consoleLogLimit: Int
    /// Lets `VMSandbox.panicGuestForTesting` work (kernel command line `sandboxd.test_hooks=1`). Tests only.
    public var enableTestHooks: Bool
    /// Lets commands in the guest's level-1 sandbox write `/proc/sysrq-trigger`, so a test can crash
    /// the guest from inside (`echo c > /proc/sysrq-trigger`; kernel command line
    /// `sandboxd.test_sysrq=1`). Tests of the guest-death path only: it opens a hole in level 1.
    public var allowSandboxSysrqForTesting: Bool = false

    public init(
        stateDirectory: String = "/run/sandboxd/vm",
        imageCacheDirectory: String = "/var/cache/sandboxd",
        agentBinary: String = GuestImageBuilder.defaultAgentBinary(),
        cgroupRoot: String? = nil,
        cgroupSubtree: String = "sandboxd-vm",
        qemuUIDBase: UInt32 = 589_824,
        qemuUIDCount: UInt32 = 4096,
        memoryMiB: Int = 768,
        memoryOverheadMiB: Int = 192,
        cpus: Int = 1,
        accelerator: AcceleratorChoice.Preference = .auto,
        poolSize: Int = 0,
        poolLimits: ResourceLimits = ResourceLimits(),
        poolRefillDelay: Double = 2,
        bootTimeout: Double = 180,
        consoleLogLimit: Int = 256 << 10,
        enableTestHooks: Bool = false
    ) {
        self.stateDirectory = stateDirectory
        self.imageCacheDirectory = imageCacheDirectory
        self.agentBinary = agentBinary
        self.cgroupRoot = cgroupRoot
        self.cgroupSubtree = cgroupSubtree
        self.qemuUIDBase = qemuUIDBase
        self.qemuUIDCount = qemuUIDCount
        self.memoryMiB = memoryMiB
        self.memoryOverheadMiB = memoryOverheadMiB
        self.cpus = cpus
        self.accelerator = accelerator
        self.poolSize = poolSize
        self.poolLimits = poolLimits
        self.poolRefillDelay = poolRefillDelay
        self.bootTimeout = bootTimeout
        self.consoleLogLimit = consoleLogLimit
        self.enableTestHooks = enableTestHooks
    }
}

/// Level 3: QEMU guests with an agent, jailed QEMU, KVM when it works, and a warm pool.
///
/// ```swift
/// let engine = try await VMSandboxEngine.start(configuration: .init(poolSize: 2)) { print($0) }
/// let sandbox = try await engine.create(spec)        // takes a pre-booted guest when one fits
/// let result = try await sandbox.exec(ExecRequest(["uname", "-r"]))
/// await sandbox.destroy()
/// await engine.shutdown()                            // destroys the pool
/// ```
public final class VMSandboxEngine: Sendable {
    public let configuration: VMSandboxConfiguration
    /// The guest image in use.
    public let image: GuestImage
    /// TCG or KVM, and why (`sandboxctl info`).
    public let accelerator: AcceleratorChoice
    /// The cgroup directory holding one child per VM.
    public let cgroupParent: String

    private let settings: JailedQEMU.Settings
    private let state = NSLockedValue(EngineState())

    private struct EngineState {
        var usedSlots: Set<UInt32> = []
        var ready: [(JailedQEMU, AgentHello)] = []
        var booting = 0
        var stopped = false
        /// Why the last pool boot failed (for `info`), nil after a success.
        var lastPoolError: String?
        /// The guest the refill task is booting now (shutdown kills it).
        var inFlight: JailedQEMU?
        /// Every VM this engine started and has not yet released (reapLeftovers spares them).
        var live: Set<String> = []
    }

    /// Builds or finds the image, creates the state and cgroup directories, probes the
    /// accelerator, and starts filling the warm pool in the background.
    public static func start(configuration: VMSandboxConfiguration, progress: @escaping @Sendable (String) -> Void = { _ in }) async throws(VMSandboxError) -> VMSandboxEngine {
        let result: Result<VMSandboxEngine, VMSandboxError> = await onThread {
            Result { () throws(VMSandboxError) in try VMSandboxEngine(configuration: configuration, progress: progress) }
        }
        let engine = try result.get()
        let reaped = await engine.reapLeftovers()
        if !reaped.isEmpty { progress("vm: reaped \(reaped.count) guests a previous daemon left: \(reaped.joined(separator: " "))") }
        engine.refillPool()
        return engine
    }

    private init(configuration: VMSandboxConfiguration, progress: (String) -> Void) throws(VMSandboxError) {
        self.configuration = configuration
        guard configuration.memoryMiB >= 128, configuration.cpus >= 1, configuration.poolSize >= 0, configuration.qemuUIDCount >= 1 else {
            throw VMSandboxError(.invalidRequest, "vm configuration: memoryMiB ≥ 128, cpus ≥ 1, poolSize ≥ 0 and qemuUIDCount ≥ 1 required")
        }
        let root = configuration.cgroupRoot ?? Self.detectCgroupRoot()
        guard let root, access(root + "/cgroup.procs", F_OK) == 0 else {
            throw VMSandboxError(.launch, "no cgroup2 hierarchy found (looked for \(configuration.cgroupRoot ?? "/sys/fs/cgroup and /sys/fs/cgroup/unified")): QEMU must run in a cgroup of its own")
        }
        cgroupParent = root + "/" + configuration.cgroupSubtree
        for directory in [configuration.stateDirectory, configuration.imageCacheDirectory] {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw VMSandboxError(.system, "mkdir \(directory): \(error)")
            }
        }
        chmod(configuration.stateDirectory, 0o700)
        if mkdir(cgroupParent, 0o755) != 0, errno != EEXIST { throw .system("mkdir", cgroupParent) }
        // Best effort, in our own subtree only: offer memory and pids to the VM cgroups where
        // the level above offers them (systemd's delegation on production hosts).
        for controller in ["+memory", "+pids"] {
            JailedQEMU.writeIfPresent(cgroupParent + "/cgroup.subtree_control", controller)
        }
        image = try GuestImageBuilder(cacheDirectory: configuration.imageCacheDirectory, agentBinary: configuration.agentBinary).build(progress: progress)
        settings = JailedQEMU.Settings(image: image, stateRoot: configuration.stateDirectory, cgroupParent: cgroupParent,
                                       consoleLogLimit: configuration.consoleLogLimit, testHooks: configuration.enableTestHooks,
                                       testSysrq: configuration.allowSandboxSysrqForTesting)
        var choice = AcceleratorChoice.probe(configuration.accelerator, scratchDirectory: configuration.stateDirectory)
        if choice.accelerator == .kvm {
            // A 16-byte guest is not a kernel: nested KVM can run the one and hang on the other.
            // The real guest must greet the host, jailed as every guest is, within the time box.
            choice = Self.probeKernelBoot(settings: settings, uid: configuration.qemuUIDBase + configuration.qemuUIDCount - 1, romResult: choice)
        }
        accelerator = choice
        progress("vm: accelerator \(accelerator)")
        if configuration.accelerator == .kvm, accelerator.accelerator != .kvm {
            throw VMSandboxError(.launch, "KVM was required but does not work here: \(accelerator.reason)")
        }
    }

    /// Boots the guest image under KVM and waits at most `timeout` seconds for the agent's hello.
    static func probeKernelBoot(settings: JailedQEMU.Settings, uid: UInt32, romResult: AcceleratorChoice, timeout: Double = 20) -> AcceleratorChoice {
        var info = stat()
        if stat("/dev/kvm", &info) == 0, info.st_gid == 0 || info.st_mode & 0o060 != 0o060 {
            return AcceleratorChoice(.tcg, reason: String(format: "/dev/kvm is mode %o, group %d: the jailed QEMU (an unprivileged uid with only the device's group) cannot open it; give it group kvm and mode 0660 to use KVM", info.st_mode & 0o777, info.st_gid))
        }
        let started = Date()
        let machine: JailedQEMU
        do {
            machine = try JailedQEMU(name: "vm-kvmprobe-" + randomHex(4), shape: MachineShape(memoryMiB: 256, cpus: 1),
                                     accelerator: .kvm, uid: uid, settings: settings)
        } catch {
            return AcceleratorChoice(.tcg, reason: "KVM probe guest did not start: \(error)")
        }
        defer { machine.terminate() }
        let greeted = DispatchSemaphore(value: 0)
        let hello = NSLockedValue(false)
        Task.detached {
            do {
                try await machine.connection.request(nil, timeout: timeout) { frame in
                    hello.withLock { $0 = frame.kind == .hello }
                    return true
                }
            } catch {}
            greeted.signal()
        }
        greeted.wait()
        let elapsed = String(format: "%.2f", Date().timeIntervalSince(started))
        if hello.withLock({ $0 }) {
            return AcceleratorChoice(.kvm, reason: "\(romResult.reason); the guest kernel booted to its agent under KVM in \(elapsed) s")
        }
        let qemuLog = ((try? String(contentsOfFile: machine.stateDirectory + "/qemu.log", encoding: .utf8)) ?? "")
            .split(separator: "\n").last.map(String.init) ?? ""
        return AcceleratorChoice(.tcg, reason: "/dev/kvm runs a trivial guest but the guest kernel did not reach its agent under KVM within \(Int(timeout)) s (nested virtualisation?)\(qemuLog.isEmpty ? "" : ": " + qemuLog)")
    }

    /// The cgroup v2 mount QEMU cgroups go under: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host.
    public static func detectCgroupRoot() -> String? {
        // A cgroup2 root has cgroup.controllers; a v1 hierarchy does not.
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where access(root + "/cgroup.controllers", F_OK) == 0 {
            return root
        }
        return nil
    }

    /// Why the last pool refill failed, nil when it worked.
    public var lastPoolError: String? { state.withLock { $0.lastPoolError } }

    /// Guests booted and waiting in the pool.
    public var pooledCount: Int { state.withLock { $0.ready.count } }

    /// A sandbox for `spec`: a pooled guest when its size fits, else a fresh boot. The guest's
    /// agent then builds the level-1 sandbox (spec limits as real cgroup v2 limits in the guest).
    public func create(_ spec: SandboxSpec) async throws(VMSandboxError) -> VMSandbox {
        let shape = shape(for: spec)
        let pooled: (JailedQEMU, AgentHello)? = state.withLock { s in
            guard let index = s.ready.firstIndex(where: {
                $0.0.shape.memoryMiB >= shape.memoryMiB && $0.0.shape.cpus >= shape.cpus && $0.0.connection.closed == nil
            }) else { return nil }
            return s.ready.remove(at: index)
        }
        // A booting guest takes a host core for seconds under TCG: the new sandbox's first
        // commands go first.
        refillPool(after: pooled == nil ? 0 : configuration.poolRefillDelay)
        let (machine, hello): (JailedQEMU, AgentHello)
        if let pooled { (machine, hello) = pooled } else { (machine, hello) = try await boot(shape, spec: spec) }
        let sandbox = VMSandbox(spec: spec, machine: machine, hello: hello, accelerator: accelerator, fromPool: pooled != nil) { [weak self] machine in
            self?.release(machine)
        }
        // The pooled guest's sandbox was built from poolSpec and has run only `true`.
        if pooled != nil, Self.poolSpec(configuration.poolLimits).matches(spec) { return sandbox }
        do {
            // A fresh guest got the spec in its initramfs and answers it after its hello, as it
            // would a configure: nothing to send, one round trip less. A pooled guest is sent it.
            let frame = pooled == nil ? nil : try AgentFrame(.configure, json: spec)
            let failure = NSLockedValue<AgentFailure?>(nil)
            let unexpected = NSLockedValue<AgentFrame.Kind?>(nil)
            try await machine.connection.request(frame, timeout: 60) { reply in
                switch reply.kind {
                case .ok: break
                case .error: failure.withLock { $0 = (try? reply.decode(AgentFailure.self)) ?? AgentFailure(code: "unknown", message: "unreadable error") }
                default: unexpected.withLock { $0 = reply.kind }
                }
                return true
            }
            if let kind = unexpected.withLock({ $0 }) {
                throw VMSandboxError(.protocolViolation, "the guest answered configure with \(kind)")
            }
            if let failure = failure.withLock({ $0 }) {
                throw VMSandboxError(.guest, "configuring the guest sandbox: \(failure.message)", guestCode: failure.code)
            }
        } catch {
            let console = machine.console.tail(maxBytes: 2000)
            await sandbox.destroy()
            var failure = (error as? VMSandboxError) ?? VMSandboxError(.system, "configuring the guest sandbox: \(error)")
            failure.message += "\nconsole: \(console)"
            throw failure
        }
        return sandbox
    }

    static func poolSpec(_ limits: ResourceLimits) -> SandboxSpec {
        SandboxSpec(id: "pooled", hostname: "sandbox", limits: limits)
    }

    func shape(for spec: SandboxSpec) -> MachineShape {
        var memory = configuration.memoryMiB
        if let limit = spec.limits.memory {
            memory = max(memory, Int(limit.bytes >> 20) + configuration.memoryOverheadMiB)
        }
        var cpus = configuration.cpus
        if let cpu = spec.limits.cpu { cpus = max(cpus, Int(cpu.rounded(.up))) }
        return MachineShape(memoryMiB: memory, cpus: cpus)
    }

    /// Starts a jailed QEMU and waits for its agent's hello. With `spec`, the guest builds that
    /// sandbox as it starts (the spec is in its initramfs) and its answer follows the hello.
    func boot(_ shape: MachineShape, forPool: Bool = false, spec: SandboxSpec? = nil) async throws(VMSandboxError) -> (JailedQEMU, AgentHello) {
        // The agent reads it as the payload of a configure frame: the same coder writes both.
        var bootSpec: [UInt8]?
        if let spec {
            do { bootSpec = try AgentFrame(.configure, json: spec).payload } catch {
                throw VMSandboxError(.invalidRequest, "sandbox spec: \(error)")
            }
        }
        let count = configuration.qemuUIDCount
        let claimed: UInt32? = state.withLock { s in
            guard let free = (0..<count).first(where: { !s.usedSlots.contains($0) }) else { return nil }
            s.usedSlots.insert(free)
            return free
        }
        guard let slot = claimed else { throw VMSandboxError(.launch, "all \(count) QEMU uids are in use") }
        let name = "vm-" + Self.randomHex(8)
        let machine: JailedQEMU
        do {
            machine = try JailedQEMU(name: name, shape: shape, accelerator: accelerator.accelerator,
                                     uid: configuration.qemuUIDBase + slot, settings: settings, bootSpec: bootSpec)
        } catch {
            _ = state.withLock { $0.usedSlots.remove(slot) }
            throw error
        }
        let stopped = state.withLock { s in
            s.live.insert(name)
            if forPool { s.inFlight = machine }
            return s.stopped
        }
        defer { if forPool { state.withLock { $0.inFlight = nil } } }
        if forPool, stopped {
            await onThread { machine.terminate() }
            release(machine)
            throw VMSandboxError(.launch, "the engine is shutting down")
        }
        let hello = NSLockedValue<AgentHello?>(nil)
        do {
            try await machine.connection.request(nil, timeout: configuration.bootTimeout) { frame in
                if frame.kind == .hello { hello.withLock { $0 = try? frame.decode(AgentHello.self) } }
                return true
            }
        } catch {
            let console = machine.console.tail(maxBytes: 3000)
            let qemuLog = (try? String(contentsOfFile: machine.stateDirectory + "/qemu.log", encoding: .utf8)) ?? ""
            await onThread { machine.terminate() }
            release(machine)
            let reason = (error as? VMSandboxError)?.message ?? "\(error)"
            throw VMSandboxError(.bootTimedOut, "guest \(name) did not start: \(reason)\nQEMU: \(qemuLog.suffix(1500))\nconsole: \(console)")
        }
        guard let greeting = hello.withLock({ $0 }), greeting.version == AgentHello.currentVersion else {
            await onThread { machine.terminate() }
            release(machine)
            throw VMSandboxError(.protocolViolation, "guest \(name) did not greet with protocol version \(AgentHello.currentVersion)")
        }
        return (machine, greeting)
    }

    private func release(_ machine: JailedQEMU) {
        state.withLock { s in
            s.usedSlots.remove(machine.uid - configuration.qemuUIDBase)
            s.live.remove(machine.name)
        }
    }

    /// Boots guests in the background, one at a time, until the pool is full.
    func refillPool(after delay: Double = 0) {
        let shape = MachineShape(memoryMiB: configuration.memoryMiB, cpus: configuration.cpus)
        let start = state.withLock { s -> Bool in
            guard !s.stopped, s.booting == 0, s.ready.count < configuration.poolSize else { return false }
            s.booting = 1
            return true
        }
        guard start else { return }
        Task.detached { [self] in
            if delay > 0 { try? await Task.sleep(for: .milliseconds(Int(delay * 1000))) }
            while true {
                var booted: (JailedQEMU, AgentHello)?
                var failure: String?
                do {
                    booted = try await boot(shape, forPool: true, spec: Self.poolSpec(configuration.poolLimits))
                } catch {
                    failure = "boot: \(error)"
                }
                if let (machine, _) = booted, let problem = await warmUp(machine) {
                    failure = "warm-up: \(problem)\nconsole: \(machine.console.tail(maxBytes: 1500))"
                    await onThread { machine.terminate() }
                    release(machine)
                    booted = nil
                }
                state.withLock { $0.lastPoolError = failure }
                let again = state.withLock { s -> Bool in
                    if let booted {
                        if s.stopped { return false }
                        s.ready.append(booted)
                    }
                    let more = booted != nil && !s.stopped && s.ready.count < configuration.poolSize
                    if !more { s.booting = 0 }
                    return more
                }
                if let booted, state.withLock({ $0.stopped }), !state.withLock({ s in s.ready.contains { $0.0 === booted.0 } }) {
                    await onThread { booted.0.terminate() }
                    release(booted.0)
                }
                if !again { return }
            }
        }
    }

    /// Waits for the pooled guest's answer to its boot spec (the pool's sandbox), then runs `true`
    /// in it, so that the runtime's pages are in the guest's cache and the first real exec is
    /// quick. Returns why the guest failed at it (it is then not pooled), nil on success.
    func warmUp(_ machine: JailedQEMU) async -> String? {
        do {
            for frame in [nil, try AgentFrame(.exec, json: ExecRequest(["/bin/sh", "-c", "true"]))] {
                let answer = NSLockedValue<AgentFrame?>(nil)
                try await machine.connection.request(frame, timeout: 120) { reply in
                    switch reply.kind {
                    case .stdout, .stderr: return false
                    default: answer.withLock { $0 = reply }; return true
                    }
                }
                guard let reply = answer.withLock({ $0 }), reply.kind == .ok || reply.kind == .execResult else {
                    let reply = answer.withLock { $0 }
                    return "\(frame?.kind ?? .configure) answered \(reply.map { "\($0.kind) \(String(decoding: $0.payload, as: UTF8.self))" } ?? "nothing")"
                }
            }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Destroys the pooled guests and stops refilling. Live sandboxes are the caller's.
    public func shutdown() async {
        let (pooled, inFlight) = state.withLock { s -> ([(JailedQEMU, AgentHello)], JailedQEMU?) in
            s.stopped = true
            defer { s.ready = [] }
            return (s.ready, s.inFlight)
        }
        // Its boot then fails, and the refill task releases it.
        if let inFlight { await onThread { inFlight.terminate() } }
        for (machine, _) in pooled {
            await onThread { machine.terminate() }
            release(machine)
        }
    }

    /// Kills and removes what a previous daemon left: VM cgroups (and so their QEMUs) and state
    /// directories. Call once at start, before `create`. Returns the names reaped.
    public func reapLeftovers() async -> [String] {
        let live = state.withLock { $0.live }
        let parent = cgroupParent, stateRoot = configuration.stateDirectory
        return await onThread {
            var reaped: [String] = []
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix("vm-") && !live.contains(entry) {
                JailedQEMU.killCgroup(parent + "/" + entry)
                JailedQEMU.removeCgroup(parent + "/" + entry)
                reaped.append(entry)
            }
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: stateRoot)) ?? [] where entry.hasPrefix("vm-") && !live.contains(entry) {
                try? FileManager.default.removeItem(atPath: stateRoot + "/" + entry)
                if !reaped.contains(entry) { reaped.append(entry) }
            }
            return reaped
        }
    }

    static func randomHex(_ bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}
