// swift-tools-version:6.1
import Foundation
import PackageDescription

let package = Package(
    name: "sandboxd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sandboxd", targets: ["sandboxd"]),
        .executable(name: "sandboxctl", targets: ["sandboxctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // What a sandbox engine takes and gives back (SandboxSpec, ResourceLimits, ExecRequest,
        // ExecResult, ByteCount). Standard library only: the level-3 guest agent links it, and
        // Foundation (with ICU) would make that static agent ~4x larger and slower to start.
        .target(name: "SandboxValues"),

        // Policies, configuration and records, parsed from YAML (Yams); re-exports SandboxValues. No I/O.
        .target(name: "SandboxCore", dependencies: ["SandboxValues", .product(name: "Yams", package: "Yams")]),

        // libpq, found by pkg-config.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // Connection pool, migrations, execution records, embedded PostgreSQL.
        .target(name: "Store", dependencies: [
            "SandboxCore", "CLibPQ",
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Wire types, the HTTP/1.1 server on the Unix socket, peer credentials and authorization.
        .target(name: "ControlAPI", dependencies: [
            "SandboxCore", "DaemonMetrics",
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOExtras", package: "swift-nio-extras"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // The daemon's brain: sandbox registry, admission, execution records, reaping.
        // SANDBOXD_LEVEL1_ENGINE compiles the level-1 engine adapter (LinuxSandboxEngine+SandboxEngine.swift),
        // SANDBOXD_LEVEL3_ENGINE the level-3 one (VMSandboxEngine+SandboxEngine.swift).
        .target(name: "Supervisor", dependencies: [
            "SandboxCore", "Store", "ControlAPI", "LinuxSandbox", "VMSandbox", "EgressProxy", "DaemonMetrics",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: [.define("SANDBOXD_LEVEL1_ENGINE"), .define("SANDBOXD_LEVEL3_ENGINE")]),

        // The operator's command line over the socket.
        // `image build` runs the guest image builder itself (VMSandbox), as root.
        .executableTarget(name: "sandboxctl", dependencies: [
            "ControlAPI", "SandboxCore", "VMSandbox",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),

        // libseccomp, found by pkg-config: compiles the seccomp policy to BPF once per policy.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),

        // The only code between clone and exec (async-signal-safe, no allocation), and the
        // spawner protocol.
        .target(name: "CLinuxSandbox"),

        // The level-1 engine's spawn helper: clones sandboxes from a small address space
        // (C, no Swift code; found next to the daemon's executable).
        .executableTarget(name: "sandboxd-spawner", dependencies: ["CLinuxSandbox"], path: "Sources/sandboxd-spawner"),

        // Level 1: rootfs plan, cgroup v2, seccomp, spawn, exec, output capture, timeouts.
        .target(name: "LinuxSandbox", dependencies: [
            "SandboxValues", "CLinuxSandbox", "CSeccomp",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // Egress allowlist proxy: serves a listener created inside a sandbox's network namespace.
        .target(name: "EgressProxy", dependencies: [
            "SandboxCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .executableTarget(name: "sandboxd", dependencies: [
            "SandboxCore", "Store", "ControlAPI", "Supervisor", "LinuxSandbox", "VMSandbox", "DaemonMetrics", "CMalloc",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], swiftSettings: [.define("SANDBOXD_LEVEL1_ENGINE"), .define("SANDBOXD_LEVEL3_ENGINE")]),

        // One-shot and exec latency against bubblewrap (make bench; Benchmarks/run; needs root).
        .executableTarget(name: "SandboxBenchmark", dependencies: ["LinuxSandbox", "CLinuxSandbox", "SandboxCore", "BenchmarkSupport"],
                          path: "Benchmarks/SandboxBenchmark"),

        // Level 3: cold create+exec against a raw QEMU boot, warm-pool create+exec (make bench; root).
        .executableTarget(name: "VMBenchmark", dependencies: ["VMSandbox", "QEMUGuest", "SandboxCore", "BenchmarkSupport"],
                          path: "Benchmarks/VMBenchmark"),

        // Store insert rates against pgbench (make bench; Benchmarks/run).
        .executableTarget(name: "StoreBenchmark", dependencies: [
            "Store", "SandboxCore", "BenchmarkSupport",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Benchmarks/StoreBenchmark"),

        // Level 3: the daemon ↔ guest agent wire format (frames, Codable messages). No Foundation (its
        // own strict Codable JSON reader, SandboxValues' JSONText writer), like everything the agent links.
        .target(name: "VMAgentProtocol", dependencies: ["SandboxValues"]),

        // Level 3: guest image, jailed QEMU, KVM/TCG choice, agent connection, warm pool.
        .target(name: "VMSandbox", dependencies: ["VMAgentProtocol", "QEMUGuest", "SandboxCore", "LinuxSandbox"]),

        // The level-3 guest's PID 1 and agent: serves VMAgentProtocol on virtio-serial and runs
        // commands in a LinuxSandbox inside the guest. The image carries the Swift runtime
        // libraries it links (GuestImageBuilder), not the toolchain directory. No Foundation, no
        // Yams (SandboxCore): a small static agent starts sooner under TCG (docs/vm-sandbox.md).
        .executableTarget(name: "sandbox-guest", dependencies: ["VMAgentProtocol", "LinuxSandbox", "SandboxValues"]),

        // Level-3 maintenance without the daemon: image build (with progress), accelerator probe, one run.
        .executableTarget(name: "sandbox-vm", dependencies: ["VMSandbox", "SandboxCore"]),

        .testTarget(name: "VMSandboxTests", dependencies: ["VMSandbox", "VMAgentProtocol", "SandboxCore", "QEMUGuest"]),

        // Egress proxy cost against direct connections (make bench; Benchmarks/run).
        .executableTarget(name: "EgressBenchmark", dependencies: [
            "EgressProxy", "SandboxCore", "BenchmarkSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], path: "Benchmarks/EgressBenchmark"),

        .testTarget(name: "SandboxCoreTests", dependencies: ["SandboxCore"]),
        .testTarget(name: "EgressProxyTests", dependencies: ["EgressProxy", "SandboxCore"]),
        .testTarget(name: "StoreTests", dependencies: ["Store", "SandboxCore"]),
        .testTarget(name: "ControlAPITests", dependencies: ["ControlAPI", "SandboxCore", .product(name: "NIOHTTP1", package: "swift-nio")]),
        // End to end through the real socket: curl and sandboxctl as real users against a real server.
        .testTarget(name: "DaemonTests", dependencies: [
            "ControlAPI", "Supervisor", "SandboxCore", "Store", "LinuxSandbox", "DaemonMetrics",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: [.define("SANDBOXD_LEVEL1_ENGINE"), .define("SANDBOXD_LEVEL3_ENGINE")]),
        .testTarget(name: "LinuxSandboxTests", dependencies: ["LinuxSandbox", "SandboxCore"]),
        // Real attack programs (Payloads/*.c, compiled at test time with cc) run in level-1 sandboxes.
        .testTarget(name: "HostileTests", dependencies: ["LinuxSandbox", "SandboxCore"], exclude: ["Payloads"]),
    ],
    swiftLanguageModes: [.v6]
)

// The QEMU guest: its own block, so that it merges cleanly with work on the list above.
package.targets += [
    // Booting a Debian kernel under QEMU: kernel package, module order, kernel ELF, initramfs
    // (cpio), content-keyed build cache, time-boxed QEMU process, framed results on a serial
    // port. Used by the guest test harness now and by VMSandbox (level 3) later. Foundation only.
    .target(name: "QEMUGuest"),
    .testTarget(name: "QEMUGuestTests", dependencies: ["QEMUGuest"]),

    // The QEMU test guest (host root over 9p, real cgroup2): GuestMachine.run(...). Test-only.
    .target(name: "GuestSupport", dependencies: ["QEMUGuest", "SandboxCore"], path: "Tests/guest/GuestSupport"),
    .testTarget(name: "GuestTests", dependencies: ["GuestSupport", "QEMUGuest"], path: "Tests/guest/GuestTests"),
]

// The guest cgroup checks drive the level-1 engine (LinuxSandbox) inside the QEMU test guest.
// They join the package as soon as the engine's sources are in the checkout, whichever branch
// lands first; once LinuxSandbox is on main, the condition can go.
if FileManager.default.fileExists(atPath: Context.packageDirectory + "/Sources/LinuxSandbox") {
    package.targets += [
        // Runs inside the QEMU test guest: drives LinuxSandbox against a real cgroup2 hierarchy
        // and prints one JSON line per scenario (memory/fork bombs, cpu.max, memory.peak, teardown).
        .executableTarget(name: "guest-cgroup-checks", dependencies: ["LinuxSandbox", "SandboxCore"], path: "Tests/guest/GuestChecks"),
        // Boots the guest once, runs guest-cgroup-checks, asserts per scenario.
        .testTarget(name: "GuestCgroupTests", dependencies: ["GuestSupport"], path: "Tests/guest/GuestCgroupTests"),
    ]
}

// The whole daemon over its socket (release sandboxd, embedded PostgreSQL) against bubblewrap:
// one-shot latency, sustained recorded runs/s, resident memory (make bench; Benchmarks/run; root).
package.targets += [
    .executableTarget(name: "DaemonBenchmark", dependencies: ["LinuxSandbox", "SandboxCore", "BenchmarkSupport"], path: "Benchmarks/DaemonBenchmark"),
]

// What every benchmark shares: clock, percentiles, environment settings, the bubblewrap baseline.
package.targets += [
    .target(name: "BenchmarkSupport", path: "Benchmarks/BenchmarkSupport"),
]

// glibc's <malloc.h> (mallopt): sandboxd caps its malloc arenas at start to keep idle memory small.
package.targets += [
    .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
]

// The daemon's Prometheus metrics (GET /metrics): one registry per daemon, no global bootstrap.
package.targets += [
    .target(name: "DaemonMetrics", dependencies: [
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
    ]),
]

// One posix_spawn wrapper for every helper program (initdb, QEMU, host tools, the spawn helper,
// test servers): exactly the descriptors named, signals reset. Glibc only, so Store stays light.
package.targets += [
    .target(name: "ProcessSpawn"),
    .testTarget(name: "ProcessSpawnTests", dependencies: ["ProcessSpawn"]),
]
for user in ["Store", "QEMUGuest", "VMSandbox", "LinuxSandbox", "DaemonTests", "HostileTests", "EgressProxyTests"] {
    package.targets.first { $0.name == user }?.dependencies.append("ProcessSpawn")
}
