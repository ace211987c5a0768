// The engine-facing value types live in SandboxValues (standard library only, so the level-3
// guest agent can link them without Foundation); importers of SandboxCore keep seeing them here.
@_exported import SandboxValues
