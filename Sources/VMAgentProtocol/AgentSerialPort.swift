#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The guest end of the agent channel: the machine's second legacy 16550 UART (`ttyS1`), whose
/// host end is a socket QEMU inherits (`-serial chardev:agent`, the second `-serial`).
///
/// Why a UART and not virtio-serial: the 8250 driver is built into the Debian kernel and probes
/// the legacy ports at boot anyway, so the channel costs the guest no module and no PCI device
/// (a `virtio-serial-pci` device made `virtio_pci`'s init ≈0.4 s longer under TCG; docs/vm-sandbox.md).
/// The port is put in raw mode: 8 bits, no echo, no line editing, no CR/LF translation, no XON/XOFF
/// (frames are binary), modem lines ignored. Flow control: guest → host, QEMU transmits a byte only
/// when its socket takes it and holds the UART's "transmitter empty" until then, so the guest's
/// writes block instead of losing bytes; host → guest, QEMU reads the socket only as fast as the
/// guest drains the UART's FIFO into the tty buffer (≈640 KiB), and the host sends one request
/// at a time, which the agent reads as it arrives.
public enum AgentSerialPort {
    /// The agent's port in the guest (the console is `ttyS0`).
    public static let guestDevice = "/dev/ttyS1"

    /// Opens `path` read-write, raw, blocking. Returns the descriptor, or the failing call and errno.
    public static func open(_ path: String = guestDevice) -> Result<Int32, AgentPortError> {
        // O_NONBLOCK for the open itself: a port without CLOCAL waits for carrier detect.
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return .failure(AgentPortError(call: "open(\(path))", errno: errno)) }
        var settings = termios()
        guard tcgetattr(fd, &settings) == 0 else { return failed("tcgetattr(\(path))", fd) }
        cfmakeraw(&settings)
        settings.c_iflag &= ~(tcflag_t(IXOFF) | tcflag_t(IXANY) | tcflag_t(IMAXBEL) | tcflag_t(INPCK))
        settings.c_iflag |= tcflag_t(IGNBRK)
        settings.c_cflag &= ~(tcflag_t(CRTSCTS) | tcflag_t(HUPCL) | tcflag_t(CSTOPB))
        settings.c_cflag |= tcflag_t(CLOCAL) | tcflag_t(CREAD)
        // read() returns as soon as one byte is there.
        withUnsafeMutableBytes(of: &settings.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        // The fastest rate a standard PC UART's divisor allows; QEMU paces only its receive
        // timeout by it, not the bytes.
        cfsetispeed(&settings, speed_t(B115200))
        cfsetospeed(&settings, speed_t(B115200))
        guard tcsetattr(fd, TCSANOW, &settings) == 0 else { return failed("tcsetattr(\(path))", fd) }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0 else { return failed("fcntl(\(path), F_SETFL)", fd) }
        return .success(fd)
    }

    private static func failed(_ call: String, _ fd: Int32) -> Result<Int32, AgentPortError> {
        let error = AgentPortError(call: call, errno: errno)
        close(fd)
        return .failure(error)
    }
}

/// A system call on the agent's port failed.
public struct AgentPortError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var errno: Int32
    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}
