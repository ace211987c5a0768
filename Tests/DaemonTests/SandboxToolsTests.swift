import Foundation
import Logging
import SandboxCore
import Store
import Testing
@testable import ControlAPI
@testable import Supervisor

/// What the Supervisor refuses before any sandbox exists: tools a level or a database cannot provide.
struct SandboxToolsTests {
    static let logger = Logger(label: "test.tools")

    static func policy(hosts: [String] = [], database: Policy.DatabaseAccess? = nil) throws -> Policy {
        var policy = Policy()
        policy.network.allowedHosts = try hosts.map { try HostPattern(parsing: $0) }
        policy.database = database
        return policy
    }

    @Test("PostgreSQL over TCP: the database tool is unavailable, and a database policy is refused with that reason")
    func tcpDatabase() async throws {
        let settings = DatabaseSettings(host: "127.0.0.1", port: 5432, database: "sandboxd", user: "sandboxd", password: nil, poolSize: 1)
        let state = await DatabaseToolState.start(settings: settings, embedded: nil, logger: Self.logger)
        guard case .unavailable(let reason) = state else { Issue.record("a TCP database gave a database tool"); return }
        #expect(reason.contains("TCP"), "\(reason)")
        let tools = SandboxTools(records: nil, database: state, logger: Self.logger)
        do {
            _ = try await tools.attach(sandboxID: "sbx-1", policy: "database-readonly",
                                       rules: try Self.policy(database: .init(tables: ["public.documents"])), level: .native)
            Issue.record("a database policy was admitted without a database tool")
        } catch let error as APIError {
            #expect(error.message.contains("database-readonly") && error.message.contains("TCP"), "\(error.message)")
        }
        // A policy without a database section is unaffected.
        let plain = try await tools.attach(sandboxID: "sbx-2", policy: "default", rules: Policy(), level: .native)
        #expect(plain.isEmpty)
    }

    @Test("level 3 with a database section or an egress allowlist is refused with a clear error, never run without them")
    func levelThree() async throws {
        let tools = SandboxTools(records: nil, database: .unavailable("not needed"), logger: Self.logger)
        for (name, rules, word) in [("database-readonly", try Self.policy(database: .init(tables: ["public.documents"])), "database"),
                                    ("network", try Self.policy(hosts: ["example.com"]), "egress")] {
            do {
                _ = try await tools.attach(sandboxID: "sbx-3", policy: name, rules: rules, level: .virtualMachine)
                Issue.record("\(name) was admitted at level 3")
            } catch let error as APIError {
                #expect(error.code == .levelUnavailable, "\(error)")
                #expect(error.message.contains(name) && error.message.contains(word) && error.message.contains("level 1"), "\(error.message)")
            }
        }
        let plain = try await tools.attach(sandboxID: "sbx-4", policy: "default", rules: Policy(), level: .virtualMachine)
        #expect(plain.isEmpty)
    }

    @Test("an egress policy without a record store is refused: egress that cannot be recorded does not happen")
    func egressNeedsRecords() async throws {
        let tools = SandboxTools(records: nil, database: .unavailable("not needed"), logger: Self.logger)
        await #expect(throws: APIError.self) {
            _ = try await tools.attach(sandboxID: "sbx-5", policy: "network", rules: try Self.policy(hosts: ["example.com"]), level: .native)
        }
    }
}
