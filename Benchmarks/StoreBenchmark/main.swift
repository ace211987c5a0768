// Execution-record inserts per second through the Store (one record per call, and batched),
// against pgbench doing single-row inserts of the same shape into the same server, printed as
// ratios. Run by Benchmarks/run (make bench); not part of make test.
//
// Usage: StoreBenchmark [--single-records N] [--batch-records N] [--clients C] [--batch-size N] [--pgbench-transactions N] [--rounds N]

import BenchmarkSupport
import Foundation
import Logging
import SandboxCore
import Store

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var singleRecords = 3_000
    var batchRecords = 30_000
    var clients = 8
    var batchSize = 500
    var pgbenchTransactions = 3_000
    var rounds = 3

    init(_ arguments: [String]) throws {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            func number() throws -> Int {
                guard let text = iterator.next(), let value = Int(text), value > 0 else {
                    throw BenchmarkError("\(argument) needs a positive number")
                }
                return value
            }
            switch argument {
            case "--single-records": singleRecords = try number()
            case "--batch-records": batchRecords = try number()
            case "--clients": clients = try number()
            case "--batch-size": batchSize = try number()
            case "--pgbench-transactions": pgbenchTransactions = try number()
            case "--rounds": rounds = try number()
            default: throw BenchmarkError("unknown option \(argument) (known: --single-records, --batch-records, --clients, --batch-size, --pgbench-transactions, --rounds)")
            }
        }
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A record shaped like the daemon's: every column set, small JSON in and out.
func makeRecord(_ index: Int) -> ExecutionRecord {
    ExecutionRecord(
        agentType: "bench",
        inputData: ["argv": ["python3", "-c", "print(1)"], "n": .integer(Int64(index))],
        outputData: ["stdout": "ok"],
        executionTime: 0.25, sandboxID: "sbx-bench", status: .ok, isolationLevel: .native, policy: "default",
        exitCode: 0, startedAt: Date(), finishedAt: Date(),
        usage: ResourceUsage(cpuMicroseconds: 12_345, memoryPeakBytes: 1_048_576), limitsEnforced: true, ownerUID: 1000)
}

/// The same row as `makeRecord`, written by pgbench with one INSERT per transaction.
let pgbenchScript = """
    \\set n random(1, 1000000000)
    INSERT INTO agent_executions (id, agent_type, input_data, output_data, execution_time, sandbox_id, status, isolation_level, policy, exit_code, signal, started_at, finished_at, cpu_usec, memory_peak_bytes, limits_enforced, owner_uid) VALUES (gen_random_uuid(), 'bench', jsonb_build_object('argv', jsonb_build_array('python3', '-c', 'print(1)'), 'n', :n::bigint), '{"stdout": "ok"}', 0.25, 'sbx-bench', 'ok', 1, 'default', 0, NULL, now(), now(), 12345, 1048576, true, 1000) ON CONFLICT (id) DO NOTHING;

    """

func measure(_ body: () async throws -> Int) async throws -> (count: Int, seconds: Double) {
    let start = ContinuousClock.now
    let count = try await body()
    let elapsed = ContinuousClock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return (count, seconds)
}

/// Runs pgbench against the embedded server and returns its transactions per second.
func runPgbench(settings: DatabaseSettings, clients: Int, transactionsPerClient: Int, scriptPath: String) throws -> Double {
    let threads = min(clients, ProcessInfo.processInfo.activeProcessorCount)
    let arguments = [
        "/usr/lib/postgresql/15/bin/pgbench", "-n", "-M", "prepared", "-f", scriptPath, "-c", String(clients), "-j", String(threads),
        "-t", String(transactionsPerClient), "-h", settings.host, "-p", String(settings.port), "-U", settings.user, settings.database,
    ]
    let environment = ["PATH=/usr/bin:/bin", "LC_ALL=C", "PGPASSWORD=\(settings.password ?? "")"]
    let (status, text) = try spawnAndWait(arguments, environment: environment)
    guard status == 0 else { throw BenchmarkError("pgbench exited with status \(status):\n\(text)") }
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
        let tps = Double(line.dropFirst(6).prefix { $0.isNumber || $0 == "." })
    else { throw BenchmarkError("no tps line in pgbench output:\n\(text)") }
    return tps
}

/// posix_spawn with a clean signal mask: the calling thread blocks signals, and pgbench would
/// inherit that (it could then not be interrupted).
func spawnAndWait(_ arguments: [String], environment: [String]) throws -> (Int32, String) {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { throw BenchmarkError("pipe: \(String(cString: strerror(errno)))") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
    close(pipeFDs[1])
    defer { close(pipeFDs[0]) }
    guard result == 0 else { throw BenchmarkError("posix_spawn(\(arguments[0])): \(String(cString: strerror(result)))") }
    var output = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
        if count < 0, errno == EINTR { continue }
        if count <= 0 { break }
        output += buffer[0..<count]
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    return ((status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f), String(decoding: output, as: UTF8.self))
}

func main() async throws {
    let options = try Options(Array(CommandLine.arguments.dropFirst()))
    var logger = Logger(label: "bench")
    logger.logLevel = .warning

    var template = Array("/tmp/sdbench-XXXXXX".utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { throw BenchmarkError("mkdtemp failed") }
    let directory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    let user = geteuid() == 0 ? "postgres" : String(cString: getpwuid(geteuid()).pointee.pw_name)
    // Default (durable) server settings: every commit is flushed, as in production.
    let embedded = EmbeddedPostgres(
        configuration: .init(
            directory: directory, systemUser: user, createSystemUser: false, database: "bench", role: "bench",
            poolSize: options.clients),
        logger: logger)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    do {
        let settings = try await embedded.start()
        try await run(options: options, settings: settings, directory: directory, logger: logger)
        try await embedded.stop()
    } catch {
        try? await embedded.stop()
        throw error
    }
}

func run(options: Options, settings: DatabaseSettings, directory: String, logger: Logger) async throws {
    var configured = try RecordStore(settings: settings, logger: logger)
    configured.batchChunkSize = options.batchSize
    let store = configured
    try await store.migrate()
    let clients = options.clients
    let threads = min(clients, ProcessInfo.processInfo.activeProcessorCount)
    say("Store benchmark: PostgreSQL 15 (durable defaults) on a Unix socket, \(ProcessInfo.processInfo.activeProcessorCount) CPUs, "
        + "\(clients) clients, pool size \(settings.poolSize), \(options.rounds) rounds, median rates")

    // Warm up connections and prepared statements.
    _ = try await store.insert((0..<(clients * 10)).map(makeRecord))
    let scriptPath = directory + "/insert.pgbench"
    try pgbenchScript.write(toFile: scriptPath, atomically: true, encoding: .utf8)
    let pgbenchPerClient = max(options.pgbenchTransactions / clients, 1)

    /// Rates per round; the phases alternate so that load from other processes hits them alike.
    var rates: [String: [Double]] = [:]
    let batchNames = RecordStore.BatchMethod.allCases.map { "Store insert([records]) batched, \($0.rawValue)" }
    let singleName = "Store insert(record), one per call"
    let baselineName = "pgbench single-row INSERT (baseline)"
    for _ in 0..<options.rounds {
        rates[baselineName, default: []].append(
            try runPgbench(settings: settings, clients: clients, transactionsPerClient: pgbenchPerClient, scriptPath: scriptPath))

        let single = try await measure {
            let records = (0..<options.singleRecords).map(makeRecord)
            return try await withThrowingTaskGroup(of: Int.self) { group in
                for client in 0..<clients {
                    let mine = stride(from: client, to: records.count, by: clients).map { records[$0] }
                    group.addTask {
                        var written = 0
                        for record in mine where try await store.insert(record) { written += 1 }
                        return written
                    }
                }
                return try await group.reduce(0, +)
            }
        }
        rates[singleName, default: []].append(Double(single.count) / single.seconds)

        for (method, name) in zip(RecordStore.BatchMethod.allCases, batchNames) {
            var writer = store
            writer.batchMethod = method
            let batchWriter = writer
            let batched = try await measure {
                let records = (0..<options.batchRecords).map(makeRecord)
                return try await withThrowingTaskGroup(of: Int.self) { group in
                    let perClient = (records.count + clients - 1) / clients
                    for client in 0..<clients {
                        let mine = Array(records[min(client * perClient, records.count)..<min((client + 1) * perClient, records.count)])
                        group.addTask { try await batchWriter.insert(mine) }
                    }
                    return try await group.reduce(0, +)
                }
            }
            rates[name, default: []].append(Double(batched.count) / batched.seconds)
        }
    }
    await store.pool.close()

    func median(_ values: [Double]) -> Double { percentile(values, 50) }
    let baseline = median(rates[baselineName]!)
    func row(_ name: String, _ detail: String) -> String {
        let rate = median(rates[name]!)
        return name.padding(toLength: 44, withPad: " ", startingAt: 0)
            + String(format: "%9.0f records/s  %6.2fx pgbench   ", rate, rate / baseline) + detail
    }
    say(row(baselineName, "-c \(clients) -j \(threads) -M prepared, \(pgbenchPerClient * clients) rows per round"))
    say(row(singleName, "\(options.singleRecords) records per round"))
    for name in batchNames {
        say(row(name, "\(options.batchRecords) records per round, \(options.batchSize) per round trip"))
    }
    let best = batchNames.map { median(rates[$0]!) }.max() ?? 0
    let single = median(rates[singleName]!)
    say(String(format: "ratios: best batched/pgbench = %.2f, single/pgbench = %.2f; batched target 5000 records/s: %@",
               best / baseline, single / baseline, best >= 5000 ? "met" : "NOT met"))
}

do {
    try await main()
} catch {
    FileHandle.standardError.write(Data("StoreBenchmark: \(error)\n".utf8))
    exit(1)
}
