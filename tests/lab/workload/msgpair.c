/* msgpair: a producer and a consumer of numbered messages over TCP, for group checkpoint tests.
 *
 *   msgpair consume PORT       accept one connection; read lines "N\n"; each must be the previous + 1. Prints
 *                              `got:N` every 1000 messages, `GAP:after=A,got=B` when one is missing or repeated.
 *   msgpair produce HOST PORT  connect (retrying until the consumer listens) and send 1, 2, 3, ... as fast as the
 *                              connection takes them, in bursts of 100 (about 20,000 a second). Prints `sent:N` every
 *                              1000 messages.
 *
 * A group checkpoint and restore must leave both counting on: no GAP, `got` keeps rising. A restore of two
 * checkpoints taken at different instants leaves the connection with bytes one side thinks delivered and the other
 * never received: the consumer stops receiving (the sender's TCP never resends what it saw acknowledged).
 * (Single words, not numbers: the tests read the numbers after the colon.)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int consume(int port) {
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1)) {
        perror("listen");
        return 2;
    }
    int conn = accept(listener, NULL, NULL);
    if (conn < 0) {
        perror("accept");
        return 2;
    }
    close(listener);
    FILE *in = fdopen(conn, "r");
    char line[64];
    unsigned long last = 0, got;
    while (fgets(line, sizeof line, in)) {
        got = strtoul(line, NULL, 10);
        if (got != last + 1) {
            printf("GAP:after=%lu,got=%lu\n", last, got);
            fflush(stdout);
        }
        last = got;
        if (last % 1000 == 0) {
            printf("got:%lu\n", last);
            fflush(stdout);
        }
    }
    printf("closed:after=%lu\n", last);
    return 1;
}

static int produce(const char *host, int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    int conn;
    for (;;) {
        conn = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(conn, (struct sockaddr *)&addr, sizeof addr) == 0)
            break;
        close(conn);
        usleep(100000);
    }
    unsigned long n = 0;
    char burst[100 * 24];
    struct timespec pause = {0, 5000000};
    for (;;) {
        size_t used = 0;
        for (int i = 0; i < 100; i++)
            used += (size_t)sprintf(burst + used, "%lu\n", ++n);
        for (size_t sent = 0; sent < used;) {
            ssize_t wrote = write(conn, burst + sent, used - sent);
            if (wrote <= 0) {
                printf("closed:sent=%lu\n", n);
                return 1;
            }
            sent += (size_t)wrote;
        }
        if (n % 1000 == 0) {
            printf("sent:%lu\n", n);
            fflush(stdout);
        }
        nanosleep(&pause, NULL);
    }
}

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, stop); /* PID 1 of its container: without a handler, docker stop would wait for its timeout */
    if (argc == 3 && !strcmp(argv[1], "consume"))
        return consume(atoi(argv[2]));
    if (argc == 4 && !strcmp(argv[1], "produce"))
        return produce(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: msgpair consume PORT | msgpair produce HOST PORT\n");
    return 2;
}
