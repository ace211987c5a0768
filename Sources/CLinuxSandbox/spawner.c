// The spawner protocol (CLinuxSandbox.h, "The spawner"): the engine's side, which sends a create
// or exec request and reads the answer, and the spawner's loop, which relocates the request into
// its own memory and clones the sandbox's (or the exec's) first process from its small address space.
//
// Neither side runs between clone and exec: the engine's side runs on an ordinary daemon thread,
// the loop in the single-threaded spawner (so it may allocate). The child itself runs only the
// code in sandbox_child.c.
#define _GNU_SOURCE
#include "CLinuxSandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SPAWNER_MAGIC 0x73627873u   // "sbxs"
#define SPAWNER_MAX_FDS 16
// fd_fields: ten config descriptors plus LaunchAttachments.maximumDirectories (6) attached trees.
_Static_assert(SPAWNER_MAX_FDS >= 10 + 6, "room for every descriptor a valid request carries");

struct spawner_request {
    uint32_t magic;
    uint32_t version;
    uint64_t base;            // the engine's address of the block: pointers are relative to it
    uint64_t length;
    uint64_t config_offset;
    uint32_t nfds;            // descriptors sent with this header, in fd_fields order
    uint32_t host_id;         // the child's uid/gid maps: 0 inside = host_id outside
    uint32_t release;         // write the go byte ourselves (no sync descriptor in the reply)
    uint32_t kind;            // SPAWNER_CREATE or SPAWNER_EXEC
};

enum { SPAWNER_CREATE = 0, SPAWNER_EXEC = 1 };

/// The stack an exec's payload runs on until its exec: ours, as each exec child's copy of it.
static char exec_stack[64 << 10] __attribute__((aligned(16)));

struct spawner_reply {
    int32_t rc;               // 0 or -errno
    int32_t pid;
    uint32_t nfds;            // on success: pidfd, report[, sync]
    int32_t failed_step;      // 0: clone, 1: id maps
};

/// The descriptor fields of a config, in the order both sides send and assign them. Only fields
/// holding a descriptor (>= 0) travel; the one-shot fields only when `run_payload` is set.
static int fd_fields(struct sbx_create_config *c, int **fields) {
    int n = 0;
    fields[n++] = &c->cgroup_fd;
    fields[n++] = &c->final.stdin_fd;
    fields[n++] = &c->final.stdout_fd;
    fields[n++] = &c->final.stderr_fd;
    fields[n++] = &c->final.exec_fd;
    if (c->run_payload) {
        fields[n++] = &c->status_fd;
        fields[n++] = &c->payload.stdin_fd;
        fields[n++] = &c->payload.stdout_fd;
        fields[n++] = &c->payload.stderr_fd;
        fields[n++] = &c->payload.exec_fd;
    }
    // Detached mount trees the child attaches (SBX_MOUNT_ATTACH): descriptors like the rest.
    for (int i = 0; i < c->nmounts; i++) {
        if (c->mounts[i].tree_fd < 0) continue;
        if (n == SPAWNER_MAX_FDS) return -1;
        fields[n++] = (int *)&c->mounts[i].tree_fd;
    }
    return n;
}

/// The descriptor fields of an exec config, in the order both sides send and assign them.
static int exec_fd_fields(struct sbx_exec_config *c, int **fields) {
    int n = 0;
    fields[n++] = &c->cgroup_fd;
    fields[n++] = &c->init_pidfd;
    fields[n++] = &c->final.stdin_fd;
    fields[n++] = &c->final.stdout_fd;
    fields[n++] = &c->final.stderr_fd;
    fields[n++] = &c->final.exec_fd;
    fields[n++] = &c->status_fd;
    return n;
}

/// Sends `len` bytes, with `fds` attached to the first byte.
static int send_all(int sock, const void *data, size_t len, const int *fds, unsigned nfds) {
    union { char buf[CMSG_SPACE(sizeof(int) * SPAWNER_MAX_FDS)]; struct cmsghdr align; } control;
    const char *p = data;
    while (len > 0) {
        struct iovec iov = { (void *)p, len };
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (nfds > 0) {
            memset(&control, 0, sizeof control);
            msg.msg_control = control.buf;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
        }
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        nfds = 0;
    }
    return 0;
}

/// Reads exactly `len` bytes; descriptors arriving on the way are stored in `fds` (up to `max`,
/// extras closed) and counted in `*nfds`. Returns 0, -EPIPE on EOF before the first byte, or
/// -errno.
static int recv_all(int sock, void *data, size_t len, int *fds, unsigned max, unsigned *nfds) {
    union { char buf[CMSG_SPACE(sizeof(int) * SPAWNER_MAX_FDS)]; struct cmsghdr align; } control;
    char *p = data;
    size_t got = 0;
    if (nfds) *nfds = 0;
    while (got < len) {
        struct iovec iov = { p + got, len - got };
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
            unsigned count = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *received = (int *)CMSG_DATA(cm);
            for (unsigned i = 0; i < count; i++) {
                if (fds && nfds && *nfds < max) fds[(*nfds)++] = received[i];
                else close(received[i]);
            }
        }
        if (n == 0) return got == 0 ? -EPIPE : -EPROTO;
        got += (size_t)n;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Engine side

/// One request and its answer. `fields` are the config's descriptor fields (sent when >= 0);
/// the answer carries pidfd and report, plus sync unless `release`.
/// `*sent` tells whether the whole request went out (the spawner may then have cloned).
static int spawner_call(int sock, uint32_t kind, const void *block, size_t block_len, const void *config,
                        size_t config_size, int **fields, int nfields, uint32_t host_id, int release,
                        struct sbx_spawned *out, int *failed_step, int *sent) {
    out->pid = -1; out->pidfd = -1; out->sync_fd = -1; out->report_fd = -1;
    *failed_step = 0;
    *sent = 0;
    const char *start = block;
    if ((const char *)config < start || (const char *)config + config_size > start + block_len) return -EINVAL;
    if (block_len > SBX_SPAWNER_MAX_REQUEST) return -E2BIG;

    int fds[SPAWNER_MAX_FDS];
    unsigned nfds = 0;
    if (nfields < 0) return -E2BIG;
    for (int i = 0; i < nfields; i++)
        if (*fields[i] >= 0) fds[nfds++] = *fields[i];

    struct spawner_request header = {
        SPAWNER_MAGIC, SBX_SPAWNER_VERSION, (uint64_t)(uintptr_t)block, block_len,
        (uint64_t)((const char *)config - start), nfds, host_id, release ? 1u : 0u, kind,
    };
    int rc = send_all(sock, &header, sizeof header, fds, nfds);
    if (rc == 0) rc = send_all(sock, block, block_len, NULL, 0);
    if (rc < 0) return rc == -ECONNRESET ? rc : -EPIPE;
    *sent = 1;

    struct spawner_reply reply;
    int got[3];
    unsigned ngot = 0;
    rc = recv_all(sock, &reply, sizeof reply, got, 3, &ngot);
    if (rc < 0) {
        for (unsigned i = 0; i < ngot; i++) close(got[i]);
        return rc == -EPIPE || rc == -ECONNRESET ? rc : -EPROTO;
    }
    unsigned expected = release ? 2 : 3;
    if (reply.rc < 0 || ngot != expected || reply.nfds != expected || reply.pid <= 0) {
        for (unsigned i = 0; i < ngot; i++) close(got[i]);
        if (reply.rc < 0) *failed_step = reply.failed_step;
        return reply.rc < 0 ? reply.rc : -EPROTO;
    }
    out->pid = reply.pid;
    out->pidfd = got[0];
    out->report_fd = got[1];
    out->sync_fd = release ? -1 : got[2];
    return 0;
}

int sbx_spawner_create(int sock, const void *block, size_t block_len, const struct sbx_create_config *config,
                       uint32_t host_id, int release, struct sbx_spawned *out, int *failed_step) {
    int *fields[SPAWNER_MAX_FDS];
    int nfields = fd_fields((struct sbx_create_config *)config, fields);
    int sent;
    return spawner_call(sock, SPAWNER_CREATE, block, block_len, config, sizeof *config, fields, nfields, host_id,
                        release, out, failed_step, &sent);
}

int sbx_spawner_exec(int sock, const void *block, size_t block_len, const struct sbx_exec_config *config,
                     struct sbx_spawned *out) {
    int *fields[SPAWNER_MAX_FDS];
    int nfields = exec_fd_fields((struct sbx_exec_config *)config, fields);
    int failed_step = 0, sent = 0;
    int rc = spawner_call(sock, SPAWNER_EXEC, block, block_len, config, sizeof *config, fields, nfields, 0, 1, out,
                          &failed_step, &sent);
    // Gone after the request went out: the command may have started, so it must not be sent again.
    if (sent && (rc == -EPIPE || rc == -ECONNRESET || rc == -EPROTO)) return -ECONNABORTED;
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Spawner side: relocation of the engine's pointers into our copy of the block

struct block {
    char *data;
    uint64_t base;
    uint64_t length;
};

/// The copy of `count` objects of `size` bytes the engine placed at `address`, or NULL (with
/// `*ok` cleared) unless they lie wholly inside the block. NULL stays NULL when `nullable`.
static void *relocated(const struct block *b, const void *pointer, size_t size, size_t count, int nullable, int *ok) {
    uint64_t address = (uint64_t)(uintptr_t)pointer;
    if (address == 0) {
        if (!nullable) *ok = 0;
        return NULL;
    }
    uint64_t offset = address - b->base;
    if (address < b->base || offset > b->length || (size != 0 && count > b->length / size) ||
        (uint64_t)size * count > b->length - offset) {
        *ok = 0;
        return NULL;
    }
    return b->data + offset;
}

/// A NUL-terminated string inside the block.
static const char *relocated_string(const struct block *b, const char *pointer, int nullable, int *ok) {
    const char *s = relocated(b, pointer, 1, 1, nullable, ok);
    if (s && !memchr(s, 0, (size_t)(b->data + b->length - s))) *ok = 0;
    return s;
}

#define RELOC(field, size, count, nullable) ((field) = relocated(b, (field), (size), (count), (nullable), &ok))
#define RELOC_STRING(field, nullable) ((field) = relocated_string(b, (field), (nullable), &ok))

/// A NULL-terminated array of strings (argv, envp).
static char *const *relocated_string_array(const struct block *b, char *const *pointer, int *ok) {
    char **items = relocated(b, pointer, sizeof(char *), 1, 0, ok);
    if (!items) return NULL;
    size_t room = (size_t)(b->data + b->length - (char *)items) / sizeof(char *);
    for (size_t i = 0; i < room; i++) {
        if (items[i] == NULL) return items;
        items[i] = (char *)relocated_string(b, items[i], 0, ok);
        if (!*ok) return NULL;
    }
    *ok = 0;   // no terminating NULL inside the block
    return NULL;
}

static int reloc_final(const struct block *b, struct sbx_final *f) {
    int ok = 1;
    RELOC_STRING(f->cwd, 1);
    if (f->nrlimits < 0 || f->nexec_paths < 0) return -1;
    RELOC(f->rlimits, sizeof *f->rlimits, (size_t)f->nrlimits, 1);
    RELOC(f->seccomp, sizeof *f->seccomp, 1, 1);
    if (!ok) return -1;
    if (f->seccomp) {
        struct sock_fprog *prog = (struct sock_fprog *)f->seccomp;
        prog->filter = relocated(b, prog->filter, sizeof *prog->filter, prog->len, 0, &ok);
    }
    RELOC(f->exec_paths, sizeof *f->exec_paths, (size_t)f->nexec_paths, 1);
    if (!ok) return -1;
    const char **paths = (const char **)f->exec_paths;
    for (int i = 0; i < f->nexec_paths && ok; i++) paths[i] = relocated_string(b, paths[i], 0, &ok);
    if (ok) f->argv = relocated_string_array(b, f->argv, &ok);
    if (ok) f->envp = relocated_string_array(b, f->envp, &ok);
    return ok ? 0 : -1;
}

static int reloc_config(const struct block *b, struct sbx_create_config *c) {
    int ok = 1;
    RELOC_STRING(c->new_root, 0);
    RELOC_STRING(c->new_root_options, 1);
    RELOC_STRING(c->hostname, 1);
    if (c->nmounts < 0) return -1;
    RELOC(c->mounts, sizeof *c->mounts, (size_t)c->nmounts, 1);
    for (int i = 0; i < c->nmounts && ok; i++) {
        struct sbx_mount *m = (struct sbx_mount *)&c->mounts[i];
        RELOC_STRING(m->source, 1);
        RELOC_STRING(m->target, 0);
        RELOC(m->data, 1, m->data_len, 1);
    }
    if (!ok || reloc_final(b, &c->final) < 0) return -1;
    if (c->run_payload && reloc_final(b, &c->payload) < 0) return -1;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Spawner side: the loop

/// Writes "0 <id> 1" to a small /proc file of `pid`.
static int write_map(int pid, const char *file, uint32_t id) {
    char path[64], line[32];
    int plen = snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    int llen = snprintf(line, sizeof line, "0 %u 1\n", id);
    if (plen <= 0 || llen <= 0) return -EINVAL;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n;
    do { n = write(fd, line, (size_t)llen); } while (n < 0 && errno == EINTR);
    int e = n == llen ? 0 : (n < 0 ? -errno : -EIO);
    close(fd);
    return e;
}

/// Root inside the child's user namespace is `id` outside, for uid and gid alike.
static int write_id_maps(int pid, uint32_t id) {
    int rc = write_map(pid, "uid_map", id);
    return rc < 0 ? rc : write_map(pid, "gid_map", id);
}

/// Puts the received descriptors, in order, into the config's fields that expect one (those
/// not -1). Returns 0 when every field got one and none was left over, -1 otherwise.
static int place_fds(int **fields, int nfields, const int *fds, unsigned nfds) {
    unsigned used = 0;
    for (int i = 0; i < nfields; i++) {
        if (*fields[i] < 0) continue;
        if (used == nfds) return -1;
        *fields[i] = fds[used++];
    }
    return used == nfds ? 0 : -1;
}

/// Runs an exec request whose block is in `buffer`: assigns the descriptors, clones the exec's
/// first process, answers with its pid, pidfd and report descriptor. Returns 0 to go on, -1
/// when the engine is gone.
static int serve_exec(int sock, const struct spawner_request *header, int *fds, unsigned nfds, char *buffer,
                      char *argv_area, size_t argv_area_len) {
    struct spawner_reply reply = { -EINVAL, 0, 0, 0 };
    struct block b = { buffer, header->base, header->length };
    struct sbx_exec_config *config = (struct sbx_exec_config *)(buffer + header->config_offset);
    if (reloc_final(&b, &config->final) < 0) goto answer;
    int *fields[SPAWNER_MAX_FDS];
    int nfields = exec_fd_fields(config, fields);
    if (place_fds(fields, nfields, fds, nfds) < 0 || config->init_pidfd < 0 || config->cgroup_fd < 0) goto answer;
    config->stack = exec_stack;
    config->stack_size = sizeof exec_stack;
    config->argv_area = argv_area;
    config->argv_area_len = argv_area_len;

    struct sbx_spawned spawned;
    reply.rc = sbx_spawn_exec(config, &spawned);
    if (reply.rc == 0) {
        for (unsigned i = 0; i < nfds; i++) close(fds[i]);
        reply.pid = spawned.pid;
        reply.nfds = 2;
        int out[2] = { spawned.pidfd, spawned.report_fd };
        int rc = send_all(sock, &reply, sizeof reply, out, 2);
        // An exec the engine never saw is killed (with its payload, which then cannot be waited for).
        if (rc < 0) (void)syscall(SYS_pidfd_send_signal, spawned.pidfd, SIGKILL, NULL, 0);
        close(out[0]); close(out[1]);
        return rc < 0 ? -1 : 0;
    }
answer:
    for (unsigned i = 0; i < nfds; i++) close(fds[i]);
    return send_all(sock, &reply, sizeof reply, NULL, 0) < 0 ? -1 : 0;
}

/// Handles one request whose header has been read. Returns 0 to go on, -1 to stop (the engine
/// is gone or broke the protocol).
static int serve_one(int sock, const struct spawner_request *header, int *fds, unsigned nfds, char **buffer,
                     size_t *capacity, char *argv_area, size_t argv_area_len) {
    struct spawner_reply reply = { -EINVAL, 0, 0, 0 };
    int stop = 0;
    int exec = header->kind == SPAWNER_EXEC;
    size_t config_size = exec ? sizeof(struct sbx_exec_config) : sizeof(struct sbx_create_config);
    size_t config_align = exec ? _Alignof(struct sbx_exec_config) : _Alignof(struct sbx_create_config);
    if (header->magic != SPAWNER_MAGIC || header->version != SBX_SPAWNER_VERSION ||
        (header->kind != SPAWNER_CREATE && !exec) ||
        header->length > SBX_SPAWNER_MAX_REQUEST || header->config_offset > header->length ||
        header->length - header->config_offset < config_size ||
        header->config_offset % config_align != 0) {
        // Without a trustworthy length the stream cannot be resynchronised.
        stop = 1;
        goto answer;
    }
    if (header->length > *capacity) {
        char *grown = realloc(*buffer, header->length);
        if (!grown) { stop = 1; reply.rc = -ENOMEM; goto answer; }
        *buffer = grown;
        *capacity = header->length;
    }
    if (recv_all(sock, *buffer, header->length, NULL, 0, NULL) < 0) { stop = 1; goto answer; }
    if (exec) return serve_exec(sock, header, fds, nfds, *buffer, argv_area, argv_area_len);

    struct block b = { *buffer, header->base, header->length };
    struct sbx_create_config *config = (struct sbx_create_config *)(*buffer + header->config_offset);
    // Root inside must never be host root.
    if (header->host_id == 0 || reloc_config(&b, config) < 0) goto answer;
    int *fields[SPAWNER_MAX_FDS];
    int nfields = fd_fields(config, fields);
    if (nfields < 0 || place_fds(fields, nfields, fds, nfds) < 0) goto answer;
    // A one-shot PID 1 blanks the command line of what it was cloned from: ours.
    config->argv_area = argv_area;
    config->argv_area_len = argv_area_len;

    struct sbx_spawned spawned;
    reply.rc = sbx_spawn_create(config, &spawned);
    if (reply.rc == 0) {
        for (unsigned i = 0; i < nfds; i++) close(fds[i]);
        nfds = 0;
        reply.rc = write_id_maps(spawned.pid, header->host_id);
        if (reply.rc < 0) {
            // Never released: killed, and reaped by the kernel.
            reply.failed_step = 1;
            (void)syscall(SYS_pidfd_send_signal, spawned.pidfd, SIGKILL, NULL, 0);
            close(spawned.pidfd); close(spawned.sync_fd); close(spawned.report_fd);
            goto answer;
        }
        if (header->release) {
            char go = 1;
            ssize_t n;
            do { n = write(spawned.sync_fd, &go, 1); } while (n < 0 && errno == EINTR);
            close(spawned.sync_fd);
            spawned.sync_fd = -1;
        }
        reply.pid = spawned.pid;
        reply.nfds = header->release ? 2 : 3;
        int out[3] = { spawned.pidfd, spawned.report_fd, spawned.sync_fd };
        int rc = send_all(sock, &reply, sizeof reply, out, reply.nfds);
        // A child the engine never saw is killed (an unreleased one would also exit when its
        // sync pipe closes unread).
        if (rc < 0) (void)syscall(SYS_pidfd_send_signal, spawned.pidfd, SIGKILL, NULL, 0);
        for (unsigned i = 0; i < reply.nfds; i++) close(out[i]);
        return rc < 0 ? -1 : 0;
    }

answer:
    for (unsigned i = 0; i < nfds; i++) close(fds[i]);
    if (send_all(sock, &reply, sizeof reply, NULL, 0) < 0) return -1;
    return stop ? -1 : 0;
}

int sbx_spawner_serve(int sock, char *argv_area, size_t argv_area_len) {
    // Children are reaped by the kernel as they exit; the engine watches them through pidfds.
    // (The sandbox's first process sets SIGCHLD back to default before anything else.)
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = SIG_DFL;
    act.sa_flags = SA_NOCLDWAIT;
    if (sigaction(SIGCHLD, &act, NULL) < 0) return 1;
    // A write to an engine that went away is an EPIPE, not our death.
    signal(SIGPIPE, SIG_IGN);

    char *buffer = NULL;
    size_t capacity = 0;
    for (;;) {
        struct spawner_request header;
        int fds[SPAWNER_MAX_FDS];
        unsigned nfds = 0;
        int rc = recv_all(sock, &header, sizeof header, fds, SPAWNER_MAX_FDS, &nfds);
        if (rc < 0) {
            for (unsigned i = 0; i < nfds; i++) close(fds[i]);
            free(buffer);
            return rc == -EPIPE ? 0 : 1;   // EOF: the engine closed its end
        }
        if (serve_one(sock, &header, fds, nfds, &buffer, &capacity, argv_area, argv_area_len) < 0) {
            free(buffer);
            return 1;
        }
    }
}
