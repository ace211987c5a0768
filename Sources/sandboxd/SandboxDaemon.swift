#if canImport(Glibc)
import Glibc
#endif
import CMalloc
import ControlAPI
import DaemonMetrics
import NIOPosix
import Logging
import ServiceLifecycle
import UnixSignals
import SandboxCore
import Supervisor

/// What the daemon needs to start serving (built from the configuration file and flags).
struct DaemonSettings: Sendable {
    var listener: ControlListener
    var api: ControlAPIConfiguration
    var supervisor: SupervisorConfiguration
    var logLevel: Logger.Level
}

/// The daemon's lifecycle: reap leftovers, serve, and on SIGTERM/SIGINT stop accepting, give
/// running execs the grace period, kill what remains, flush every record, destroy every sandbox,
/// exit 0. Readiness and shutdown are reported to systemd with sd_notify.
enum SandboxDaemon {
    static func run(settings: DaemonSettings, engines: [IsolationLevel: any SandboxEngine], records: (any ExecutionRecorder)?,
                    databaseTool: DatabaseToolState = .unavailable("this sandboxd has no read-only database tool configured"),
                    metrics: DaemonMetrics) async throws {
        let logger = Logger(label: "sandboxd")
        // SIGHUP means "reload policies" (PolicyReloadService); until that service traps it, a
        // hangup must not end the daemon with the default action.
        signal(SIGHUP, SIG_IGN)
        let notifier = SystemdNotifier()
        let supervisor = Supervisor(configuration: settings.supervisor, engines: engines, records: records,
                                    logger: Logger(label: "sandboxd.supervisor"), databaseTool: databaseTool, metrics: metrics)
        notifier.notify("STATUS=reaping what a previous run left")
        await supervisor.reapLeftovers()
        // Sandboxes for the default policy's one-shot runs are built in the background meanwhile.
        await supervisor.warmOneShotPool()
        // Start-up (configuration, policies, migrations, reaping) is done: hand its garbage back,
        // and unmap the code only start-up ran.
        malloc_trim(0)
        StartupPages.release()

        // One event loop: the socket only carries small JSON requests; the work runs on the
        // engine's threads. (NIO's shared group would start one thread per core, each with its
        // stack and buffers, to serve a Unix socket.)
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { eventLoops.shutdownGracefully { _ in } }

        let server = ControlServer(
            listener: settings.listener, service: supervisor, configuration: settings.api,
            logger: Logger(label: "sandboxd.control"), eventLoopGroup: eventLoops, metrics: metrics,
            onListening: { where_ in
                notifier.notify("READY=1\nSTATUS=serving on \(where_)\nMAINPID=\(getpid())")
            },
            onGracefulShutdown: {
                notifier.notify("STOPPING=1\nSTATUS=stopping: draining running executions")
                await supervisor.shutdown()
            })
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: SupervisorService(supervisor: supervisor)),
                .init(service: PolicyReloadService(supervisor: supervisor)),
                .init(service: server),
                .init(service: MemoryTrimService()),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            notifier.notify("STATUS=failed: \(error)")
            throw error
        }
        notifier.notify("STATUS=stopped")
        logger.info("sandboxd stopped")
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    /// Sets up journald-friendly logging on stderr.
    static func bootstrapLogging(level: Logger.Level) {
        LoggingSystem.bootstrap { label in JournalLogHandler(label: label, level: level) }
    }
}

/// Keeps the Supervisor in the service group: on graceful shutdown it drains, destroys and flushes.
/// (The control server triggers the same shutdown as soon as it stops accepting; this one waits for it.)
struct SupervisorService: Service {
    let supervisor: Supervisor

    func run() async throws {
        try? await gracefulShutdown()
        await supervisor.shutdown()
    }
}

/// `SIGHUP` reloads every policy file (all or nothing; failures are logged, nothing changes).
struct PolicyReloadService: Service {
    let supervisor: Supervisor

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            _ = try? await supervisor.reloadPolicies(trigger: "SIGHUP")
        }
    }
}

/// Returns freed heap to the kernel every `interval` (`malloc_trim`), so that memory a burst of
/// requests used does not stay resident while the daemon idles.
struct MemoryTrimService: Service {
    var interval: Duration = .seconds(30)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                malloc_trim(0)
            }
        }
    }
}

extension DaemonSettings {
    /// Settings from the resolved configuration. The socket comes from systemd when the daemon was
    /// socket-activated (`LISTEN_FDS`), from `socket.path` otherwise.
    init(configuration: DaemonConfiguration, version: String) {
        listener = ControlListener.fromSocketActivation()
            ?? .path(configuration.socket.path, mode: 0o660, group: configuration.socket.group)
        api = ControlAPIConfiguration(maxBodyBytes: Int(clamping: configuration.sandbox.maxRequestBody.bytes),
                                      adminGroup: configuration.socket.adminGroup)
        supervisor = SupervisorConfiguration(
            maxSandboxes: configuration.sandbox.maxSandboxes,
            maxSandboxesPerUID: configuration.sandbox.maxSandboxesPerUID,
            gracePeriodSeconds: configuration.shutdownGracePeriod,
            limitEnforcement: configuration.resources.enforcement,
            version: version)
        supervisor.oneShotPoolSize = configuration.sandbox.poolSize
        logLevel = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
    }
}
