import GuestSupport
import Testing

/// The harness itself: results come back exactly, failures are reported, hangs are cut off.
@Suite("QEMU test guest", .serialized)
struct GuestHarnessTests {
    @Test("a command's exit status and output come back from the guest, with cgroup2 controllers, tmpfs and user namespaces")
    func exitStatusAndOutput() async throws {
        let script = """
            echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
            echo "subtree: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
            echo "fs: $(stat -f -c %T /sys/fs/cgroup) $(stat -f -c %T /tmp) $(stat -f -c %T /run)"
            if touch /usr/.guest-write-probe 2>/dev/null; then echo "root: writable"; else echo "root: read-only"; fi
            echo probe > /tmp/probe && echo "tmp: $(cat /tmp/probe)"
            echo "uid: $(id -u)"
            if unshare --user --map-root-user --pid --fork --mount true; then echo "userns: ok"; else echo "userns: refused"; fi
            exit 3
            """
        let result = try await GuestMachine().run(shell: script, timeout: 60)
        print("guest harness self-test: \(result.timingSummary)")
        #expect(result.exitCode == 3, "output:\n\(result.output)")
        let lines = result.output.split(separator: "\n").map(String.init)
        let controllers = try #require(lines.first { $0.hasPrefix("controllers: ") }, "output:\n\(result.output)")
        let subtree = try #require(lines.first { $0.hasPrefix("subtree: ") }, "output:\n\(result.output)")
        for controller in ["memory", "pids", "cpu"] {
            #expect(controllers.split(separator: " ").contains(Substring(controller)), "\(controllers)")
            #expect(subtree.split(separator: " ").contains(Substring(controller)), "\(subtree)")
        }
        #expect(lines.contains("fs: cgroup2fs tmpfs tmpfs"), "output:\n\(result.output)")
        #expect(lines.contains("root: read-only"), "output:\n\(result.output)")
        #expect(lines.contains("tmp: probe"), "output:\n\(result.output)")
        #expect(lines.contains("uid: 0"), "output:\n\(result.output)")
        #expect(lines.contains("userns: ok"), "commands must be able to create user namespaces (not chrooted): \(result.output)")
    }

    @Test("a command that hangs is killed at its time box with an error saying so")
    func hangIsCutOff() async throws {
        do {
            // 10 s: under TCG on a loaded host, starting a shell over 9p alone can take seconds.
            let result = try await GuestMachine().run(shell: "echo started; sleep 600", timeout: 10)
            Issue.record("a hanging command returned \(result.exitCode) instead of timing out")
        } catch {
            #expect(error.code == .commandTimedOut, "\(error)")
            #expect(error.partialOutput.contains("started"), "\(error)")
            #expect(error.description.contains("did not finish within 10"), "\(error)")
        }
    }

    @Test("a guest that dies before reporting fails with the console's tail, which says why")
    func guestDeathIsDiagnosed() async throws {
        do {
            // Crash the guest kernel on purpose: sysrq 'c' panics it, and panic=-1 ends QEMU.
            let result = try await GuestMachine().run(shell: "echo about to crash; echo c > /proc/sysrq-trigger; sleep 60", timeout: 120)
            Issue.record("a crashed guest returned \(result.exitCode)")
        } catch {
            #expect(error.code == .guestEnded, "\(error)")
            #expect(error.partialOutput.contains("about to crash"), "\(error)")
            #expect(error.consoleTail.contains("sysrq"), "the console tail shows the kernel's last words: \(error)")
            #expect(error.description.contains("--- guest console (tail) ---"), "\(error)")
        }
    }

    @Test("argument vectors reach the guest unchanged, quotes and all")
    func argumentsAreQuoted() async throws {
        let tricky = "it's a \"test\" $HOME `id` \\ ; done"
        let result = try await GuestMachine().run(["/usr/bin/printf", "%s|", tricky, ""], timeout: 60)
        #expect(result.exitCode == 0)
        #expect(result.output == tricky + "||", "output: \(result.output)")
    }
}
