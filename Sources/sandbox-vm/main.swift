// sandbox-vm: level-3 maintenance and smoke runs without the daemon.
//
//   sandbox-vm image build [--cache DIR]        build (or find) the guest image, with progress
//   sandbox-vm probe                            which accelerator the engine would use, and why
//   sandbox-vm run [--cache DIR] [--tcg] [--state DIR] [--subtree NAME] -- CMD ARG...
//                                               boot a guest, run CMD in its sandbox, destroy it
import Foundation
import SandboxCore
import VMSandbox

func usage() -> Never {
    FileHandle.standardError.write(Data("usage: sandbox-vm image build [--cache DIR] | probe | run [--cache DIR] [--tcg] -- CMD ARG...\n".utf8))
    exit(2)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var cache = "/var/cache/sandboxd"
var preference = AcceleratorChoice.Preference.auto
var command: [String] = []
if let dash = arguments.firstIndex(of: "--") {
    command = Array(arguments[(dash + 1)...])
    arguments = Array(arguments[..<dash])
}
if let index = arguments.firstIndex(of: "--cache") {
    guard index + 1 < arguments.count else { usage() }
    cache = arguments[index + 1]
    arguments.removeSubrange(index...(index + 1))
}
var stateDirectory = "/run/sandboxd/vm"
var subtree = "sandboxd-vm"
if let index = arguments.firstIndex(of: "--state") {
    guard index + 1 < arguments.count else { usage() }
    stateDirectory = arguments[index + 1]
    arguments.removeSubrange(index...(index + 1))
}
if let index = arguments.firstIndex(of: "--subtree") {
    guard index + 1 < arguments.count else { usage() }
    subtree = arguments[index + 1]
    arguments.removeSubrange(index...(index + 1))
}
if let index = arguments.firstIndex(of: "--tcg") {
    preference = .tcg
    arguments.remove(at: index)
}

switch arguments {
case ["image", "build"]:
    do {
        let image = try GuestImageBuilder(cacheDirectory: cache, agentBinary: GuestImageBuilder.defaultAgentBinary()).build { print($0) }
        print("image: \(image.directory)")
    } catch {
        print("sandbox-vm: \(error)")
        exit(1)
    }
case ["probe"]:
    print(AcceleratorChoice.probe(.auto, scratchDirectory: NSTemporaryDirectory()))
case ["run"]:
    guard !command.isEmpty else { usage() }
    do {
        let started = Date()
        let engine = try await VMSandboxEngine.start(configuration: .init(
            stateDirectory: stateDirectory, imageCacheDirectory: cache, cgroupSubtree: subtree, accelerator: preference)) { print($0) }
        let sandbox = try await engine.create(SandboxSpec(id: "cli-" + String(getpid())))
        let booted = Date()
        let result = try await sandbox.exec(ExecRequest(command)) { chunk in
            (chunk.stream == .stdout ? FileHandle.standardOutput : FileHandle.standardError).write(Data(chunk.bytes))
        }
        let finished = Date()
        FileHandle.standardError.write(Data(String(format: "sandbox-vm: %@, boot %.2f s, exec %.3f s, exit %@\n",
            sandbox.accelerator.description, booted.timeIntervalSince(started), finished.timeIntervalSince(booted),
            result.exitCode.map(String.init) ?? "signal \(result.signal ?? 0)").utf8))
        if ProcessInfo.processInfo.environment["SANDBOX_VM_CONSOLE"] != nil {
            FileHandle.standardError.write((try? Data(contentsOf: URL(fileURLWithPath: sandbox.consoleLogPath))) ?? Data())
        }
        await sandbox.destroy()
        await engine.shutdown()
        exit(result.exitCode ?? 1)
    } catch {
        print("sandbox-vm: \(error)")
        exit(1)
    }
default:
    usage()
}
