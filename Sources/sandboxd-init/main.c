// PID 1 of every sandbox: reaps whatever is reparented to it and nothing else.
//
// It runs with the sandbox's credentials, capabilities dropped and the seccomp filter loaded
// (CLinuxSandbox did that before exec). The daemon ends it with cgroup.kill or SIGKILL through
// its pidfd; signals sent from inside the sandbox cannot reach a pid-namespace init that has no
// handlers, so it keeps every signal blocked and waits for SIGCHLD synchronously.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

int main(void) {
    // Not dumpable: processes of the same uid inside cannot read or write its memory via /proc.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (;;) {
        // Reap everything that has exited, then sleep until the next SIGCHLD.
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        siginfo_t info;
        while (sigwaitinfo(&chld, &info) < 0 && errno == EINTR) {}
    }
}
