// The only code that runs between clone and exec in sandboxd (design.md, "CLinuxSandbox").
//
// Everything here runs in a child created by clone3 from a multithreaded Swift process: the child
// is a copy of one thread, other threads' locks may be held, so only async-signal-safe calls are
// made (raw syscalls, no malloc, no stdio). Swift prepares every path, string and buffer in one
// struct beforehand; the child only reads it.
#ifndef CLINUXSANDBOX_H
#define CLINUXSANDBOX_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <linux/filter.h>

/// The step a child was taking when it failed; reported to the parent with errno and an index.
enum sbx_step {
    SBX_STEP_NONE = 0,
    SBX_STEP_WAIT_PARENT = 1,     // reading the "maps written" byte
    SBX_STEP_SETGROUPS = 2,
    SBX_STEP_SETRESGID = 3,
    SBX_STEP_SETRESUID = 4,
    SBX_STEP_MAKE_PRIVATE = 5,    // mount(NULL, "/", MS_REC|MS_PRIVATE)
    SBX_STEP_ROOT_TMPFS = 6,
    SBX_STEP_MKDIR = 7,           // index: mount entry
    SBX_STEP_MOUNT = 8,           // index: mount entry
    SBX_STEP_MOUNT_SETATTR = 9,   // index: mount entry
    SBX_STEP_SYMLINK = 10,        // index: mount entry
    SBX_STEP_WRITE_FILE = 11,     // index: mount entry
    SBX_STEP_PIVOT_ROOT = 12,
    SBX_STEP_DETACH_OLD_ROOT = 13,
    SBX_STEP_ROOT_READONLY = 14,
    SBX_STEP_SETHOSTNAME = 15,
    SBX_STEP_LOOPBACK = 16,
    SBX_STEP_SETNS = 17,
    SBX_STEP_FORK = 18,
    SBX_STEP_SETSID = 19,
    SBX_STEP_DUP_STDIO = 20,
    SBX_STEP_CHDIR = 21,
    SBX_STEP_RLIMIT = 22,         // index: rlimit entry
    SBX_STEP_CLOSE_FDS = 23,
    SBX_STEP_SECUREBITS = 24,
    SBX_STEP_CAPBSET_DROP = 25,
    SBX_STEP_CAP_AMBIENT = 26,
    SBX_STEP_CAPSET = 27,
    SBX_STEP_NO_NEW_PRIVS = 28,
    SBX_STEP_SECCOMP = 29,
    SBX_STEP_EXEC = 30,           // index: candidate path (or -1 for the init executable fd)
    SBX_STEP_DUMPABLE = 31,
    SBX_STEP_SIGNALS = 32,
};

/// Constants Swift's Glibc module hides behind _GNU_SOURCE.
enum {
    SBX_O_PATH = 010000000,
    SBX_RLIMIT_CPU = 0,
    SBX_RLIMIT_CORE = 4,
    SBX_RLIMIT_NPROC = 6,
    SBX_RLIMIT_NOFILE = 7,
    SBX_RLIMIT_AS = 9,
};

/// One record on the report pipe. `step == SBX_STEP_NONE` with `value` = host pid announces the
/// payload process started by an exec (see `sbx_spawn_exec`).
struct sbx_report {
    int32_t step;
    int32_t error;   // errno
    int32_t index;   // mount / rlimit / exec-candidate index, or -1
    int32_t value;   // pid for SBX_STEP_NONE
};

enum sbx_mount_kind {
    SBX_MOUNT_MKDIR = 1,      // mkdir(target)
    SBX_MOUNT_BIND = 2,       // bind source on target (mkdir or create the target first)
    SBX_MOUNT_TMPFS = 3,      // tmpfs on target, options in data
    SBX_MOUNT_PROC = 4,       // proc on target
    SBX_MOUNT_DEVPTS = 5,     // devpts on target, options in data
    SBX_MOUNT_SYMLINK = 6,    // symlink(source, target)
    SBX_MOUNT_WRITE_FILE = 7, // create target, write data (length data_len), mode 0644
    SBX_MOUNT_MASK = 8,       // hide target: /dev/null (source) over a file, read-only tmpfs over a dir;
                              // the target is opened beneath the new root with no symlink on the way
    SBX_MOUNT_READONLY = 9,   // bind target on itself, read-only
    SBX_MOUNT_ATTACH = 10,    // move the detached mount tree open as tree_fd onto target (a directory)
};

enum sbx_mount_flags {
    SBX_MF_FILE = 1,       // bind target is a file (create an empty file, not a directory)
    SBX_MF_OPTIONAL = 2,   // ENOENT on the source/target is not an error (skip the entry)
    SBX_MF_NOFOLLOW = 4,   // bind: the source is opened with no symlink anywhere in its path and
                           // the target beneath the new root with none either; the clone of the
                           // source is attached to exactly that target (no path is looked up twice)
};

struct sbx_mount {
    int32_t kind;
    uint32_t flags;
    const char *source;
    const char *target;      // relative to the new root (the child's working directory)
    const char *data;
    size_t data_len;
    uint64_t attr_set;       // MOUNT_ATTR_* applied recursively after the mount
    unsigned long ms_flags;  // MS_* for filesystem mounts (tmpfs, proc, devpts)
    int32_t tree_fd;         // SBX_MOUNT_ATTACH: fd from sbx_open_tree (inherited by the child), else -1
};

struct sbx_rlimit {
    int32_t resource;
    uint64_t soft;
    uint64_t hard;
};

/// The last steps every process entering a sandbox takes, in this order: stdio, session,
/// working directory, rlimits, signals, fds, securebits, capabilities, no_new_privs, seccomp, exec.
struct sbx_final {
    int stdin_fd, stdout_fd, stderr_fd;  // parent's fds, duplicated onto 0, 1, 2
    const char *cwd;                    // absolute inside the sandbox
    const struct sbx_rlimit *rlimits;
    int nrlimits;
    const struct sock_fprog *seccomp;   // loaded last; NULL only in the library's own tests
    int exec_fd;                        // >= 0: execveat(exec_fd, "", AT_EMPTY_PATH)
    const char *const *exec_paths;      // else: candidates tried in order (PATH already applied)
    int nexec_paths;
    char *const *argv;
    char *const *envp;
    int ignore_sigchld;                 // the sandbox's init: orphans are reaped by the kernel
};

/// What PID 1 of a one-shot sandbox writes on the status pipe when its payload ended.
struct sbx_exit {
    int32_t code;        // CLD_EXITED / CLD_KILLED / CLD_DUMPED
    int32_t status;      // exit status or signal
    int64_t maxrss_kib;
    int64_t utime_usec;
    int64_t stime_usec;
};

/// Creating a sandbox: a child in new user/pid/mount/net/ipc/uts/cgroup namespaces that builds
/// the root filesystem, pivots into it and execs the sandbox's init (`final`).
///
/// One-shot (`run_payload`): instead, PID 1 vforks the payload (`payload`), locks itself down
/// like any sandbox process, reaps until the payload ends, writes a `struct sbx_exit` on
/// `status_fd` and exits, which ends the pid namespace and everything left in it.
struct sbx_create_config {
    int cgroup_fd;                 // CLONE_INTO_CGROUP target (the sandbox's init cgroup)
    const char *new_root;          // host path of an empty directory the new root tmpfs goes on
    const char *new_root_options;  // tmpfs options of the new root
    const struct sbx_mount *mounts;
    int nmounts;
    const char *hostname;
    int bring_up_loopback;
    struct sbx_final final;
    int run_payload;
    int status_fd;
    struct sbx_final payload;
    char *argv_area;        // one-shot PID 1 blanks the command line of what it was cloned from (the spawner fills it in)
    size_t argv_area_len;
};

/// Entering a sandbox: a child of the spawner placed in `cgroup_fd` that joins the namespaces of
/// the sandbox's init (via its pidfd), starts the command in its pid namespace, waits for it and
/// writes a `struct sbx_exit` on `status_fd` (like a one-shot PID 1, from outside the sandbox).
struct sbx_exec_config {
    int cgroup_fd;
    int init_pidfd;
    struct sbx_final final;
    int status_fd;
    void *stack;          // for the command's process until its exec (it borrows our memory); the spawner's
    size_t stack_size;
    char *argv_area;      // blanked before the command's process exists (it shares this memory); the spawner's
    size_t argv_area_len;
};

struct sbx_spawned {
    int pid;         // host pid of the direct child
    int pidfd;       // its pidfd (CLONE_PIDFD), close-on-exec
    int sync_fd;     // create only: write end the parent closes after writing uid/gid maps
    int report_fd;   // read end of the report pipe; EOF = exec succeeded or the child died
};

/// Starts the sandbox-creating child. Returns 0, or -errno with `out->pid = -1` (nothing started).
/// The child waits until `out->sync_fd` receives one byte (the parent wrote its uid/gid maps).
int sbx_spawn_create(const struct sbx_create_config *config, struct sbx_spawned *out);

/// Starts an exec into an existing sandbox (in the spawner). The direct child first closes every
/// descriptor above 2 but the config's and its report pipe, joins the namespaces, starts the
/// payload as its own child (on `stack` in the child's memory until its exec), reports the
/// payload's host pid on the report pipe, then closes everything but `status_fd`, waits for the
/// payload and writes how it ended there.
int sbx_spawn_exec(const struct sbx_exec_config *config, struct sbx_spawned *out);

/// The spawner: a small helper process (`sandboxd-spawner`, started once per engine) that
/// clones sandbox-creating children, so the kernel copies its tiny address space, not the
/// daemon's. The engine sends a create request on a Unix stream socket: a header with the file
/// descriptors the config names (SCM_RIGHTS), then the request's memory, one contiguous block
/// holding the config and every string, array and filter it points to. The spawner relocates
/// the pointers into its copy (each checked to lie inside the block), runs `sbx_spawn_create`
/// and sends back the child's pid and its pidfd, sync and report descriptors. The child is the
/// spawner's: the kernel reaps it (SA_NOCLDWAIT), the engine watches it through its pidfd.
/// Every object in the block is reached by one pointer only (each is relocated where it is met).
/// An exec request is the same with a `struct sbx_exec_config` (`sbx_spawner_exec`): the exec's
/// first process is cloned from the spawner too, so it never holds a copy of the daemon's
/// descriptors (a listener the daemon closed would otherwise answer until that copy is gone).
enum { SBX_SPAWNER_VERSION = 3, SBX_SPAWNER_MAX_REQUEST = 16 << 20 };

/// Sends `config` (which, with everything it points to, lies inside `block`) to the spawner on
/// `sock` and waits for the answer. Returns 0, or -errno: -EPIPE / -ECONNRESET / -EPROTO when the
/// spawner is gone or answered nonsense, else the error of the clone (`*failed_step` 0) or of the
/// id maps (`*failed_step` 1, the child killed). Not thread-safe per socket.
///
/// The spawner writes the child's uid and gid maps (`0 host_id 1`) right after the clone. With
/// `release`, it also lets the child go on at once (`out->sync_fd` is then -1): the child does
/// not wait for a round trip through the engine. Without it the engine gets `sync_fd` and
/// releases the child itself, after whatever it must do with the new namespaces first.
int sbx_spawner_create(int sock, const void *block, size_t block_len, const struct sbx_create_config *config,
                       uint32_t host_id, int release, struct sbx_spawned *out, int *failed_step);

/// Sends an exec request (`config` inside `block`, as for `sbx_spawner_create`) and waits for the
/// answer: `out` gets the exec child's pid, pidfd and report descriptor (no sync descriptor).
/// Returns 0 or -errno as `sbx_spawner_create` does (no id maps: the sandbox has them), except
/// -ECONNABORTED when the spawner went away after the whole request was sent (the command may
/// have started: it must not be sent again).
int sbx_spawner_exec(int sock, const void *block, size_t block_len, const struct sbx_exec_config *config,
                     struct sbx_spawned *out);

/// The spawner's main loop: serves requests on `sock` until it closes. `argv_area` is the
/// spawner's own command line (what a one-shot PID 1 blanks in its copy). Returns the exit code.
int sbx_spawner_serve(int sock, char *argv_area, size_t argv_area_len);

/// `waitid(P_PIDFD, ...)` with rusage (the glibc wrapper has no rusage argument).
int sbx_waitid_pidfd(int pidfd, int options, int *code, int *status, int *pid, long *maxrss_kib,
                     long *utime_usec, long *stime_usec);

/// `openat2` (no glibc wrapper on Debian 12).
/// `open_tree(path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)` by the daemon (root, its own mount
/// namespace): a detached copy of the mount at `path` that a sandbox child attaches with
/// SBX_MOUNT_ATTACH, whatever its own uid may reach on the host. Returns the fd or -errno.
int sbx_open_tree(const char *path);

int sbx_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

/// `pidfd_send_signal`.
int sbx_pidfd_send_signal(int pidfd, int sig);

/// `statfs(path).f_type`, or -errno.
long long sbx_statfs_type(const char *path);

/// `memfd_create(name, MFD_CLOEXEC)`, or -errno.
int sbx_memfd(const char *name);

/// `pipe2(fds, O_CLOEXEC)`, or -errno.
int sbx_pipe_cloexec(int fds[2]);

/// `setfsuid`/`setfsgid` of the calling thread only (raw syscalls); return the previous id.
int sbx_setfsuid(unsigned int uid);
int sbx_setfsgid(unsigned int gid);

/// `pidfd_open` (close-on-exec by default).
int sbx_pidfd_open(int pid);

#endif
