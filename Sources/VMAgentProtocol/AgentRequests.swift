import SandboxValues

/// The two requests a cold guest reads first — its sandbox's spec and the first exec — read
/// straight from the parsed JSON, not through `Codable`.
///
/// Why: the first `Codable` decode in a guest costs ≈40–60 ms under TCG (its generic containers'
/// metadata made at run time, and all of that code translated once), against ≈10 ms for the same
/// decode once warm, and it sat on every cold create's path; these readers take 17–31 ms the
/// first time. They accept exactly what the synthesized `Decodable` conformances accept (the same
/// keys, absent or `null` optionals, unknown keys ignored, `ByteCount` as a number or a size text
/// like `512MiB`, integers written as exact `1.0`/`1e3`), and `AgentJSONTests` checks them against
/// those conformances value by value.
/// The host still writes both with `Codable` (`AgentFrame(_:json:)`).
extension AgentFrame {
    /// The payload as a `SandboxSpec` (a `configure` frame, or a cold guest's boot spec).
    public func decodeSandboxSpec() throws(AgentProtocolError) -> SandboxSpec {
        var parser = JSONParser(bytes: payload)
        return try RequestReader(node: try parser.parseDocument(), path: "spec").sandboxSpec()
    }

    /// The payload as an `ExecRequest` (an `exec` frame).
    public func decodeExecRequest() throws(AgentProtocolError) -> ExecRequest {
        var parser = JSONParser(bytes: payload)
        return try RequestReader(node: try parser.parseDocument(), path: "exec request").execRequest()
    }
}

/// One JSON value and where it is (for errors: `spec.limits.memory`).
struct RequestReader {
    let node: JSONNode
    let path: String

    func failure(_ expected: String) -> AgentProtocolError {
        AgentProtocolError("\(path): expected \(expected), found \(node.kindName)")
    }

    func members() throws(AgentProtocolError) -> [String: JSONNode] {
        guard case .object(let members) = node else { throw failure("an object") }
        return members
    }

    func string() throws(AgentProtocolError) -> String {
        guard case .string(let value) = node else { throw failure("a string") }
        return value
    }

    func bool() throws(AgentProtocolError) -> Bool {
        guard case .bool(let value) = node else { throw failure("a boolean") }
        return value
    }

    func double() throws(AgentProtocolError) -> Double {
        guard case .number(let text) = node, let value = Double(text) else { throw failure("a number") }
        return value
    }

    func integer<T: FixedWidthInteger>(_ type: T.Type) throws(AgentProtocolError) -> T {
        guard case .number(let text) = node else { throw failure("a number") }
        if let value = T(text) { return value }
        if let double = Double(text), double.rounded() == double, let value = T(exactly: double) { return value }
        throw AgentProtocolError("\(path): number \(text) does not fit \(T.self)")
    }

    func strings() throws(AgentProtocolError) -> [String] {
        guard case .array(let elements) = node else { throw failure("an array") }
        var values: [String] = []
        values.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            values.append(try RequestReader(node: element, path: "\(path)[\(index)]").string())
        }
        return values
    }

    func stringDictionary() throws(AgentProtocolError) -> [String: String] {
        var values: [String: String] = [:]
        for (key, value) in try members() {
            values[key] = try RequestReader(node: value, path: "\(path).\(key)").string()
        }
        return values
    }

    func bytes() throws(AgentProtocolError) -> [UInt8] {
        guard case .array(let elements) = node else { throw failure("an array of bytes") }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(elements.count)
        for element in elements {
            guard case .number(let text) = element, let byte = UInt8(text) else {
                throw AgentProtocolError("\(path): expected a byte (0–255), found \(element.kindName)")
            }
            bytes.append(byte)
        }
        return bytes
    }

    func byteCount() throws(AgentProtocolError) -> ByteCount {
        if case .number = node { return ByteCount(bytes: try integer(UInt64.self)) }
        do {
            return try ByteCount(parsing: try string())
        } catch let error as AgentProtocolError {
            throw error
        } catch {
            throw AgentProtocolError("\(path): \(error)")
        }
    }

    /// An object's members, read by key.
    struct Members {
        let members: [String: JSONNode]
        let path: String

        func required(_ key: String) throws(AgentProtocolError) -> RequestReader {
            guard let node = members[key] else { throw AgentProtocolError("\(path): no \"\(key)\"") }
            return RequestReader(node: node, path: "\(path).\(key)")
        }

        /// nil when absent or `null`, as `decodeIfPresent` reads it.
        func optional(_ key: String) -> RequestReader? {
            guard let node = members[key] else { return nil }
            if case .null = node { return nil }
            return RequestReader(node: node, path: "\(path).\(key)")
        }
    }

    func object() throws(AgentProtocolError) -> Members {
        Members(members: try members(), path: path)
    }

    func sandboxSpec() throws(AgentProtocolError) -> SandboxSpec {
        let object = try object()
        let enforcementText = try object.required("enforcement").string()
        guard let enforcement = LimitEnforcement(rawValue: enforcementText) else {
            throw AgentProtocolError("\(path).enforcement: unknown value \"\(enforcementText)\"")
        }
        let networkText = try object.required("network").string()
        guard let network = NetworkMode(rawValue: networkText) else {
            throw AgentProtocolError("\(path).network: unknown value \"\(networkText)\"")
        }
        let mountsReader = try object.required("mounts")
        guard case .array(let mountNodes) = mountsReader.node else { throw mountsReader.failure("an array") }
        var mounts: [MountSpec] = []
        for (index, node) in mountNodes.enumerated() {
            let mount = try RequestReader(node: node, path: "\(path).mounts[\(index)]").object()
            mounts.append(MountSpec(
                hostPath: try mount.required("hostPath").string(), sandboxPath: try mount.required("sandboxPath").string(),
                readOnly: try mount.required("readOnly").bool(), refuseSymlinks: try mount.required("refuseSymlinks").bool()))
        }
        return SandboxSpec(
            id: try object.required("id").string(),
            hostname: try object.optional("hostname")?.string(),
            limits: try object.required("limits").resourceLimits(),
            enforcement: enforcement,
            environment: try object.required("environment").stringDictionary(),
            mounts: mounts,
            maskedPaths: try object.required("maskedPaths").strings(),
            workspacePath: try object.required("workspacePath").string(),
            network: network)
    }

    func resourceLimits() throws(AgentProtocolError) -> ResourceLimits {
        let object = try object()
        return ResourceLimits(
            memory: try object.optional("memory")?.byteCount(),
            cpu: try object.optional("cpu")?.double(),
            pids: try object.optional("pids")?.integer(Int.self),
            executionTimeout: try object.required("executionTimeout").double(),
            outputLimit: try object.required("outputLimit").byteCount(),
            tmpfsSize: try object.required("tmpfsSize").byteCount(),
            openFiles: try object.required("openFiles").integer(Int.self))
    }

    func execRequest() throws(AgentProtocolError) -> ExecRequest {
        let object = try object()
        return ExecRequest(
            try object.required("arguments").strings(),
            environment: try object.required("environment").stringDictionary(),
            stdin: try object.required("stdin").bytes(),
            timeout: try object.optional("timeout")?.double(),
            workingDirectory: try object.optional("workingDirectory")?.string())
    }
}
