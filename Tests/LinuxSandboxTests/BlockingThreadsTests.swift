@testable import LinuxSandbox
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    @Suite("the engine's blocking threads")
    struct BlockingThreadsTests {
        /// Waits up to 5 s for `condition`, checking every millisecond.
        func eventually(_ condition: () -> Bool) -> Bool {
            for _ in 0..<5_000 {
                if condition() { return true }
                usleep(1_000)
            }
            return condition()
        }

        @Test("a job blocked for as long as it likes never holds up another: a busy pool grows a thread")
        func blockedJobDoesNotStarve() {
            let pool = BlockingThreads(idleTimeout: 10)
            let release = Atomic<Bool>(false)
            let blockedStarted = Atomic<Bool>(false)
            let othersDone = Atomic<Int>(0)
            pool.submit {
                blockedStarted.store(true, ordering: .sequentiallyConsistent)
                while !release.load(ordering: .sequentiallyConsistent) { usleep(1_000) }
            }
            #expect(eventually { blockedStarted.load(ordering: .sequentiallyConsistent) })
            for _ in 0..<4 { pool.submit { othersDone.add(1, ordering: .sequentiallyConsistent) } }
            #expect(eventually { othersDone.load(ordering: .sequentiallyConsistent) == 4 })
            #expect(pool.counts.threads >= 2)
            release.store(true, ordering: .sequentiallyConsistent)
            #expect(eventually { pool.counts.idle == pool.counts.threads })
        }

        @Test("one job after another reuses one thread: no thread is created per call")
        func sequentialJobsReuseAThread() {
            let pool = BlockingThreads(idleTimeout: 10)
            let threadIDs = Mutex<Set<UInt>>([])
            for _ in 0..<50 {
                let done = Atomic<Bool>(false)
                pool.submit {
                    let tid = UInt(pthread_self())
                    threadIDs.withLock { _ = $0.insert(tid) }
                    done.store(true, ordering: .sequentiallyConsistent)
                }
                #expect(eventually { done.load(ordering: .sequentiallyConsistent) })
                // The thread lists itself idle right after its job; wait for that, as a caller
                // resumed by the job itself would race it.
                #expect(eventually { pool.counts.idle == 1 })
            }
            #expect(threadIDs.withLock { $0.count } == 1)
            #expect(pool.counts.threads == 1)
        }

        final class Captured: Sendable {
            let onDeinit: @Sendable () -> Void
            init(_ onDeinit: @escaping @Sendable () -> Void) { self.onDeinit = onDeinit }
            deinit { onDeinit() }
        }

        @Test("what a job captured is let go when the job ends, not when its idle thread does")
        func jobCapturesAreReleased() {
            let pool = BlockingThreads(idleTimeout: 30)
            let released = Atomic<Bool>(false)
            let done = Atomic<Bool>(false)
            do {
                let captured = Captured { released.store(true, ordering: .sequentiallyConsistent) }
                pool.submit { _ = captured; done.store(true, ordering: .sequentiallyConsistent) }
            }
            #expect(eventually { done.load(ordering: .sequentiallyConsistent) })
            // (A sandbox captured this way would keep its pidfd open for the idle timeout.)
            #expect(eventually { released.load(ordering: .sequentiallyConsistent) })
            #expect(pool.counts.threads == 1)
        }

        @Test("idle threads end after the idle timeout")
        func idleThreadsEnd() {
            let pool = BlockingThreads(idleTimeout: 1)
            let running = Atomic<Int>(0)
            let release = Atomic<Bool>(false)
            for _ in 0..<3 {
                pool.submit {
                    running.add(1, ordering: .sequentiallyConsistent)
                    while !release.load(ordering: .sequentiallyConsistent) { usleep(1_000) }
                }
            }
            #expect(eventually { running.load(ordering: .sequentiallyConsistent) == 3 })
            #expect(pool.counts.threads == 3)
            release.store(true, ordering: .sequentiallyConsistent)
            #expect(eventually { pool.counts.threads == 0 })
        }
    }
}
