/// The test guest's `/init` (busybox sh, PID 1).
///
/// It loads the modules listed in `/lib/modules/load-order`, mounts the host's root read-only
/// over 9p at `/mnt`, mounts inside it what a root-run daemon expects (proc, sysfs, a cgroup2
/// hierarchy with every controller enabled at the root, devtmpfs, devpts, and tmpfs on `/tmp`,
/// `/run`, `/var/tmp`, `/var/lib/sandboxd` where those exist on the host: they are the only
/// writable places, because the 9p root is read-only and cannot grow new directories), then
/// moves that mount onto `/` (so commands are not "chrooted" and may create user namespaces)
/// and sources `/job/run`, added per run as a second cpio archive, which runs the command with
/// `chroot .` and reports it on ttyS1 in a `SerialFrame`. Whatever happens, it powers off;
/// if init itself dies, `panic=-1` and QEMU's `-no-reboot` end the machine too.
enum HostRootInit {
    static let script = #"""
        #!/bin/busybox sh
        export PATH=/bin
        /bin/busybox --install -s /bin
        fail() { echo "guest-init: $*"; sync; poweroff -f; sleep 5; exit 1; }

        mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs /dev"
        mount -t proc proc /proc || fail "mount proc /proc"
        while read -r module; do
            insmod "/lib/modules/$module.ko" || fail "insmod $module"
        done < /lib/modules/load-order
        # cache=loose: the guest keeps what it read in its page cache. Starting a program reads
        # the same libraries again and again, and under TCG every 9p round trip is slow. A boot is
        # too short for host files to change under it.
        mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot /mnt || fail "mount 9p hostroot /mnt"

        mount -t proc proc /mnt/proc || fail "mount proc /mnt/proc"
        mount -t sysfs sysfs /mnt/sys || fail "mount sysfs /mnt/sys"
        # The options systemd uses on production hosts.
        mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /mnt/sys/fs/cgroup || fail "mount cgroup2 /mnt/sys/fs/cgroup"
        for controller in $(cat /mnt/sys/fs/cgroup/cgroup.controllers); do
            echo "+$controller" > /mnt/sys/fs/cgroup/cgroup.subtree_control || fail "enable $controller at the cgroup root"
        done
        mount -t devtmpfs devtmpfs /mnt/dev || fail "mount devtmpfs /mnt/dev"
        mkdir -p /mnt/dev/pts /mnt/dev/shm
        mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /mnt/dev/pts || fail "mount devpts /mnt/dev/pts"
        mount -t tmpfs -o mode=1777 tmpfs /mnt/dev/shm || fail "mount tmpfs /mnt/dev/shm"
        # The host's /tmp and /var/tmp stay reachable at /keep in this init's own root: a checkout
        # under /tmp (as CI may make) is bound back into the guest's empty tmpfs by the job script.
        for dir in /tmp /var/tmp; do
            [ -d "/mnt$dir" ] && { mkdir -p "/keep$dir" && mount --bind "/mnt$dir" "/keep$dir" || fail "bind /mnt$dir /keep$dir"; }
        done
        for dir in /tmp /var/tmp; do
            [ -d "/mnt$dir" ] && { mount -t tmpfs -o mode=1777 tmpfs "/mnt$dir" || fail "mount tmpfs /mnt$dir"; }
        done
        for dir in /run /var/lib/sandboxd; do
            [ -d "/mnt$dir" ] && { mount -t tmpfs -o mode=0755 tmpfs "/mnt$dir" || fail "mount tmpfs /mnt$dir"; }
        done
        ip link set lo up 2>/dev/null

        # Make the host root the root of the mount namespace, as switch_root does, but keep this
        # init's own root (the initramfs, with busybox and /job) and its cwd on the 9p root.
        # A plain `chroot /mnt` would leave commands "chrooted", and the kernel refuses
        # CLONE_NEWUSER (unshare, clone3) to chrooted processes with EPERM.
        cd /mnt || fail "cd /mnt"
        mount --move . / || fail "mount --move /mnt /"

        stty -F /dev/ttyS1 raw -echo || fail "stty /dev/ttyS1"
        # Written per run by GuestMachine (SerialFrame.shellScript): runs the command with
        # `chroot .` (the cwd, the host root) and frames its output and status on ttyS1.
        . /job/run
        sync
        poweroff -f
        """#
}
