import Foundation
import Testing
@testable import Store

#if canImport(Glibc)
import Glibc
#endif

struct EmbeddedPostgresTests {
    @Test("the cluster listens on its Unix socket only and requires scram-sha-256")
    func socketOnlyWithPasswords() async throws {
        try await TestPostgres.with { server in
            let admin = try server.embedded.superuserSettings()
            let pool = try ConnectionPool(settings: admin)
            let settings = try await pool.withConnection { connection in
                try connection.query(
                    "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories'), current_setting('password_encryption')")
            }
            await pool.close()
            #expect(settings.rows.first?[0] == "")
            #expect(settings.rows.first?[1] == server.embedded.socketDirectory + "," + server.embedded.sandboxSocketDirectory)
            #expect(settings.rows.first?[2] == "scram-sha-256")
            let hba = try String(contentsOfFile: server.embedded.dataDirectory + "/pg_hba.conf", encoding: .utf8)
            let rules = hba.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            #expect(!rules.isEmpty)
            #expect(rules.allSatisfy { $0.hasSuffix("scram-sha-256") }, "pg_hba.conf rules: \(rules)")
            // Owned by the unprivileged user, not root.
            var info = stat()
            #expect(stat(server.embedded.dataDirectory, &info) == 0)
            #expect(info.st_uid != 0 || geteuid() != 0)
        }
    }

    @Test("a second start reuses the cluster, also after a crash left a stale postmaster.pid")
    func reuseAndStalePID() async throws {
        try await TestPostgres.with { server in
            let store = try await server.makeStore(poolSize: 2)
            let marker = try await store.ensureUser(unixUID: 4242, username: "marker")
            await store.pool.close()
            let versionFile = server.embedded.dataDirectory + "/PG_VERSION"
            let createdBefore = try FileManager.default.attributesOfItem(atPath: versionFile)[.modificationDate] as? Date

            // Start while running: adopts the running server.
            _ = try await server.embedded.start()
            #expect(server.embedded.isRunning())

            // Stop and start: same cluster (no second initdb), same data.
            try await server.embedded.stop()
            #expect(!server.embedded.isRunning())
            server.settings = try await server.embedded.start()
            #expect(try FileManager.default.attributesOfItem(atPath: versionFile)[.modificationDate] as? Date == createdBefore)
            let again = try await server.makeStore(poolSize: 1)
            #expect(try await again.ensureUser(unixUID: 4242, username: "marker") == marker)
            await again.pool.close()

            // A crash leaves postmaster.pid behind; its pid may by now belong to another process
            // (here: this test process, alive and not postgres). The next start must cope.
            try await server.embedded.stop()
            let pidFile = server.embedded.dataDirectory + "/postmaster.pid"
            let stale = "\(getpid())\n\(server.embedded.dataDirectory)\n1700000000\n5432\n\(server.embedded.socketDirectory)\n\n  5432001         0\nready   \n"
            try stale.write(toFile: pidFile, atomically: false, encoding: .utf8)
            #expect(!server.embedded.isRunning())
            server.settings = try await server.embedded.start()
            #expect(server.embedded.isRunning())
            let afterCrash = try await server.makeStore(poolSize: 1)
            #expect(try await afterCrash.ensureUser(unixUID: 4242, username: "marker") == marker)
            await afterCrash.pool.close()
        }
    }
}

struct EmbeddedSystemUserTests {
    @Test("a missing system user is created (useradd --system) and owns the cluster")
    func createsSystemUser() async throws {
        guard geteuid() == 0 else {
            print("skipped: creating a system user needs root")
            return
        }
        let name = "sdtest-\(UInt32.random(in: 0...0xFFFFFF))"
        #expect(getpwnam(name) == nil)
        defer {
            // Leave the host as it was: the account and its group go again.
            _ = try? ChildProcess.run("/usr/sbin/userdel", [name])
        }
        try await TestPostgres.with(poolSize: 1, systemUser: name, createSystemUser: true) { server in
            let entry = try #require(getpwnam(name))
            #expect(entry.pointee.pw_uid < 1000, "a system account has a uid below 1000")
            #expect(String(cString: entry.pointee.pw_shell) == "/usr/sbin/nologin")
            var info = stat()
            #expect(stat(server.embedded.dataDirectory, &info) == 0)
            #expect(info.st_uid == entry.pointee.pw_uid)
            let store = try await server.makeStore()
            #expect(try await store.markRunningAborted() == 0)
            await store.pool.close()
        }
        _ = try ChildProcess.run("/usr/sbin/userdel", [name])
        #expect(getpwnam(name) == nil)
    }
}
