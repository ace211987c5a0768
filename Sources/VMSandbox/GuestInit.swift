/// The level-3 guest's `/init` (busybox sh, PID 1 until it execs the agent in the new root).
///
/// It loads the virtio, 9p and virtio-console modules, builds the guest root on a tmpfs:
/// the host's runtime directories read-only over 9p (`/shares`: "tag path" lines, never the
/// host's `/`), the runtime's symlinks (`/links`), the generated `/etc` (`/guest-etc`), fresh
/// proc, sysfs, cgroup2 (every controller enabled), devtmpfs, devpts and tmpfs scratch places;
/// remounts that root read-only, moves it over `/` and enters it, running the agent as PID 1.
/// With `sandboxd.raw=1` on the kernel command line it runs `uname -r` instead and powers off
/// (the benchmark's raw-boot baseline). A failure powers off; if the agent dies, `panic=-1` and QEMU's `-no-reboot` end the machine.
enum GuestInit {
    static let script = #"""
        #!/bin/busybox sh
        export PATH=/bin
        /bin/busybox --install -s /bin
        fail() { echo "guest-init: $*"; poweroff -f; sleep 5; exit 1; }

        mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs /dev"
        # The initramfs has no /dev/console node, so the kernel started init without stdio.
        exec 0<>/dev/console 1>&0 2>&0
        mount -t proc proc /proc || fail "mount proc /proc"
        mount -t sysfs sysfs /sys || fail "mount sysfs /sys"
        # Guest uptime stamps (shell builtins, no fork) for the benchmark's time breakdown.
        stamp() { read -r up _ < /proc/uptime; echo "guest-init: $1 at $up s"; }
        stamp "kernel booted, init"
        while read -r module; do
            insmod "/lib/modules/$module.ko" || fail "insmod $module"
        done < /lib/modules/load-order
        stamp "modules loaded"

        R=/newroot
        mount -t tmpfs -o mode=0755 tmpfs $R || fail "mount tmpfs $R"
        mkdir -p $R/etc $R/proc $R/sys $R/dev $R/tmp $R/run $R/var/tmp $R/root $R/.sandbox
        chmod 0700 $R/root
        # cache=loose: programs read the same libraries again and again, and every 9p round trip
        # is slow under TCG; the runtime does not change under a running guest. msize (and with it
        # the read-around on a page fault) stays at 256 KiB: 512000, the transport's maximum, was
        # no faster for the agent's start (docs/vm-sandbox.md, "Figures").
        while read -r tag path; do
            mkdir -p "$R$path"
            mount -t 9p -o ro,nodev,trans=virtio,version=9p2000.L,msize=262144,cache=loose "$tag" "$R$path" || fail "mount 9p $tag $path"
        done < /shares
        while read -r path target; do
            ln -s "$target" "$R$path" || fail "ln -s $target $path"
        done < /links
        cp -a /guest-etc/. $R/etc/ || fail "copy /etc"

        mount -t proc -o nosuid,nodev,noexec proc $R/proc || fail "mount proc"
        mount -t sysfs -o nosuid,nodev,noexec sysfs $R/sys || fail "mount sysfs"
        mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup || fail "mount cgroup2"
        for controller in $(cat $R/sys/fs/cgroup/cgroup.controllers); do
            echo "+$controller" > $R/sys/fs/cgroup/cgroup.subtree_control || fail "enable $controller"
        done
        mount -t devtmpfs -o nosuid devtmpfs $R/dev || fail "mount devtmpfs"
        mkdir -p $R/dev/pts $R/dev/shm
        mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts || fail "mount devpts"
        for dir in /tmp /var/tmp /dev/shm; do
            mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R$dir" || fail "mount tmpfs $dir"
        done
        mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $R/run || fail "mount tmpfs /run"
        # A cold guest's first sandbox spec, handed over at boot (GuestPaths.bootSpec).
        if [ -f /boot-spec.json ]; then
            (umask 077; cp /boot-spec.json $R/run/sandboxd-boot-spec.json) || fail "copy the boot spec"
        fi
        mount -o remount,ro $R || fail "remount $R read-only"
        # The benchmark's baseline (sandboxd.raw=1): the same boot, then the command straight
        # from init, without agent, protocol or level-1 sandbox.
        if grep -q 'sandboxd.raw=1' /proc/cmdline; then
            stamp "root ready"
            chroot $R /usr/bin/uname -r
            stamp "command done"
            poweroff -f
        fi
        stamp "root ready"
        # A statically linked agent starts by itself; a dynamic one finds its private libraries
        # (the Swift runtime) next to it through the loader.
        agent="/lib64/ld-linux-x86-64.so.2 --library-path /.sandbox/lib /.sandbox/sandbox-guest"
        [ -e /agent-static ] && agent=/.sandbox/sandbox-guest
        umount /proc /sys
        # What switch_root does, minus deleting the initramfs's files first (≈1000 unlinks, 0.3-0.5 s
        # under TCG; its ≈6 MB stay in memory, hidden under the new root): move the new root over /
        # and enter it. The root is then the top of the mount stack, as after switch_root, so the
        # kernel does not see the agent as chrooted and pivot_root works for the level-1 sandbox.
        cd $R || fail "cd $R"
        mount --move . / || fail "move $R to /"
        exec chroot . $agent
        """#

    /// An empty file in the initramfs when the agent is statically linked (no `PT_INTERP`).
    static let staticAgentMarker = "agent-static"
}
