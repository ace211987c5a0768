// What every benchmark under Benchmarks/ needs: a monotonic clock, percentiles, settings from the
// environment, unbuffered output, and the bubblewrap baseline the level-1 benchmarks compare against.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Seconds on the monotonic clock (for differences only).
public func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The nearest-rank `p`th percentile (`p` in 0...100) of `samples`; NaN when there are none.
public func percentile(_ samples: [Double], _ p: Double) -> Double {
    guard !samples.isEmpty else { return .nan }
    let sorted = samples.sorted()
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

/// The integer in environment variable `name`, or `fallback` when it is unset or not a number.
public func environmentInt(_ name: String, _ fallback: Int) -> Int {
    getenv(name).flatMap { Int(String(cString: $0)) } ?? fallback
}

/// Writes one line to standard output at once (progress stays visible when output is piped).
public func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Where bubblewrap is installed, if it is.
public func findBwrap() -> String? {
    ["/usr/bin/bwrap", "/bin/bwrap"].first { access($0, X_OK) == 0 }
}

/// bubblewrap running `command` with the isolation the level-1 benchmarks compare sandboxd
/// against: every namespace, the read-only runtime (/usr and the merged-/usr links), a new /proc,
/// a minimal /dev, a private /tmp. (sandboxd adds a cgroup, seccomp, a generated /etc and drops
/// every capability.) `options` go right after the executable.
public func bwrapArguments(_ bwrap: String, options: [String] = [], command: [String]) -> [String] {
    var arguments = [bwrap] + options + ["--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for link in ["bin", "sbin", "lib", "lib64"] {
        var target = [CChar](repeating: 0, count: 256)
        let n = readlink("/" + link, &target, 255)
        if n > 0 {
            arguments += ["--symlink", String(decoding: target[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self), "/" + link]
        } else if access("/" + link, F_OK) == 0 {
            arguments += ["--ro-bind", "/" + link, "/" + link]
        }
    }
    return arguments + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] + command
}

/// The host's load average (1, 5, 15 minutes), printed next to figures measured on a shared machine.
public func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
}
