/*
 * streamkeeper: the watchers of room logs, for the state-store backends (private to
 * failover/). Notifications are coalesced: however many appends a room gets before the idle
 * runs, each of its watchers hears once, with the newest seq.
 */
#pragma once

#include "failover/sk-store.h"

G_BEGIN_DECLS

typedef struct _SkStoreWatches SkStoreWatches;

/* Notifications run from an idle named @source_name on @context (NULL: the thread-default
 * context of the caller of sk_store_watches_notify()). */
SkStoreWatches *sk_store_watches_new (GMainContext *context, const char *source_name);
/* May be called from a watcher's callback (the store freed from it). */
void sk_store_watches_free (SkStoreWatches *watches);

guint sk_store_watches_add (SkStoreWatches *watches, const char *room, SkStoreWatchFunc func,
                            gpointer user_data, GDestroyNotify destroy);
void sk_store_watches_remove (SkStoreWatches *watches, guint id);

gboolean sk_store_watches_has_room (SkStoreWatches *watches, const char *room);
/* The rooms someone watches (borrowed names, valid until the next add/remove). */
GPtrArray *sk_store_watches_get_rooms (SkStoreWatches *watches);

/* @room's log reached @seq: its watchers are told (if it has any). */
void sk_store_watches_notify (SkStoreWatches *watches, const char *room, guint64 seq);

G_END_DECLS
