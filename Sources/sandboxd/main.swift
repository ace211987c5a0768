import SandboxCore
import Store

print("sandboxd (libpq \(linkedLibPQVersion()))")
