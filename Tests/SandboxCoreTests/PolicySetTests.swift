import Foundation
import Testing
@testable import SandboxCore

struct PolicySetTests {
    static let good = "resources:\n  memory_limit: 256MB\n"
    static let other = "network:\n  allowed_hosts: [example.org]\n"

    @Test("valid files load under their file stems with digest and load time")
    func loads() throws {
        let time = Date(timeIntervalSince1970: 1_700_000_000)
        let set = try PolicySet(loading: [
            PolicySource(file: "/etc/sandboxd/policies/default.yaml", text: Self.good),
            PolicySource(file: "/etc/sandboxd/policies/web.yml", text: Self.other),
        ], hostCores: 2, at: time)
        #expect(set.names == ["default", "web"])
        let web = try #require(set["web"])
        #expect(web.policy.network.allowedHosts.map(\.description) == ["example.org"])
        #expect(web.digest == SHA256.hex(of: Self.other))
        #expect(web.digest.count == 64)
        #expect(web.loadedAt == time && set.loadedAt == time)
        #expect(web.source == "/etc/sandboxd/policies/web.yml")
        #expect(set["default"]?.digest != web.digest)
    }

    @Test("one bad file means nothing is loaded, and every bad file's problems are reported")
    func atomic() {
        let sources = [
            PolicySource(file: "policies/default.yaml", text: Self.good),
            PolicySource(file: "policies/broken.yaml", text: "resources:\n  cpu_limt: 1\n"),
            PolicySource(file: "policies/fine.yaml", text: Self.other),
            PolicySource(file: "policies/worse.yaml", text: "network:\n  blocked_ports: [0]\nfilesystem:\n  allowed_paths: [rel]\n"),
        ]
        var loaded: PolicySet?
        do {
            loaded = try PolicySet(loading: sources, hostCores: 2)
            Issue.record("a set with invalid files was loaded")
        } catch {
            #expect(error.code == .invalidPolicy)
            #expect(error.message == "policies not loaded: 3 problems in 2 of 4 files")
            #expect(error.diagnostics.map(\.description) == [
                "policies/broken.yaml:2: resources.cpu_limt: unknown key (did you mean cpu_limit?)",
                "policies/worse.yaml:2: network.blocked_ports[0]: port 0 is out of range 1…65535",
                "policies/worse.yaml:4: filesystem.allowed_paths[0]: \"rel\" is a relative path; paths must start with /",
            ])
        }
        #expect(loaded == nil)
    }

    @Test("a failed reload leaves the set in force unchanged")
    func failedReloadKeepsOld() throws {
        var current = try PolicySet(loading: [PolicySource(file: "default.yaml", text: Self.good)], hostCores: 2)
        let before = current
        do {
            current = try PolicySet(loading: [PolicySource(file: "default.yaml", text: "resources: [oops]\n")], hostCores: 2)
        } catch {
            #expect(error.diagnostics.first?.description.hasPrefix("default.yaml:1: resources: expected a mapping") == true)
        }
        #expect(current == before)
    }

    @Test("two files with the same stem are refused")
    func duplicateNames() {
        #expect {
            _ = try PolicySet(loading: [PolicySource(file: "a/default.yaml", text: Self.good),
                                        PolicySource(file: "a/default.yml", text: Self.good)], hostCores: nil)
        } throws: { error in
            (error as? SandboxCoreError)?.diagnostics.contains { $0.description.contains("already defined by a/default.yaml") } == true
        }
    }

    @Test("a set without a default policy is refused unless not required")
    func requiresDefault() throws {
        let sources = [PolicySource(file: "web.yaml", text: Self.other)]
        #expect(throws: SandboxCoreError.self) { try PolicySet(loading: sources, hostCores: nil) }
        #expect(try PolicySet(loading: sources, hostCores: nil, requireDefault: false).names == ["web"])
    }

    @Test("file names that cannot be policy names are refused", arguments: ["-x.yaml", ".hidden.yaml", "with space.yaml", "ü.yaml"])
    func badNames(file: String) {
        #expect(throws: SandboxCoreError.self) {
            try PolicySet(loading: [PolicySource(file: file, text: Self.good)], hostCores: nil, requireDefault: false)
        }
    }

    @Test("cpu_limit is checked against the host's cores for every file")
    func hostCores() {
        let sources = [PolicySource(file: "default.yaml", text: "resources:\n  cpu_limit: 3\n")]
        #expect(throws: SandboxCoreError.self) { try PolicySet(loading: sources, hostCores: 2) }
        #expect(throws: Never.self) { try PolicySet(loading: sources, hostCores: 4) }
    }
}

struct EscalationTests {
    static let policy = Policy(isolation: .init(minimumLevel: .kubernetes, agentTypes: ["python": .native, "scraper": .virtualMachine]))

    @Test("effective level is max(requested, minimum_level, agent-type rule), with the rule named", arguments: [
        (IsolationLevel.native, String?.none, IsolationLevel.kubernetes, String?.some("isolation.minimum_level")),
        (.native, "python", .kubernetes, "isolation.minimum_level"),
        (.native, "scraper", .virtualMachine, "isolation.agent_types.scraper"),
        (.native, "Scraper", .virtualMachine, "isolation.agent_types.scraper"),
        (.kubernetes, "unknown-type", .kubernetes, nil),
        (.hardware, "scraper", .hardware, nil),
        (.virtualMachine, "scraper", .virtualMachine, nil),
    ])
    func escalation(requested: IsolationLevel, agentType: String?, expected: IsolationLevel, raisedBy: String?) {
        let decision = Self.policy.effectiveLevel(requested: requested, agentType: agentType)
        #expect(decision.level == expected)
        #expect(decision.raisedBy == raisedBy)
        #expect(decision.level >= requested, "never lowered")
        if let raisedBy {
            #expect(decision.reason == "raised from level \(requested.rawValue) to \(expected.rawValue) by the policy's \(raisedBy)")
        }
    }

    @Test("agent_types in a file escalate")
    func fromFile() throws {
        let policy = try Policy(yaml: "isolation:\n  minimum_level: 1\n  agent_types: {python: 1, Scraper: 3}\n", file: "p.yaml")
        #expect(policy.isolation.agentTypes == ["python": .native, "scraper": .virtualMachine])
        #expect(policy.effectiveLevel(requested: .native, agentType: "scraper").level == .virtualMachine)
        #expect(policy.effectiveLevel(requested: .native, agentType: "python").level == .native)
    }
}

struct EnvironmentRuleTests {
    static let policy = Policy(environment: .init(allowedVars: ["LANG", "TZ"], blockedVars: ["PATH", "HOME", "USER", "AWS_SECRET"]))

    @Test("the environment starts empty: only PATH and HOME, fixed by the daemon")
    func startsEmpty() throws {
        #expect(try Self.policy.sandboxEnvironment(requested: [:]) == ["PATH": Policy.sandboxPath, "HOME": Policy.sandboxHome])
    }

    @Test("allowed variables pass")
    func allowedPass() throws {
        let env = try Self.policy.sandboxEnvironment(requested: ["LANG": "C.UTF-8", "TZ": "UTC"])
        #expect(env == ["PATH": Policy.sandboxPath, "HOME": Policy.sandboxHome, "LANG": "C.UTF-8", "TZ": "UTC"])
    }

    @Test("a blocked variable is refused by name", arguments: ["PATH", "HOME", "USER", "AWS_SECRET"])
    func blockedRefused(name: String) {
        #expect {
            try Self.policy.sandboxEnvironment(requested: ["LANG": "C", name: "x"])
        } throws: { error in
            guard let error = error as? SandboxCoreError else { return false }
            return error.code == .environmentRefused && error.message == "environment refused: \(name)"
                && error.diagnostics == [Diagnostic(key: name, message: "blocked by the policy (environment.blocked_vars)")]
        }
    }

    @Test("an unlisted variable is refused too, and says so")
    func unlistedRefused() {
        #expect {
            try Self.policy.sandboxEnvironment(requested: ["LD_PRELOAD": "/tmp/x.so"])
        } throws: { error in
            (error as? SandboxCoreError)?.description
                == "environment refused: LD_PRELOAD\nLD_PRELOAD: not listed in the policy's environment.allowed_vars (only listed variables pass)"
        }
    }

    @Test("daemon-set variables cannot be supplied even when not blocked")
    func daemonSet() {
        let open = Policy(environment: .init(allowedVars: ["LANG"]))
        #expect {
            try open.sandboxEnvironment(requested: ["HOME": "/root", "HTTPS_PROXY": "http://evil"])
        } throws: { error in
            (error as? SandboxCoreError)?.diagnostics.map(\.description) == [
                "HOME: set by sandboxd; a request cannot supply it",
                "HTTPS_PROXY: set by sandboxd; a request cannot supply it",
            ]
        }
    }

    @Test("every refused variable is named at once")
    func allNamed() {
        #expect {
            try Self.policy.sandboxEnvironment(requested: ["USER": "root", "FOO": "1", "LANG": "C"])
        } throws: { error in
            (error as? SandboxCoreError)?.message == "environment refused: FOO, USER"
        }
    }

    @Test("the daemon's mode: unlisted variables are dropped (and named), blocked and daemon-set ones still refused")
    func unlistedDropped() throws {
        let kept = try Self.policy.filterEnvironment(requested: ["LANG": "C", "FOO": "1", "BAR": "2"], unlisted: .drop)
        #expect(kept.environment == ["PATH": Policy.sandboxPath, "HOME": Policy.sandboxHome, "LANG": "C"])
        #expect(kept.dropped == ["BAR", "FOO"])
        #expect {
            try Self.policy.filterEnvironment(requested: ["FOO": "1", "USER": "root", "HTTP_PROXY": "x"], unlisted: .drop)
        } throws: { error in
            (error as? SandboxCoreError)?.message == "environment refused: HTTP_PROXY, USER"
        }
    }

    @Test("a value with a NUL byte is refused")
    func nulRefused() {
        #expect(throws: SandboxCoreError.self) { try Self.policy.sandboxEnvironment(requested: ["LANG": "C\0LD_PRELOAD=x"]) }
    }
}
