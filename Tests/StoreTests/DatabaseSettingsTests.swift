import SandboxCore
import Testing
@testable import Store

struct DatabaseSettingsTests {
    @Test("a TCP URL with every part is parsed and percent-decoded")
    func parsesTCPURL() throws {
        let settings = try DatabaseSettings(
            url: "postgresql://agent%40ops:p%40ss%3Aw0rd@db.example.org:6543/sandbox%20db?sslmode=require&connect_timeout=3&application_name=x&keepalives=1",
            poolSize: 12)
        #expect(settings.host == "db.example.org")
        #expect(settings.port == 6543)
        #expect(settings.database == "sandbox db")
        #expect(settings.user == "agent@ops")
        #expect(settings.password == "p@ss:w0rd")
        #expect(settings.sslMode == "require")
        #expect(settings.connectTimeoutSeconds == 3)
        #expect(settings.poolSize == 12)
        #expect(settings.applicationName == "x")
        #expect(settings.libpqParameters == ["keepalives": "1"])
        #expect(!settings.isUnixSocket)
    }

    @Test("a Unix socket directory is given as an encoded host or as ?host=")
    func parsesSocketURL() throws {
        let encoded = try DatabaseSettings(url: "postgres://sandboxd@%2Fvar%2Flib%2Fsandboxd%2Fpostgres%2Fsocket/sandboxd")
        #expect(encoded.host == "/var/lib/sandboxd/postgres/socket")
        #expect(encoded.isUnixSocket)
        #expect(encoded.port == 5432)
        let query = try DatabaseSettings(url: "postgresql:///records?host=/tmp/pg&user=me&port=5433")
        #expect(query.host == "/tmp/pg")
        #expect(query.user == "me")
        #expect(query.database == "records")
        #expect(query.port == 5433)
        #expect(query.password == nil)
    }

    @Test("no host means Debian's socket directory; port 5432 by default")
    func defaults() throws {
        let settings = try DatabaseSettings(url: "postgresql://alice@")
        #expect(settings.host == DatabaseSettings.defaultSocketDirectory)
        #expect(settings.port == 5432)
        #expect(settings.user == "alice")
    }

    @Test("IPv6 hosts in brackets")
    func ipv6() throws {
        let settings = try DatabaseSettings(url: "postgresql://u:pw@[::1]:5439/d")
        #expect(settings.host == "::1")
        #expect(settings.port == 5439)
        #expect(settings.redactedDescription == "postgresql://u:***@[::1]:5439/d")
    }

    @Test("settings built from a resolved configuration target keep every field")
    func fromTarget() throws {
        let target = DatabaseTarget(
            host: "/run/pg", port: 5440, database: "records", user: "svc", password: Secret("s3cret-value"),
            parameters: ["connect_timeout": "4", "keepalives_idle": "30"], poolSize: 5)
        let settings = try DatabaseSettings(target: target)
        #expect(settings.host == "/run/pg")
        #expect(settings.port == 5440)
        #expect(settings.database == "records")
        #expect(settings.user == "svc")
        #expect(settings.password == "s3cret-value")
        #expect(settings.poolSize == 5)
        #expect(settings.connectTimeoutSeconds == 4)
        #expect(settings.libpqParameters == ["keepalives_idle": "30"])
        let unread = DatabaseTarget(passwordFile: "/etc/sandboxd/db.password")
        let error = try #require(throws: StoreError.self) { try DatabaseSettings(target: unread) }
        #expect(error.message.contains("/etc/sandboxd/db.password"))
    }

    @Test("bad URLs are errors that name what is wrong", arguments: [
        ("mysql://u@h/d", "postgresql://"),
        ("u@h/d", "postgresql://"),
        ("postgresql://u@h:99999/d", "port"),
        ("postgresql://u@h:abc/d", "port"),
        ("postgresql://u@h/d?colour=blue", "\"colour\""),
        ("postgresql://u@h/d?connect_timeout=soon", "connect_timeout"),
        ("postgresql://u:bad%zzsecret@h/d", "password"),
    ])
    func rejectsBadURLs(url: String, expected: String) throws {
        let error = try #require(throws: StoreError.self) { try DatabaseSettings(url: url) }
        #expect(error.code == .invalidSettings)
        #expect(error.message.contains(expected), "\(error.message)")
        #expect(!error.message.contains("secret"))
    }

    @Test("descriptions, debug output and reflection never contain the password")
    func redaction() throws {
        let settings = try DatabaseSettings(url: "postgresql://svc:Sup3rS3cret%21@db:5432/records")
        #expect(settings.password == "Sup3rS3cret!")
        #expect(settings.redactedDescription == "postgresql://svc:***@db:5432/records")
        let renderings = [
            settings.redactedDescription, settings.description, settings.debugDescription, "\(settings)",
            String(reflecting: settings), String(describing: Mirror(reflecting: settings).children.map { $0.value }),
        ]
        for text in renderings {
            #expect(!text.contains("Sup3rS3cret"), "\(text)")
        }
        var dumped = ""
        dump(settings, to: &dumped)
        #expect(!dumped.contains("Sup3rS3cret"), "\(dumped)")
        let socket = DatabaseSettings(host: "/run/pg", database: "d", user: "u")
        #expect(socket.redactedDescription == "postgresql://u@/d?host=/run/pg&port=5432")
    }
}
