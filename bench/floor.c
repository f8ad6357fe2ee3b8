/*
 * The bare relay floor for bench/load.sh: what relaying and recording a call costs with nothing
 * else, so screenpop's CPU can be reported as a ratio to it (issue 13, point 4).
 *
 *   floor BASE_PORT CALLS OUT_DIR
 *
 * Call i has two UDP sockets on 127.0.0.1: BASE_PORT + 4i faces the caller, BASE_PORT + 4i + 2
 * the agent. Each latches the first source it hears from (symmetric RTP, as screenpop does) and
 * every packet is forwarded to the other side's latched source with one recvfrom and one sendto;
 * its G.711 u-law payload is decoded into that call's stereo buffer (caller left, agent right),
 * and every 250 ms each call's buffer is written to OUT_DIR/call-i.pcm (s16le, 8 kHz, stereo)
 * with one write. One thread, one level-triggered epoll set: no SIP, no jitter placement, no
 * RTCP, no SRTP, no DTMF, no store, no WAV header. On SIGTERM or SIGINT it prints its counters
 * as JSON and exits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_NS 250000000LL
#define MAX_FRAMES 16000 /* 2 s of stereo frames between drains, at most */

struct side {
    int fd;
    int latched;
    struct sockaddr_in peer;
    uint32_t frames; /* frames of this side's audio in the buffer */
};

struct call {
    struct side s[2];
    int out;
    int16_t *pcm; /* interleaved stereo */
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int16_t ulaw[256];

static void ulaw_table(void) {
    for (int i = 0; i < 256; i++) {
        int u = ~i & 0xff;
        int t = ((u & 0x0f) << 3) + 0x84;
        t <<= (u & 0x70) >> 4;
        ulaw[i] = (int16_t)((u & 0x80) ? (0x84 - t) : (t - 0x84));
    }
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int bind_udp(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static unsigned long long received, forwarded, unlatched, written_frames;

static void drain(struct call *c) {
    uint32_t n = c->s[0].frames > c->s[1].frames ? c->s[0].frames : c->s[1].frames;
    if (n == 0) return;
    ssize_t want = (ssize_t)n * 4;
    if (write(c->out, c->pcm, want) == want) written_frames += n;
    memset(c->pcm, 0, (size_t)want);
    c->s[0].frames = c->s[1].frames = 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s BASE_PORT CALLS OUT_DIR\n", argv[0]);
        return 2;
    }
    int base = atoi(argv[1]), calls = atoi(argv[2]);
    if (base <= 0 || calls <= 0 || base + 4 * calls > 65535) {
        fprintf(stderr, "bad port range\n");
        return 2;
    }
    ulaw_table();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int ep = epoll_create1(0);
    struct call *cs = calloc((size_t)calls, sizeof *cs);
    if (ep < 0 || !cs) return 1;
    char path[4096];
    for (int i = 0; i < calls; i++) {
        struct call *c = &cs[i];
        snprintf(path, sizeof path, "%s/call-%d.pcm", argv[3], i);
        c->out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        c->pcm = calloc(MAX_FRAMES * 2, sizeof(int16_t));
        if (c->out < 0 || !c->pcm) {
            perror(path);
            return 1;
        }
        for (int k = 0; k < 2; k++) {
            c->s[k].fd = bind_udp(base + 4 * i + 2 * k);
            if (c->s[k].fd < 0) {
                fprintf(stderr, "bind %d: %s\n", base + 4 * i + 2 * k, strerror(errno));
                return 1;
            }
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)i << 1) | k};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->s[k].fd, &ev);
        }
    }
    printf("READY\n");
    fflush(stdout);
    struct epoll_event evs[1024];
    unsigned char buf[2048];
    long long next = now_ns() + DRAIN_NS;
    while (!stop) {
        long long wait_ms = (next - now_ns()) / 1000000;
        int n = epoll_wait(ep, evs, 1024, wait_ms < 0 ? 0 : (int)wait_ms);
        for (int e = 0; e < n; e++) {
            struct call *c = &cs[evs[e].data.u64 >> 1];
            int k = (int)(evs[e].data.u64 & 1);
            struct side *me = &c->s[k], *other = &c->s[1 - k];
            struct sockaddr_in src;
            socklen_t sl = sizeof src;
            ssize_t len = recvfrom(me->fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl);
            if (len < 12) continue;
            received++;
            if (!me->latched) {
                me->peer = src;
                me->latched = 1;
            }
            if (other->latched) {
                if (sendto(other->fd, buf, (size_t)len, 0, (struct sockaddr *)&other->peer,
                           sizeof other->peer) == len)
                    forwarded++;
            } else {
                unlatched++;
            }
            size_t hdr = 12 + 4 * (size_t)(buf[0] & 0x0f);
            if ((buf[1] & 0x7f) != 0 || (size_t)len <= hdr) continue; /* PCMU audio only */
            for (size_t j = hdr; j < (size_t)len && me->frames < MAX_FRAMES; j++)
                c->pcm[2 * me->frames++ + k] = ulaw[buf[j]];
        }
        if (now_ns() >= next) {
            for (int i = 0; i < calls; i++) drain(&cs[i]);
            next += DRAIN_NS;
        }
    }
    for (int i = 0; i < calls; i++) drain(&cs[i]);
    printf("{\"received\": %llu, \"forwarded\": %llu, \"before_latch\": %llu, "
           "\"written_frames\": %llu}\n",
           received, forwarded, unlatched, written_frames);
    return 0;
}
