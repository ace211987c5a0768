import CLibPQ

/// The libpq this binary is linked against, e.g. `150018` for 15.18.
public func linkedLibPQVersion() -> Int { Int(PQlibVersion()) }
