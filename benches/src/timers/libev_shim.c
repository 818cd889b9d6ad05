/* The libev peer of the timer workload: libev used from C, as its users use it.
 *
 * Built by benches/build.rs only when <ev.h> and libev are found (Debian: libev-dev). Each
 * phase is one C loop over libev's own calls, so the Rust side adds one call per phase, not
 * per timer. `ev_timer_start` takes its base time from the loop's cached `ev_now` (updated once
 * per `ev_run` iteration or by `ev_now_update`), which is libev's documented behaviour. */
#include <ev.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    struct ev_loop *loop;
    ev_timer *w;
    size_t n;
    unsigned long fired;
} lb_t;

static void lb_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    ((lb_t *)w->data)->fired++;
}

lb_t *lb_new(size_t n) {
    lb_t *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->loop = ev_loop_new(EVFLAG_AUTO);
    b->w = calloc(n ? n : 1, sizeof *b->w);
    if (!b->loop || !b->w) {
        if (b->loop) ev_loop_destroy(b->loop);
        free(b->w);
        free(b);
        return NULL;
    }
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        ev_init(&b->w[i], lb_cb);
        b->w[i].data = b;
    }
    return b;
}

void lb_free(lb_t *b) {
    for (size_t i = 0; i < b->n; i++) ev_timer_stop(b->loop, &b->w[i]);
    ev_loop_destroy(b->loop);
    free(b->w);
    free(b);
}

void lb_now_update(lb_t *b) { ev_now_update(b->loop); }

/* ev_timer_set + ev_timer_start: `after` seconds from ev_now. */
void lb_schedule(lb_t *b, const double *after, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ev_timer_set(&b->w[i], after[i], 0.);
        ev_timer_start(b->loop, &b->w[i]);
    }
}

/* libev's in-place re-arm: `repeat` seconds from ev_now, moved within the heap. */
void lb_rearm(lb_t *b, const double *after, size_t n) {
    for (size_t i = 0; i < n; i++) {
        b->w[i].repeat = after[i];
        ev_timer_again(b->loop, &b->w[i]);
    }
}

void lb_cancel(lb_t *b, const uint32_t *order, size_t n) {
    for (size_t i = 0; i < n; i++) ev_timer_stop(b->loop, &b->w[order[i]]);
}

/* One non-blocking loop iteration; returns the number of callbacks run so far. */
unsigned long lb_run_nowait(lb_t *b) {
    ev_run(b->loop, EVRUN_NOWAIT);
    return b->fired;
}

void lb_reset_fired(lb_t *b) { b->fired = 0; }

unsigned long lb_pending_count(lb_t *b) { return (unsigned long)ev_pending_count(b->loop); }

int lb_active_timers(lb_t *b) {
    int k = 0;
    for (size_t i = 0; i < b->n; i++) k += ev_is_active(&b->w[i]) ? 1 : 0;
    return k;
}

unsigned lb_version_major(void) { return (unsigned)ev_version_major(); }
unsigned lb_version_minor(void) { return (unsigned)ev_version_minor(); }
