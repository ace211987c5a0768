/*
 * suidprobe: prints who it runs as. The tests install copies of it as set-user-ID root and with
 * file capabilities, run them in a sandbox and check that nothing was gained. It only prints, so a
 * set-user-ID copy of it is harmless even on the host.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    printf("ruid:%u\neuid:%u\nsuid:%u\n", (unsigned)r, (unsigned)e, (unsigned)s);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        static const char *keys[] = {"CapPrm:", "CapEff:", "NoNewPrivs:"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            size_t n = strlen(keys[i]);
            if (strncmp(line, keys[i], n) == 0) {
                char *v = line + n;
                while (*v == ' ' || *v == '\t') v++;
                printf("status_%.*s:%s", (int)(n - 1), keys[i], v);
            }
        }
    }
    fclose(f);
    return 0;
}
