// Child side of sandbox creation and exec. See CLinuxSandbox.h for the rules this file keeps:
// async-signal-safe calls only, no allocation, every input prepared by Swift.
//
// Credentials are changed with raw syscalls on purpose: glibc's setresuid/setgroups broadcast the
// change to every thread it knows of, and after clone3 the child still believes it has the
// parent's threads.
#define _GNU_SOURCE
#include "CLinuxSandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

// ---------------------------------------------------------------------------------------------
// Reporting

/// Writes one report record; a short or failed write can only mean the parent is gone.
static void report(int fd, int32_t step, int32_t error, int32_t index, int32_t value) {
    struct sbx_report r = { step, error, index, value };
    ssize_t n;
    do { n = write(fd, &r, sizeof r); } while (n < 0 && errno == EINTR);
}

__attribute__((noreturn)) static void fail(int fd, int32_t step, int32_t index) {
    report(fd, step, errno, index, 0);
    _exit(127);
}

// ---------------------------------------------------------------------------------------------
// Mounts (creation only)

static int make_dir(const char *path) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    return -1;
}

static int make_file(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return errno == EEXIST ? 0 : -1;
    close(fd);
    return 0;
}

static int set_attr(const char *target, uint64_t attr, unsigned int flags) {
    if (attr == 0) return 0;
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = attr;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, target, flags, &a, sizeof a);
}

/// `openat2(O_PATH)` with `resolve` (AT_FDCWD: relative paths start at the new root).
static int open_path(const char *path, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
}

/// A path inside the new root, reached without any symlink (and never above the new root).
static int open_beneath(const char *target) {
    return open_path(target, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

/// Attaches the detached mount `tree` on the object `dst_fd` refers to.
static int attach(int tree, int dst_fd) {
    return (int)syscall(SYS_move_mount, tree, "", dst_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}

/// A bind whose source and target were each looked up once, without following any symlink:
/// a host symlink (even one swapped in after Swift checked the path) fails the sandbox (ELOOP)
/// instead of redirecting the bind to another host directory.
static void bind_nofollow(int rfd, const struct sbx_mount *m, int index) {
    int src = open_path(m->source, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
    if (src < 0) fail(rfd, SBX_STEP_MOUNT, index);
    if (((m->flags & SBX_MF_FILE) ? make_file(m->target) : make_dir(m->target)) < 0)
        fail(rfd, SBX_STEP_MKDIR, index);
    int dst = open_beneath(m->target);
    if (dst < 0) fail(rfd, SBX_STEP_MOUNT, index);
    int tree = (int)syscall(SYS_open_tree, src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    if (tree < 0) fail(rfd, SBX_STEP_MOUNT, index);
    if (m->attr_set != 0) {
        struct mount_attr a;
        memset(&a, 0, sizeof a);
        a.attr_set = m->attr_set;
        if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) < 0)
            fail(rfd, SBX_STEP_MOUNT_SETATTR, index);
    }
    if (attach(tree, dst) < 0) fail(rfd, SBX_STEP_MOUNT, index);
    close(tree);
    close(dst);
    close(src);
}

/// Hides what `m->target` is inside the new root, like runc's masked paths: an empty read-only
/// tmpfs over a directory, `/dev/null` over anything else. The target is looked up once, beneath
/// the new root, with no symlink on the way (ELOOP fails the sandbox: a mask must never land
/// somewhere else). Absent optional targets are skipped.
static void mask_path(int rfd, const struct sbx_mount *m, int index) {
    int optional = (m->flags & SBX_MF_OPTIONAL) != 0;
    int dst = open_beneath(m->target);
    if (dst < 0) {
        if (optional && errno == ENOENT) return;
        fail(rfd, SBX_STEP_MOUNT, index);
    }
    struct stat st;
    if (fstat(dst, &st) < 0) fail(rfd, SBX_STEP_MOUNT, index);
    int tree;
    if (S_ISDIR(st.st_mode)) {
        int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
        if (fs < 0) fail(rfd, SBX_STEP_MOUNT, index);
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "mode", "0555", 0) < 0
            || syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
            fail(rfd, SBX_STEP_MOUNT, index);
        tree = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
        if (tree < 0) fail(rfd, SBX_STEP_MOUNT, index);
        close(fs);
    } else {
        // /dev/null reads as empty and swallows writes, read-only or not (as runc does).
        tree = (int)syscall(SYS_open_tree, AT_FDCWD, m->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0) fail(rfd, SBX_STEP_MOUNT, index);
    }
    if (attach(tree, dst) < 0) fail(rfd, SBX_STEP_MOUNT, index);
    close(tree);
    close(dst);
}

/// Applies one entry of the mount plan. Returns normally or reports and exits.
static void apply_mount(int rfd, const struct sbx_mount *m, int index) {
    int optional = (m->flags & SBX_MF_OPTIONAL) != 0;
    switch (m->kind) {
    case SBX_MOUNT_MKDIR:
        if (make_dir(m->target) < 0) fail(rfd, SBX_STEP_MKDIR, index);
        return;

    case SBX_MOUNT_BIND:
        if (m->flags & SBX_MF_NOFOLLOW) {
            bind_nofollow(rfd, m, index);
            return;
        }
        if (((m->flags & SBX_MF_FILE) ? make_file(m->target) : make_dir(m->target)) < 0)
            fail(rfd, SBX_STEP_MKDIR, index);
        if (mount(m->source, m->target, NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (optional && errno == ENOENT) return;
            fail(rfd, SBX_STEP_MOUNT, index);
        }
        if (set_attr(m->target, m->attr_set, AT_RECURSIVE) < 0) fail(rfd, SBX_STEP_MOUNT_SETATTR, index);
        return;

    case SBX_MOUNT_TMPFS:
    case SBX_MOUNT_PROC:
    case SBX_MOUNT_DEVPTS: {
        static const char *const types[] = { [SBX_MOUNT_TMPFS] = "tmpfs", [SBX_MOUNT_PROC] = "proc",
                                             [SBX_MOUNT_DEVPTS] = "devpts" };
        const char *type = types[m->kind];
        if (make_dir(m->target) < 0) fail(rfd, SBX_STEP_MKDIR, index);
        if (mount(type, m->target, type, m->ms_flags, m->data) < 0) fail(rfd, SBX_STEP_MOUNT, index);
        if (set_attr(m->target, m->attr_set, 0) < 0) fail(rfd, SBX_STEP_MOUNT_SETATTR, index);
        return;
    }

    case SBX_MOUNT_SYMLINK:
        if (symlink(m->source, m->target) < 0) fail(rfd, SBX_STEP_SYMLINK, index);
        return;

    case SBX_MOUNT_WRITE_FILE: {
        int fd = open(m->target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) fail(rfd, SBX_STEP_WRITE_FILE, index);
        size_t done = 0;
        while (done < m->data_len) {
            ssize_t n = write(fd, m->data + done, m->data_len - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail(rfd, SBX_STEP_WRITE_FILE, index);
            done += (size_t)n;
        }
        close(fd);
        return;
    }

    case SBX_MOUNT_MASK:
        mask_path(rfd, m, index);
        return;

    case SBX_MOUNT_ATTACH:
        // The tree was cloned by the daemon before the clone, as host root: the sandbox's uid
        // never looks the host path up (it may lie below directories only root can walk).
        if (make_dir(m->target) < 0) fail(rfd, SBX_STEP_MKDIR, index);
        if (syscall(SYS_move_mount, m->tree_fd, "", AT_FDCWD, m->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            fail(rfd, SBX_STEP_MOUNT, index);
        if (set_attr(m->target, m->attr_set, AT_RECURSIVE) < 0) fail(rfd, SBX_STEP_MOUNT_SETATTR, index);
        return;

    case SBX_MOUNT_READONLY:
        if (mount(m->target, m->target, NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (optional && errno == ENOENT) return;
            fail(rfd, SBX_STEP_MOUNT, index);
        }
        if (set_attr(m->target, m->attr_set, AT_RECURSIVE) < 0) fail(rfd, SBX_STEP_MOUNT_SETATTR, index);
        return;

    default:
        errno = EINVAL;
        fail(rfd, SBX_STEP_MOUNT, index);
    }
}

/// Sets IFF_UP on "lo" with an ioctl: no helper process, no netlink library.
static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) { int e = errno; close(s); errno = e; return -1; }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) { int e = errno; close(s); errno = e; return -1; }
    close(s);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Final steps (creation and exec)

/// Becomes uid/gid 0 of the sandbox's user namespace (an unprivileged id on the host) with no
/// supplementary groups: the daemon's own groups (root's) must not follow the child in.
static void become_sandbox_root(int rfd) {
    if (syscall(SYS_setgroups, 0, NULL) < 0) fail(rfd, SBX_STEP_SETGROUPS, -1);
    if (syscall(SYS_setresgid, 0, 0, 0) < 0) fail(rfd, SBX_STEP_SETRESGID, -1);
    if (syscall(SYS_setresuid, 0, 0, 0) < 0) fail(rfd, SBX_STEP_SETRESUID, -1);
}

static int move_high(int fd) {
    return fd < 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

/// Drops every privilege, in this order: securebits locked (needs CAP_SETPCAP), bounding set
/// emptied (also needs it), ambient cleared, permitted/effective/inheritable zeroed, then
/// no_new_privs; then the seccomp filter, last, because it forbids what came before.
static void lock_down(int rfd, const struct sock_fprog *seccomp) {
    if (prctl(PR_SET_SECUREBITS,
              SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
              SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
              0, 0, 0) < 0)
        fail(rfd, SBX_STEP_SECUREBITS, -1);
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL) break;   // past CAP_LAST_CAP
            fail(rfd, SBX_STEP_CAPBSET_DROP, cap);
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) fail(rfd, SBX_STEP_CAP_AMBIENT, -1);
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) < 0) fail(rfd, SBX_STEP_CAPSET, -1);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(rfd, SBX_STEP_NO_NEW_PRIVS, -1);
    if (seccomp && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, seccomp) < 0)
        fail(rfd, SBX_STEP_SECCOMP, -1);
}

/// The last steps before exec. `locked`: the caller already ran lock_down and this process
/// inherited it (the one-shot payload); everything left is allowed by the filter.
__attribute__((noreturn)) static void finish_and_exec(int rfd, const struct sbx_final *f, int locked) {
    // stdio: first move every source above 2 so one dup2 cannot clobber another's source.
    int in = f->stdin_fd >= 0 ? move_high(f->stdin_fd) : open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = f->stdout_fd >= 0 ? move_high(f->stdout_fd) : open("/dev/null", O_WRONLY | O_CLOEXEC);
    int err = f->stderr_fd >= 0 ? move_high(f->stderr_fd) : open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (in < 0 || out < 0 || err < 0) fail(rfd, SBX_STEP_DUP_STDIO, -1);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) fail(rfd, SBX_STEP_DUP_STDIO, -1);

    // A new session: no controlling terminal of the daemon's reachable via /dev/tty (TIOCSTI).
    if (setsid() < 0) fail(rfd, SBX_STEP_SETSID, -1);

    if (f->cwd && chdir(f->cwd) < 0) fail(rfd, SBX_STEP_CHDIR, -1);

    for (int i = 0; i < f->nrlimits; i++) {
        struct rlimit rl = { (rlim_t)f->rlimits[i].soft, (rlim_t)f->rlimits[i].hard };
        if (setrlimit((__rlimit_resource_t)f->rlimits[i].resource, &rl) < 0) fail(rfd, SBX_STEP_RLIMIT, i);
    }

    // Handlers the daemon installed are reset by execve; ignored signals (SIGPIPE) are not.
    // The init alone ignores SIGCHLD: the kernel then reaps the orphans reparented to it.
    struct sigaction act;
    memset(&act, 0, sizeof act);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        act.sa_handler = (sig == SIGCHLD && f->ignore_sigchld) ? SIG_IGN : SIG_DFL;
        (void)sigaction(sig, &act, NULL);   // glibc-internal signals answer EINVAL: harmless
    }

    // Every fd but stdio closes at exec (the report pipe and the exec fd must live until then).
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) fail(rfd, SBX_STEP_CLOSE_FDS, -1);

    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) fail(rfd, SBX_STEP_SIGNALS, -1);

    if (!locked) lock_down(rfd, f->seccomp);

    // From here on only write (report), execve and exit_group are needed.
    if (f->exec_fd >= 0) {
        syscall(SYS_execveat, f->exec_fd, "", f->argv, f->envp, AT_EMPTY_PATH);
        fail(rfd, SBX_STEP_EXEC, -1);
    }
    int saved = ENOENT, saved_index = 0;
    for (int i = 0; i < f->nexec_paths; i++) {
        execve(f->exec_paths[i], f->argv, f->envp);
        if (errno == ENOENT || errno == ENOTDIR) continue;
        saved = errno;
        saved_index = i;
        if (errno != EACCES) break;   // like execvp: keep looking after EACCES, stop otherwise
    }
    errno = saved;
    fail(rfd, SBX_STEP_EXEC, saved_index);
}

/// What a one-shot PID 1, and the first process of an exec, do once the payload runs: hold
/// nothing, do nothing, reap whatever reaches them (a PID 1 gets the sandbox's orphans) and write
/// how the payload ended on `status_fd`. A PID 1's exit ends the pid namespace.
__attribute__((noreturn)) static void await_payload(int rfd, int status_fd, pid_t payload) {
    // The payload holds its own copy of the report pipe until exec; ours must go for EOF.
    // Everything but the status pipe goes, stdio included (or the command's output would not
    // end before we do).
    int keep = move_high(status_fd);
    if (keep < 0) fail(rfd, SBX_STEP_CLOSE_FDS, -1);
    (void)syscall(SYS_close_range, 0U, (unsigned)keep - 1, 0U);
    (void)syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U);
    rfd = -1;

    struct sbx_exit result;
    memset(&result, 0, sizeof result);
    for (;;) {
        int st = 0;
        struct rusage ru;
        pid_t pid = wait4(-1, &st, 0, &ru);
        if (pid < 0) {
            if (errno == EINTR) continue;
            _exit(125);   // ECHILD: cannot happen while the payload is unreaped
        }
        if (pid != payload) continue;   // an orphan
        if (WIFEXITED(st)) { result.code = CLD_EXITED; result.status = WEXITSTATUS(st); }
        else { result.code = WCOREDUMP(st) ? CLD_DUMPED : CLD_KILLED; result.status = WTERMSIG(st); }
        result.maxrss_kib = ru.ru_maxrss;
        result.utime_usec = ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec;
        result.stime_usec = ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec;
        ssize_t n;
        do { n = write(keep, &result, sizeof result); } while (n < 0 && errno == EINTR);
        _exit(0);
    }
}

/// A clone of the daemon (an exec) or of the spawner (a one-shot PID 1) about to become visible
/// inside a sandbox: /proc/<pid>/cmdline and comm are readable by anyone in the pid namespace, so
/// blank the command line we were cloned with (our copy of it), rename the thread, and make the
/// process non-dumpable explicitly (not relying on fs.suid_dumpable) so its memory and
/// environment stay closed.
static void hide_daemon(int rfd, char *argv_area, size_t argv_area_len, const char *name) {
    size_t name_len = strlen(name) + 1;
    if (argv_area && argv_area_len > name_len) {
        memset(argv_area, 0, argv_area_len);
        memcpy(argv_area, name, name_len);
    }
    (void)prctl(PR_SET_NAME, name, 0, 0, 0);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) fail(rfd, SBX_STEP_DUMPABLE, -1);
}

// ---------------------------------------------------------------------------------------------
// Sandbox creation child

__attribute__((noreturn)) static void create_child(const struct sbx_create_config *c, int sync_read, int rfd) {
    // Cloned by the spawner, whose SIGCHLD carries SA_NOCLDWAIT: a one-shot PID 1 must see its
    // payload's end (signals are blocked; nothing can arrive meanwhile).
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    (void)sigaction(SIGCHLD, &dfl, NULL);
    // First what needs no uid/gid map, while the parent writes them (usually done by the time
    // we ask, so the read below does not sleep).
    // Nothing we mount may propagate back to the host.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(rfd, SBX_STEP_MAKE_PRIVATE, -1);
    if (c->hostname && sethostname(c->hostname, strlen(c->hostname)) < 0) fail(rfd, SBX_STEP_SETHOSTNAME, -1);
    if (c->bring_up_loopback && loopback_up() < 0) fail(rfd, SBX_STEP_LOOPBACK, -1);

    // Wait until the parent has written uid_map/gid_map: before that our ids are unmapped and
    // nothing we create could be owned by anyone.
    char go = 0;
    ssize_t n;
    do { n = read(sync_read, &go, 1); } while (n < 0 && errno == EINTR);
    if (n != 1) {
        if (n == 0) _exit(127);   // the parent gave up; it already knows why
        fail(rfd, SBX_STEP_WAIT_PARENT, -1);
    }
    close(sync_read);

    // Still host root's ids here, so the way to the daemon's state directory is open whatever its
    // mode; the root tmpfs is owned by root inside ("uid=0" is read in our user namespace).
    if (mount("tmpfs", c->new_root, "tmpfs", MS_NOSUID | MS_NODEV, c->new_root_options) < 0)
        fail(rfd, SBX_STEP_ROOT_TMPFS, -1);
    if (chdir(c->new_root) < 0) fail(rfd, SBX_STEP_ROOT_TMPFS, -1);

    // From here on the sandbox's own ids: every host path a mount names is looked up with the
    // permissions of the sandbox's unprivileged host uid. Targets are relative to the new root.
    become_sandbox_root(rfd);
    for (int i = 0; i < c->nmounts; i++) apply_mount(rfd, &c->mounts[i], i);

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching the top mount
    // leaves only the new root, with no path back to the host's.
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail(rfd, SBX_STEP_PIVOT_ROOT, -1);
    if (umount2(".", MNT_DETACH) < 0) fail(rfd, SBX_STEP_DETACH_OLD_ROOT, -1);
    if (chdir("/") < 0) fail(rfd, SBX_STEP_DETACH_OLD_ROOT, -1);
    if (set_attr("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0) < 0)
        fail(rfd, SBX_STEP_ROOT_READONLY, -1);

    if (c->run_payload) {
        // /proc/1/cmdline is readable inside: show a name, not the spawner's arguments. Done
        // before the payload exists, so it can never see them. (The payload's argv lives in
        // the config, not in this area.)
        // Not dumpable: the payload (same uid) cannot reach this process's memory via /proc.
        hide_daemon(rfd, c->argv_area, c->argv_area_len, "sandboxd-init");
        // Locked down once, here, before the payload exists: it inherits the empty capability
        // sets, securebits, no_new_privs and the filter (one filter attached, not two).
        lock_down(rfd, c->payload.seccomp);
        // vfork: the payload borrows our memory until its exec instead of copying the page
        // tables of a daemon-sized address space; it touches only its own stack frames.
        pid_t pid = vfork();
        if (pid == 0) finish_and_exec(rfd, &c->payload, 1);
        if (pid < 0) fail(rfd, SBX_STEP_FORK, -1);
        await_payload(rfd, c->status_fd, pid);
    }
    finish_and_exec(rfd, &c->final, 0);
}

// ---------------------------------------------------------------------------------------------
// Exec child

struct exec_payload_args {
    const struct sbx_exec_config *config;
    int rfd;
};

/// Descriptors an exec child keeps (above 2), ascending, found by the parent before the clone.
struct exec_keep {
    int fds[7];
    int count;
};

/// Closes every descriptor above 2 except `keep`'s: the spawner's own (its socket to the engine
/// must close when the spawner exits, whatever the exec child does meanwhile) and the other
/// requests' copies.
static void close_all_but(int rfd, const struct exec_keep *keep) {
    unsigned next = 3;
    for (int i = 0; i < keep->count; i++) {
        unsigned fd = (unsigned)keep->fds[i];
        if (fd > next && syscall(SYS_close_range, next, fd - 1, 0) < 0) fail(rfd, SBX_STEP_CLOSE_FDS, -1);
        next = fd + 1;
    }
    if (syscall(SYS_close_range, next, ~0U, 0) < 0) fail(rfd, SBX_STEP_CLOSE_FDS, -1);
}

/// The descriptors `exec_child` uses, ascending and without duplicates (stdio 0–2 is never closed).
static void exec_keep_list(const struct sbx_exec_config *c, int rfd, struct exec_keep *keep) {
    int candidates[7] = { c->init_pidfd, rfd, c->final.stdin_fd, c->final.stdout_fd, c->final.stderr_fd,
                          c->final.exec_fd, c->status_fd };
    keep->count = 0;
    for (int i = 0; i < 7; i++) {
        int fd = candidates[i];
        if (fd < 3) continue;
        int at = keep->count;
        while (at > 0 && keep->fds[at - 1] > fd) at--;
        if (at > 0 && keep->fds[at - 1] == fd) continue;
        for (int j = keep->count; j > at; j--) keep->fds[j] = keep->fds[j - 1];
        keep->fds[at] = fd;
        keep->count++;
    }
}

static int exec_payload(void *arg) {
    const struct exec_payload_args *a = arg;
    // Only the command takes the sandbox's ids: the waiter that started it keeps ours, so it is
    // no process of the sandbox's uid (RLIMIT_NPROC) and nothing running as that uid can signal it.
    become_sandbox_root(a->rfd);
    finish_and_exec(a->rfd, &a->config->final, 0);
}

__attribute__((noreturn)) static void exec_child(const struct sbx_exec_config *c, int rfd, const struct exec_keep *keep) {
    close_all_but(rfd, keep);
    // Cloned by the spawner, whose SIGCHLD carries SA_NOCLDWAIT: we wait for the command ourselves
    // (signals are blocked; nothing can arrive meanwhile).
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    (void)sigaction(SIGCHLD, &dfl, NULL);
    // Before anything of the sandbox can see us or the command's process (which shares this
    // memory and inherits the name and dumpable flag).
    hide_daemon(rfd, c->argv_area, c->argv_area_len, "sandboxd-exec");
    // One call joins every namespace of the init atomically (kernel >= 5.8). The pid namespace
    // applies to our children only, hence the fork below.
    if (setns(c->init_pidfd, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                                 CLONE_NEWCGROUP | CLONE_NEWPID) < 0)
        fail(rfd, SBX_STEP_SETNS, -1);

    // CLONE_VM: the payload runs on its own stack in our memory until its exec. Our frame (holding
    // `args`) stays untouched until then: from here on we only report, close descriptors and wait.
    // We stay outside the sandbox's pid namespace, so nothing inside can see or signal us.
    struct exec_payload_args args = { c, rfd };
    int pid = clone(exec_payload, (char *)c->stack + c->stack_size, CLONE_VM | SIGCHLD, &args);
    if (pid < 0) fail(rfd, SBX_STEP_FORK, -1);
    report(rfd, SBX_STEP_NONE, 0, -1, (int32_t)pid);
    await_payload(rfd, c->status_fd, pid);
}

// ---------------------------------------------------------------------------------------------
// Parent side

static long clone3_into(uint64_t flags, int cgroup_fd, int *pidfd) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags | CLONE_PIDFD | CLONE_INTO_CGROUP;
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)cgroup_fd;
    return syscall(SYS_clone3, &args, sizeof args);
}

int sbx_spawn_create(const struct sbx_create_config *config, struct sbx_spawned *out) {
    out->pid = -1; out->pidfd = -1; out->sync_fd = -1; out->report_fd = -1;
    int report_pipe[2], sync_pipe[2];
    if (pipe2(report_pipe, O_CLOEXEC) < 0) return -errno;
    if (pipe2(sync_pipe, O_CLOEXEC) < 0) {
        int e = errno; close(report_pipe[0]); close(report_pipe[1]); return -e;
    }
    // Signals stay blocked in the child until its last step, so no handler of the daemon's
    // runs in a half-built sandbox.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    long pid = clone3_into(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC |
                           CLONE_NEWUTS | CLONE_NEWCGROUP, config->cgroup_fd, &pidfd);
    if (pid == 0) {
        close(sync_pipe[1]);
        close(report_pipe[0]);
        create_child(config, sync_pipe[0], report_pipe[1]);
    }
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(sync_pipe[0]);
    close(report_pipe[1]);
    if (pid < 0) {
        close(sync_pipe[1]); close(report_pipe[0]);
        return -e;
    }
    out->pid = (int)pid; out->pidfd = pidfd; out->sync_fd = sync_pipe[1]; out->report_fd = report_pipe[0];
    return 0;
}

int sbx_spawn_exec(const struct sbx_exec_config *config, struct sbx_spawned *out) {
    out->pid = -1; out->pidfd = -1; out->sync_fd = -1; out->report_fd = -1;
    int report_pipe[2];
    if (pipe2(report_pipe, O_CLOEXEC) < 0) return -errno;
    struct exec_keep keep;
    exec_keep_list(config, report_pipe[1], &keep);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    long pid = clone3_into(0, config->cgroup_fd, &pidfd);
    if (pid == 0) exec_child(config, report_pipe[1], &keep);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report_pipe[1]);
    if (pid < 0) { close(report_pipe[0]); return -e; }
    out->pid = (int)pid; out->pidfd = pidfd; out->report_fd = report_pipe[0];
    return 0;
}

int sbx_waitid_pidfd(int pidfd, int options, int *code, int *status, int *pid, long *maxrss_kib,
                     long *utime_usec, long *stime_usec) {
    siginfo_t info;
    struct rusage ru;
    memset(&info, 0, sizeof info);
    memset(&ru, 0, sizeof ru);
    long r;
    do { r = syscall(SYS_waitid, P_PIDFD, pidfd, &info, options, &ru); } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    *code = info.si_code;
    *status = info.si_status;
    *pid = info.si_pid;
    *maxrss_kib = ru.ru_maxrss;
    *utime_usec = ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec;
    *stime_usec = ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec;
    return 0;
}

int sbx_open_tree(const char *path) {
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    return fd < 0 ? -errno : fd;
}

int sbx_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct { uint64_t flags, mode, resolve; } how = { flags, mode, resolve };
    long r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return r < 0 ? -errno : (int)r;
}

int sbx_pidfd_send_signal(int pidfd, int sig) {
    long r = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    return r < 0 ? -errno : 0;
}

int sbx_pidfd_open(int pid) {
    long r = syscall(SYS_pidfd_open, pid, 0);
    return r < 0 ? -errno : (int)r;
}

long long sbx_statfs_type(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) < 0) return -errno;
    return (long long)fs.f_type;
}

int sbx_memfd(const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int sbx_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0;
}

int sbx_setfsuid(unsigned int uid) { return (int)syscall(SYS_setfsuid, uid); }
int sbx_setfsgid(unsigned int gid) { return (int)syscall(SYS_setfsgid, gid); }
