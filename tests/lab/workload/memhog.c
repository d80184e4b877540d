/* memhog MIB: a workload whose memory is really touched, for benchmarks and tests.
 *
 * Fills MIB mebibytes with xorshift output (incompressible, so neither CRIU nor zstd can skip or shrink it), then
 * counts like `counter`: one number per tick on stdout (COUNTER_INTERVAL seconds, default 1). A restored container
 * continues its count; a cold start begins again at 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    size_t size = mib << 20;
    unsigned char *memory = malloc(size ? size : 1);
    if (!memory) {
        perror("memhog: malloc");
        return 1;
    }
    /* Seeded by the clock too: in a container the PID is always 1, and two containers with the same memory at the
     * same count would give byte-identical checkpoints (Docker then refuses the restore: "already exists"). */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() ^ ((uint64_t)now.tv_sec << 30) ^ (uint64_t)now.tv_nsec;
    x = x ? x : 1;
    for (size_t i = 0; i + 8 <= size; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(memory + i, &x, 8);
    }
    const char *interval = getenv("COUNTER_INTERVAL");
    useconds_t tick = (useconds_t)((interval ? atof(interval) : 1.0) * 1e6);
    for (unsigned long i = 1;; i++) {
        printf("%lu\n", i);
        fflush(stdout);
        usleep(tick);
    }
}
