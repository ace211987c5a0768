/*
 * hostile: the attacks the hostile tests run inside a level-1 sandbox.
 *
 * One multi-call program, compiled by the tests with the host's `cc`:  hostile <case> [args...]
 * Every attempt prints one line `name=RESULT` where RESULT is `OK` (the call succeeded: the
 * sandbox did NOT stop it) or the errno name (`EPERM`, `ENOENT`, ...). Informational lines
 * use `name:value`. The Swift tests parse these lines and decide; this program decides nothing.
 *
 * Attempts are shaped so that they would be harmless even if the sandbox let them through
 * (same value written back, bad magic numbers, help-only sysrq, no-op chmod), so a broken
 * sandbox is detected without damaging the host the tests run on. The one exception is
 * `killall`, which refuses to run unless it can see that it is inside its own pid namespace.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/io_uring.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <mqueue.h>
#include <linux/vm_sockets.h>
#include <termios.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef TIOCLINUX
#define TIOCLINUX 0x541C
#endif

/* ---------- reporting ---------- */

static const char *errname(int e) {
    const char *name = strerrorname_np(e);
    return name ? name : "E?";
}

/* Reports a libc-style result: rc == -1 means failure with errno. */
static void report(const char *name, long rc) {
    if (rc == -1) printf("%s=%s\n", name, errname(errno));
    else printf("%s=OK\n", name);
}

static void info(const char *name, const char *value) { printf("%s:%s\n", name, value); }

/* Prints bytes with anything unusual escaped, so file contents can travel on one line. */
static void info_bytes(const char *name, const unsigned char *buf, ssize_t n) {
    printf("%s:", name);
    for (ssize_t i = 0; i < n; i++) {
        unsigned char c = buf[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') putchar(c);
        else printf("\\x%02x", c);
    }
    putchar('\n');
}

/* Opens and reads up to 256 bytes of a file, reporting `name=` for the open and printing what was read. */
static void try_read(const char *name, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) { report(name, -1); return; }
    unsigned char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) { printf("%s=OK\n", name); char k[128]; snprintf(k, sizeof k, "%s_read", name); report(k, -1); }
    else {
        printf("%s=OK\n", name);
        char k[128]; snprintf(k, sizeof k, "%s_content", name);
        info_bytes(k, buf, n);
    }
    close(fd);
}

/* Opens a file for writing without writing anything (harmless even if allowed). */
static void try_open_write(const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
    report(name, fd);
    if (fd >= 0) close(fd);
}

/* Reads a small file into buf (NUL-terminated); returns length or -1. */
static ssize_t slurp(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    int saved = errno;
    close(fd);
    errno = saved;
    if (n < 0) return -1;
    buf[n] = 0;
    return n;
}

/* Writes back the value a /proc/sys file already has: proves write access, changes nothing. */
static void write_same(const char *name, const char *path) {
    char current[4096];
    ssize_t n = slurp(path, current, sizeof current);
    if (n < 0) { report(name, -1); return; }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { report(name, -1); return; }
    ssize_t w = write(fd, current, (size_t)n);
    close(fd);
    report(name, w < 0 ? -1 : 0);
}

/* Runs fn in a forked child so that a call that succeeds cannot change the rest of the run. */
static void in_child(void (*fn)(void *), void *arg) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) { fn(arg); fflush(stdout); _exit(0); }
    if (pid > 0) waitpid(pid, NULL, 0);
    else report("fork", -1);
}

static pid_t spawn_sleeper(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) { for (;;) pause(); }
    return pid;
}

static void reap(pid_t pid) {
    if (pid > 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); }
}

static pid_t arg_pid(int argc, char **argv, int i) {
    if (argc <= i) { fprintf(stderr, "missing pid argument\n"); exit(64); }
    return (pid_t)atoi(argv[i]);
}

static const char *arg_str(int argc, char **argv, int i) {
    if (argc <= i) { fprintf(stderr, "missing argument %d\n", i); exit(64); }
    return argv[i];
}

/* ---------- mount family ---------- */

static int case_mount(int argc, char **argv) {
    (void)argc; (void)argv;
    mkdir("/tmp/hostile-mnt", 0755);
    report("mount_tmpfs", mount("none", "/tmp/hostile-mnt", "tmpfs", 0, "size=1m"));
    report("mount_bind_usr", mount("/usr", "/tmp/hostile-mnt", NULL, MS_BIND, NULL));
    report("remount_usr_rw", mount(NULL, "/usr", NULL, MS_REMOUNT | MS_BIND, NULL));
    report("mount_proc", mount("proc", "/tmp/hostile-mnt", "proc", 0, NULL));
    report("mount_make_shared", mount(NULL, "/", NULL, MS_SHARED | MS_REC, NULL));
    report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    report("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/usr", OPEN_TREE_CLONE));
    report("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/usr", 0, NULL, 0));
    return 0;
}

static int case_cgroup_release_agent(int argc, char **argv) {
    (void)argc; (void)argv;
    /* CVE-2022-0492 shape: mount a v1 hierarchy, set release_agent, get it run on the host. */
    mkdir("/tmp/hostile-cg", 0755);
    report("mount_cgroup_v1", mount("cgroup", "/tmp/hostile-cg", "cgroup", 0, "rdma"));
    report("mount_cgroup_v1_memory", mount("cgroup", "/tmp/hostile-cg", "cgroup", 0, "memory"));
    report("mount_cgroup2", mount("cgroup2", "/tmp/hostile-cg", "cgroup2", 0, NULL));
    try_open_write("release_agent_open", "/tmp/hostile-cg/release_agent");
    try_open_write("sys_release_agent_open", "/sys/fs/cgroup/release_agent");
    return 0;
}

static int case_umount_root(int argc, char **argv) {
    (void)argc; (void)argv;
    report("umount_root", umount2("/", MNT_DETACH));
    report("umount_proc", umount2("/proc", MNT_DETACH));
    report("umount_usr", umount2("/usr", MNT_DETACH));
    return 0;
}

static int case_pivot_root(int argc, char **argv) {
    (void)argc; (void)argv;
    mkdir("/tmp/hostile-pr", 0755);
    report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp/hostile-pr"));
    report("pivot_root_dot", syscall(SYS_pivot_root, ".", "."));
    return 0;
}

/* ---------- namespaces ---------- */

static void try_unshare(void *arg) {
    const struct { const char *name; int flag; } *u = arg;
    report(u->name, unshare(u->flag));
}

static void try_clone(void *arg) {
    const struct { const char *name; int flag; } *u = arg;
    long rc = syscall(SYS_clone, (unsigned long)(u->flag | SIGCHLD), NULL, NULL, NULL, 0);
    if (rc == 0) _exit(0);
    if (rc > 0) waitpid((pid_t)rc, NULL, 0);
    report(u->name, rc);
}

struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static void try_clone3(void *arg) {
    const struct { const char *name; int flag; } *u = arg;
    struct clone_args_v0 ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = (uint64_t)u->flag;
    ca.exit_signal = SIGCHLD;
    long rc = syscall(SYS_clone3, &ca, sizeof ca);
    if (rc == 0) _exit(0);
    if (rc > 0) waitpid((pid_t)rc, NULL, 0);
    report(u->name, rc);
}

static int case_unshare(int argc, char **argv) {
    (void)argc; (void)argv;
    static const struct { const char *name; int flag; } flags[] = {
        {"unshare_user", CLONE_NEWUSER}, {"unshare_mount", CLONE_NEWNS}, {"unshare_net", CLONE_NEWNET},
        {"unshare_pid", CLONE_NEWPID}, {"unshare_ipc", CLONE_NEWIPC}, {"unshare_uts", CLONE_NEWUTS},
        {"unshare_cgroup", CLONE_NEWCGROUP}, {"unshare_time", CLONE_NEWTIME},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) in_child(try_unshare, (void *)&flags[i]);
    static const struct { const char *name; int flag; } clones[] = {
        {"clone_newuser", CLONE_NEWUSER}, {"clone_newnet", CLONE_NEWNET}, {"clone_newns", CLONE_NEWNS},
        {"clone_newpid", CLONE_NEWPID},
    };
    for (size_t i = 0; i < sizeof clones / sizeof clones[0]; i++) in_child(try_clone, (void *)&clones[i]);
    static const struct { const char *name; int flag; } clones3[] = {
        {"clone3_newuser", CLONE_NEWUSER}, {"clone3_newnet", CLONE_NEWNET},
    };
    for (size_t i = 0; i < sizeof clones3 / sizeof clones3[0]; i++) in_child(try_clone3, (void *)&clones3[i]);
    return 0;
}

static int case_setns(int argc, char **argv) {
    pid_t host = arg_pid(argc, argv, 2);
    static const char *kinds[] = {"mnt", "net", "user", "pid", "uts", "ipc", "cgroup"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char path[128], name[128];
        snprintf(path, sizeof path, "/proc/1/ns/%s", kinds[i]);
        snprintf(name, sizeof name, "open_ns1_%s", kinds[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        report(name, fd);
        if (fd >= 0) {
            snprintf(name, sizeof name, "setns_ns1_%s", kinds[i]);
            report(name, setns(fd, 0));
            close(fd);
        }
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)host, kinds[i]);
        snprintf(name, sizeof name, "open_nshost_%s", kinds[i]);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        report(name, fd);
        if (fd >= 0) {
            snprintf(name, sizeof name, "setns_nshost_%s", kinds[i]);
            report(name, setns(fd, 0));
            close(fd);
        }
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        /* Our own namespaces: always openable, so setns itself is what gets tested. */
        char path[128], name[128];
        snprintf(path, sizeof path, "/proc/self/ns/%s", kinds[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(name, sizeof name, "open_nsself_%s", kinds[i]);
        report(name, fd);
        if (fd >= 0) {
            snprintf(name, sizeof name, "setns_nsself_%s", kinds[i]);
            report(name, setns(fd, 0));
            close(fd);
        }
    }
    long pidfd = syscall(SYS_pidfd_open, 1, 0);
    report("pidfd_open_init", pidfd);
    if (pidfd >= 0) {
        report("setns_pidfd_init", setns((int)pidfd, CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS));
        close((int)pidfd);
    }
    report("pidfd_open_host", syscall(SYS_pidfd_open, host, 0));
    return 0;
}

/* ---------- other processes ---------- */

static int case_ptrace(int argc, char **argv) {
    pid_t host = arg_pid(argc, argv, 2);
    long rc = ptrace(PTRACE_ATTACH, host, NULL, NULL);
    report("ptrace_attach_host", rc);
    if (rc == 0) { waitpid(host, NULL, __WALL); ptrace(PTRACE_DETACH, host, NULL, NULL); }
    rc = ptrace(PTRACE_SEIZE, host, NULL, NULL);
    report("ptrace_seize_host", rc);
    if (rc == 0) ptrace(PTRACE_DETACH, host, NULL, NULL);

    pid_t sibling = spawn_sleeper();
    rc = ptrace(PTRACE_ATTACH, sibling, NULL, NULL);
    report("ptrace_attach_sibling", rc);
    if (rc == 0) { waitpid(sibling, NULL, __WALL); ptrace(PTRACE_DETACH, sibling, NULL, NULL); }
    reap(sibling);

    rc = ptrace(PTRACE_ATTACH, 1, NULL, NULL);
    report("ptrace_attach_init", rc);
    if (rc == 0) { waitpid(1, NULL, __WALL); ptrace(PTRACE_DETACH, 1, NULL, NULL); }

    fflush(stdout);
    pid_t child = fork();
    if (child == 0) { report("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL)); fflush(stdout); _exit(0); }
    waitpid(child, NULL, 0);
    return 0;
}

static char vm_target[16] = "hostile-vm-data";

static int case_process_vm(int argc, char **argv) {
    pid_t host = arg_pid(argc, argv, 2);
    char buf[16];
    struct iovec local = {buf, sizeof buf}, remote = {vm_target, sizeof vm_target};
    report("vm_readv_host", process_vm_readv(host, &local, 1, &remote, 1, 0));
    pid_t sibling = spawn_sleeper();
    report("vm_readv_sibling", process_vm_readv(sibling, &local, 1, &remote, 1, 0));
    report("vm_writev_sibling", process_vm_writev(sibling, &local, 1, &remote, 1, 0));
    reap(sibling);
    report("vm_readv_init", process_vm_readv(1, &local, 1, &remote, 1, 0));
    int fd = open("/proc/1/mem", O_RDONLY | O_CLOEXEC);
    report("proc_mem_init", fd);
    if (fd >= 0) close(fd);
    return 0;
}

static int case_kill(int argc, char **argv) {
    pid_t host = arg_pid(argc, argv, 2);
    report("kill0_host", kill(host, 0));
    report("kill_host", kill(host, SIGKILL));
    report("pidfd_open_host", syscall(SYS_pidfd_open, host, 0));
    return 0;
}

static int count_pids(void) {
    DIR *d = opendir("/proc");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] >= '0' && e->d_name[0] <= '9') n++;
    closedir(d);
    return n;
}

/* kill(-1, SIGKILL): only after proving, in this very process, that we are in a small pid namespace. */
static int case_killall(int argc, char **argv) {
    (void)argc; (void)argv;
    int pids = count_pids();
    char n[32];
    snprintf(n, sizeof n, "%d", pids); info("proc_pids", n);
    snprintf(n, sizeof n, "%d", (int)getpid()); info("self_pid", n);
    if (pids < 1 || pids > 16 || getpid() > 1000) {
        info("precheck", "refused: this does not look like a private pid namespace");
        return 3;
    }
    info("precheck", "ok");
    pid_t sibling = spawn_sleeper();
    report("kill_all", kill(-1, SIGKILL));
    int status = 0;
    pid_t w = waitpid(sibling, &status, 0);
    if (w == sibling && WIFSIGNALED(status)) info("sibling", "killed");
    else info("sibling", "alive");
    reap(sibling);
    info("after_kill", "alive");
    return 0;
}

/* ---------- kernel interfaces ---------- */

static int case_bpf(int argc, char **argv) {
    (void)argc; (void)argv;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    report("bpf_map_create", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    struct bpf_insn insns[2];
    memset(insns, 0, sizeof insns);
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
    insns[1].code = BPF_JMP | BPF_EXIT;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t)"GPL";
    report("bpf_prog_load", syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
    return 0;
}

static int case_perf(int argc, char **argv) {
    (void)argc; (void)argv;
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_SOFTWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_SW_CPU_CLOCK;
    a.disabled = 1;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    report("perf_event_open_self", syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
    a.type = PERF_TYPE_HARDWARE;
    a.config = PERF_COUNT_HW_CPU_CYCLES;
    report("perf_event_open_cpu", syscall(SYS_perf_event_open, &a, -1, 0, -1, 0));
    return 0;
}

static int case_kexec(int argc, char **argv) {
    (void)argc; (void)argv;
    /* Invalid flags: even a kernel that let this through would refuse to load anything. */
    report("kexec_load", syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0xdead0000UL));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 0xdead0000UL));
    return 0;
}

static int case_module(int argc, char **argv) {
    (void)argc; (void)argv;
    report("init_module", syscall(SYS_init_module, NULL, 0UL, ""));
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    report("finit_module", syscall(SYS_finit_module, fd, "", 0));
    if (fd >= 0) close(fd);
    report("delete_module", syscall(SYS_delete_module, "hostile_none", O_NONBLOCK));
    return 0;
}

static int case_keyring(int argc, char **argv) {
    (void)argc; (void)argv;
    report("add_key", syscall(SYS_add_key, "user", "hostile", "x", 1UL, KEY_SPEC_SESSION_KEYRING));
    report("keyctl_join_session", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL));
    report("keyctl_get_user_keyring", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
    report("request_key", syscall(SYS_request_key, "user", "hostile-none", NULL, 0));
    return 0;
}

static int case_userfaultfd(int argc, char **argv) {
    (void)argc; (void)argv;
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    report("userfaultfd", fd);
    if (fd >= 0) close((int)fd);
    fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
    report("userfaultfd_user_mode_only", fd);
    if (fd >= 0) close((int)fd);
    fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    report("dev_userfaultfd", fd);
    if (fd >= 0) close((int)fd);
    return 0;
}

struct handle8 {
    unsigned int handle_bytes;
    int handle_type;
    unsigned char f_handle[128];
};

static void list_dir_fd(const char *name, int fd) {
    DIR *d = fdopendir(fd);
    if (!d) { report(name, -1); return; }
    printf("%s:", name);
    struct dirent *e;
    while ((e = readdir(d))) printf("%s,", e->d_name);
    putchar('\n');
    closedir(d);
}

/* The "shocker" exploit: open_by_handle_at with a guessed handle (inode 2 = the filesystem root). */
static int case_shocker(int argc, char **argv) {
    (void)argc; (void)argv;
    int mountfd = open("/usr", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    report("open_usr", mountfd);
    struct handle8 h;
    memset(&h, 0, sizeof h);
    h.handle_bytes = 8;
    h.handle_type = 1; /* FILEID_INO32_GEN */
    uint32_t ino = 2, gen = 0;
    memcpy(h.f_handle, &ino, 4);
    memcpy(h.f_handle + 4, &gen, 4);
    int fd = open_by_handle_at(mountfd, (struct file_handle *)&h, O_RDONLY | O_DIRECTORY);
    report("open_by_handle_at", fd);
    if (fd >= 0) list_dir_fd("escaped_root_listing", fd);

    struct handle8 real;
    memset(&real, 0, sizeof real);
    real.handle_bytes = sizeof real.f_handle;
    int mount_id = 0;
    long rc = name_to_handle_at(AT_FDCWD, "/usr/bin", (struct file_handle *)&real, &mount_id, 0);
    report("name_to_handle_at", rc);
    if (rc == 0) {
        fd = open_by_handle_at(mountfd, (struct file_handle *)&real, O_RDONLY | O_DIRECTORY);
        report("open_by_handle_at_real", fd);
        if (fd >= 0) close(fd);
    }
    return 0;
}

static int case_proc_sys(int argc, char **argv) {
    const char *host_hostname = arg_str(argc, argv, 2);
    struct utsname u;
    uname(&u);
    info("nodename", u.nodename);
    if (strcmp(u.nodename, host_hostname) == 0) {
        /* No UTS namespace: writing a new name would rename the host. Prove write access harmlessly. */
        info("uts", "shared-with-host");
        write_same("procsys_hostname", "/proc/sys/kernel/hostname");
    } else {
        int fd = open("/proc/sys/kernel/hostname", O_WRONLY | O_CLOEXEC);
        if (fd < 0) report("procsys_hostname", -1);
        else { report("procsys_hostname", write(fd, "hostile-pwned", 13) < 0 ? -1 : 0); close(fd); }
    }
    write_same("procsys_core_pattern", "/proc/sys/kernel/core_pattern");
    write_same("procsys_modprobe", "/proc/sys/kernel/modprobe");
    write_same("procsys_sysrq", "/proc/sys/kernel/sysrq");
    write_same("procsys_panic", "/proc/sys/kernel/panic");
    write_same("procsys_ip_forward", "/proc/sys/net/ipv4/ip_forward");
    write_same("procsys_overcommit", "/proc/sys/vm/overcommit_memory");
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0) report("procsys_drop_caches", -1);
    else { report("procsys_drop_caches", write(fd, "1", 1) < 0 ? -1 : 0); close(fd); }
    return 0;
}

static int case_sysrq(int argc, char **argv) {
    (void)argc; (void)argv;
    struct stat st;
    report("sysrq_present", stat("/proc/sysrq-trigger", &st));
    int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
    report("sysrq_open", fd);
    if (fd >= 0) { report("sysrq_write", write(fd, "h", 1) < 0 ? -1 : 0); close(fd); } /* 'h' = help only */
    return 0;
}

static int case_kcore(int argc, char **argv) {
    (void)argc; (void)argv;
    try_read("kcore", "/proc/kcore");
    try_read("dev_mem", "/dev/mem");
    try_read("dev_kmem", "/dev/kmem");
    try_read("proc_kmsg", "/proc/kmsg");
    char buf[256];
    report("syslog_read", klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf));
    /* Kernel addresses (KASLR) must read as zeros. */
    ssize_t n = slurp("/proc/kallsyms", buf, 64);
    if (n >= 0) { buf[strcspn(buf, " ")] = 0; info("kallsyms_first_address", buf); } else report("kallsyms", -1);
    return 0;
}

/* ---------- the host through /proc ---------- */

static int case_proc_host(int argc, char **argv) {
    pid_t host = arg_pid(argc, argv, 2);
    const char *secret = arg_str(argc, argv, 3);
    char path[4096];
    snprintf(path, sizeof path, "/proc/1/root%s", secret);
    try_read("proc1_root_secret", path);
    snprintf(path, sizeof path, "/proc/%d/root%s", (int)host, secret);
    try_read("prochost_root_secret", path);
    snprintf(path, sizeof path, "/proc/%d/environ", (int)host);
    try_read("prochost_environ", path);
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)host);
    try_read("prochost_cmdline", path);
    snprintf(path, sizeof path, "/proc/%d/cwd%s", (int)host, secret);
    try_read("prochost_cwd_secret", path);
    try_read("direct_secret", secret);
    try_read("proc1_environ", "/proc/1/environ");
    try_read("proc1_cmdline", "/proc/1/cmdline");
    int fd = open("/proc/1/mem", O_RDONLY | O_CLOEXEC);
    report("proc1_mem_open", fd);
    if (fd >= 0) close(fd);
    fd = open("/proc/1/exe", O_WRONLY | O_CLOEXEC);
    report("proc1_exe_write", fd);
    if (fd >= 0) close(fd);
    char link[4096];
    ssize_t n = readlink("/proc/1/exe", link, sizeof link - 1);
    if (n >= 0) { link[n] = 0; info("proc1_exe", link); } else report("proc1_exe_readlink", -1);
    n = readlink("/proc/1/cwd", link, sizeof link - 1);
    if (n >= 0) { link[n] = 0; info("proc1_cwd", link); } else report("proc1_cwd_readlink", -1);
    fd = open("/proc/1/cwd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    report("proc1_cwd_open", fd);
    if (fd >= 0) list_dir_fd("proc1_cwd_listing", fd);
    DIR *d = opendir("/proc/1/fd");
    report("proc1_fd_dir", d ? 0 : -1);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[512], name[512];
            snprintf(p, sizeof p, "/proc/1/fd/%s", e->d_name);
            n = readlink(p, link, sizeof link - 1);
            if (n >= 0) { link[n] = 0; snprintf(name, sizeof name, "proc1_fd_%s_target", e->d_name); info(name, link); }
            snprintf(name, sizeof name, "proc1_fd_%s", e->d_name);
            try_read(name, p);
        }
        closedir(d);
    }
    if (getcwd(link, sizeof link)) info("cwd", link); else report("getcwd", -1);
    snprintf(link, sizeof link, "%d", count_pids());
    info("proc_pids", link);
    return 0;
}

/* ---------- privilege ---------- */

static void print_status_field(const char *field) {
    char status[8192];
    if (slurp("/proc/self/status", status, sizeof status) < 0) { report("status", -1); return; }
    size_t flen = strlen(field);
    for (char *line = strtok(status, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            char *v = line + flen + 1;
            while (*v == ' ' || *v == '\t') v++;
            char name[64];
            snprintf(name, sizeof name, "status_%s", field);
            for (char *t = v; *t; t++) if (*t == '\t') *t = ' ';
            info(name, v);
        }
    }
}

static int case_whoami(int argc, char **argv) {
    (void)argc; (void)argv;
    char v[64];
    snprintf(v, sizeof v, "%u", (unsigned)getuid()); info("ruid", v);
    snprintf(v, sizeof v, "%u", (unsigned)geteuid()); info("euid", v);
    snprintf(v, sizeof v, "%u", (unsigned)getgid()); info("rgid", v);
    snprintf(v, sizeof v, "%u", (unsigned)getegid()); info("egid", v);
    print_status_field("CapEff");
    print_status_field("CapPrm");
    print_status_field("NoNewPrivs");
    return 0;
}

static int case_status(int argc, char **argv) {
    (void)argc; (void)argv;
    static const char *fields[] = {"Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                   "NoNewPrivs", "Seccomp", "Seccomp_filters"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) print_status_field(fields[i]);
    char v[128];
    int bits = prctl(PR_GET_SECUREBITS);
    snprintf(v, sizeof v, "%d", bits); info("securebits", v);
    report("securebits_clear", prctl(PR_SET_SECUREBITS, 0));
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0xff, sizeof data);
    report("capset_raise", syscall(SYS_capset, &hdr, data));
    report("ambient_raise", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 21 /* CAP_SYS_ADMIN */, 0, 0));
    report("setuid_other", setuid(12345));
    report("setgid_other", setgid(12345));
    gid_t none[1] = {0};
    report("setgroups", setgroups(0, none));
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    snprintf(v, sizeof v, "%llu/%llu", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    info("rlimit_core", v);
    getrlimit(RLIMIT_NOFILE, &rl);
    snprintf(v, sizeof v, "%llu/%llu", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    info("rlimit_nofile", v);
    if (rl.rlim_max != RLIM_INFINITY) {
        rl.rlim_max += 1;
        rl.rlim_cur = rl.rlim_max;
        report("rlimit_nofile_raise", setrlimit(RLIMIT_NOFILE, &rl));
    }
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0) report("oom_score_adj_lower", -1);
    else { report("oom_score_adj_lower", write(fd, "-1000", 5) < 0 ? -1 : 0); close(fd); }
    char cg[1024];
    if (slurp("/proc/self/cgroup", cg, sizeof cg) >= 0) { cg[strcspn(cg, "\n")] = 0; info("cgroup", cg); }
    if (getcwd(cg, sizeof cg)) info("cwd", cg);
    return 0;
}

static int case_chroot(int argc, char **argv) {
    const char *secret = arg_str(argc, argv, 2);
    mkdir("/tmp/hostile-jail", 0755);
    int rc = chroot("/tmp/hostile-jail");
    report("chroot", rc);
    if (rc == 0) {
        for (int i = 0; i < 64; i++) if (chdir("..") < 0) break;
        report("chroot_escape", chroot("."));
        try_read("chroot_secret", secret);
        struct stat st;
        report("chroot_work_visible", stat("/work", &st));
        int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) list_dir_fd("chroot_root_listing", fd);
    }
    return 0;
}

/* ---------- network ---------- */

static const char *connect_within(int fd, const struct sockaddr *sa, socklen_t len, int seconds) {
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, sa, len) == 0) return "OK";
    if (errno != EINPROGRESS) return errname(errno);
    fd_set w;
    FD_ZERO(&w);
    FD_SET(fd, &w);
    struct timeval tv = {seconds, 0};
    int n = select(fd + 1, NULL, &w, NULL, &tv);
    if (n == 0) return "ETIMEDOUT";
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    return err ? errname(err) : "OK";
}

static void tcp_attempt(const char *name, int family, const char *addr, int port) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { report(name, -1); return; }
    const char *r;
    if (family == AF_INET) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, addr, &sa.sin_addr);
        r = connect_within(fd, (struct sockaddr *)&sa, sizeof sa, 2);
    } else {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
        inet_pton(AF_INET6, addr, &sa.sin6_addr);
        r = connect_within(fd, (struct sockaddr *)&sa, sizeof sa, 2);
    }
    printf("%s=%s\n", name, r);
    close(fd);
}

static int case_connect(int argc, char **argv) {
    int port = atoi(arg_str(argc, argv, 2));
    const char *abstract_name = arg_str(argc, argv, 3);
    const char *host_ip = argc > 4 ? argv[4] : NULL;
    const char *unix_path = argc > 5 ? argv[5] : NULL;
    tcp_attempt("tcp_loopback", AF_INET, "127.0.0.1", port);
    tcp_attempt("tcp6_loopback", AF_INET6, "::1", port);
    if (host_ip && *host_ip) tcp_attempt("tcp_host_ip", AF_INET, host_ip, port);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(abstract_name);
    if (n > sizeof sa.sun_path - 2) n = sizeof sa.sun_path - 2;
    memcpy(sa.sun_path + 1, abstract_name, n); /* sun_path[0] = 0: abstract namespace */
    report("unix_abstract", connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)));
    close(fd);
    if (unix_path && *unix_path) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sp = {.sun_family = AF_UNIX};
        strncpy(sp.sun_path, unix_path, sizeof sp.sun_path - 1);
        report("unix_path", connect(fd, (struct sockaddr *)&sp, sizeof sp));
        close(fd);
    }
    char devs[4096];
    if (slurp("/proc/net/dev", devs, sizeof devs) >= 0) {
        printf("netdevs:");
        char *save = NULL;
        int line = 0;
        for (char *l = strtok_r(devs, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (line++ < 2) continue;
            while (*l == ' ') l++;
            char *colon = strchr(l, ':');
            if (colon) { *colon = 0; printf("%s,", l); }
        }
        putchar('\n');
    }
    return 0;
}

static int case_rawsock(int argc, char **argv) {
    (void)argc; (void)argv;
    int fd;
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)); report("af_packet_raw", fd); if (fd >= 0) close(fd);
    fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ALL)); report("af_packet_dgram", fd); if (fd >= 0) close(fd);
    fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP); report("inet_raw_icmp", fd); if (fd >= 0) close(fd);
    fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW); report("inet_raw", fd); if (fd >= 0) close(fd);
    fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6); report("inet6_raw", fd); if (fd >= 0) close(fd);
    return 0;
}

/* ---------- terminals ---------- */

static void tty_attacks_in_new_session(void *arg) {
    (void)arg;
    if (setsid() < 0) { report("setsid", -1); return; }
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    report("pty_open", master);
    if (master < 0) return;
    if (grantpt(master) < 0 || unlockpt(master) < 0) { report("pty_unlock", -1); return; }
    const char *name = ptsname(master);
    int slave = name ? open(name, O_RDWR | O_CLOEXEC) : -1; /* no O_NOCTTY: becomes our controlling tty */
    report("pty_slave_open", slave);
    if (slave < 0) return;
    ioctl(slave, TIOCSCTTY, 0);
    char c = 'x';
    report("tiocsti_pty", ioctl(slave, TIOCSTI, &c));
    /* The kernel reads the command as 32 bits: a filter comparing all 64 would miss this one. */
    report("tiocsti_pty_high_bits", syscall(SYS_ioctl, slave, (unsigned long)TIOCSTI | (1UL << 32), &c));
    char sub = 0; /* invalid subcode: harmless even if it reached a VT */
    report("tioclinux_pty", ioctl(slave, TIOCLINUX, &sub));
}

static int case_tiocsti(int argc, char **argv) {
    (void)argc; (void)argv;
    char c = 'x';
    report("tiocsti_stdin", ioctl(0, TIOCSTI, &c));
    report("tiocsti_stdin_high_bits", syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | (1UL << 32), &c));
    char sub = 0;
    report("tioclinux_stdin", ioctl(0, TIOCLINUX, &sub));
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    report("dev_tty_open", fd);
    if (fd >= 0) { report("tiocsti_dev_tty", ioctl(fd, TIOCSTI, &c)); close(fd); }
    in_child(tty_attacks_in_new_session, NULL);
    return 0;
}

/* ---------- syscall ABIs ---------- */

static int case_int80(int argc, char **argv) {
    (void)argc; (void)argv;
    info("int80_start", "1");
    fflush(stdout);
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L /* i386 getpid */) : "memory");
    printf("int80=RETURNED %ld\n", r);
    return 0;
}

static int case_x32(int argc, char **argv) {
    (void)argc; (void)argv;
    info("x32_start", "1");
    fflush(stdout);
    report("x32", syscall(0x40000000L + 39 /* x32 getpid */));
    return 0;
}

/* ---------- descriptors ---------- */

static int case_fds(int argc, char **argv) {
    int leaked = atoi(arg_str(argc, argv, 2));
    DIR *d = opendir("/proc/self/fd");
    if (!d) { report("proc_self_fd", -1); return 0; }
    int self = dirfd(d);
    printf("fds:");
    struct dirent *e;
    int first = 1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
        printf(first ? "%s" : ",%s", e->d_name);
        first = 0;
    }
    putchar('\n');
    closedir(d);
    report("leaked_fd", fcntl(leaked, F_GETFD));
    for (int fd = 3; fd < 4096; fd++) {
        if (fcntl(fd, F_GETFD) < 0) continue;
        char p[64], link[4096], name[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(p, link, sizeof link - 1);
        link[n < 0 ? 0 : n] = 0;
        snprintf(name, sizeof name, "open_fd_%d", fd);
        info(name, link);
    }
    return 0;
}

/* ---------- lifetime ---------- */

static int case_sleeper(int argc, char **argv) {
    (void)argc; (void)argv;
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, 0);
    for (;;) pause();
    return 0;
}

/* setsid + double fork: a grandchild in its own session, re-exec'd with the marker in its argv. */
static int case_linger(int argc, char **argv) {
    const char *marker = arg_str(argc, argv, 2);
    const char *mode = argc > 3 ? argv[3] : "wait";
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        setsid();
        pid_t grandchild = fork();
        if (grandchild == 0) {
            setsid();
            int null = open("/dev/null", O_RDWR);
            dup2(null, 0); dup2(null, 1); dup2(null, 2);
            execl("/proc/self/exe", "hostile", "sleeper", marker, (char *)NULL);
            _exit(127);
        }
        _exit(0);
    }
    waitpid(child, NULL, 0);
    /* A second one that stays in our session and ignores the polite signals. */
    pid_t stubborn = fork();
    if (stubborn == 0) {
        execl("/proc/self/exe", "hostile", "sleeper", marker, (char *)NULL);
        _exit(127);
    }
    usleep(200 * 1000);
    info("linger_started", marker);
    fflush(stdout);
    if (strcmp(mode, "exit") == 0) return 0;
    signal(SIGTERM, SIG_IGN);
    for (;;) pause();
}

static int case_flood(int argc, char **argv) {
    unsigned long long total = strtoull(arg_str(argc, argv, 2), NULL, 10);
    int both = argc > 3 && strcmp(argv[3], "both") == 0;
    signal(SIGPIPE, SIG_IGN);
    static char chunk[65536];
    memset(chunk, 'A', sizeof chunk);
    unsigned long long written = 0;
    while (written < total) {
        size_t n = total - written < sizeof chunk ? (size_t)(total - written) : sizeof chunk;
        ssize_t w = write(1, chunk, n);
        if (w <= 0) break;
        if (both) (void)!write(2, chunk, (size_t)w);
        written += (unsigned long long)w;
    }
    char msg[64];
    int len = snprintf(msg, sizeof msg, "\nflood_written:%llu\n", written);
    (void)!write(2, msg, (size_t)len);
    return 0;
}

/* ---------- files ---------- */

static int case_chmod(int argc, char **argv) {
    const char *path = arg_str(argc, argv, 2);
    struct stat st;
    if (stat(path, &st) < 0) { report("stat", -1); return 0; }
    char v[64];
    snprintf(v, sizeof v, "%o %u:%u", st.st_mode & 07777, (unsigned)st.st_uid, (unsigned)st.st_gid);
    info("seen_mode_owner", v);
    report("chmod_same_mode", chmod(path, st.st_mode & 07777)); /* no change even if allowed; ctime would tell */
    report("chown_noop", chown(path, (uid_t)-1, (gid_t)-1));
    report("open_write", open(path, O_WRONLY | O_CLOEXEC));
    report("utimes_now", utimensat(AT_FDCWD, path, NULL, 0));
    long rc = setxattr(path, "user.hostile", "1", 1, 0);
    report("setxattr", rc);
    if (rc == 0) removexattr(path, "user.hostile");
    return 0;
}

static int case_mknod(int argc, char **argv) {
    (void)argc; (void)argv;
    report("mknod_char_null", mknod("/tmp/hostile-null", S_IFCHR | 0666, makedev(1, 3)));
    report("mknod_char_mem", mknod("/tmp/hostile-mem", S_IFCHR | 0600, makedev(1, 1)));
    report("mknod_block_sda", mknod("/tmp/hostile-sda", S_IFBLK | 0600, makedev(8, 0)));
    report("mknod_block_vda", mknod("/tmp/hostile-vda", S_IFBLK | 0600, makedev(254, 0)));
    report("mknod_dev_char", mknod("/dev/hostile-null", S_IFCHR | 0666, makedev(1, 3)));
    report("mknod_fifo", mknod("/tmp/hostile-fifo", S_IFIFO | 0600, 0));
    return 0;
}

static int case_usr_write(int argc, char **argv) {
    const char *marker = arg_str(argc, argv, 2);
    char path[512];
    static const char *dirs[] = {"/usr", "/usr/bin", "/usr/lib", "/bin", "/lib", "/sbin", "/usr/local"};
    static const char *names[] = {"usr_create", "usr_bin_create", "usr_lib_create", "bin_create", "lib_create",
                                  "sbin_create", "usr_local_create"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dirs[i], marker);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        report(names[i], fd);
        if (fd >= 0) close(fd);
    }
    snprintf(path, sizeof path, "/usr/lib/%s-dir", marker);
    report("usr_mkdir", mkdir(path, 0755));
    report("usr_bin_ls_truncate", open("/usr/bin/ls", O_WRONLY | O_APPEND | O_CLOEXEC));
    snprintf(path, sizeof path, "/usr/bin/ls-%s", marker);
    report("usr_bin_rename", rename("/usr/bin/ls-does-not-exist", path));
    return 0;
}

static void list_dir(const char *name, const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { report(name, -1); return; }
    printf("%s=OK\n", name);
    char k[128];
    snprintf(k, sizeof k, "%s_entries", name);
    list_dir_fd(k, fd);
}

static int case_invisible(int argc, char **argv) {
    (void)argc; (void)argv;
    try_read("etc_shadow", "/etc/shadow");
    try_read("etc_gshadow", "/etc/gshadow");
    try_read("etc_sudoers", "/etc/sudoers");
    try_read("ssh_host_key", "/etc/ssh/ssh_host_ed25519_key");
    list_dir("root_dir", "/root");
    list_dir("home_dir", "/home");
    list_dir("var_dir", "/var");
    list_dir("run_dir", "/run");
    list_dir("work_dir", "/work");
    list_dir("etc_dir", "/etc");
    list_dir("root_of_sandbox", "/");
    try_read("sandboxd_socket", "/run/sandboxd/sandboxd.sock");
    return 0;
}

static int case_devices(int argc, char **argv) {
    (void)argc; (void)argv;
    list_dir("dev_dir", "/dev");
    static const char *paths[] = {"/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda",
                                  "/dev/loop0", "/dev/loop-control", "/dev/kvm", "/dev/fuse", "/dev/net/tun",
                                  "/dev/cpu/0/msr", "/dev/console", "/dev/tty0", "/dev/tty1", "/dev/btrfs-control",
                                  "/dev/autofs", "/dev/hwrng"};
    static const char *names[] = {"dev_mem", "dev_kmem", "dev_port", "dev_kmsg", "dev_sda", "dev_vda", "dev_loop0",
                                  "dev_loop_control", "dev_kvm", "dev_fuse", "dev_net_tun", "dev_msr", "dev_console",
                                  "dev_tty0", "dev_tty1", "dev_btrfs_control", "dev_autofs", "dev_hwrng"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int fd = open(paths[i], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        report(names[i], fd);
        if (fd >= 0) close(fd);
    }
    return 0;
}

static int case_sys(int argc, char **argv) {
    const char *marker = arg_str(argc, argv, 2);
    struct stat st;
    report("sys_present", stat("/sys/kernel", &st));
    try_open_write("sys_uevent_helper", "/sys/kernel/uevent_helper");
    try_open_write("sys_thp", "/sys/kernel/mm/transparent_hugepage/enabled");
    try_open_write("sys_power_state", "/sys/power/state");
    try_open_write("sys_cgroup_procs", "/sys/fs/cgroup/cgroup.procs");
    try_open_write("sys_cgroup_unified_procs", "/sys/fs/cgroup/unified/cgroup.procs");
    char path[512];
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s", marker);
    int rc = mkdir(path, 0755);
    report("sys_cgroup_mkdir", rc);
    if (rc == 0) rmdir(path);
    snprintf(path, sizeof path, "/sys/fs/cgroup/unified/%s", marker);
    rc = mkdir(path, 0755);
    report("sys_cgroup_unified_mkdir", rc);
    if (rc == 0) rmdir(path);
    return 0;
}

/* ---------- forbidden system calls with harmless arguments ---------- */

static int case_iouring(int argc, char **argv) {
    (void)argc; (void)argv;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(SYS_io_uring_setup, 4, &p);
    report("io_uring_setup", fd);
    if (fd >= 0) close((int)fd);
    report("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
    report("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0));
    return 0;
}

static int case_personality(int argc, char **argv) {
    (void)argc; (void)argv;
    int current = personality(0xffffffff);
    char v[32];
    snprintf(v, sizeof v, "0x%x", current); info("personality_current", v);
    int rc = personality(PER_LINUX | READ_IMPLIES_EXEC);
    report("personality_read_implies_exec", rc == -1 ? -1 : 0);
    if (rc != -1) personality((unsigned long)current);
    rc = personality(PER_LINUX | ADDR_NO_RANDOMIZE);
    report("personality_addr_no_randomize", rc == -1 ? -1 : 0);
    if (rc != -1) personality((unsigned long)current);
    report("personality_linux", personality(PER_LINUX) == -1 ? -1 : 0);
    return 0;
}

static int case_clock(int argc, char **argv) {
    (void)argc; (void)argv;
    /* Every attempt sets the value the clock already has. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    report("clock_settime", clock_settime(CLOCK_REALTIME, &ts));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    report("settimeofday", settimeofday(&tv, NULL));
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    report("adjtimex_read", adjtimex(&tx));
    long tick = tx.tick;
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_TICK;
    tx.tick = tick;
    report("adjtimex_set", adjtimex(&tx));
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_TICK;
    tx.tick = tick;
    report("clock_adjtime_set", syscall(SYS_clock_adjtime, CLOCK_REALTIME, &tx));
    return 0;
}

static int case_reboot(int argc, char **argv) {
    (void)argc; (void)argv;
    /* A wrong magic number: a kernel that got this far answers EINVAL and does nothing. */
    report("reboot", syscall(SYS_reboot, 0xdeadbeefUL, 0x12345678UL, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    return 0;
}

static int case_swap(int argc, char **argv) {
    (void)argc; (void)argv;
    report("swapon", swapon("/tmp/hostile-no-such-swapfile", 0));
    report("swapoff", swapoff("/tmp/hostile-no-such-swapfile"));
    return 0;
}

static int case_acct(int argc, char **argv) {
    (void)argc; (void)argv;
    report("acct", acct("/tmp/hostile-no-such-acct-file"));
    return 0;
}

static int case_ioport(int argc, char **argv) {
    (void)argc; (void)argv;
    report("iopl", syscall(SYS_iopl, 3));
    report("ioperm", syscall(SYS_ioperm, 0x80UL, 1UL, 1));
    return 0;
}

static int case_misc(int argc, char **argv) {
    (void)argc; (void)argv;
    report("vhangup", vhangup());
    report("quotactl", syscall(SYS_quotactl, 0x800001 /* QCMD(Q_SYNC, USRQUOTA) */, NULL, 0, NULL));
    char buf[64];
    report("syslog_read", klogctl(3, buf, sizeof buf));
    return 0;
}

static int case_hostname(int argc, char **argv) {
    const char *host_hostname = arg_str(argc, argv, 2);
    struct utsname u;
    uname(&u);
    info("nodename", u.nodename);
    if (strcmp(u.nodename, host_hostname) == 0) {
        /* Shared UTS namespace: renaming would rename the host. Refuse, and let the test fail on it. */
        info("uts", "shared-with-host");
        return 0;
    }
    report("sethostname", sethostname("hostile-pwned", 13));
    report("setdomainname", setdomainname("hostile-pwned", 13));
    uname(&u);
    info("nodename_after", u.nodename);
    return 0;
}

/* CVE-2019-5736 shape: watch for processes entering the sandbox and try to get at their executable
 * through /proc/<pid>/exe, for writing now or later (an O_PATH descriptor reopened at the end). */
static int case_exe_watch(int argc, char **argv) {
    double seconds = atof(arg_str(argc, argv, 2));
    pid_t self = getpid();
    static pid_t seen[4096];
    int nseen = 0;
    static int held[256];
    int nheld = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >= seconds) break;
        DIR *d = opendir("/proc");
        if (!d) { report("proc_open", -1); return 0; }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            pid_t pid = (pid_t)atoi(e->d_name);
            if (pid == self) continue;
            int known = 0;
            for (int i = 0; i < nseen; i++) if (seen[i] == pid) { known = 1; break; }
            if (known || nseen >= 4096) continue;
            seen[nseen++] = pid;
            char p[64], link[512], name[96];
            snprintf(p, sizeof p, "/proc/%d/exe", (int)pid);
            ssize_t n = readlink(p, link, sizeof link - 1);
            link[n < 0 ? 0 : n] = 0;
            snprintf(name, sizeof name, "exe_target_%d", (int)pid);
            info(name, n < 0 ? errname(errno) : link);
            /* cmdline is world-readable: a process not yet exec'd shows whoever it was cloned from. */
            char cmdpath[64], cmd[256];
            snprintf(cmdpath, sizeof cmdpath, "/proc/%d/cmdline", (int)pid);
            ssize_t cn = slurp(cmdpath, cmd, sizeof cmd);
            snprintf(name, sizeof name, "exe_cmdline_%d", (int)pid);
            if (cn >= 0) info_bytes(name, (unsigned char *)cmd, cn);
            int fd = open(p, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
            snprintf(name, sizeof name, "exe_write_%d", (int)pid);
            report(name, fd);
            if (fd >= 0) close(fd);
            fd = open(p, O_PATH | O_CLOEXEC);
            snprintf(name, sizeof name, "exe_path_%d", (int)pid);
            report(name, fd);
            if (fd >= 0) { if (nheld < 256) held[nheld++] = fd; else close(fd); }
            /* The process's descriptors: one entering the sandbox may still hold the daemon's. */
            char fddir[64];
            snprintf(fddir, sizeof fddir, "/proc/%d/fd", (int)pid);
            DIR *fds = opendir(fddir);
            snprintf(name, sizeof name, "fddir_%d", (int)pid);
            report(name, fds ? 0 : -1);
            if (fds) {
                struct dirent *f;
                while ((f = readdir(fds))) {
                    if (f->d_name[0] == '.') continue;
                    char fp[384], target[512], fname[384];
                    snprintf(fp, sizeof fp, "%s/%s", fddir, f->d_name);
                    ssize_t tn = readlink(fp, target, sizeof target - 1);
                    target[tn < 0 ? 0 : tn] = 0;
                    int grabbed = open(fp, O_PATH | O_CLOEXEC);
                    snprintf(fname, sizeof fname, "fdgrab_%d_%s", (int)pid, f->d_name);
                    report(fname, grabbed);
                    if (grabbed >= 0) {
                        snprintf(fname, sizeof fname, "fdgrab_target_%d_%s", (int)pid, f->d_name);
                        info(fname, target);
                        close(grabbed);
                    }
                }
                closedir(fds);
            }
        }
        closedir(d);
        usleep(500);
    }
    char v[32];
    snprintf(v, sizeof v, "%d", nseen);
    info("exe_processes_seen", v);
    for (int i = 0; i < nheld; i++) {
        char p[64], link[512], name[96];
        snprintf(p, sizeof p, "/proc/self/fd/%d", held[i]);
        ssize_t n = readlink(p, link, sizeof link - 1);
        link[n < 0 ? 0 : n] = 0;
        snprintf(name, sizeof name, "exe_reopen_target_%d", i);
        info(name, link);
        int fd = open(p, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
        snprintf(name, sizeof name, "exe_reopen_write_%d", i);
        report(name, fd);
        if (fd >= 0) close(fd);
        close(held[i]);
    }
    return 0;
}

/* vsock is not confined by a network namespace: on a VM it leads to the hypervisor. Never connects
 * anywhere (that would touch the machine's own infrastructure): socket, bind and listen only. */
static int case_vsock(int argc, char **argv) {
    unsigned port = (unsigned)atoi(arg_str(argc, argv, 2));
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    report("vsock_socket", fd);
    if (fd >= 0) {
        struct sockaddr_vm sa;
        memset(&sa, 0, sizeof sa);
        sa.svm_family = AF_VSOCK;
        sa.svm_cid = VMADDR_CID_ANY;
        sa.svm_port = port;
        long rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
        report("vsock_bind", rc);
        if (rc == 0) report("vsock_listen", listen(fd, 1));
        close(fd);
    }
    fd = socket(AF_VSOCK, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    report("vsock_seqpacket", fd);
    if (fd >= 0) close(fd);
    /* socket() takes an int: the kernel drops the upper 32 bits a 64-bit filter comparison would see. */
    long hfd = syscall(SYS_socket, (1L << 32) | AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    report("vsock_socket_high_bits", hfd);
    if (hfd >= 0) close((int)hfd);
    return 0;
}

/* SysV IPC objects and a POSIX message queue the host created: none may be reachable. */
static int case_ipc(int argc, char **argv) {
    key_t key = (key_t)strtol(arg_str(argc, argv, 2), NULL, 0);
    const char *mq = arg_str(argc, argv, 3);
    report("shmget_host", shmget(key, 0, 0));
    report("msgget_host", msgget(key, 0));
    report("semget_host", semget(key, 0, 0));
    mqd_t q = mq_open(mq, O_RDONLY | O_NONBLOCK);
    report("mq_open_host", q == (mqd_t)-1 ? -1 : 0);
    if (q != (mqd_t)-1) mq_close(q);
    return 0;
}

/* Host side of the ipc case: create (or with "remove", delete) the objects the sandbox looks for. */
static int case_ipc_host(int argc, char **argv) {
    key_t key = (key_t)strtol(arg_str(argc, argv, 2), NULL, 0);
    const char *mq = arg_str(argc, argv, 3);
    int remove = argc > 4 && strcmp(argv[4], "remove") == 0;
    if (remove) {
        int id;
        if ((id = shmget(key, 0, 0)) >= 0) shmctl(id, IPC_RMID, NULL);
        if ((id = msgget(key, 0)) >= 0) msgctl(id, IPC_RMID, NULL);
        if ((id = semget(key, 0, 0)) >= 0) semctl(id, 0, IPC_RMID);
        mq_unlink(mq);
        return 0;
    }
    report("shm_create", shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0666));
    report("msg_create", msgget(key, IPC_CREAT | IPC_EXCL | 0666));
    report("sem_create", semget(key, 1, IPC_CREAT | IPC_EXCL | 0666));
    mqd_t q = mq_open(mq, O_CREAT | O_EXCL | O_RDWR, 0666, NULL);
    report("mq_create", q == (mqd_t)-1 ? -1 : 0);
    if (q != (mqd_t)-1) mq_close(q);
    return 0;
}

/* The sandbox's init is PID 1 of its namespace: signals from inside must not stop or kill it. */
static int case_kill_init(int argc, char **argv) {
    (void)argc; (void)argv;
    report("kill_init_term", kill(1, SIGTERM));
    report("kill_init_stop", kill(1, SIGSTOP));
    report("kill_init_segv", kill(1, SIGSEGV));
    report("kill_init_kill", kill(1, SIGKILL));
    usleep(100 * 1000);
    report("init_alive", kill(1, 0));
    char st[512];
    if (slurp("/proc/1/stat", st, sizeof st) >= 0) {
        char *close_paren = strrchr(st, ')');
        if (close_paren && close_paren[1] && close_paren[2]) { char state[2] = {close_paren[2], 0}; info("init_state", state); }
    }
    return 0;
}

/* What PID 1 shows in the first instant of the payload's life (before anything else runs). */
static int case_early_proc1(int argc, char **argv) {
    (void)argc; (void)argv;
    char buf[512];
    ssize_t n = slurp("/proc/1/cmdline", buf, sizeof buf);
    if (n >= 0) info_bytes("early_proc1_cmdline", (unsigned char *)buf, n); else report("early_proc1_cmdline", -1);
    n = slurp("/proc/1/comm", buf, sizeof buf);
    if (n >= 0) info_bytes("early_proc1_comm", (unsigned char *)buf, n); else report("early_proc1_comm", -1);
    n = slurp("/proc/1/environ", buf, sizeof buf);
    if (n >= 0) info_bytes("early_proc1_environ", (unsigned char *)buf, n); else report("early_proc1_environ", -1);
    int fd = open("/proc/1/mem", O_RDONLY | O_CLOEXEC);
    report("early_proc1_mem", fd);
    if (fd >= 0) close(fd);
    return 0;
}

/* Writes into each writable place until it is full (or `limit` bytes): the size caps must hold. */
static int case_fill(int argc, char **argv) {
    unsigned long long limit = strtoull(arg_str(argc, argv, 2), NULL, 10);
    static char chunk[1 << 20];
    memset(chunk, 'F', sizeof chunk);
    for (int i = 3; i < argc; i++) {
        char path[512], name[128];
        snprintf(path, sizeof path, "%s/hostile-fill", argv[i]);
        const char *label = argv[i][1] ? argv[i] + 1 : "root";
        char clean[64];
        snprintf(clean, sizeof clean, "%s", label);
        for (char *c = clean; *c; c++) if (*c == '/') *c = '_';
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        snprintf(name, sizeof name, "fill_open_%s", clean);
        report(name, fd);
        if (fd < 0) continue;
        unsigned long long written = 0;
        int err = 0;
        while (written < limit) {
            ssize_t w = write(fd, chunk, sizeof chunk);
            if (w < 0) { err = errno; break; }
            written += (unsigned long long)w;
        }
        close(fd);
        unlink(path);
        snprintf(name, sizeof name, "fill_bytes_%s", clean);
        char v[32];
        snprintf(v, sizeof v, "%llu", written);
        info(name, v);
        snprintf(name, sizeof name, "fill_end_%s", clean);
        if (err) { errno = err; report(name, -1); } else report(name, 0);
    }
    return 0;
}

/* How many inodes each writable tmpfs allows: empty files use no space, so the size cap does not bound them. */
static int case_inodes(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        struct statfs st;
        char name[128], v[64];
        const char *label = argv[i][1] ? argv[i] + 1 : "root";
        char clean[64];
        snprintf(clean, sizeof clean, "%s", label);
        for (char *c = clean; *c; c++) if (*c == '/') *c = '_';
        snprintf(name, sizeof name, "inodes_%s", clean);
        if (statfs(argv[i], &st) < 0) { report(name, -1); continue; }
        snprintf(v, sizeof v, "%llu", (unsigned long long)st.f_files);
        info(name, v);
    }
    return 0;
}

/* ---------- dispatch ---------- */

struct hostile_case {
    const char *name;
    int (*run)(int, char **);
};

static const struct hostile_case cases[] = {
    {"mount", case_mount},
    {"cgroup-release-agent", case_cgroup_release_agent},
    {"umount-root", case_umount_root},
    {"pivot-root", case_pivot_root},
    {"unshare", case_unshare},
    {"setns", case_setns},
    {"ptrace", case_ptrace},
    {"process-vm", case_process_vm},
    {"kill", case_kill},
    {"killall", case_killall},
    {"bpf", case_bpf},
    {"perf", case_perf},
    {"kexec", case_kexec},
    {"module", case_module},
    {"keyring", case_keyring},
    {"userfaultfd", case_userfaultfd},
    {"shocker", case_shocker},
    {"proc-sys", case_proc_sys},
    {"sysrq", case_sysrq},
    {"kcore", case_kcore},
    {"proc-host", case_proc_host},
    {"whoami", case_whoami},
    {"status", case_status},
    {"chroot", case_chroot},
    {"connect", case_connect},
    {"rawsock", case_rawsock},
    {"tiocsti", case_tiocsti},
    {"int80", case_int80},
    {"x32", case_x32},
    {"fds", case_fds},
    {"sleeper", case_sleeper},
    {"linger", case_linger},
    {"flood", case_flood},
    {"chmod", case_chmod},
    {"mknod", case_mknod},
    {"usr-write", case_usr_write},
    {"invisible", case_invisible},
    {"devices", case_devices},
    {"sys", case_sys},
    {"iouring", case_iouring},
    {"personality", case_personality},
    {"clock", case_clock},
    {"reboot", case_reboot},
    {"swap", case_swap},
    {"acct", case_acct},
    {"ioport", case_ioport},
    {"misc", case_misc},
    {"hostname", case_hostname},
    {"exe-watch", case_exe_watch},
    {"vsock", case_vsock},
    {"kill-init", case_kill_init},
    {"early-proc1", case_early_proc1},
    {"fill", case_fill},
    {"inodes", case_inodes},
    {"ipc", case_ipc},
    {"ipc-host", case_ipc_host},
};

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "early-proc1") == 0) { setvbuf(stdout, NULL, _IONBF, 0); return case_early_proc1(argc, argv); }
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: hostile <case> [args...]\n"); return 64; }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strcmp(argv[1], cases[i].name) == 0) return cases[i].run(argc, argv);
    fprintf(stderr, "hostile: unknown case %s\n", argv[1]);
    return 64;
}
