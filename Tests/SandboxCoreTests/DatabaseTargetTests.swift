import Testing
@testable import SandboxCore

struct DatabaseTargetTests {
    @Test("URL forms libpq accepts are read field by field")
    func urlForms() throws {
        let full = try DatabaseTarget(url: "postgresql://agentic_user:p%40ss%3Aword@db.example.org:6543/agentic_ai?sslmode=verify-full&connect_timeout=5")
        #expect(full.user == "agentic_user" && full.password?.revealed == "p@ss:word")
        #expect(full.host == "db.example.org" && full.port == 6543 && full.database == "agentic_ai")
        #expect(full.parameters == ["sslmode": "verify-full", "connect_timeout": "5"])

        let minimal = try DatabaseTarget(url: "postgres://db")
        #expect(minimal == DatabaseTarget(host: "db"))

        let ipv6 = try DatabaseTarget(url: "postgresql://u@[::1]:5433/d")
        #expect(ipv6.host == "::1" && ipv6.port == 5433)

        let socket = try DatabaseTarget(url: "postgresql:///records?host=/run/pg&user=sbx")
        #expect(socket.host == "/run/pg" && socket.isSocketDirectory && socket.user == "sbx" && socket.database == "records")

        let local = try DatabaseTarget(url: "postgresql:///records")
        #expect(local.host == DatabaseTarget.localSocketDirectory)

        let atInPassword = try DatabaseTarget(url: "postgresql://u:a@b@h/d")
        #expect(atInPassword.password?.revealed == "a@b" && atInPassword.host == "h")
    }

    @Test("bad URLs are refused with the reason and without the URL", arguments: [
        ("mysql://h/d", "must start with postgresql://"),
        ("postgresql://h:0/d", "port \"0\" is not a number in 1…65535"),
        ("postgresql://h1,h2/d", "several hosts are not supported"),
        ("postgresql://u:pw%zz@h/d", "bad %-escape in password"),
        ("postgresql://h/d%00x", "database name is not valid UTF-8 text"),
        ("postgresql://h/d?bogus=1", "unknown connection parameter \"bogus\""),
        ("postgresql://h/d?sslmode", "query parameter \"sslmode\" has no value"),
        ("postgresql://[::1/d", "unterminated [ in host"),
    ])
    func badURLs(url: String, reason: String) {
        #expect {
            try DatabaseTarget(url: url)
        } throws: { error in
            guard let error = error as? SandboxCoreError else { return false }
            return error.code == .invalidConfiguration && error.message.hasPrefix("invalid PostgreSQL URL: \(reason)")
        }
    }

    @Test("description shows where, never the password")
    func description() {
        let target = DatabaseTarget(host: "h", port: 5432, database: "d", user: "u", password: Secret("pw-value"),
                                    parameters: ["sslpassword": "key-pass", "sslmode": "require"])
        #expect(target.description == "u@h:5432/d (password set)?sslmode=require&sslpassword=<redacted>")
        var dumped = ""
        dump(target, to: &dumped)
        #expect(!dumped.contains("pw-value") && !dumped.contains("key-pass"))
        #expect("\(Secret("x"))" == "<redacted>")
    }
}
