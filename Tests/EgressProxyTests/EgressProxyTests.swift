import Testing
@testable import EgressProxy
