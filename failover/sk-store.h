/*
 * streamkeeper: the cluster state store.
 *
 * One interface, several backends (memory for a single node, Redis later). Every call is
 * asynchronous because the Redis backend is; the memory backend completes from an idle so that
 * callers never depend on re-entrancy. All calls and callbacks run on the thread-default main
 * context of the caller (the daemon's main loop).
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct _SkStore SkStore;

/* One entry of a room's ordered event log. */
typedef struct {
  guint64 seq;
  char *json; /* the event object, seq included */
} SkStoreEvent;

void sk_store_event_free (SkStoreEvent *event);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkStoreEvent, sk_store_event_free)

/* Called whenever a room's log grows (by any writer); @last_seq is the newest seq. */
typedef void (*SkStoreWatchFunc) (const char *room, guint64 last_seq, gpointer user_data);

/* Each operation takes ownership of @task and completes it exactly once (never before it
 * returns: GTask defers a return made in the creating main-loop iteration to an idle). */
typedef struct {
  void (*free) (SkStore *store);

  /* Room event log: append is fenced by epoch and must be exactly last_seq + 1. */
  void (*append_event) (SkStore *store, const char *room, guint64 epoch, guint64 seq,
                        const char *json, GTask *task);
  void (*read_events) (SkStore *store, const char *room, guint64 after_seq, guint limit,
                       GTask *task);
  void (*last_seq) (SkStore *store, const char *room, GTask *task);
  guint (*watch_events) (SkStore *store, const char *room, SkStoreWatchFunc func,
                         gpointer user_data, GDestroyNotify destroy);
  void (*unwatch_events) (SkStore *store, guint watch_id);

  /* Plain records (ingress records, stream-key index, …) in a namespace. */
  void (*put) (SkStore *store, const char *ns, const char *key, const char *value, GTask *task);
  void (*get) (SkStore *store, const char *ns, const char *key, GTask *task);
  void (*remove) (SkStore *store, const char *ns, const char *key, GTask *task);
  void (*list) (SkStore *store, const char *ns, GTask *task);

  /* Room placement: room → (node, node incarnation, epoch), changed only by compare-and-set. */
  void (*claim_room) (SkStore *store, const char *room, const char *node, guint64 incarnation,
                      guint64 expected_epoch, GTask *task);
  void (*get_placement) (SkStore *store, const char *room, GTask *task);
  void (*release_room) (SkStore *store, const char *room, guint64 epoch, GTask *task);
  void (*list_placements) (SkStore *store, GTask *task);

  /* Membership: node leases with a per-incarnation number. */
  void (*join_node) (SkStore *store, const char *node, const char *info, guint ttl_ms, GTask *task);
  void (*renew_node) (SkStore *store, const char *node, guint64 incarnation, const char *info,
                      guint ttl_ms, GTask *task);
  void (*retire_node) (SkStore *store, const char *node, guint64 incarnation, gboolean force,
                       GTask *task);
  void (*list_nodes) (SkStore *store, GTask *task);
} SkStoreVTable;

struct _SkStore {
  const SkStoreVTable *vtable;
  char *uri;
};

/* "memory", "redis://…", "sentinel://…". Unknown or unavailable backends → SK_ERROR_INVALID. */
SkStore *sk_store_new (const char *uri, GError **error);
SkStore *sk_store_memory_new (void);
void sk_store_free (SkStore *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkStore, sk_store_free)

/* Fails with SK_ERROR_STALE_EPOCH if @epoch is older than the room's placement epoch,
 * SK_ERROR_CONFLICT if @seq is not last_seq + 1. */
void sk_store_append_event_async (SkStore *store, const char *room, guint64 epoch, guint64 seq,
                                  const char *json, GCancellable *cancellable,
                                  GAsyncReadyCallback callback, gpointer user_data);
gboolean sk_store_append_event_finish (SkStore *store, GAsyncResult *result, GError **error);

/* Events with seq > @after_seq, oldest first, at most @limit: a GPtrArray of SkStoreEvent. */
void sk_store_read_events_async (SkStore *store, const char *room, guint64 after_seq, guint limit,
                                 GCancellable *cancellable, GAsyncReadyCallback callback,
                                 gpointer user_data);
GPtrArray *sk_store_read_events_finish (SkStore *store, GAsyncResult *result, GError **error);

/* The newest seq of a room's log (0 for a room never seen). */
void sk_store_last_seq_async (SkStore *store, const char *room, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data);
gboolean sk_store_last_seq_finish (SkStore *store, GAsyncResult *result, guint64 *out_seq,
                                   GError **error);

guint sk_store_watch_events (SkStore *store, const char *room, SkStoreWatchFunc func,
                             gpointer user_data, GDestroyNotify destroy);
void sk_store_unwatch_events (SkStore *store, guint watch_id);

void sk_store_put_async (SkStore *store, const char *ns, const char *key, const char *value,
                         GCancellable *cancellable, GAsyncReadyCallback callback,
                         gpointer user_data);
gboolean sk_store_put_finish (SkStore *store, GAsyncResult *result, GError **error);

/* Returns the value, or NULL with SK_ERROR_NOT_FOUND. */
void sk_store_get_async (SkStore *store, const char *ns, const char *key, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data);
char *sk_store_get_finish (SkStore *store, GAsyncResult *result, GError **error);

void sk_store_remove_async (SkStore *store, const char *ns, const char *key,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data);
gboolean sk_store_remove_finish (SkStore *store, GAsyncResult *result, GError **error);

/* All values of a namespace: a GPtrArray of char*. */
void sk_store_list_async (SkStore *store, const char *ns, GCancellable *cancellable,
                          GAsyncReadyCallback callback, gpointer user_data);
GPtrArray *sk_store_list_finish (SkStore *store, GAsyncResult *result, GError **error);

/* Sets room → (node, incarnation, expected_epoch + 1) if the room's epoch is still
 * @expected_epoch (0 = never placed); returns the new epoch, or SK_ERROR_CONFLICT.
 * @incarnation is the claiming node's lease incarnation (0 for a node without leases). */
void sk_store_claim_room_async (SkStore *store, const char *room, const char *node,
                                guint64 incarnation, guint64 expected_epoch,
                                GCancellable *cancellable, GAsyncReadyCallback callback,
                                gpointer user_data);
gboolean sk_store_claim_room_finish (SkStore *store, GAsyncResult *result, guint64 *out_epoch,
                                     GError **error);

/* Current placement of a room: its node (NULL if never placed or released) and epoch (0 if
 * never placed). A room start reads it to know which epoch to claim from. */
void sk_store_get_placement_async (SkStore *store, const char *room, GCancellable *cancellable,
                                   GAsyncReadyCallback callback, gpointer user_data);
gboolean sk_store_get_placement_finish (SkStore *store, GAsyncResult *result, char **out_node,
                                        guint64 *out_incarnation, guint64 *out_epoch,
                                        GError **error);

/* A finished room gives its placement up: the node is cleared if the epoch is still @epoch
 * (the epoch itself stays, so the next claim continues from it). SK_ERROR_CONFLICT if the
 * room was claimed since. */
void sk_store_release_room_async (SkStore *store, const char *room, guint64 epoch,
                                  GCancellable *cancellable, GAsyncReadyCallback callback,
                                  gpointer user_data);
gboolean sk_store_release_room_finish (SkStore *store, GAsyncResult *result, GError **error);

typedef struct {
  char *room;
  char *node;
  guint64 incarnation; /* of the node, when it claimed the room */
  guint64 epoch;
} SkStorePlacement;

void sk_store_placement_free (SkStorePlacement *placement);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkStorePlacement, sk_store_placement_free)

/* Every placed (not released) room: a GPtrArray of SkStorePlacement, by room name. */
void sk_store_list_placements_async (SkStore *store, GCancellable *cancellable,
                                     GAsyncReadyCallback callback, gpointer user_data);
GPtrArray *sk_store_list_placements_finish (SkStore *store, GAsyncResult *result, GError **error);

/*
 * Membership. Each node id has an incarnation counter that only grows. A node joins as a new
 * incarnation (counter + 1) with a lease of @ttl_ms, and renews the lease while the counter
 * still names it. A survivor that sees a lease gone retires that incarnation (counter + 1),
 * so the stale node's next renewal fails and it fences itself; a lease lost only because the
 * store itself failed over is re-created by the next renewal (the counter did not move).
 */
typedef struct {
  char *node;
  guint64 incarnation;
  char *info; /* JSON the node publishes with its lease: URLs, load, readiness */
} SkStoreNode;

void sk_store_node_free (SkStoreNode *node);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkStoreNode, sk_store_node_free)

/* Returns the new incarnation. */
void sk_store_join_node_async (SkStore *store, const char *node, const char *info, guint ttl_ms,
                               GCancellable *cancellable, GAsyncReadyCallback callback,
                               gpointer user_data);
gboolean sk_store_join_node_finish (SkStore *store, GAsyncResult *result, guint64 *out_incarnation,
                                    GError **error);

/* Sets the lease (again) for @ttl_ms with @info; SK_ERROR_STALE_EPOCH if @incarnation was
 * retired or superseded. */
void sk_store_renew_node_async (SkStore *store, const char *node, guint64 incarnation,
                                const char *info, guint ttl_ms, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data);
gboolean sk_store_renew_node_finish (SkStore *store, GAsyncResult *result, GError **error);

/* Makes sure @incarnation of @node is dead: TRUE if it is retired now or was already;
 * SK_ERROR_CONFLICT if its lease is still alive, unless @force (a node leaving cleanly
 * retires itself and drops its lease). */
void sk_store_retire_node_async (SkStore *store, const char *node, guint64 incarnation,
                                 gboolean force, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
gboolean sk_store_retire_node_finish (SkStore *store, GAsyncResult *result, GError **error);

/* Nodes with a live lease: a GPtrArray of SkStoreNode, by node id. */
void sk_store_list_nodes_async (SkStore *store, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data);
GPtrArray *sk_store_list_nodes_finish (SkStore *store, GAsyncResult *result, GError **error);

G_END_DECLS
