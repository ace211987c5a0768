#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Long-lived threads for the engine's blocking work (clone requests, waiting for a command,
/// pipe I/O), never Swift's cooperative pool.
///
/// Why not a thread per call: creating and ending a thread (its stack mapped and unmapped, its
/// TLS set up, the scheduler's bookkeeping) showed up in the daemon's profile for every one-shot
/// run. Why not a fixed number: a call may block for as long as its command runs, so a job
/// must never wait for another to end. A job goes to an idle thread when there is one, else to
/// a new thread; so the number of threads follows the number of calls in flight (which the
/// daemon's admission bounds), and a thread idle for `idleTimeout` ends.
final class BlockingThreads: @unchecked Sendable {
    /// The engine's pool (every engine in the process shares it).
    static let shared = BlockingThreads()

    /// How long an idle thread waits for work before it ends.
    let idleTimeout: Int
    /// Stack size of each thread (the engine's blocking code is shallow).
    let stackSize: Int

    // Guarded by `lock`; unchecked Sendable for that reason.
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    /// Threads waiting for work, the most recently idle last (it is the one reused: its stack
    /// is warm, and the others can time out).
    private var idle: [Worker] = []
    private(set) var threadCount = 0

    init(idleTimeout: Int = 10, stackSize: Int = 256 * 1024) {
        self.idleTimeout = idleTimeout
        self.stackSize = stackSize
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        // Each thread holds its pool: a pool ends only after its last thread did.
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// Threads alive and idle (for tests and diagnostics).
    var counts: (threads: Int, idle: Int) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return (threadCount, idle.count)
    }

    /// Runs `job` on an idle thread, or on a new one when none is idle. When no thread can be
    /// created, runs it on the caller's thread rather than lose it.
    func submit(_ job: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(lock)
        if let worker = idle.popLast() {
            worker.job = job
            pthread_cond_signal(worker.wake)
            pthread_mutex_unlock(lock)
            return
        }
        threadCount += 1
        pthread_mutex_unlock(lock)

        let worker = Worker(pool: self, job: job)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, stackSize)
        var thread = pthread_t()
        let unmanaged = Unmanaged.passRetained(worker)
        let rc = pthread_create(&thread, &attributes, { arg in
            Unmanaged<Worker>.fromOpaque(arg!).takeRetainedValue().loop()
            return nil
        }, unmanaged.toOpaque())
        pthread_attr_destroy(&attributes)
        if rc != 0 {
            unmanaged.release()
            pthread_mutex_lock(lock)
            threadCount -= 1
            pthread_mutex_unlock(lock)
            job()
        }
    }

    /// One thread: runs its job, then waits (on its own condition) to be handed the next one.
    private final class Worker {
        let pool: BlockingThreads
        /// Set under the pool's lock by `submit`, taken by the thread.
        var job: (@Sendable () -> Void)?
        let wake: UnsafeMutablePointer<pthread_cond_t>

        init(pool: BlockingThreads, job: @escaping @Sendable () -> Void) {
            self.pool = pool
            self.job = job
            wake = .allocate(capacity: 1)
            // Timed waits on the monotonic clock: a clock change must not end or keep threads.
            var attributes = pthread_condattr_t()
            pthread_condattr_init(&attributes)
            pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
            pthread_cond_init(wake, &attributes)
            pthread_condattr_destroy(&attributes)
        }

        deinit {
            pthread_cond_destroy(wake)
            wake.deallocate()
        }

        func loop() {
            let lock = pool.lock
            while true {
                pthread_mutex_lock(lock)
                guard var next = job else { pthread_mutex_unlock(lock); return }
                job = nil
                pthread_mutex_unlock(lock)
                next()
                // Let go of the job before waiting: what it captured (a sandbox and its pidfd,
                // say) must end when the caller is done with it, not when this thread is.
                next = {}

                pthread_mutex_lock(lock)
                pool.idle.append(self)
                var deadline = timespec()
                clock_gettime(CLOCK_MONOTONIC, &deadline)
                deadline.tv_sec += pool.idleTimeout
                while job == nil {
                    if pthread_cond_timedwait(wake, lock, &deadline) == ETIMEDOUT, job == nil {
                        // Still listed as idle (submit removes a worker when it hands it a job).
                        if let index = pool.idle.firstIndex(where: { $0 === self }) { pool.idle.remove(at: index) }
                        pool.threadCount -= 1
                        pthread_mutex_unlock(lock)
                        return
                    }
                }
                pthread_mutex_unlock(lock)
            }
        }
    }
}
