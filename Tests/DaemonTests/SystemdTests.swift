import Foundation
import Testing

/// The systemd units and the daemon's systemd protocol (socket activation, sd_notify), checked
/// with systemd's own tools; no systemd as PID 1 is needed.
@Suite(.serialized)
struct SystemdTests {
    @Test("systemd-analyze verify accepts sandboxd.service and sandboxd.socket without a single warning")
    func unitsVerify() throws {
        let analyze = "/usr/bin/systemd-analyze"
        guard FileManager.default.isExecutableFile(atPath: analyze) else {
            print("skipped: systemd-analyze is not installed (apt-get install systemd)")
            return
        }
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let units = TestHost.packageRoot.appendingPathComponent("systemd")
        // verify checks that ExecStart exists: point it at the binary this build produced.
        let service = try String(contentsOf: units.appendingPathComponent("sandboxd.service"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/sandboxd", with: TestHost.product("sandboxd"))
        try service.write(toFile: directory + "/sandboxd.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: units.appendingPathComponent("sandboxd.socket").path, toPath: directory + "/sandboxd.socket")
        let result = try TestHost.run([analyze, "verify", directory + "/sandboxd.socket", directory + "/sandboxd.service"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.isEmpty && result.stderr.isEmpty, "systemd-analyze: \(result.stdout)\(result.stderr)")
        #expect(service.contains("Type=notify") && service.contains("Delegate=yes"))
    }

    @Test("under systemd-socket-activate the daemon serves fd 3, reports READY=1 to an abstract NOTIFY_SOCKET, and STOPPING=1 then exit 0 on SIGTERM")
    func socketActivationAndNotify() async throws {
        let activate = "/usr/bin/systemd-socket-activate"
        guard FileManager.default.isExecutableFile(atPath: activate) else {
            print("skipped: systemd-socket-activate is not installed (apt-get install systemd)")
            return
        }
        guard TestHost.isRoot else { print("skipped: the daemon's embedded PostgreSQL needs root to start"); return }
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/sandboxd.yaml"
        try """
        state_directory: \(directory)/state
        socket:
          path: \(directory)/unused.sock
        shutdown_grace_period: 2
        vm:
          enabled: false
        """.write(toFile: config, atomically: true, encoding: .utf8)

        // The notify socket this test owns, in the abstract namespace (NOTIFY_SOCKET=@name).
        let name = "sandboxd-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let notify = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #expect(notify >= 0)
        defer { close(notify) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let nameBytes = [UInt8(0)] + Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in nameBytes.enumerated() { raw[index] = byte } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + nameBytes.count)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(notify, $0, length) } }
        try #require(bound == 0, "bind of the notify socket failed: errno \(errno)")

        let socketPath = directory + "/activated.sock"
        let log = directory + "/daemon.log"
        setenv("NOTIFY_SOCKET", "", 1) // what this process got from its own parent must not leak through
        let daemon = try SpawnedProcess([activate, "-l", socketPath, "-E", "NOTIFY_SOCKET=@\(name)",
                                         "-E", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", TestHost.product("sandboxd"), "--config", config],
                                        logPath: log)
        var exited = false
        defer { if !exited { daemon.kill(SIGKILL); _ = daemon.poll() } }

        for _ in 0..<200 where access(socketPath, F_OK) != 0 { try await Task.sleep(for: .milliseconds(25)) }
        // systemd-socket-activate starts the daemon on the first connection; this request waits in
        // the listen backlog until the daemon (with its embedded PostgreSQL) serves it.
        let health = try TestHost.curl(socketPath, "GET", "/v1/health", contentType: nil, extra: ["--max-time", "120"])
        let daemonLog = { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        #expect(health.status == 200, "\(health.result.stderr)\n\(daemonLog())")

        let ready = receive(notify, until: "READY=1", seconds: 30)
        #expect(ready.contains("READY=1"), "notifications: \(ready) log: \(daemonLog())")
        #expect(ready.contains("STATUS=serving on inherited socket fd 3"), "\(ready)")
        #expect(ready.contains("MAINPID=\(daemon.pid)"), "\(ready)")

        daemon.kill(SIGTERM)
        let stopping = receive(notify, until: "STOPPING=1", seconds: 30)
        #expect(stopping.contains("STOPPING=1"), "\(stopping)")
        let end = try await daemon.wait(seconds: 60)
        exited = end != nil
        #expect(end?.exited == true && end?.status == 0, "end \(String(describing: end)): \(daemonLog())")
        // The socket belongs to systemd (here: systemd-socket-activate), so the daemon leaves it alone.
        #expect(daemonLog().contains("control API stopped"))
    }

    /// Datagrams received until one contains `marker` or the time is up, joined by newlines.
    private func receive(_ fd: Int32, until marker: String, seconds: Int) -> String {
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(Double(seconds))
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                let message = String(decoding: buffer[..<count], as: UTF8.self)
                messages.append(message)
                if message.contains(marker) { break }
            }
        }
        return messages.joined(separator: "\n")
    }

    private func temporaryDirectory() throws -> String {
        var template = Array("/tmp/sandboxd-systemd-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestError("mkdtemp failed") }
        let path = String(cString: made)
        chmod(path, 0o755)
        return path
    }
}
