// sandboxd-spawner: the level-1 engine's spawn helper (docs/linux-sandbox.md, "Spawner").
//
// Started once per engine with one end of a Unix stream socket on fd 3. It clones every
// sandbox's first process, so the kernel copies this small address space instead of the
// daemon's, and hands the child's descriptors back over the socket. Exits when the engine
// closes its end. Not meant to be run by hand.
#define _GNU_SOURCE
#include "CLinuxSandbox.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const int sock = 3;
    int type = 0, domain = 0;
    socklen_t len = sizeof type;
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
        (len = sizeof domain, getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) || domain != AF_UNIX) {
        fprintf(stderr, "sandboxd-spawner: fd 3 is not the engine's Unix stream socket; this helper is started by sandboxd\n");
        return 2;
    }
    // Only the socket and stdio (/dev/null) stay; nothing else of the engine's may reach a child.
    (void)fcntl(sock, F_SETFD, FD_CLOEXEC);
    (void)syscall(SYS_close_range, 4U, ~0U, 0U);

    // Our command line, contiguous at the top of the stack: a one-shot PID 1 blanks its copy.
    char *area = argc > 0 ? argv[0] : NULL;
    size_t area_len = 0;
    if (area) {
        char *last = argv[argc - 1];
        area_len = (size_t)(last + strlen(last) + 1 - area);
    }
    return sbx_spawner_serve(sock, area, area_len);
}
