#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CMalloc
import Logging
import ControlAPI
import DaemonMetrics
import SandboxCore
import Store
import Supervisor
#if SANDBOXD_LEVEL1_ENGINE
import LinuxSandbox
#endif
#if SANDBOXD_LEVEL3_ENGINE
import VMSandbox
#endif

/// `sandboxd`: reads the configuration, opens the record store, reaps leftovers, serves the
/// control socket until SIGTERM/SIGINT.
struct SandboxdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandboxd", abstract: "Run untrusted agent work in sandboxes and record every execution.")

    @Option(name: .long, help: "Configuration file (default /etc/sandboxd/sandboxd.yaml; a missing default file means built-in defaults).")
    var config: String?

    @Option(name: .long, help: "Control socket path (overrides socket.path).")
    var socket: String?

    @Flag(name: .long, help: "Print the resolved configuration (password redacted) and exit.")
    var printConfiguration = false

    static let version = "0.1.0"

    func run() async throws { try await runDaemon() }

    func runDaemon() async throws {
        let path = config ?? DaemonConfiguration.defaultPath
        var text: String?
        if access(path, F_OK) == 0 {
            text = try readSmallFile(path)
        } else if config != nil {
            throw ValidationError("configuration file \(path) does not exist")
        }
        var environment: [String: String] = [:]
        for name in DaemonConfiguration.databaseVariables + ["POSTGRES_URL", "SQLITE_DB"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        var configuration: DaemonConfiguration
        do {
            configuration = try DaemonConfiguration(yaml: text, file: path, environment: environment)
        } catch {
            printError("sandboxd: \(error)")
            throw ExitCode(78) // EX_CONFIG: systemd does not restart-loop on a bad configuration
        }
        if let socket { configuration.socket.path = socket }
        if printConfiguration {
            print(configuration.description)
            return
        }

        let settings = DaemonSettings(configuration: configuration, version: Self.version)
        // Refuse early when another daemon serves the socket: before touching its database or engine.
        if case .path(let socketPath, _, _) = settings.listener {
            do { try ControlListener.clearStale(socketPath) } catch {
                printError("sandboxd: \(error)")
                throw ExitCode.failure
            }
        }
        SandboxDaemon.bootstrapLogging(level: settings.logLevel)
        let logger = Logger(label: "sandboxd")
        logger.info("sandboxd \(Self.version) starting (libpq \(linkedLibPQVersion()))")
        for note in configuration.notes { logger.notice("\(note)") }

        let metrics = DaemonMetrics()
        let database: DaemonDatabase
        do {
            database = try await DaemonDatabase.open(configuration, logger: logger, metrics: metrics)
        } catch {
            logger.critical("cannot open the record database: \(error)")
            SystemdNotifier().notify("STATUS=failed: cannot open the record database")
            throw ExitCode.failure
        }
        var daemonSettings = settings
        do {
            let directory = PolicyDirectory(path: configuration.policyDirectory)
            let policies = try directory.load()
            daemonSettings.supervisor.policies = policies
            daemonSettings.supervisor.policyDirectory = directory
            logger.info("policies: \(policies.names.joined(separator: ", ")) (from \(policies.names.first.flatMap { policies[$0]?.source.hasPrefix("bundled/") == true ? "the bundled presets" : nil } ?? configuration.policyDirectory))")
        } catch {
            logger.critical("\(error)")
            await database.close(logger: logger)
            throw ExitCode(78)
        }
        var engines: [IsolationLevel: any SandboxEngine] = [:]
        engines[.native] = makeEngine(configuration, logger: logger, problem: &daemonSettings.supervisor.engineProblem)
        engines[.virtualMachine] = makeVMEngine(configuration, supervisor: daemonSettings.supervisor, logger: logger,
                                                problem: &daemonSettings.supervisor.levelProblems[.virtualMachine])
        // Before serving: roles of sandboxes that died with a previous daemon are dropped.
        let databaseTool = await DatabaseToolState.start(settings: database.settings, embedded: database.embedded,
                                                         logger: Logger(label: "sandboxd.dbtool"))
        do {
            try await SandboxDaemon.run(settings: daemonSettings, engines: engines, records: database.recorder, databaseTool: databaseTool,
                                        metrics: metrics)
        } catch {
            logger.critical("sandboxd failed: \(error)")
            await database.close(logger: logger)
            throw ExitCode.failure
        }
        #if SANDBOXD_LEVEL1_ENGINE
        // Every sandbox is destroyed by now: leave no empty per-daemon cgroup directory behind.
        (engines[.native] as? LinuxSandboxEngine)?.releaseSubtree()
        #endif
        await database.close(logger: logger)
    }
}

/// The level-1 engine, or nil with the reason when this host or build cannot provide it.
func makeEngine(_ configuration: DaemonConfiguration, logger: Logger, problem: inout String?) -> (any SandboxEngine)? {
    #if SANDBOXD_LEVEL1_ENGINE
    // The engine keeps private state (0700) below the runtime directory; the socket's directory itself stays 0755.
    let runtime = SandboxDaemon.parentDirectory(of: configuration.socket.path)
    _ = mkdir(runtime, 0o755)
    // Per daemon, like the cgroup subtree: a second daemon's socket in the same directory gets its own.
    let subtree = configuration.cgroupSubtree
    let engineState = runtime + (subtree == "sandboxd" ? "/engine" : "/engine-" + subtree)
    do {
        let engine = try LinuxSandboxEngine(configuration: LinuxSandboxConfiguration(
            cgroupRoot: configuration.resources.cgroupRoot, cgroupSubtree: subtree, stateDirectory: engineState,
            idBase: configuration.sandbox.uidRangeStart, idCount: configuration.sandbox.uidRangeSize))
        if configuration.resources.enforcement == .bestEffort {
            logger.warning("resources.enforcement is best-effort: limits the host cannot enforce are approximated with rlimits and every record says limits_enforced: false")
        }
        return engine
    } catch {
        problem = "the level-1 engine could not start on this host: \(error)"
        logger.error("\(problem!)")
        return nil
    }
    #else
    problem = "this sandboxd was built without the level-1 engine"
    return nil
    #endif
}

/// The level-3 engine, started in the background (image, accelerator probe, reaping, warm pool);
/// nil with the reason when it is disabled or not built in.
func makeVMEngine(_ configuration: DaemonConfiguration, supervisor: SupervisorConfiguration, logger: Logger,
                  problem: inout String?) -> (any SandboxEngine)? {
    #if SANDBOXD_LEVEL3_ENGINE
    guard configuration.vm.enabled else {
        problem = "level 3 is disabled in the configuration (vm.enabled: false)"
        return nil
    }
    // Guest memory fits the default policy's limit, so default sandboxes can take pooled guests.
    let defaultRules = supervisor.policies?[supervisor.defaultPolicy]?.policy ?? Policy()
    var defaultLimits = ResourceLimits()
    defaultLimits.executionTimeout = supervisor.defaultTimeout
    defaultLimits.outputLimit = ByteCount(bytes: UInt64(supervisor.maxOutputBytes))
    let poolLimits = VirtualMachineEngine.guestLimits(defaultLimits, rules: defaultRules)
    let overheadMiB = 192
    let memoryMiB = max(768, Int(poolLimits.memory.map { $0.bytes >> 20 } ?? 0) + overheadMiB)
    let accelerator: AcceleratorChoice.Preference = switch configuration.vm.accelerator {
    case .auto: .auto
    case .tcg: .tcg
    case .kvm: .kvm
    }
    let qemuUIDBase = UInt64(configuration.sandbox.uidRangeStart) + UInt64(configuration.sandbox.uidRangeSize)
    guard qemuUIDBase + 4096 < UInt64(UInt32.max) else {
        problem = "no uids left above sandbox.uid_range_start + uid_range_size for QEMU (4096 needed)"
        return nil
    }
    let runtime = SandboxDaemon.parentDirectory(of: configuration.socket.path)
    var vm = VMSandboxConfiguration(
        stateDirectory: runtime + "/vm", imageCacheDirectory: configuration.vm.imageDirectory,
        cgroupRoot: configuration.resources.cgroupRoot, cgroupSubtree: configuration.cgroupSubtree + "-vm",
        qemuUIDBase: UInt32(qemuUIDBase), qemuUIDCount: 4096, memoryMiB: memoryMiB, memoryOverheadMiB: overheadMiB,
        cpus: 1, accelerator: accelerator, poolSize: configuration.vm.poolSize, poolLimits: poolLimits,
        enableTestHooks: configuration.vm.testHooks)
    vm.allowSandboxSysrqForTesting = configuration.vm.testHooks
    let engine = VirtualMachineEngine(configuration: vm, logger: Logger(label: "sandboxd.vm"))
    if configuration.vm.testHooks {
        logger.warning("vm.test_hooks is on: level-3 sandboxes can panic their own guests (tests only)")
    }
    // Its start-up (image check, accelerator probe, pool) ends after the daemon's own: hand that
    // garbage and code back too.
    engine.start(onSettled: {
        malloc_trim(0)
        StartupPages.release()
    })
    return engine
    #else
    problem = "this sandboxd was built without the level-3 engine"
    return nil
    #endif
}

func printError(_ text: String) {
    var bytes = Array((text.hasSuffix("\n") ? text : text + "\n").utf8)
    bytes.withUnsafeMutableBytes { raw in _ = write(2, raw.baseAddress, raw.count) }
}

// Idle memory. glibc gives each thread that allocates its own arena (up to 8 per core), and every
// arena keeps what was freed in it; the daemon's threads (event loop, Swift's pool, one per exec,
// one per database connection) would each pin some. Its work is spawning and waiting, not
// allocating, so two arenas cost no measurable speed (DaemonBenchmark) and keep idle RSS down.
_ = mallopt(M_ARENA_MAX, 2)
// A fixed threshold for serving big blocks with mmap: glibc's default one rises to the largest
// block freed so far, so after start-up read the guest agent (≈15 MB) to hash it, blocks of a few
// MB came from the arenas and ≈8 MB of them stayed resident after they were freed.
_ = mallopt(M_MMAP_THRESHOLD, 256 * 1024)

// main.swift cannot carry @main; parse and run the async command by hand.
do {
    let command = try SandboxdCommand.parseAsRoot()
    if let command = command as? SandboxdCommand {
        try await command.runDaemon()
    } else {
        var other = command
        try other.run()
    }
} catch {
    SandboxdCommand.exit(withError: error)
}
