import Foundation
import LinuxSandbox
import SandboxCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension LinuxSandboxTests {
    /// What the daemon adds at launch (`LaunchAttachments`), through the spawn helper: detached
    /// mount trees travel to it as descriptors, and a `beforeWorkload` hook holds the child until
    /// it returned.
    @Suite("launch attachments through the spawner")
    struct AttachmentTests {
        /// `count` directories, each with one file, below a 0700 directory only root can walk.
        final class PrivateTrees {
            let root: String
            let directories: [String]

            init(count: Int) {
                let root = "/tmp/sandboxd-attach-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
                self.root = root
                mkdir(root, 0o700)
                chmod(root, 0o700)
                directories = (0..<count).map { "\(root)/d\($0)" }
                for (index, directory) in directories.enumerated() {
                    mkdir(directory, 0o755)
                    FileManager.default.createFile(atPath: directory + "/name", contents: Data("tree-\(index)\n".utf8))
                }
            }

            func attachments(beforeWorkload: (@Sendable (Int32) throws -> Void)? = nil) -> LaunchAttachments {
                LaunchAttachments(
                    readOnlyDirectories: directories.enumerated().map { .init(hostPath: $1, sandboxPath: "/attached/d\($0)") },
                    beforeWorkload: beforeWorkload)
            }

            deinit { try? FileManager.default.removeItem(atPath: root) }
        }

        /// The network namespace of a process, as its `ns/net` link.
        static func networkNamespace(_ pid: String) -> String {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) ?? "<unreadable>"
        }

        @Test("the most attached directories one request carries all arrive; the hook runs first, in the sandbox's namespaces")
        func mostDirectoriesAndHook() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let before = engineDescriptors(of: t)
            let trees = PrivateTrees(count: LaunchAttachments.maximumDirectories)
            let seen = Mutex<[String]>([])
            let attachments = trees.attachments { pid in
                // The child is held: it has not exec'd anything of the sandbox yet.
                let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? ""
                seen.withLock { $0.append("\(Self.networkNamespace(String(pid))) \(comm.trimmingCharacters(in: .whitespacesAndNewlines))") }
            }
            let script = (0..<LaunchAttachments.maximumDirectories).map { "cat /attached/d\($0)/name" }.joined(separator: "; ")
                + "; touch /attached/d0/new 2>/dev/null && echo writable || echo read-only"
            let result = try await t.engine.run(TestEngine.spec("attach"), ExecRequest(["/bin/sh", "-c", script]),
                                                attachments: attachments)
            let expected = (0..<LaunchAttachments.maximumDirectories).map { "tree-\($0)\n" }.joined() + "read-only\n"
            #expect(result.exitCode == 0, "\(result.err)")
            #expect(result.out == expected, "\(result.err)")
            let hookSaw = seen.withLock { $0 }
            #expect(hookSaw.count == 1)
            #expect(hookSaw.first.map { !$0.hasPrefix(Self.networkNamespace("self") + " ") } == true,
                    "the hook ran in a sandbox with its own network namespace: \(hookSaw)")
            #expect(hookSaw.first?.hasSuffix(" sh") == false, "the command had not started when the hook ran: \(hookSaw)")

            #expect(await engineDescriptorsSettle(t, since: before), "after the one-shot run")

            // A persistent sandbox too: the hook runs once, at create, not per exec.
            // (Optional: the init's pidfd goes with the object, so it is dropped before the count.)
            var sandbox: LinuxSandbox? = try await t.engine.create(TestEngine.spec("attach-p"), attachments: attachments)
            let cat = try await sandbox!.exec(ExecRequest(["/bin/cat", "/attached/d5/name"]))
            #expect(cat.out == "tree-5\n", "\(cat.err)")
            await sandbox!.destroy()
            sandbox = nil
            #expect(seen.withLock { $0.count } == 2)
            #expect(await engineDescriptorsSettle(t, since: before))
            #expect(await t.finish())
        }

        @Test("one directory too many is refused before anything starts; a throwing hook fails the launch and leaves nothing")
        func refusals() async throws {
            guard Host.canRunSandboxes else { return }
            let t = try TestEngine()
            let before = engineDescriptors(of: t)
            let tooMany = PrivateTrees(count: LaunchAttachments.maximumDirectories + 1)
            let error = await #expect(throws: LinuxSandboxError.self) {
                _ = try await t.engine.run(TestEngine.spec("attach-many"), ExecRequest(["/bin/true"]), attachments: tooMany.attachments())
            }
            #expect(error?.code == .invalidRequest)
            #expect(error?.message.contains("at most \(LaunchAttachments.maximumDirectories)") == true, "\(String(describing: error))")

            struct HookFailure: Error {}
            let ran = Atomic<Int>(0)
            let one = PrivateTrees(count: 1)
            // A host directory the command could write to, were it ever started.
            let outbox = "/tmp/sandboxd-attach-outbox-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
            mkdir(outbox, 0o777)
            chmod(outbox, 0o777)
            defer { try? FileManager.default.removeItem(atPath: outbox) }
            let outboxSpec = TestEngine.spec("attach-fail", mounts: [MountSpec(hostPath: outbox, sandboxPath: "/outbox", readOnly: false)])
            // The control: with a hook that returns, the command leaves its file.
            let control = try await t.engine.run(outboxSpec, ExecRequest(["/bin/sh", "-c", "touch /outbox/ran"]), attachments: one.attachments { _ in })
            #expect(control.exitCode == 0, "\(control.err)")
            #expect(unlink(outbox + "/ran") == 0)
            let failing = one.attachments { _ in ran.add(1, ordering: .relaxed); throw HookFailure() }
            for persistent in [false, true] {
                let failure = await #expect(throws: LinuxSandboxError.self) {
                    if persistent {
                        _ = try await t.engine.create(TestEngine.spec("attach-fail"), attachments: failing)
                    } else {
                        _ = try await t.engine.run(outboxSpec, ExecRequest(["/bin/sh", "-c", "touch /outbox/ran"]), attachments: failing)
                    }
                }
                #expect(failure?.code == .childSetup)
                #expect(failure?.step == "before-workload", "\(String(describing: failure))")
            }
            #expect(ran.load(ordering: .relaxed) == 2)
            #expect(access(outbox + "/ran", F_OK) != 0, "the one-shot command ran although its hook failed")
            #expect(await engineDescriptorsSettle(t, since: before))
            #expect(await t.finish())
        }
    }
}
