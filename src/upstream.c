/* upstream: libcurl's multi_socket interface driven by a libevent event_base.
 *
 * curl owns the sockets; we own one `struct event` per socket curl asks us to watch (kept
 * in curl's per-socket pointer via curl_multi_assign) and one timer. Every readiness or
 * timeout goes back to curl through curl_multi_socket_action(), after which finished
 * transfers are collected with curl_multi_info_read(). Never call curl_multi_* from inside
 * a curl callback: done callbacks run from here, outside curl.
 */
#include "mcpeek/upstream.h"

#include <stdlib.h>

/* Idle easy handles kept for reuse per worker; more are freed. */
#define UPSTREAM_EASY_POOL_MAX 256

struct upstream {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    CURL *pool[UPSTREAM_EASY_POOL_MAX];
    unsigned pool_len;
};

/* One watched socket. */
struct sock_watch {
    struct upstream *up;
    struct event *ev;
    curl_socket_t fd;
};

static void check_finished(struct upstream *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct upstream_job *job = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
        curl_multi_remove_handle(up->multi, easy);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        if (job)
            job->done(job->arg, result);
    }
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int still;
    curl_multi_socket_action(up->multi, fd, action, &still);
    check_finished(up);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream *up = arg;
    int still;
    curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &still);
    check_finished(up);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *arg)
{
    (void)multi;
    struct upstream *up = arg;
    if (timeout_ms < 0) {
        evtimer_del(up->timer);
        return 0;
    }
    /* timeout 0 means "now": still go through the loop, never act from inside curl. */
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(up->timer, &tv);
    return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    (void)easy;
    struct upstream *up = arg;
    struct sock_watch *w = sockp;

    if (what == CURL_POLL_REMOVE) {
        if (w) {
            event_free(w->ev);
            free(w);
            curl_multi_assign(up->multi, fd, NULL);
        }
        return 0;
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w)
            return -1;
        w->up = up;
        w->fd = fd;
        curl_multi_assign(up->multi, fd, w);
    } else {
        event_free(w->ev);
    }
    w->ev = event_new(up->base, fd, kind, on_socket_event, up);
    if (!w->ev)
        return -1;
    event_add(w->ev, NULL);
    return 0;
}

struct upstream *upstream_new(struct event_base *base, long max_idle_connections)
{
    struct upstream *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->base = base;
    up->multi = curl_multi_init();
    up->timer = evtimer_new(base, on_timer, up);
    if (!up->multi || !up->timer)
        goto fail;
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, max_idle_connections);
    return up;
fail:
    upstream_free(up);
    return NULL;
}

void upstream_free(struct upstream *up)
{
    if (!up)
        return;
    for (unsigned i = 0; i < up->pool_len; i++)
        curl_easy_cleanup(up->pool[i]);
    /* Cleaning the multi handle closes cached connections and removes their sockets
     * (CURL_POLL_REMOVE frees our watches), so the timer goes last. */
    if (up->multi)
        curl_multi_cleanup(up->multi);
    if (up->timer)
        event_free(up->timer);
    free(up);
}

CURL *upstream_easy_get(struct upstream *up)
{
    if (up->pool_len > 0)
        return up->pool[--up->pool_len];
    return curl_easy_init();
}

void upstream_easy_put(struct upstream *up, CURL *easy)
{
    if (!easy)
        return;
    if (up->pool_len < UPSTREAM_EASY_POOL_MAX) {
        curl_easy_reset(easy);
        up->pool[up->pool_len++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

int upstream_add(struct upstream *up, CURL *easy, struct upstream_job *job)
{
    curl_easy_setopt(easy, CURLOPT_PRIVATE, job);
    if (curl_multi_add_handle(up->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        return -1;
    }
    return 0;
}

void upstream_cancel(struct upstream *up, CURL *easy)
{
    struct upstream_job *job = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
    if (!job) {
        upstream_easy_put(up, easy);
        return;
    }
    curl_multi_remove_handle(up->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    upstream_easy_put(up, easy);
}
