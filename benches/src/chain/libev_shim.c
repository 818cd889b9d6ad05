/* The libev peer of the chain workload: libev's own bench.c (the `native` variant, without its
 * optional timers) with the handler body in Rust.
 *
 * Built by benches/build.rs into the same static library as the timer shim, only when libev is
 * installed (Debian: libev-dev). One ev_io per read end, level-triggered on libev's epoll
 * backend. The watcher callback calls the workload's shared Rust handler through one function
 * pointer, so the handler's work is identical to every other peer's. */
#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef void (*lc_handler)(void *ctx, int fd, size_t i);

typedef struct {
    struct ev_loop *loop;
    ev_io *w;
    const int *fds;
    size_t n;
    lc_handler fn;
    void *ctx;
} lc_t;

static void lc_cb(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    lc_t *c = ev_userdata(loop);
    c->fn(c->ctx, w->fd, (size_t)(uintptr_t)w->data);
}

/* A loop with one started read watcher per fd; NULL on failure. `fds` must outlive it. */
lc_t *lc_new(const int *fds, size_t n, lc_handler fn, void *ctx) {
    lc_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = ev_loop_new(EVBACKEND_EPOLL);
    c->w = calloc(n ? n : 1, sizeof *c->w);
    if (!c->loop || !c->w) {
        if (c->loop) ev_loop_destroy(c->loop);
        free(c->w);
        free(c);
        return NULL;
    }
    c->fds = fds;
    c->n = n;
    c->fn = fn;
    c->ctx = ctx;
    ev_set_userdata(c->loop, c);
    for (size_t i = 0; i < n; i++) {
        ev_io_init(&c->w[i], lc_cb, fds[i], EV_READ);
        c->w[i].data = (void *)(uintptr_t)i;
        ev_io_start(c->loop, &c->w[i]);
    }
    return c;
}

void lc_free(lc_t *c) {
    for (size_t i = 0; i < c->n; i++) ev_io_stop(c->loop, &c->w[i]);
    ev_loop_destroy(c->loop);
    free(c->w);
    free(c);
}

/* bench.c's per-pass re-registration (native variant), verbatim minus the timers. */
void lc_readd(lc_t *c) {
    for (size_t i = 0; i < c->n; i++) {
        if (ev_is_active(&c->w[i])) ev_io_stop(c->loop, &c->w[i]);
        ev_io_set(&c->w[i], c->fds[i], EV_READ);
        ev_io_start(c->loop, &c->w[i]);
    }
}

/* One non-blocking loop iteration (bench.c: event_loop(EVLOOP_ONCE | EVLOOP_NONBLOCK)). */
void lc_run_nowait(lc_t *c) { ev_run(c->loop, EVRUN_NOWAIT); }
