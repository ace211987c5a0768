import Testing
@testable import Store

struct LibPQTests {
    @Test("links libpq 15 or newer")
    func linked() {
        #expect(linkedLibPQVersion() >= 150000)
    }
}
