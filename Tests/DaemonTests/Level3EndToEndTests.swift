#if SANDBOXD_LEVEL1_ENGINE && SANDBOXD_LEVEL3_ENGINE
import Foundation
import Testing
@testable import ControlAPI

/// Level 3 through the real daemon and its real socket: QEMU guests under TCG (the build machines
/// have no usable KVM), the guest image shared with VMSandboxTests (`.build-guest`), no warm pool
/// (every create boots its own guest, so the test knows which QEMU belongs to which sandbox).
/// Run it alone with `swift test --filter EndToEndTests/levelThreeThroughTheDaemon`.
///
/// One daemon serves every scenario in turn: a guest boot costs 5–15 s of CPU under TCG, and the
/// daemon (with its embedded PostgreSQL) must be stopped by the test that started it. The test is
/// part of the serialized EndToEndTests suite: a starting daemon reaps every level-1 cgroup in the
/// shared subtree, so two test daemons must not overlap.
extension EndToEndTests.Daemon {
    /// The daemon's VM cgroups, one `vm-<hex>` per guest: its own subtree's name plus `-vm`.
    var vmCgroups: String { ((try? cgroupSubtreePath) ?? "/nonexistent") + "-vm" }
}

extension EndToEndTests {
    /// Where the level-3 daemon keeps its guests, and whether this host can run them.
    enum Level3 {
        /// `<checkout>/.build-guest`: the image cache VMSandboxTests use too.
        static let imageDirectory = TestHost.packageRoot.appendingPathComponent(".build-guest").path
        static let cgroupRoot = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup"

        static var unavailableReason: String? {
            if !TestHost.isRoot { return "sandboxd and its jailed QEMU need root" }
            if access("/usr/bin/qemu-system-x86_64", X_OK) != 0 { return "qemu-system-x86_64 is missing (make deps installs qemu-system-x86)" }
            if access("/bin/busybox", X_OK) != 0 { return "busybox is missing (make deps installs busybox-static)" }
            return nil
        }
    }

    private func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder.iso.decode(T.self, from: Data(text.utf8))
    }

    @Test("level 3 through the daemon: uname -r is the guest's kernel and recorded at level 3; files persist between execs; a guest panic ends its sandbox in status error while the daemon keeps serving; destroy leaves no QEMU")
    func levelThreeThroughTheDaemon() async throws {
        if let reason = Level3.unavailableReason { print("skipped: \(reason)"); return }
        _ = try TestHost.ensureUser(Self.alice, groups: ["sandboxd"])
        // QEMU's uids start after the level-1 range: 524288 + 69632, clear of VMSandboxTests' 589824…593919.
        let daemon = try EndToEndTests.Daemon(extraConfiguration: "sandbox:\n  uid_range_size: 69632", vm: """
            vm:
              enabled: true
              accelerator: tcg
              pool_size: 0
              image_directory: \(Level3.imageDirectory)
              test_hooks: true
            """)
        do {
            try await daemon.start()
            try await waitForLevelThree(daemon)
            try guestKernelOneShot(daemon)
            try persistentFilesAndDestroy(daemon)
            try guestPanic(daemon)
            #expect(liveGuests(daemon).isEmpty, "QEMU guests left after every sandbox was destroyed: \(liveGuests(daemon))")
            let status = try await daemon.stop()
            #expect(status == 0, "exit status \(String(describing: status))")
            #expect(access(daemon.vmCgroups, F_OK) != 0, "the stopped daemon left its VM cgroup subtree \(daemon.vmCgroups)")
        } catch {
            print("daemon log:\n\(daemon.logText)")
            await daemon.cleanup()
            throw error
        }
        await daemon.cleanup()
    }

    /// Level 3 starts in the background (image, accelerator, reaping): info says so until it is ready.
    private func waitForLevelThree(_ daemon: EndToEndTests.Daemon) async throws {
        let deadline = Date().addingTimeInterval(600)
        var last = ""
        while Date() < deadline {
            let info = try decodeJSON(InfoResponse.self, try daemon.curl("GET", "/v1/info").body)
            let level = try #require(info.levels.first { $0.level == 3 })
            if level.available {
                #expect(level.detail?.hasPrefix("tcg: configured") == true, "\(level.detail ?? "no detail")")
                let text = try daemon.ctl(["info"], as: Self.alice)
                #expect(text.stdout.contains("tcg"), "\(text.stdout)")
                return
            }
            last = level.reason ?? ""
            #expect(last.contains("starting"), "level 3 failed instead of starting: \(last)")
            if !last.contains("starting") { throw TestError("level 3 did not start: \(last)") }
            try await Task.sleep(for: .seconds(1))
        }
        throw TestError("level 3 still unavailable after 10 minutes: \(last)")
    }

    /// `sandboxctl run --level 3 -- uname -r` prints the guest kernel's release (Debian's, from the
    /// image's manifest), not the host's; the record says isolation level 3.
    private func guestKernelOneShot(_ daemon: EndToEndTests.Daemon) throws {
        let expected = try imageKernelRelease()
        var host = utsname()
        uname(&host)
        let hostRelease = withUnsafeBytes(of: &host.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }

        let ctl = try daemon.ctl(["run", "--level", "3", "--", "uname", "-r"], as: Self.alice)
        #expect(ctl.status == 0, "\(ctl.stderr)")
        #expect(ctl.stdout == expected + "\n", "guest kernel \(ctl.stdout) vs image \(expected)")
        if hostRelease != expected { #expect(ctl.stdout != hostRelease + "\n") }

        let json = try daemon.curl("POST", "/v1/run", as: Self.alice, json: #"{"command":["uname","-r"],"isolation_level":3}"#)
        #expect(json.status == 200, "\(json.body)")
        let result = try decodeJSON(ExecutionResult.self, json.body)
        #expect(result.status == .ok && result.stdout == expected + "\n" && result.isolationLevel == 3)
        let record = try decodeJSON(ExecutionRecordView.self, try daemon.curl("GET", "/v1/executions/\(result.executionID.uuidString.lowercased())", as: Self.alice).body)
        #expect(record.status == "ok" && record.isolationLevel == 3 && record.sandboxID == result.sandboxID)
        #expect(liveGuests(daemon).isEmpty, "one-shot guests must be gone once their run answered: \(liveGuests(daemon))")
    }

    /// A persistent level-3 sandbox keeps its workspace between execs; cp in and out; destroy kills its QEMU.
    private func persistentFilesAndDestroy(_ daemon: EndToEndTests.Daemon) throws {
        let before = liveGuests(daemon)
        let created = try daemon.ctl(["create", "--level", "3"], as: Self.alice)
        #expect(created.status == 0, "\(created.stderr)")
        let id = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let guests = liveGuests(daemon).subtracting(before)
        #expect(guests.count == 1, "one new guest for the sandbox: \(guests)")
        let qemuPIDs = guests.flatMap { pids(inCgroup: daemon.vmCgroups + "/" + $0) }
        #expect(!qemuPIDs.isEmpty, "the sandbox's QEMU runs in its VM cgroup")

        let description = try decodeJSON(SandboxDescription.self, try daemon.curl("GET", "/v1/sandboxes/\(id)", as: Self.alice).body)
        #expect(description.isolationLevel == 3 && description.state == "running")
        #expect(try daemon.ctl(["exec", id, "--", "sh", "-c", "echo kept > /workspace/state.txt"], as: Self.alice).status == 0)
        #expect(try daemon.ctl(["exec", id, "--", "cat", "/workspace/state.txt"], as: Self.alice).stdout == "kept\n")
        #expect(try daemon.ctl(["cp", "\(id):state.txt", "-"], as: Self.alice).stdout == "kept\n")
        #expect(try daemon.ctl(["cp", "-", "\(id):data.bin"], as: Self.alice, input: Data("from host".utf8)).status == 0)
        #expect(try daemon.ctl(["exec", id, "--", "cat", "/workspace/data.bin"], as: Self.alice).stdout == "from host")
        let escape = try daemon.curl("GET", "/v1/sandboxes/\(id)/files?path=../etc/passwd", as: Self.alice)
        #expect(escape.status == 400, "\(escape.body)")

        #expect(try daemon.ctl(["rm", id], as: Self.alice).status == 0)
        #expect(try daemon.curl("GET", "/v1/sandboxes/\(id)", as: Self.alice).status == 404)
        for guest in guests {
            #expect(!FileManager.default.fileExists(atPath: daemon.vmCgroups + "/" + guest), "cgroup of \(guest) left after destroy")
        }
        for pid in qemuPIDs {
            // Gone, or a zombie of an init that has not reaped it yet: nothing of it runs.
            #expect(processState(pid) == nil || processState(pid) == "Z", "QEMU's jail pid \(pid) still runs after destroy: state \(processState(pid) ?? "-")")
        }
    }

    /// `echo c > /proc/sysrq-trigger` (allowed by vm.test_hooks) panics the guest: that exec and the
    /// sandbox end in status error / state failed; the daemon keeps serving level 1 and level 3.
    private func guestPanic(_ daemon: EndToEndTests.Daemon) throws {
        let before = liveGuests(daemon)
        let id = try daemon.ctl(["create", "--level", "3"], as: Self.alice).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let guests = liveGuests(daemon).subtracting(before)
        #expect(guests.count == 1, "\(guests)")
        let sane = try decodeJSON(ExecutionResult.self, try daemon.curl("POST", "/v1/sandboxes/\(id)/exec", as: Self.alice,
                                                                     json: #"{"command":["true"]}"#).body)
        #expect(sane.status == .ok)

        let crash = try daemon.curl("POST", "/v1/sandboxes/\(id)/exec", as: Self.alice,
                                    json: #"{"command":["sh","-c","echo c > /proc/sysrq-trigger; sleep 20"]}"#)
        #expect(crash.status == 200, "\(crash.body)")
        let crashed = try decodeJSON(ExecutionResult.self, crash.body)
        #expect(crashed.status == .error, "\(crash.body)")
        #expect(crashed.errorMessage?.contains("guest") == true, "\(crashed.errorMessage ?? "no error message")")
        let record = try decodeJSON(ExecutionRecordView.self, try daemon.curl("GET", "/v1/executions/\(crashed.executionID.uuidString.lowercased())", as: Self.alice).body)
        #expect(record.status == "error" && record.isolationLevel == 3)

        let state = try decodeJSON(SandboxDescription.self, try daemon.curl("GET", "/v1/sandboxes/\(id)", as: Self.alice).body)
        #expect(state.state == "failed")
        let after = try decodeJSON(ExecutionResult.self, try daemon.curl("POST", "/v1/sandboxes/\(id)/exec", as: Self.alice,
                                                                      json: #"{"command":["true"]}"#).body)
        #expect(after.status == .error, "an exec in a dead guest ends in error too")
        for guest in guests {
            #expect(!FileManager.default.fileExists(atPath: daemon.vmCgroups + "/" + guest), "the dead guest's cgroup \(guest) was not cleaned up")
        }

        // Everything else goes on.
        #expect(try daemon.curl("GET", "/v1/health").body.contains("\"ok\""))
        #expect(try daemon.ctl(["run", "--", "echo", "level one"], as: Self.alice).stdout == "level one\n")
        #expect(try daemon.ctl(["run", "--level", "3", "--", "echo", "level three"], as: Self.alice).stdout == "level three\n")
        #expect(try daemon.curl("DELETE", "/v1/sandboxes/\(id)", as: Self.alice).status == 204)
    }

    /// The release of the kernel the cached guest image boots (its manifest's `release:` line).
    private func imageKernelRelease() throws -> String {
        let root = Level3.imageDirectory + "/vm-image"
        let keys = try FileManager.default.contentsOfDirectory(atPath: root).filter {
            !$0.hasPrefix(".") && FileManager.default.fileExists(atPath: root + "/" + $0 + "/.complete")
        }
        var releases: Set<String> = []
        for key in keys {
            let manifest = try String(contentsOfFile: root + "/" + key + "/manifest.txt", encoding: .utf8)
            for line in manifest.split(separator: "\n") where line.hasPrefix("release: ") {
                releases.insert(String(line.dropFirst("release: ".count)).trimmingCharacters(in: .whitespaces))
            }
        }
        guard releases.count == 1, let release = releases.first else {
            throw TestError("expected one kernel release in \(root), found \(releases)")
        }
        return release
    }

    /// The daemon's live guests: `vm-*` cgroups under its VM subtree.
    private func liveGuests(_ daemon: EndToEndTests.Daemon) -> Set<String> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: daemon.vmCgroups)) ?? []).filter { $0.hasPrefix("vm-") })
    }

    /// The state letter of `/proc/PID/stat` (R, S, Z, …), nil when there is no such process.
    private func processState(_ pid: pid_t) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init)
    }

    private func pids(inCgroup directory: String) -> [pid_t] {
        ((try? String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }
}
#endif
