/*
 * The open-loop latency client of bench/open_loop.ts, in C: the same schedule, the same requests,
 * the same JSON line. A Deno client's own wake-ups and garbage collection put its idle p99 at
 * 1-3 ms on a 2-core machine whose other core is busy, ten times the 0.5 ms the pace section
 * judges; this one idles at about 0.1 ms, so what it reads above its idle windows is Redis's.
 *
 * Request i is scheduled at start + i * interval and goes to connection i % connections; each
 * reply is timed from its request's SCHEDULED time (no coordinated omission). The loop waits in
 * ppoll() with a microsecond timeout until the next request falls due or a reply arrives.
 *
 *   cc -O2 -o open_loop bench/open_loop.c -lm
 *   open_loop --port P [--interval-ms 1] [--connections 4] [--duration-ms 10000]
 *             [--command get-set|ping] [--stop-on-stdin-close]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 16
#define QUEUE 65536 /* requests in flight per connection (a ring of scheduled times) */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

typedef struct {
  double *v;
  size_t n, cap;
} samples;

static void push(samples *s, double x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1 << 16;
    s->v = realloc(s->v, s->cap * sizeof(double));
    if (!s->v) exit(3);
  }
  s->v[s->n++] = x;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentiles, as percentiles() in open_loop.ts. */
static void print_percentiles(const char *name, samples *s) {
  qsort(s->v, s->n, sizeof(double), cmp);
  double q[3] = {0.5, 0.99, 0.999};
  double r[3];
  for (int k = 0; k < 3; k++) {
    long i = (long)(q[k] * s->n + 0.999999999) - 1;
    if (i < 0) i = 0;
    if (s->n == 0) r[k] = 0;
    else r[k] = s->v[i < (long)s->n ? i : (long)s->n - 1];
  }
  printf("\"%s\":{\"samples\":%zu,\"p50Ms\":%.4f,\"p99Ms\":%.4f,\"p999Ms\":%.4f,\"maxMs\":%.4f}",
         name, s->n, r[0], r[1], r[2], s->n ? s->v[s->n - 1] : 0.0);
}

typedef struct {
  int fd;
  double pending[QUEUE];
  size_t head, tail; /* ring of scheduled times of requests awaiting a reply */
  char in[1 << 16];
  size_t used;
} conn;

/* Counts complete replies in c->in (+OK, -ERR, :n, $n bulk, $-1); keeps any partial one. */
static int take_replies(conn *c, int *errors) {
  size_t pos = 0;
  int replies = 0;
  for (;;) {
    char *eol = memchr(c->in + pos, '\n', c->used - pos);
    if (!eol) break;
    size_t end = (size_t)(eol - c->in) + 1;
    if (c->in[pos] == '$') {
      long len = strtol(c->in + pos + 1, NULL, 10);
      if (len >= 0) {
        end += (size_t)len + 2;
        if (end > c->used) break;
      }
    } else if (c->in[pos] == '-') {
      (*errors)++;
    }
    replies++;
    pos = end;
  }
  memmove(c->in, c->in + pos, c->used - pos);
  c->used -= pos;
  return replies;
}

static int request(char *out, const char *command, long i) {
  if (strcmp(command, "ping") == 0) return sprintf(out, "PING\r\n");
  char key[32];
  int klen = sprintf(key, "app:openloop:%ld", i % 1000);
  if (i % 2 == 0)
    return sprintf(out, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$8\r\nxxxxxxxx\r\n", klen, key);
  return sprintf(out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, key);
}

int main(int argc, char **argv) {
  int port = 0, connections = 4, stop_on_stdin = 0;
  double interval = 1, duration = 10000;
  const char *command = "get-set";
  for (int a = 1; a < argc; a++) {
    const char *v = a + 1 < argc ? argv[a + 1] : "";
    if (!strcmp(argv[a], "--port")) port = atoi(v), a++;
    else if (!strcmp(argv[a], "--interval-ms")) interval = atof(v), a++;
    else if (!strcmp(argv[a], "--connections")) connections = atoi(v), a++;
    else if (!strcmp(argv[a], "--duration-ms")) duration = atof(v), a++;
    else if (!strcmp(argv[a], "--command")) command = strcmp(v, "ping") ? "get-set" : "ping", a++;
    else if (!strcmp(argv[a], "--stop-on-stdin-close")) stop_on_stdin = 1;
    else {
      fprintf(stderr, "open_loop: unknown argument %s\n", argv[a]);
      return 2;
    }
  }
  if (port <= 0 || connections < 1 || connections > MAX_CONNS || !(interval > 0)) {
    fprintf(stderr, "open_loop: needs --port, 1-%d connections and a positive interval\n", MAX_CONNS);
    return 2;
  }
  /* Wake-ups on time: the default 50 us timer slack would be read as latency. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  static conn conns[MAX_CONNS];
  for (int k = 0; k < connections; k++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
      perror("open_loop: connect");
      return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conns[k].fd = fd;
  }
  samples lat = {0}, lag = {0};
  long next = 0, unanswered = 0;
  int errors = 0;
  double start = now_ms() + 20, end = start + duration;
  struct pollfd fds[MAX_CONNS + 1];
  int stopped = 0;
  char buf[256];
  while (!stopped) {
    double now = now_ms();
    if (now >= end) break;
    /* Every request due now, sent at once (after a stall of this client, several). */
    while (start + next * interval <= now) {
      double at = start + next * interval;
      conn *c = &conns[next % connections];
      int len = request(buf, command, next);
      if (write(c->fd, buf, len) != len) errors++;
      c->pending[c->tail++ % QUEUE] = at;
      push(&lag, now - at);
      next++;
    }
    int n = 0;
    for (int k = 0; k < connections; k++) fds[n++] = (struct pollfd){.fd = conns[k].fd, .events = POLLIN};
    if (stop_on_stdin) fds[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
    double wait = start + next * interval - now_ms();
    if (wait < 0) wait = 0;
    struct timespec timeout = {(time_t)(wait / 1e3), (long)((wait - (long)(wait / 1e3) * 1e3) * 1e6)};
    if (ppoll(fds, n, &timeout, NULL) < 0 && errno != EINTR) break;
    double arrived = now_ms();
    for (int k = 0; k < connections; k++) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      conn *c = &conns[k];
      ssize_t got = read(c->fd, c->in + c->used, sizeof c->in - c->used);
      if (got <= 0) {
        stopped = 1;
        break;
      }
      c->used += (size_t)got;
      for (int r = take_replies(c, &errors); r > 0 && c->head < c->tail; r--) {
        push(&lat, arrived - c->pending[c->head++ % QUEUE]);
      }
    }
    if (stop_on_stdin && (fds[n - 1].revents & (POLLIN | POLLHUP))) {
      if (read(0, buf, sizeof buf) <= 0) stopped = 1;
    }
  }
  /* Up to 2 s for the replies in flight; what is left counts with its wait. */
  double drain = now_ms() + 2000;
  for (int k = 0; k < connections; k++) {
    conn *c = &conns[k];
    while (c->head < c->tail && now_ms() < drain) {
      struct pollfd p = {.fd = c->fd, .events = POLLIN};
      if (poll(&p, 1, 5) <= 0) continue;
      ssize_t got = read(c->fd, c->in + c->used, sizeof c->in - c->used);
      if (got <= 0) break;
      c->used += (size_t)got;
      double arrived = now_ms();
      for (int r = take_replies(c, &errors); r > 0 && c->head < c->tail; r--) {
        push(&lat, arrived - c->pending[c->head++ % QUEUE]);
      }
    }
  }
  double closed = now_ms();
  for (int k = 0; k < connections; k++) {
    conn *c = &conns[k];
    for (; c->head < c->tail; c->head++, unanswered++) push(&lat, closed - c->pending[c->head % QUEUE]);
    close(c->fd);
  }
  printf("{");
  print_percentiles("latency", &lat);
  printf(",\"intervalMs\":%g,\"connections\":%d,\"command\":\"%s\",\"due\":%ld,\"unanswered\":%ld,"
         "\"errors\":%d,\"prober\":\"c\",",
         interval, connections, command, next, unanswered, errors);
  print_percentiles("sendLag", &lag);
  printf("}\n");
  return 0;
}
