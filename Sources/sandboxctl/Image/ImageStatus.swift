#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
import ControlAPI
import VMSandbox

/// `sandboxctl image status`: what the cache holds, whether it matches this agent, and what the daemon says.
struct ImageStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the cached guest image and the daemon's level-3 state.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var location: ImageLocation

    func run() async throws {
        try await runReporting {
            let directory = try location.directory()
            let cached = GuestImageBuilder.cachedImages(in: directory)
            let agentDigest = try? GuestImageBuilder.fileDigest(location.agentBinary)
            var daemon: InfoResponse.Level?
            var daemonProblem: String?
            do {
                daemon = try await global.client.call(InfoResponse.self, .GET, "/v1/info").levels.first { $0.level == 3 }
            } catch {
                daemonProblem = "\(error)"
            }
            if global.output == .json {
                try printJSON(ImageStatusReport(imageDirectory: directory, images: cached, agent: location.agentBinary,
                                                agentSHA256: agentDigest, daemon: daemon, daemonError: daemonProblem))
                return 0
            }
            print("image cache: \(directory)")
            if cached.isEmpty { print("  no guest image built yet: sandboxctl image build (as root) builds it; the daemon builds it at start") }
            for image in cached {
                let current = agentDigest.map { $0 == image.agentSHA256 ? "matches \(location.agentBinary)" : "built from another agent than \(location.agentBinary): the next build replaces it" } ?? "agent \(location.agentBinary) unreadable"
                print("  \(image.key.prefix(12)): kernel \(image.kernel ?? "?") (release \(image.release ?? "?")); \(current)")
            }
            if let daemon {
                print("sandboxd level 3: \(daemon.available ? "available" : "unavailable — \(daemon.reason ?? "")")")
                if let detail = daemon.detail { print("  \(detail)") }
            } else {
                print("sandboxd: not reachable (\(daemonProblem ?? "no answer"))")
            }
            return 0
        }
    }
}

struct ImageStatusReport: Encodable {
    var imageDirectory: String
    var images: [GuestImageBuilder.CachedImage]
    var agent: String
    var agentSHA256: String?
    var daemon: InfoResponse.Level?
    var daemonError: String?

    enum CodingKeys: String, CodingKey {
        case imageDirectory = "image_directory", images, agent, agentSHA256 = "agent_sha256", daemon, daemonError = "daemon_error"
    }
}
