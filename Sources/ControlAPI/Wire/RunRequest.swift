#if canImport(FoundationEssentials)
import SandboxCore
import FoundationEssentials
#else
import Foundation
#endif

/// Source code to run instead of a command: `{"language": "python", "source": "print(1)"}`.
public struct CodeSpec: Codable, Sendable, Hashable {
    /// `python`, `java`, `sh` or `bash`.
    public var language: String
    public var source: String

    public init(language: String, source: String) {
        self.language = language
        self.source = source
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case language, source }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        language = try container.decode(String.self, forKey: .language)
        source = try container.decode(String.self, forKey: .source)
    }
}

/// What every exec carries: the command or the code, its input, environment and time limit.
public struct ExecPayload: Sendable, Hashable {
    public var command: [String]?
    public var code: CodeSpec?
    public var stdin: String?
    public var env: [String: String]?
    /// Wall-clock limit in seconds; `nil` takes the policy's.
    public var timeout: Double?

    public init(command: [String]? = nil, code: CodeSpec? = nil, stdin: String? = nil,
                env: [String: String]? = nil, timeout: Double? = nil) {
        self.command = command
        self.code = code
        self.stdin = stdin
        self.env = env
        self.timeout = timeout
    }

    /// Checks what can be checked without the policy: exactly one of `command`/`code`, no NUL
    /// bytes in arguments or environment, sane names, a positive timeout.
    public func validate() throws(APIError) {
        switch (command, code) {
        case (nil, nil):
            throw APIError(.missingField, "one of \"command\" or \"code\" is required", details: ["field": "command"])
        case (.some, .some):
            throw APIError(.invalidField, "give either \"command\" or \"code\", not both", details: ["field": "code"])
        case (.some(let command), nil):
            guard let first = command.first, !first.isEmpty else {
                throw APIError(.invalidField, "\"command\" must name a program: got an empty list or empty first element",
                               details: ["field": "command"])
            }
            if let index = command.firstIndex(where: { $0.utf8.contains(0) }) {
                throw APIError(.invalidField, "\"command[\(index)]\" contains a NUL byte", details: ["field": .string("command[\(index)]")])
            }
        case (nil, .some(let code)):
            if code.language.isEmpty {
                throw APIError(.invalidField, "\"code.language\" must not be empty", details: ["field": "code.language"])
            }
            if code.source.utf8.contains(0) {
                throw APIError(.invalidField, "\"code.source\" contains a NUL byte", details: ["field": "code.source"])
            }
        }
        if let env {
            for (name, value) in env {
                let valid = !name.isEmpty && !name.utf8.contains(UInt8(ascii: "=")) && !name.utf8.contains(0)
                    && !(name.utf8.first.map { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } ?? false)
                guard valid else {
                    throw APIError(.invalidField, "\"env\" has an invalid variable name \"\(name)\"", details: ["field": .string("env.\(name)")])
                }
                if value.utf8.contains(0) {
                    throw APIError(.invalidField, "\"env.\(name)\" contains a NUL byte", details: ["field": .string("env.\(name)")])
                }
            }
        }
        if let timeout, !(timeout > 0 && timeout.isFinite) {
            throw APIError(.invalidField, "\"timeout\" must be a positive number of seconds, got \(timeout)", details: ["field": "timeout"])
        }
    }
}

/// The coding keys of a request that carries an ``ExecPayload`` at its top level, so that run and
/// exec requests decode and encode the payload's fields the same way.
protocol ExecPayloadCodingKeys: CodingKey {
    static var command: Self { get }
    static var code: Self { get }
    static var stdin: Self { get }
    static var env: Self { get }
    static var timeout: Self { get }
}

extension ExecPayload {
    init<Keys: ExecPayloadCodingKeys>(from c: KeyedDecodingContainer<Keys>) throws {
        self.init(
            command: try c.decodeIfPresent([String].self, forKey: .command),
            code: try c.decodeIfPresent(CodeSpec.self, forKey: .code),
            stdin: try c.decodeIfPresent(String.self, forKey: .stdin),
            env: try c.decodeIfPresent([String: String].self, forKey: .env),
            timeout: try c.decodeIfPresent(Double.self, forKey: .timeout))
    }

    func encode<Keys: ExecPayloadCodingKeys>(to c: inout KeyedEncodingContainer<Keys>) throws {
        try c.encodeIfPresent(command, forKey: .command)
        try c.encodeIfPresent(code, forKey: .code)
        try c.encodeIfPresent(stdin, forKey: .stdin)
        try c.encodeIfPresent(env, forKey: .env)
        try c.encodeIfPresent(timeout, forKey: .timeout)
    }
}

/// `POST /v1/run`: create a sandbox, run one command or code in it, destroy it.
public struct RunRequest: Codable, Sendable, Hashable {
    public var payload: ExecPayload
    public var sandbox: SandboxCreateRequest

    public init(payload: ExecPayload, sandbox: SandboxCreateRequest = .init()) {
        self.payload = payload
        self.sandbox = sandbox
    }

    enum CodingKeys: String, ExecPayloadCodingKeys, CaseIterable {
        case command, code, stdin, env, policy, timeout
        case isolationLevel = "isolation_level"
        case agentType = "agent_type"
        case sessionID = "session_id"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        payload = try ExecPayload(from: c)
        // In a one-shot run the environment and timeout belong to the exec; the sandbox gets none of its own.
        sandbox = SandboxCreateRequest(
            policy: try c.decodeIfPresent(String.self, forKey: .policy),
            isolationLevel: try c.decodeIfPresent(Int.self, forKey: .isolationLevel),
            agentType: try c.decodeIfPresent(String.self, forKey: .agentType),
            sessionID: try c.decodeIfPresent(UUID.self, forKey: .sessionID))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try payload.encode(to: &c)
        try c.encodeIfPresent(sandbox.policy, forKey: .policy)
        try c.encodeIfPresent(sandbox.isolationLevel, forKey: .isolationLevel)
        try c.encodeIfPresent(sandbox.agentType, forKey: .agentType)
        try c.encodeIfPresent(sandbox.sessionID, forKey: .sessionID)
    }

    public func validate() throws(APIError) {
        try payload.validate()
        try sandbox.validate()
    }
}

/// `POST /v1/sandboxes`: the sandbox's spec without a command.
public struct SandboxCreateRequest: Codable, Sendable, Hashable {
    /// Environment every exec starts with (an exec's own `env` is laid over it).
    public var env: [String: String]?
    public var policy: String?
    public var isolationLevel: Int?
    public var agentType: String?
    public var sessionID: UUID?
    /// Default wall-clock limit of each exec, in seconds.
    public var timeout: Double?

    public init(env: [String: String]? = nil, policy: String? = nil, isolationLevel: Int? = nil,
                agentType: String? = nil, sessionID: UUID? = nil, timeout: Double? = nil) {
        self.env = env
        self.policy = policy
        self.isolationLevel = isolationLevel
        self.agentType = agentType
        self.sessionID = sessionID
        self.timeout = timeout
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case env, policy, timeout
        case isolationLevel = "isolation_level"
        case agentType = "agent_type"
        case sessionID = "session_id"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        env = try c.decodeIfPresent([String: String].self, forKey: .env)
        policy = try c.decodeIfPresent(String.self, forKey: .policy)
        isolationLevel = try c.decodeIfPresent(Int.self, forKey: .isolationLevel)
        agentType = try c.decodeIfPresent(String.self, forKey: .agentType)
        sessionID = try c.decodeIfPresent(UUID.self, forKey: .sessionID)
        timeout = try c.decodeIfPresent(Double.self, forKey: .timeout)
    }

    public func validate() throws(APIError) {
        if let isolationLevel, !(1...4).contains(isolationLevel) {
            throw APIError(.invalidField, "\"isolation_level\" must be 1, 2, 3 or 4, got \(isolationLevel)",
                           details: ["field": "isolation_level"])
        }
        if let policy, policy.isEmpty || policy.count > 100 || !policy.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
            throw APIError(.invalidField, "\"policy\" must be a policy name (letters, digits, '-', '_'; at most 100)",
                           details: ["field": "policy"])
        }
        if let agentType, agentType.isEmpty || agentType.utf8.count > 50 {
            throw APIError(.invalidField, "\"agent_type\" must be 1 to 50 bytes", details: ["field": "agent_type"])
        }
        if let timeout, !(timeout > 0 && timeout.isFinite) {
            throw APIError(.invalidField, "\"timeout\" must be a positive number of seconds, got \(timeout)", details: ["field": "timeout"])
        }
        try ExecPayload(command: ["-"], env: env).validate()
    }
}

/// `POST /v1/sandboxes/{id}/exec`.
public struct SandboxExecRequest: Codable, Sendable, Hashable {
    public var payload: ExecPayload

    public init(payload: ExecPayload) { self.payload = payload }

    enum CodingKeys: String, ExecPayloadCodingKeys, CaseIterable { case command, code, stdin, env, timeout }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        payload = try ExecPayload(from: c)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try payload.encode(to: &c)
    }

    public func validate() throws(APIError) { try payload.validate() }
}

extension SandboxCreateRequest {
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(env, forKey: .env)
        try c.encodeIfPresent(policy, forKey: .policy)
        try c.encodeIfPresent(isolationLevel, forKey: .isolationLevel)
        try c.encodeIfPresent(agentType, forKey: .agentType)
        try c.encodeIfPresent(sessionID, forKey: .sessionID)
        try c.encodeIfPresent(timeout, forKey: .timeout)
    }
}
