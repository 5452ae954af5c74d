/*
 * streamkeeper: GET /v1/rooms/{room}/events, a Server-Sent Events stream of a room's log.
 * Internal to rooms/: the room manager owns one SkEventsHttp and routes requests to it.
 *
 * It reads the log from the state store only (never from room memory), so any node can serve
 * any room, including one that has not started yet (the stream stays open until it does).
 * Auth: the API token as `Authorization: Bearer`, or `?token=` for EventSource clients,
 * which cannot set headers. Resume: `Last-Event-ID` header, else `?since=SEQ`; the stream
 * then carries every event with a greater seq, once.
 */
#pragma once

#include <libsoup/soup.h>

#include "common/sk-config.h"
#include "failover/sk-store.h"

G_BEGIN_DECLS

typedef struct _SkEventsHttp SkEventsHttp;

/* @store and @config must outlive the returned object. */
SkEventsHttp *sk_events_http_new (SkStore *store, const SkConfig *config);
/* Ends every open stream (cleanly, so clients reconnect with Last-Event-ID). */
void sk_events_http_free (SkEventsHttp *self);

/* Serves one request; @room has already been validated by the caller. */
void sk_events_http_handle (SkEventsHttp *self, SoupServerMessage *msg, const char *room);

/*
 * At shutdown: refuses new streams, sends every open stream the rest of its room's log, ends
 * it, and calls @done once all have finished or after @timeout_ms. So a client sees the
 * server_shutdown events before its stream closes.
 */
void sk_events_http_drain (SkEventsHttp *self, guint timeout_ms, GSourceFunc done,
                           gpointer user_data);

/* Streams currently open (tests, metrics). */
guint sk_events_http_get_n_clients (SkEventsHttp *self);

G_END_DECLS
