import Glibc
import ProcessSpawn
import Testing

@Suite("SpawnCommand: what a child gets, and what it does not")
struct SpawnCommandTests {
    /// The names in a directory, sorted.
    static func entries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { Int($0) ?? 0 < Int($1) ?? 0 }
    }

    /// Where a symbolic link points ("" when it cannot be read).
    static func link(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    }

    @Test("only stdio and the passed descriptors cross, even ones of ours without close-on-exec")
    func onlyNamedDescriptorsCross() throws {
        var leaked: [Int32] = [-1, -1]
        #expect(pipe(&leaked) == 0)   // no O_CLOEXEC: the kind another thread might create
        defer { close(leaked[0]); close(leaked[1]) }
        var passed: [Int32] = [-1, -1]
        #expect(pipe(&passed) == 0)
        defer { close(passed[0]); close(passed[1]) }
        // A program that opens nothing itself: its descriptor table is what it was given.
        var command = SpawnCommand(["/bin/sleep", "30"])
        command.passedDescriptors = [passed[1]]
        let pid = try command.spawn()
        defer { kill(pid, SIGKILL); _ = try? SpawnCommand.wait(pid) }
        var comm = ""
        for _ in 0..<400 where comm != "sleep\n" {
            usleep(5_000)
            let fd = open("/proc/\(pid)/comm", O_RDONLY | O_CLOEXEC)
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = fd >= 0 ? read(fd, &buffer, buffer.count) : -1
            if fd >= 0 { close(fd) }
            comm = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
        }
        try #require(comm == "sleep\n", "the child never became sleep")
        // What each of its descriptors is (sleep may briefly hold one of its own, e.g. a locale file).
        let held = Dictionary(uniqueKeysWithValues: Self.entries("/proc/\(pid)/fd").map { ($0, Self.link("/proc/\(pid)/fd/" + $0)) })
        #expect(held["0"] == "/dev/null" && held["1"] == "/dev/null" && held["2"] == "/dev/null", "\(held)")
        #expect(held["3"] == Self.link("/proc/self/fd/\(passed[1])"), "\(held)")
        let leakedPipe = Self.link("/proc/self/fd/\(leaked[0])")
        #expect(leakedPipe.hasPrefix("pipe:") && !held.values.contains(leakedPipe), "\(held) has our \(leakedPipe)")
        // And 3 is our pipe.
        var through = SpawnCommand(["/bin/sh", "-c", "echo through-3 >&3"])
        through.passedDescriptors = [passed[1]]
        #expect(try through.run().termination.succeeded)
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(passed[0], &buffer, buffer.count)
        #expect(n > 0 && String(decoding: buffer[0..<max(0, n)], as: UTF8.self) == "through-3\n")
    }

    @Test("passed descriptors land in order even when a source number is another's target")
    func crossedDescriptors() throws {
        // Sources 4 and 3 (when free) for targets 3 and 4: a naive dup2 order would clobber one.
        var first: [Int32] = [-1, -1], second: [Int32] = [-1, -1]
        #expect(pipe(&first) == 0 && pipe(&second) == 0)
        defer { for fd in first + second { close(fd) } }
        var command = SpawnCommand(["/bin/sh", "-c", "echo a >&3; echo b >&4"])
        command.passedDescriptors = [second[1], first[1]]
        #expect(try command.run().termination.succeeded)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(read(second[0], &buffer, 8) == 2 && buffer[0] == UInt8(ascii: "a"))
        #expect(read(first[0], &buffer, 8) == 2 && buffer[0] == UInt8(ascii: "b"))
    }

    @Test("signals: nothing blocked and nothing ignored in the child, whatever the caller's thread has")
    func signalsReset() throws {
        var blocked = sigset_t(), old = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, &old)
        let previous = signal(SIGWINCH, SIG_IGN)   // ignored by default anyway: harmless to other tests
        defer {
            pthread_sigmask(SIG_SETMASK, &old, nil)
            signal(SIGWINCH, previous)
        }
        let output = try SpawnCommand(["/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]).run()
        let masks = output.outputText.split(separator: "\n").map { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        try #require(masks.count == 2, "\(output.outputText)")
        // glibc's posix_spawn itself leaves its two internal signals (32, 33) ignored; they are not ours to reset.
        let glibcInternal: UInt64 = 1 << 31 | 1 << 32
        #expect(masks[0] == 0, "blocked in the child: \(output.outputText)")
        #expect(masks[1].map { $0 & ~glibcInternal } == 0, "ignored in the child: \(output.outputText)")
    }

    @Test("run: stdin from input, stdout and stderr apart or merged, exit status and signal")
    func runCollects() throws {
        let output = try SpawnCommand(["/bin/sh", "-c", "cat; echo err >&2; exit 3"]).run(input: Array("in\n".utf8))
        #expect(output.termination.exitCode == 3 && output.termination.status == 3)
        #expect(output.outputText == "in\n")
        #expect(output.errorText == "err\n")
        let merged = try SpawnCommand(["/bin/sh", "-c", "echo out; echo err >&2"]).run(mergingStandardError: true)
        #expect(merged.outputText == "out\nerr\n" && merged.standardError.isEmpty)
        let killed = try SpawnCommand(["/bin/sh", "-c", "kill -9 $$"]).run()
        #expect(killed.termination.signal == SIGKILL && killed.termination.status == 128 + SIGKILL)
    }

    @Test("environment, working directory, new session")
    func placement() throws {
        var command = SpawnCommand(["/bin/sh", "-c", "echo \"$ONLY|$HOME|$(pwd)\"; cut -d' ' -f6 /proc/$$/stat; echo $$"],
                                   environment: ["ONLY=this"])
        command.workingDirectory = "/usr"
        command.newSession = true
        let lines = try command.run().outputText.split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(lines)")
        #expect(lines[0] == "this||/usr")
        #expect(lines[1] == lines[2], "the session id is the shell's own pid: \(lines)")
    }

    @Test("a missing program is an error that names it")
    func missingProgram() {
        #expect { try SpawnCommand(["/no/such/program"]).spawn() } throws: { error in
            "\(error)".contains("/no/such/program")
        }
    }
}
