import Foundation
import SandboxCore
import Testing
@testable import EgressProxy

struct EgressEventRecordTests {
    @Test("an egress event becomes the record the Store writes, field for field", arguments: [
        EgressEvent.Decision.allowed, .denied, .failed,
    ])
    func conversion(decision: EgressEvent.Decision) {
        let event = EgressEvent(
            time: Date(timeIntervalSince1970: 1_764_000_000.5), sandboxID: "sbx-7", method: "CONNECT", host: "api.example.com",
            port: 443, address: "10.0.0.7", decision: decision, reason: "why", status: 200, bytesUp: 10, bytesDown: 20,
            duration: 0.75)
        let execution = UUID()
        let record = event.record(executionID: execution)
        #expect(record.executionID == execution)
        #expect(record.sandboxID == "sbx-7")
        #expect(record.occurredAt == event.time)
        #expect(record.method == "CONNECT")
        #expect(record.host == "api.example.com")
        #expect(record.port == 443)
        #expect(record.address == "10.0.0.7")
        #expect(record.decision.rawValue == decision.rawValue)
        #expect(record.reason == "why")
        #expect(record.status == 200)
        #expect(record.bytesUp == 10)
        #expect(record.bytesDown == 20)
        #expect(record.duration == 0.75)
        #expect(event.record(executionID: nil).id != record.id)
    }
}
