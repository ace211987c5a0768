import Foundation
import ArgumentParser
import VMSandbox

/// `sandboxctl image build`: builds the guest image, or finds it in the cache by content hash.
struct ImageBuild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build the level-3 guest image (or reuse it: the cache is keyed by a hash of every input). Run as root.")

    @OptionGroup var location: ImageLocation

    func run() async throws {
        try await runReporting {
            guard getuid() == 0 else {
                throw ClientError(description: "image build runs as root: it downloads the kernel package with apt-get and writes the daemon's image cache", exitCode: 1)
            }
            let directory = try location.directory()
            let builder = GuestImageBuilder(cacheDirectory: directory, agentBinary: location.agentBinary)
            let started = ContinuousClock.now
            let image: GuestImage
            do {
                image = try builder.build { line in print(line) }
            } catch {
                throw ClientError(description: "\(error)", exitCode: 1)
            }
            let seconds = Double((ContinuousClock.now - started).components.seconds)
                + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
            print("image \(image.key.prefix(12)) \(image.wasBuilt ? "built" : "reused from the cache") in \(String(format: "%.1f", seconds)) s: \(image.directory)")
            print("kernel: \(image.kernelPackage) (\(image.kernelPath))")
            if image.wasBuilt {
                print("a running sandboxd uses the image it started with; restart it to use this one")
            }
            return 0
        }
    }
}
