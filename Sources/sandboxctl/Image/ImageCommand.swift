#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import SandboxCore
import VMSandbox

/// `sandboxctl image build|status`: the level-3 guest image.
///
/// The build runs here, in sandboxctl, as root, writing the daemon's image cache
/// (`vm.image_directory`, default /var/cache/sandboxd) — not through the socket: it downloads a
/// Debian package and writes host directories, which the control API does not offer its callers.
/// The cache is keyed by a content hash and built under a lock, so a daemon starting at the
/// same time waits for this build and then uses it.
struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Build or inspect the level-3 guest image.",
        subcommands: [ImageBuild.self, ImageStatus.self])
}

/// Where the image cache is: `--image-directory`, else the daemon configuration's `vm.image_directory`.
struct ImageLocation: ParsableArguments {
    @Option(name: .long, help: "The daemon's configuration file, read for vm.image_directory (default /etc/sandboxd/sandboxd.yaml when it exists).")
    var config: String?

    @Option(name: .long, help: "The image cache directory (overrides the configuration).")
    var imageDirectory: String?

    @Option(name: .long, help: "The sandbox-guest agent to put in the image (default: the one installed next to sandboxctl).")
    var agent: String?

    func directory() throws -> String {
        if let imageDirectory { return imageDirectory }
        let path = config ?? DaemonConfiguration.defaultPath
        guard access(path, F_OK) == 0 else {
            if config != nil { throw ValidationError("configuration file \(path) does not exist") }
            return DaemonConfiguration.VirtualMachines.defaultImageDirectory
        }
        let text = String(decoding: try readFile(path), as: UTF8.self)
        do {
            return try DaemonConfiguration(yaml: text, file: path).vm.imageDirectory
        } catch {
            throw ClientError(description: "\(error)", exitCode: 78)
        }
    }

    var agentBinary: String { agent ?? GuestImageBuilder.defaultAgentBinary() }
}
