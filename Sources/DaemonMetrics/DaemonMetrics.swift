import Prometheus
import Synchronization

/// The daemon's metrics, served as Prometheus text by `GET /metrics`.
///
/// One instance per daemon, owning its own registry: nothing is bootstrapped globally, so two
/// daemons (or two test servers) in one process never mix their figures. Every method is cheap
/// (a lock and an atomic add) and safe from any thread, so the exec and record paths call it
/// inline.
public final class DaemonMetrics: Sendable {
    /// Seconds; from a `/bin/true` one-shot (a few ms) to long agent runs.
    static let durationBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
    /// Seconds; one batched round trip to PostgreSQL.
    static let writeBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]

    private let registry = PrometheusCollectorRegistry()
    private let sandboxesAlive: Gauge
    private let oneShotPoolReady: Gauge
    private let recordWrite: ValueHistogram
    private let recordsWritten: Counter
    private let recordWriteFailures: Counter
    /// The executions counter and duration histogram per (status, level), made once: the
    /// registry's lookup by name and labels cost more than the increment on every exec.
    private let execSeries = Mutex<[ExecSeriesKey: (counter: Counter, duration: ValueHistogram)]>([:])

    private struct ExecSeriesKey: Hashable {
        var status: String
        var isolationLevel: Int
    }

    public init() {
        sandboxesAlive = registry.makeGauge(descriptor: Self.name("sandboxes_alive",
            "Sandboxes alive now, persistent and one-shot (including those being built)."))
        oneShotPoolReady = registry.makeGauge(descriptor: Self.name("one_shot_pool_ready",
            "Level-1 sandboxes built ahead and ready for one-shot runs (not counted in sandboxes_alive)."))
        recordWrite = registry.makeValueHistogram(descriptor: Self.name("record_write_seconds",
            "Time of one batched write of execution records to PostgreSQL (a round trip, shared by the records in the batch)."),
            buckets: Self.writeBuckets)
        recordsWritten = registry.makeCounter(descriptor: Self.name("records_written_total",
            "Execution record versions written to PostgreSQL (running and final rows)."))
        recordWriteFailures = registry.makeCounter(descriptor: Self.name("record_write_failures_total",
            "Batched record writes that failed (the batch is retried unless the database refused its values)."))
    }

    static func name(_ metric: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "sandboxd", metricName: metric, unitName: "", helpText: help)
    }

    /// One exec ended (any status, `error` included) after `seconds` of wall time.
    public func execFinished(status: String, isolationLevel: Int, seconds: Double) {
        let key = ExecSeriesKey(status: status, isolationLevel: isolationLevel)
        let series = execSeries.withLock { cache in
            if let series = cache[key] { return series }
            let level = String(isolationLevel)
            let made = (
                counter: registry.makeCounter(descriptor: Self.name("executions_total", "Executions by final status and isolation level."),
                                              labels: [("status", status), ("isolation_level", level)]),
                duration: registry.makeValueHistogram(descriptor: Self.name("execution_duration_seconds", "Wall time of executions, by isolation level."),
                                                      labels: [("isolation_level", level)], buckets: Self.durationBuckets))
            cache[key] = made
            return made
        }
        series.counter.increment()
        series.duration.record(seconds)
    }

    /// A sandbox or exec refused by admission: `global_limit`, `uid_limit`, `shutting_down`.
    public func admissionRejected(reason: String) {
        registry.makeCounter(descriptor: Self.name("admission_rejections_total", "Requests refused by admission, by reason."),
                             labels: [("reason", reason)]).increment()
    }

    /// The number of sandboxes alive changed.
    public func setSandboxesAlive(_ count: Int) {
        sandboxesAlive.set(Int64(count))
    }

    /// A batch of `records` execution records was written in `seconds`.
    public func recordsWritten(_ records: Int, seconds: Double) {
        recordWrite.record(seconds)
        recordsWritten.increment(by: Int64(records))
    }

    /// A batched record write failed.
    public func recordWriteFailed() {
        recordWriteFailures.increment()
    }

    /// A level-1 one-shot run looked for a pre-built sandbox: `taken`, or the pool had none of its shape.
    public func oneShotPool(taken: Bool) {
        registry.makeCounter(descriptor: Self.name("one_shot_pool_total",
            "Level-1 one-shot runs by whether a pre-built sandbox was ready (taken) or not (empty)."),
                             labels: [("result", taken ? "taken" : "empty")]).increment()
    }

    /// The number of pre-built level-1 sandboxes ready changed.
    public func setOneShotPoolReady(_ count: Int) {
        oneShotPoolReady.set(Int64(count))
    }

    /// The egress proxy refused a connection (`reason`: `host_not_allowed`, `address_refused`, …).
    public func egressDenied(reason: String) {
        registry.makeCounter(descriptor: Self.name("egress_denials_total", "Connections refused by the egress proxy, by reason."),
                             labels: [("reason", reason)]).increment()
    }

    /// An error answered on the control socket, by its `error.code` (malformed HTTP included).
    public func apiError(code: String) {
        registry.makeCounter(descriptor: Self.name("api_errors_total", "Error responses of the control API, by error code."),
                             labels: [("code", code)]).increment()
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(4096)
        registry.emit(into: &buffer)
        return buffer
    }

    /// The media type of `exposition()`.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}
