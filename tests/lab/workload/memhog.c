/* memhog MIB: a workload whose memory is really touched, for benchmarks and tests.
 *
 * Fills MIB mebibytes with xorshift output (incompressible, so neither CRIU nor zstd can skip or shrink it), then
 * counts like `counter`: one number per tick on stdout (COUNTER_INTERVAL seconds, default 1). A restored container
 * continues its count; a cold start begins again at 1.
 *
 * MEMHOG_CHECK=N: keep a checksum of every MiB, rewrite one MiB per tick (the memory keeps changing), and every N
 * ticks check every byte against the checksums: print `checked:<MiB>MiB`, or `CORRUPT:mib=<index>` and exit 3.
 * (Single words, not numbers: the tests read the numbers as the count.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static uint64_t checksum(const unsigned char *from, size_t size) {
    uint64_t h = 0xcbf29ce484222325ull, word;
    for (size_t i = 0; i + 8 <= size; i += 8) {
        memcpy(&word, from + i, 8);
        h = (h ^ word) * 0x100000001b3ull;
    }
    return h;
}

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
    const char *check = getenv("MEMHOG_CHECK");
    unsigned long every = check ? strtoul(check, NULL, 10) : 0;
    size_t chunk = (size_t)1 << 20, chunks = size / chunk;
    uint64_t *sums = every && chunks ? calloc(chunks, sizeof(uint64_t)) : NULL;
    for (size_t c = 0; sums && c < chunks; c++)
        sums[c] = checksum(memory + c * chunk, chunk);
    for (unsigned long i = 1;; i++) {
        printf("%lu\n", i);
        if (sums) {
            size_t c = i % chunks;
            for (size_t j = 0; j + 8 <= chunk; j += 8) {
                uint64_t value = next(&x);
                memcpy(memory + c * chunk + j, &value, 8);
            }
            sums[c] = checksum(memory + c * chunk, chunk);
            if (i % every == 0) {
                for (size_t k = 0; k < chunks; k++) {
                    if (checksum(memory + k * chunk, chunk) != sums[k]) {
                        printf("CORRUPT:mib=%zu\n", k);
                        fflush(stdout);
                        return 3;
                    }
                }
                printf("checked:%zuMiB\n", chunks);
            }
        }
        fflush(stdout);
        usleep(tick);
    }
}
