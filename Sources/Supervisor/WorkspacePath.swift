import ControlAPI

/// The workspace as a sandbox sees it: `/workspace/a/b` and `a/b` name the same file. Engines
/// take workspace-relative paths; `..` is refused here so that the caller hears why (the engines
/// refuse escapes too).
func workspaceRelativePath(_ path: String, workspace root: String) throws(APIError) -> String {
    var relative = Substring(path)
    if path.hasPrefix("/") {
        guard path.hasPrefix(root + "/") else {
            throw APIError(.pathRefused, "path \"\(path)\" is outside the sandbox workspace \(root)", details: ["path": .string(path)])
        }
        relative = path.dropFirst(root.count + 1)
    }
    guard !relative.isEmpty else {
        throw APIError(.pathRefused, "path \"\(path)\" names the workspace itself, not a file", details: ["path": .string(path)])
    }
    // openat2(RESOLVE_IN_ROOT) would clamp ".." at the workspace root; say plainly that it is refused.
    if relative.split(separator: "/").contains("..") {
        throw APIError(.pathRefused, "path \"\(path)\" contains \"..\"; paths stay inside the workspace", details: ["path": .string(path)])
    }
    return String(relative)
}
