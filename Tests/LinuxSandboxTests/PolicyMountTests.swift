import LinuxSandbox
import SandboxCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    /// The filesystem rules of a policy as the engine applies them: allowed paths bound at the same
    /// place (read-only or not), blocked paths masked even inside them, host symlinks refused.
    @Suite("policy mounts and masks")
    struct PolicyMountTests {
        /// A world-readable host tree under /tmp, removed afterwards (also when a test fails).
        final class HostTree {
            let root: String

            init(mode: mode_t = 0o755) {
                root = "/tmp/sandboxd-policy-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
                mkdir(root, mode)
                chmod(root, mode)
            }

            func directory(_ name: String, mode: mode_t = 0o755) {
                mkdir(root + "/" + name, mode)
                chmod(root + "/" + name, mode)
            }

            func file(_ name: String, _ text: String) {
                let fd = open(root + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                _ = text.withCString { write(fd, $0, strlen($0)) }
                close(fd)
                chmod(root + "/" + name, 0o644)
            }

            func symlink(_ name: String, to target: String) {
                _ = Glibc.symlink(target, root + "/" + name)
            }

            deinit {
                // Only what the tests made: plain files, links and directories under /tmp.
                func remove(_ path: String) {
                    var st = stat()
                    guard lstat(path, &st) == 0 else { return }
                    if (st.st_mode & S_IFMT) == S_IFDIR {
                        if let dir = opendir(path) {
                            var names: [String] = []
                            while let entry = readdir(dir) {
                                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                                if name != "." && name != ".." { names.append(name) }
                            }
                            closedir(dir)
                            for name in names { remove(path + "/" + name) }
                        }
                        rmdir(path)
                    } else {
                        unlink(path)
                    }
                }
                remove(root)
            }
        }

        static func policyMount(_ path: String, readOnly: Bool) -> MountSpec {
            MountSpec(hostPath: path, sandboxPath: path, readOnly: readOnly, refuseSymlinks: true)
        }

        static func spec(mounts: [MountSpec], masked: [String]) -> SandboxSpec {
            SandboxSpec(id: "pol-\(UInt32.random(in: 0..<UInt32.max))", limits: .unlimited, enforcement: .strict,
                        mounts: mounts, maskedPaths: masked)
        }

        @Test("a blocked directory and file inside an allowed path are masked; the rest of the tree is visible")
        func blockedInsideAllowed() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tree = HostTree()
            tree.file("visible.txt", "visible\n")
            tree.directory("secrets")
            tree.file("secrets/key.txt", "the-key\n")
            tree.file("token.txt", "the-token\n")
            let spec = Self.spec(mounts: [Self.policyMount(tree.root, readOnly: true)],
                                 masked: [tree.root + "/secrets", tree.root + "/token.txt"])
            let script = """
            cat \(tree.root)/visible.txt
            echo "secrets:[$(ls -A \(tree.root)/secrets)]"
            cat \(tree.root)/secrets/key.txt 2>/dev/null || echo no-key
            echo "token:[$(cat \(tree.root)/token.txt)]"
            touch \(tree.root)/secrets/planted 2>/dev/null && echo planted || echo not-writable
            """
            let result = try await t.engine.run(spec, ExecRequest(["/bin/sh", "-c", script]))
            #expect(result.out == "visible\nsecrets:[]\nno-key\ntoken:[]\nnot-writable\n", "\(result.err)")
            #expect(!result.out.contains("the-key") && !result.out.contains("the-token"))
            #expect(access(tree.root + "/secrets/planted", F_OK) != 0)
            #expect(await t.finish())
        }

        @Test("an allowed path is writable when read_only is false and read-only otherwise")
        func writableOrNot() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            // The sandbox writes as an unprivileged host uid: the directory must let it.
            let tree = HostTree(mode: 0o777)
            tree.directory("blocked", mode: 0o777)
            let writable = Self.spec(mounts: [Self.policyMount(tree.root, readOnly: false)], masked: [tree.root + "/blocked"])
            let wrote = try await t.engine.run(writable, ExecRequest(["/bin/sh", "-c",
                "echo data > \(tree.root)/out.txt && echo ok; touch \(tree.root)/blocked/x 2>/dev/null || echo blocked-ro"]))
            #expect(wrote.out == "ok\nblocked-ro\n", "\(wrote.err)")
            #expect(access(tree.root + "/out.txt", F_OK) == 0, "the write reached the host directory")
            #expect(access(tree.root + "/blocked/x", F_OK) != 0, "nothing reached the masked directory")

            let readOnly = Self.spec(mounts: [Self.policyMount(tree.root, readOnly: true)], masked: [])
            let refused = try await t.engine.run(readOnly, ExecRequest(["/bin/sh", "-c",
                "cat \(tree.root)/out.txt; echo more > \(tree.root)/out2.txt 2>/dev/null && echo wrote || echo read-only"]))
            #expect(refused.out == "data\nread-only\n", "\(refused.err)")
            #expect(access(tree.root + "/out2.txt", F_OK) != 0)
            #expect(await t.finish())
        }

        @Test("an allowed path may be a single file, bound read-only at the same place")
        func allowedFile() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tree = HostTree()
            tree.file("settings.ini", "answer=42\n")
            tree.file("other.ini", "not-bound\n")
            let path = tree.root + "/settings.ini"
            let result = try await t.engine.run(Self.spec(mounts: [Self.policyMount(path, readOnly: true)], masked: []), ExecRequest(["/bin/sh", "-c",
                "cat \(path); cat \(tree.root)/other.ini 2>/dev/null || echo only-the-file; echo x >> \(path) 2>/dev/null || echo read-only"]))
            #expect(result.out == "answer=42\nonly-the-file\nread-only\n", "\(result.err)")
            #expect(await t.finish())
        }

        @Test("an allowed path with a symbolic link in it on the host is refused before anything starts")
        func allowedThroughSymlink() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tree = HostTree()
            tree.directory("real")
            tree.symlink("link", to: tree.root + "/real")
            // A link to the host's /etc: binding it would show the host's configuration inside.
            tree.symlink("etc", to: "/etc")
            for path in [tree.root + "/link", tree.root + "/etc", tree.root + "/link/sub"] {
                let error = await #expect(throws: LinuxSandboxError.self) {
                    _ = try await t.engine.run(Self.spec(mounts: [Self.policyMount(path, readOnly: true)], masked: []),
                                               ExecRequest(["/bin/true"]))
                }
                #expect(error?.code == .invalidRequest)
                #expect(error?.message.contains("symbolic link") == true || error?.message.contains("does not exist") == true, "\(String(describing: error))")
            }
            let missing = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(Self.spec(mounts: [Self.policyMount(tree.root + "/absent", readOnly: true)], masked: []),
                                           ExecRequest(["/bin/true"]))
            }
            #expect(missing?.message.contains("does not exist") == true)
            #expect(await t.finish())
        }

        @Test("a blocked path reached through a host symlink inside an allowed path refuses the sandbox")
        func blockedThroughSymlink() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tree = HostTree()
            tree.directory("real-secrets")
            tree.file("real-secrets/key.txt", "the-key\n")
            tree.symlink("secrets", to: "real-secrets")
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(Self.spec(mounts: [Self.policyMount(tree.root, readOnly: true)], masked: [tree.root + "/secrets"]),
                                           ExecRequest(["/bin/cat", tree.root + "/secrets/key.txt"]))
            }
            #expect(error?.code == .invalidRequest)
            #expect(error?.message.contains("symbolic link") == true, "\(String(describing: error))")
            #expect(await t.finish())
        }

        @Test("symbolic links inside an allowed directory resolve in the sandbox's root, never the host's")
        func linksStayInside() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let tree = HostTree()
            let outside = HostTree()
            outside.file("host-only.txt", "host-secret\n")
            tree.symlink("shadow", to: "/etc/shadow")
            tree.symlink("outside", to: outside.root + "/host-only.txt")
            tree.symlink("up", to: "../../..")
            let script = "cat \(tree.root)/shadow \(tree.root)/outside 2>/dev/null; ls \(tree.root)/up/ 2>/dev/null | tr '\\n' ' '"
            let result = try await t.engine.run(Self.spec(mounts: [Self.policyMount(tree.root, readOnly: true)], masked: []),
                                                ExecRequest(["/bin/sh", "-c", script]))
            #expect(!result.out.contains("host-secret"), "\(result.out)")
            #expect(!result.out.contains("root:"), "the host's /etc/shadow must not be readable: \(result.out)")
            // `up` climbs to the sandbox's own root: its top-level directories, not the host's.
            #expect(!result.out.contains("home") && !result.out.contains("root "), "\(result.out)")
            #expect(await t.finish())
        }

        @Test("a blocked path in the runtime (/bin/perl → /usr/bin/perl on merged-/usr hosts) is masked")
        func blockedRuntimeFile() async throws {
            guard Host.canRunSandboxes else { return }
            guard access("/usr/bin/perl", X_OK) == 0 else { print("skipping: no /usr/bin/perl on this host"); return }
            let t = try TestEngine()
            let spec = Self.spec(mounts: [], masked: ["/bin/perl", "/usr/bin/perl"])
            let result = try await t.engine.run(spec, ExecRequest(["/bin/sh", "-c",
                "/usr/bin/perl -e 'print 42' 2>/dev/null || echo masked; wc -c < /usr/bin/perl"]))
            #expect(result.out == "masked\n0\n", "\(result.err)")
            #expect(await t.finish())
        }

        @Test("masked paths must be normalized absolute paths")
        func maskedPathValidation() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            for bad in ["relative", "/", "/a/../b", "/a//b"] {
                let error = await #expect(throws: LinuxSandboxError.self) {
                    _ = try await t.engine.run(Self.spec(mounts: [], masked: [bad]), ExecRequest(["/bin/true"]))
                }
                #expect(error?.code == .invalidRequest, "\(bad)")
            }
            #expect(await t.finish())
        }
    }
}
