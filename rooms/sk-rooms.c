/*
 * streamkeeper: rooms hosted on this node, their participants and tracks, and the ordered
 * event log that records them.
 *
 * A room is the single writer of its log. Events are built when they happen (so their order
 * is the order of the calls that caused them) and queued; the queue is appended one event at
 * a time, the next one only when the store acknowledged the previous one, so the log keeps
 * that order with an asynchronous store. Seq numbers are assigned when an event is sent:
 * the room learns its last seq from the store after claiming the room's placement, so a room
 * whose name was used before continues its seq.
 */
#include "rooms/sk-rooms.h"

#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "failover/sk-cluster.h"
#include "rooms/sk-events-http.h"
#include "rooms/sk-remote.h"
#include "rooms/sk-whep.h"

#define ROOM_NAME_MAX 128
#define PARTICIPANT_FIELD_MAX 256
#define PLACE_MAX_ATTEMPTS 5
#define STORE_RETRY_MS 500
#define APPEND_MAX_RETRIES 10
#define SK_SSE_DRAIN_TIMEOUT_MS 2000 /* SSE clients get this long to take the end of the log */
#define REBUILD_READ_LIMIT 1000
#define ORPHAN_PATIENCE_VIEWS 5 /* views before any survivor, not only the chosen one, claims */
/* The chosen survivor adopts an orphan on the view after the first one that showed it, this
 * much later: a node with a live publisher in that room claims it at once (room_follow_host)
 * and must not lose that race to a node that has nothing there. */
#define ORPHAN_DEFER_MS 100
#define SK_ROOMS_NS "rooms"

typedef struct _SkRoom SkRoom;

/* An event waiting for its turn to be appended. */
typedef struct {
  JsonObject *event;   /* complete but for "seq" */
  const char *webhook; /* LiveKit webhook name, or NULL */
  guint64 seq;         /* assigned when sent */
  guint retries;
} PendingEvent;

struct _SkParticipant {
  SkRoom *room;
  char *sid;
  char *identity;
  char *name;
  char *kind;
  char *ingress_node;          /* where its media comes from (this node, or a remote publisher's) */
  guint64 ingress_incarnation; /* of that node when the participant joined; 0 = unknown */
  GPtrArray *tracks;           /* SkTrack*, owned, in publish order */
  SkRemotePublication *publication; /* room hosted elsewhere: our media goes there */
  guint expected_tracks;            /* announced by the publisher; 0 = unknown */
  SkParticipantEvictedFunc evicted;
  gpointer user_data;
  gboolean departed; /* left the room; only the evicted callback still sees it */
};

struct _SkRoom {
  SkRoomManager *manager;
  char *name;
  GCancellable *cancellable; /* every store call of this room: cancelled when it is freed */
  GPtrArray *participants;   /* SkParticipant*, owned, in join order */
  gboolean finished;         /* RoomFinished queued: lingers until its appends are done */
  guint empty_timeout_id;

  /* Log writing. */
  gboolean fresh;  /* not started yet: RoomStarted goes first once placed */
  gboolean placed; /* epoch claimed and last_seq known: appends may go */
  char *prev_node; /* placement found before our claim: a dead host's room is rebuilt */
  guint64 prev_incarnation;
  guint64 prev_epoch;
  gboolean rebuilding; /* takeover: appends wait until the state is rebuilt */
  gboolean lost;       /* another node holds it now: nothing more is written */
  gboolean adopted;    /* claimed from a dead node by this one, with no participant here */

  /* Hosted on another node (proxy): our participants publish there, the host writes. */
  gboolean remote;
  char *host_node;
  guint64 host_incarnation;
  guint64 host_epoch;
  guint done_idle_id;
  gboolean snapshot_in_flight;
  gboolean snapshot_dirty;
  guint place_attempts;
  guint64 epoch;
  guint64 last_seq; /* of the newest event the store acknowledged */
  GQueue pending;   /* PendingEvent* */
  PendingEvent *in_flight;
  guint retry_id;
};

typedef struct {
  guint id;
  char *room;
  SkRoomTrackFunc func;
  gpointer user_data;
  GDestroyNotify destroy;
} TrackWatch;

struct _SkRoomManager {
  const SkConfig *config;
  SkStore *store;
  SkWebhooks *webhooks; /* may be NULL */
  GCancellable *cancellable;
  GHashTable *rooms;         /* name → SkRoom */
  GHashTable *track_watches; /* id → TrackWatch */
  guint next_watch_id;
  SkWhepServer *whep;
  SkEventsHttp *events;
  GTask *shutdown_task;
  gboolean shutting_down;

  SkCluster *cluster;    /* NULL: a node on its own */
  GHashTable *hosts;     /* room → host node id, as of the cluster's last view */
  GHashTable *releasing; /* rooms whose placement this node is giving up right now */
  GTask *drain_task;
  guint drain_pending;
  guint drain_moved;
  GHashTable *orphan_seen; /* room → views it has been seen orphaned */
  guint orphan_view_id;    /* the deferred view (ORPHAN_DEFER_MS) */
};

static void room_pump (SkRoom *room);
static void room_place (SkRoom *room);
static void room_become_proxy (SkRoom *room, const char *node, guint64 incarnation, guint64 epoch);
static JsonObject *participant_event_new (SkParticipant *p, const char *type);
static void room_write_snapshot (SkRoom *room);
static SkParticipant *room_find_participant (SkRoom *room, const char *sid);

/* ---- helpers ---------------------------------------------------------------------------- */

static gboolean
room_name_is_valid (const char *name)
{
  gsize len = name != NULL ? strlen (name) : 0;

  if (len == 0 || len > ROOM_NAME_MAX)
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    char c = name[i];

    if (!g_ascii_isalnum (c) && c != '_' && c != '.' && c != '-')
      return FALSE;
  }
  return TRUE;
}

/* A store callback whose operation was cancelled must not touch its user data: the manager
 * cancels everything before it frees the rooms. */
static gboolean
store_op_cancelled (GAsyncResult *result)
{
  GCancellable *cancellable = g_task_get_cancellable (G_TASK (result));

  return cancellable != NULL && g_cancellable_is_cancelled (cancellable);
}

/* json-glib 1.6 has no _with_default getters for containers. */
static JsonObject *
json_get_object (JsonObject *o, const char *member, JsonObject *fallback)
{
  JsonNode *node = json_object_get_member (o, member);

  return node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : fallback;
}

static JsonArray *
json_get_array (JsonObject *o, const char *member, JsonArray *fallback)
{
  JsonNode *node = json_object_get_member (o, member);

  return node != NULL && JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node) : fallback;
}

static JsonObject *
participant_to_json (SkParticipant *p)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "sid", p->sid);
  json_object_set_string_member (o, "identity", p->identity);
  json_object_set_string_member (o, "name", p->name);
  json_object_set_string_member (o, "kind", p->kind);
  json_object_set_string_member (o, "ingress_node", p->ingress_node);
  return o;
}

static JsonObject *
track_to_json (SkTrack *track)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "sid", sk_track_get_sid (track));
  json_object_set_string_member (o, "kind", sk_track_kind_to_string (sk_track_get_kind (track)));
  json_object_set_string_member (o, "codec", sk_track_get_codec (track));
  return o;
}

static void
pending_event_free (PendingEvent *pe)
{
  json_object_unref (pe->event);
  g_free (pe);
}

/* ---- track watches ---------------------------------------------------------------------- */

static void
track_watch_free (gpointer data)
{
  TrackWatch *watch = data;

  if (watch->destroy != NULL)
    watch->destroy (watch->user_data);
  g_free (watch->room);
  g_free (watch);
}

static void
notify_track (SkRoom *room, SkParticipant *p, SkTrack *track, gboolean published)
{
  SkRoomManager *self = room->manager;
  g_autoptr (GArray) ids = g_array_new (FALSE, FALSE, sizeof (guint));
  GHashTableIter iter;
  TrackWatch *watch;

  /* Watchers may unwatch (themselves or others) from their callback: walk a list of ids. */
  g_hash_table_iter_init (&iter, self->track_watches);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&watch)) {
    if (strcmp (watch->room, room->name) == 0)
      g_array_append_val (ids, watch->id);
  }
  for (guint i = 0; i < ids->len; i++) {
    watch = g_hash_table_lookup (self->track_watches,
                                 GUINT_TO_POINTER (g_array_index (ids, guint, i)));
    if (watch != NULL)
      watch->func (room->name, p, track, published, watch->user_data);
  }
}

guint
sk_room_manager_watch_tracks (SkRoomManager *self, const char *room_name, SkRoomTrackFunc func,
                              gpointer user_data, GDestroyNotify destroy)
{
  TrackWatch *watch;
  SkRoom *room;
  guint id;

  g_return_val_if_fail (self != NULL && room_name != NULL && func != NULL, 0);

  watch = g_new0 (TrackWatch, 1);
  watch->id = id = ++self->next_watch_id;
  watch->room = g_strdup (room_name);
  watch->func = func;
  watch->user_data = user_data;
  watch->destroy = destroy;
  g_hash_table_insert (self->track_watches, GUINT_TO_POINTER (id), watch);

  room = g_hash_table_lookup (self->rooms, room_name);
  if (room != NULL) {
    /* Snapshot first: the callback may publish, unpublish or unwatch. */
    g_autoptr (GPtrArray) tracks = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_track_unref);
    g_autoptr (GPtrArray) owners = g_ptr_array_new ();

    for (guint i = 0; i < room->participants->len; i++) {
      SkParticipant *p = g_ptr_array_index (room->participants, i);

      for (guint j = 0; j < p->tracks->len; j++) {
        g_ptr_array_add (tracks, sk_track_ref (g_ptr_array_index (p->tracks, j)));
        g_ptr_array_add (owners, p);
      }
    }
    for (guint i = 0; i < tracks->len; i++) {
      SkTrack *track = g_ptr_array_index (tracks, i);

      if (g_hash_table_lookup (self->track_watches, GUINT_TO_POINTER (id)) == NULL)
        break;
      if (sk_track_is_ended (track))
        continue;
      func (room_name, g_ptr_array_index (owners, i), track, TRUE, user_data);
    }
  }
  return id;
}

void
sk_room_manager_unwatch_tracks (SkRoomManager *self, guint watch_id)
{
  g_hash_table_remove (self->track_watches, GUINT_TO_POINTER (watch_id));
}

/* ---- the event log ---------------------------------------------------------------------- */

static JsonObject *
room_event_new (SkRoom *room, const char *type)
{
  JsonObject *o = json_object_new ();

  /* A placeholder keeps "seq" the first member; the real one is set when it is sent. */
  json_object_set_int_member (o, "seq", 0);
  json_object_set_string_member (o, "room", room->name);
  json_object_set_string_member (o, "event", type);
  json_object_set_int_member (o, "at_ms", sk_now_ms ());
  json_object_set_string_member (o, "node", room->manager->config->node_id);
  return o;
}

/* Takes @event. */
static void
room_enqueue (SkRoom *room, JsonObject *event, const char *webhook)
{
  PendingEvent *pe;

  if (room->remote) {
    /* The host writes this room's log (from what our remote publications tell it). */
    json_object_unref (event);
    return;
  }
  pe = g_new0 (PendingEvent, 1);
  pe->event = event;
  pe->webhook = webhook;
  g_queue_push_tail (&room->pending, pe);
  room_pump (room);
}

static void
room_send_webhook (SkRoom *room, PendingEvent *pe)
{
  SkRoomManager *self = room->manager;
  g_autoptr (JsonObject) payload = NULL;
  JsonObject *room_obj;
  static const char *const copied[] = { "seq", "at_ms", "participant", "track", "reason" };

  if (self->webhooks == NULL || pe->webhook == NULL)
    return;

  payload = json_object_new ();
  room_obj = json_object_new ();
  json_object_set_string_member (room_obj, "name", room->name);
  json_object_set_string_member (room_obj, "node", self->config->node_id);
  json_object_set_int_member (room_obj, "epoch", (gint64)room->epoch);
  json_object_set_object_member (payload, "room", room_obj);
  for (guint i = 0; i < G_N_ELEMENTS (copied); i++) {
    JsonNode *node = json_object_get_member (pe->event, copied[i]);

    if (node != NULL)
      json_object_set_member (payload, copied[i], json_node_copy (node));
  }
  sk_webhooks_send (self->webhooks, pe->webhook, payload);
}

static gboolean
on_events_drained (gpointer user_data)
{
  GTask *task = user_data;

  g_task_return_boolean (task, TRUE);
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

/* Every room's log is complete: SSE clients read it to the end, then shutdown is done. */
static void
shutdown_complete (SkRoomManager *self)
{
  sk_events_http_drain (self->events, SK_SSE_DRAIN_TIMEOUT_MS, on_events_drained,
                        g_steal_pointer (&self->shutdown_task));
}

typedef struct {
  SkRoomManager *manager;
  char *room;
} ReleaseCall;

static void
on_room_released (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ReleaseCall *call = user_data;

  if (!store_op_cancelled (result)) {
    SK_TIMING ("room %s: released", call->room);
    g_hash_table_remove (call->manager->releasing, call->room);
  }
  g_free (call->room);
  g_free (call);
}

static void
room_dispose (SkRoom *room)
{
  SkRoomManager *self = room->manager;

  /* Finished and written: the name is free for whichever node starts it next. */
  SK_TIMING ("room %s: disposed", room->name);
  if (room->placed && !room->lost && !room->remote) {
    sk_store_remove_async (self->store, SK_ROOMS_NS, room->name, NULL, NULL, NULL);
    ReleaseCall *call = g_new0 (ReleaseCall, 1);

    call->manager = self;
    call->room = g_strdup (room->name);
    g_hash_table_add (self->releasing, g_strdup (room->name));
    sk_store_release_room_async (self->store, room->name, room->epoch, self->cancellable,
                                 on_room_released, call);
  }

  g_hash_table_remove (self->rooms, room->name);
  if (self->shutdown_task != NULL && g_hash_table_size (self->rooms) == 0)
    shutdown_complete (self);
}

/* A finished room goes away once everything it queued has been written. */
static void
room_check_done (SkRoom *room)
{
  if (room->finished && room->participants->len == 0 && g_queue_is_empty (&room->pending)
      && room->in_flight == NULL && room->retry_id == 0 && !room->snapshot_in_flight)
    room_dispose (room);
}

static gboolean
room_check_done_idle (gpointer user_data)
{
  SkRoom *room = user_data;

  room->done_idle_id = 0;
  room_check_done (room);
  return G_SOURCE_REMOVE;
}

static gboolean
room_retry_cb (gpointer user_data)
{
  SkRoom *room = user_data;

  room->retry_id = 0;
  if (room->placed)
    room_pump (room);
  else
    room_place (room);
  return G_SOURCE_REMOVE;
}

static void
room_retry_later (SkRoom *room)
{
  if (room->retry_id == 0)
    room->retry_id = g_timeout_add (STORE_RETRY_MS, room_retry_cb, room);
}

static void participant_free (SkParticipant *p);
static JsonNode *room_to_json (SkRoom *room, gboolean snapshot);

static void
on_snapshot_written (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;

  if (store_op_cancelled (result))
    return;
  room->snapshot_in_flight = FALSE;
  if (!sk_store_put_finish (room->manager->store, result, &error))
    g_debug ("room %s: snapshot: %s", room->name, error->message);
  room_write_snapshot (room);
  room_check_done (room);
}

/*
 * The room's state as of last_seq, for a node that has to rebuild it (and for API reads on
 * other nodes). Written when the queue is idle, one at a time: a rebuild replays the log after
 * the snapshot's seq, so a snapshot that lags is only slower, never wrong.
 */
static void
room_write_snapshot (SkRoom *room)
{
  g_autoptr (JsonNode) node = NULL;
  g_autofree char *json = NULL;

  if (!room->snapshot_dirty || room->snapshot_in_flight || room->in_flight != NULL
      || !g_queue_is_empty (&room->pending) || room->finished)
    return;
  room->snapshot_dirty = FALSE;
  room->snapshot_in_flight = TRUE;
  node = room_to_json (room, TRUE);
  json = json_to_string (node, FALSE);
  sk_store_put_async (room->manager->store, SK_ROOMS_NS, room->name, json, room->cancellable,
                      on_snapshot_written, room);
}

/*
 * The room cannot be written any more (another node holds a newer epoch, or the store never
 * let us claim it): drop what is queued, hand every participant back to its owner without
 * events (the new owner writes them), and forget the room.
 */
static void
room_lost (SkRoom *room, const GError *error)
{
  g_warning ("room %s: lost (%s); dropping %u queued events", room->name,
             error != NULL ? error->message : "unknown", g_queue_get_length (&room->pending));

  g_queue_clear_full (&room->pending, (GDestroyNotify)pending_event_free);
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);
  g_clear_handle_id (&room->retry_id, g_source_remove);
  while (room->participants->len > 0) {
    SkParticipant *p = g_ptr_array_steal_index (room->participants, 0);

    p->departed = TRUE;
    for (guint i = 0; i < p->tracks->len; i++) {
      SkTrack *track = g_ptr_array_index (p->tracks, i);

      sk_track_end (track);
      notify_track (room, p, track, FALSE);
    }
    if (p->evicted != NULL)
      p->evicted (p, SK_REASON_NODE_FAILURE, p->user_data);
    participant_free (p);
  }
  room->finished = TRUE;
  room->lost = TRUE;
  room_dispose (room);
}

static void
on_appended (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  PendingEvent *pe;

  if (store_op_cancelled (result))
    return;
  pe = g_steal_pointer (&room->in_flight);
  if (room->remote) {
    /* Handed over meanwhile: whatever the answer, the new host owns the log now. */
    pending_event_free (pe);
    return;
  }

  if (!sk_store_append_event_finish (room->manager->store, result, &error)) {
    if (g_error_matches (error, SK_ERROR, SK_ERROR_STALE_EPOCH)) {
      pending_event_free (pe);
      room_lost (room, error);
      return;
    }
    if (g_error_matches (error, SK_ERROR, SK_ERROR_CONFLICT)) {
      /* Someone else wrote at our epoch: our idea of last_seq is wrong. Re-read it. */
      g_warning ("room %s: %s; re-reading the log position", room->name, error->message);
      g_queue_push_head (&room->pending, pe);
      room->placed = FALSE;
      room_place (room);
      return;
    }
    if (++pe->retries > APPEND_MAX_RETRIES) {
      g_warning ("room %s: dropping event seq %" G_GUINT64_FORMAT " after %u attempts: %s",
                 room->name, pe->seq, pe->retries, error->message);
      pending_event_free (pe);
      room_pump (room);
      room_check_done (room);
      return;
    }
    g_queue_push_head (&room->pending, pe);
    room_retry_later (room);
    return;
  }

  room->last_seq = pe->seq;
  SK_TIMING ("room %s: seq %" G_GUINT64_FORMAT " %s written", room->name, pe->seq,
             json_object_get_string_member_with_default (pe->event, "event", "?"));
  room_send_webhook (room, pe);
  pending_event_free (pe);
  room->snapshot_dirty = TRUE;
  room_pump (room);
  room_write_snapshot (room);
  room_check_done (room);
}

static void
room_pump (SkRoom *room)
{
  g_autofree char *json = NULL;
  PendingEvent *pe;

  if (!room->placed || room->rebuilding || room->in_flight != NULL || room->retry_id != 0)
    return;
  pe = g_queue_pop_head (&room->pending);
  if (pe == NULL)
    return;

  pe->seq = room->last_seq + 1;
  json_object_set_int_member (pe->event, "seq", (gint64)pe->seq);
  {
    g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), pe->event);

    json = json_to_string (node, FALSE);
  }
  room->in_flight = pe;
  sk_store_append_event_async (room->manager->store, room->name, room->epoch, pe->seq, json,
                               room->cancellable, on_appended, room);
}

/* ---- placement: claim the room, then learn where its log stands ------------------------- */

static void
room_place_failed (SkRoom *room, const GError *error)
{
  if (++room->place_attempts >= PLACE_MAX_ATTEMPTS) {
    room_lost (room, error);
    return;
  }
  g_debug ("room %s: placement attempt %u failed: %s", room->name, room->place_attempts,
           error->message);
  /* A lost CAS race is retried at once with the fresh epoch; anything else waits a little. */
  if (g_error_matches (error, SK_ERROR, SK_ERROR_CONFLICT))
    room_place (room);
  else
    room_retry_later (room);
}

static gboolean
room_is_takeover (SkRoom *room)
{
  /* The log was someone else's (or an earlier incarnation's) until our claim. */
  return room->prev_node != NULL && room->prev_epoch + 1 == room->epoch && room->fresh;
}

static void room_rebuild (SkRoom *room);

static void
room_placed (SkRoom *room)
{
  room->placed = TRUE;
  room->place_attempts = 0;
  SK_TIMING ("room %s: placed here (epoch %" G_GUINT64_FORMAT ", last seq %" G_GUINT64_FORMAT ")",
             room->name, room->epoch, room->last_seq);
  if (room->adopted && !room_is_takeover (room)) {
    /* Released or rebuilt elsewhere meanwhile: nothing to adopt, give the claim back. */
    room->finished = TRUE;
    room_dispose (room);
    return;
  }
  if (room_is_takeover (room)) {
    room->rebuilding = TRUE;
    room_rebuild (room);
    return;
  }
  if (room->fresh) {
    PendingEvent *pe = g_new0 (PendingEvent, 1);

    room->fresh = FALSE;
    pe->event = room_event_new (room, "RoomStarted");
    pe->webhook = "room_started";
    g_queue_push_head (&room->pending, pe);
  }
  room_pump (room);
}

static void
on_last_seq (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  guint64 seq = 0;

  if (store_op_cancelled (result))
    return;
  if (!sk_store_last_seq_finish (room->manager->store, result, &seq, &error)) {
    room_place_failed (room, error);
    return;
  }
  room->last_seq = seq;
  room_placed (room);
}

static void
on_claimed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  guint64 epoch = 0;

  if (store_op_cancelled (result))
    return;
  if (!sk_store_claim_room_finish (room->manager->store, result, &epoch, &error)) {
    room_place_failed (room, error);
    return;
  }
  room->epoch = epoch;
  SK_TIMING ("room %s: claimed (epoch %" G_GUINT64_FORMAT ")", room->name, epoch);
  /* Read after the claim: from now on no older writer can add to the log. */
  sk_store_last_seq_async (room->manager->store, room->name, room->cancellable, on_last_seq, room);
}

static guint64
manager_incarnation (SkRoomManager *self)
{
  return self->cluster != NULL ? sk_cluster_get_incarnation (self->cluster) : 0;
}

/* Rooms hosted (or being placed) here, @except aside. */
static guint
manager_n_hosted (SkRoomManager *self, SkRoom *except)
{
  GHashTableIter iter;
  SkRoom *room;
  guint n = 0;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room))
    if (room != except && !room->remote && !room->finished && !room->lost)
      n++;
  return n;
}

static gboolean
manager_is_full (SkRoomManager *self, SkRoom *room)
{
  return self->cluster != NULL && self->config->cluster_max_rooms > 0
         && manager_n_hosted (self, room) >= self->config->cluster_max_rooms;
}

/* Rooms placed on @node as of the last view. */
static guint
manager_n_placed_on (SkRoomManager *self, const char *node)
{
  GHashTableIter iter;
  const char *host;
  guint n = 0;

  g_hash_table_iter_init (&iter, self->hosts);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&host))
    if (strcmp (host, node) == 0)
      n++;
  return n;
}

/*
 * Another live node to host @room_name: one that accepts streams (not draining, store
 * reachable), under its own max_rooms if @need_capacity, the least loaded first (the room's
 * name breaks ties, so concurrent callers agree). NULL if there is none.
 */
static const char *
manager_pick_host (SkRoomManager *self, const char *room_name, gboolean need_capacity,
                   guint64 *incarnation)
{
  g_autoptr (GPtrArray) live = sk_cluster_get_live_nodes (self->cluster);
  const char *best = NULL;
  guint best_load = G_MAXUINT;

  for (guint k = 0; k < live->len; k++) {
    /* Start at the name's hash: among equals, rooms spread as failover spreads them. */
    const char *node = g_ptr_array_index (live, (g_str_hash (room_name) + k) % live->len);
    g_autoptr (JsonObject) info = sk_cluster_dup_node_info (self->cluster, node);
    guint max_rooms, load;

    if (info == NULL || !json_object_get_boolean_member_with_default (info, "accepting", FALSE))
      continue;
    max_rooms = (guint)json_object_get_int_member_with_default (info, "max_rooms", 0);
    load = manager_n_placed_on (self, node);
    if (need_capacity && max_rooms > 0 && load >= max_rooms)
      continue;
    if (load < best_load) {
      best = node;
      best_load = load;
    }
  }
  if (best != NULL && incarnation != NULL)
    *incarnation = sk_cluster_get_live_incarnation (self->cluster, best);
  return best;
}

/* Placed on another node because this one is full: that node adopts it (it finds the
 * placement naming it in its view) and our participants publish there. */
static void
on_claimed_for_other (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  guint64 epoch = 0;

  if (store_op_cancelled (result))
    return;
  if (!sk_store_claim_room_finish (room->manager->store, result, &epoch, &error)) {
    room_place_failed (room, error); /* a conflict re-reads the placement someone else made */
    return;
  }
  room_become_proxy (room, room->host_node, room->host_incarnation, epoch);
}

static void
on_placement (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  SkRoomManager *self;
  g_autoptr (GError) error = NULL;
  g_autofree char *node = NULL;
  guint64 epoch = 0, incarnation = 0;

  if (store_op_cancelled (result))
    return; /* @room may be gone */
  self = room->manager;
  if (!sk_store_get_placement_finish (self->store, result, &node, &incarnation, &epoch, &error)) {
    room_place_failed (room, error);
    return;
  }

  SK_TIMING ("room %s: placement is %s (epoch %" G_GUINT64_FORMAT ")", room->name,
             node != NULL ? node : "none", epoch);
  if (self->cluster != NULL && node != NULL && epoch != room->epoch) {
    SkNodeLiveness liveness = sk_cluster_get_liveness (self->cluster, node, incarnation);

    if (liveness == SK_NODE_UNKNOWN || manager_incarnation (self) == 0) {
      /* Its lease is gone but it is not declared dead yet: wait for the verdict rather
       * than race a node that may only be slow. */
      room_retry_later (room);
      return;
    }
    if (liveness == SK_NODE_ALIVE && strcmp (node, self->config->node_id) != 0) {
      room_become_proxy (room, node, incarnation, epoch);
      return;
    }
  }
  if (node == NULL && room->fresh && !room->adopted && manager_is_full (self, room)) {
    guint64 target_incarnation = 0;
    const char *target = manager_pick_host (self, room->name, TRUE, &target_incarnation);

    if (target != NULL) {
      g_message ("room %s: this node hosts its max_rooms (%u); placing it on node %s", room->name,
                 self->config->cluster_max_rooms, target);
      g_free (room->host_node);
      room->host_node = g_strdup (target);
      room->host_incarnation = target_incarnation;
      sk_store_claim_room_async (self->store, room->name, target, target_incarnation, 0,
                                 room->cancellable, on_claimed_for_other, room);
      return;
    }
    g_warning ("room %s: this node hosts its max_rooms (%u) but no other node has room; "
               "hosting it here",
               room->name, self->config->cluster_max_rooms);
  }
  g_free (room->prev_node);
  room->prev_node = g_steal_pointer (&node);
  room->prev_incarnation = incarnation;
  room->prev_epoch = epoch;
  sk_store_claim_room_async (self->store, room->name, self->config->node_id,
                             manager_incarnation (self), epoch, room->cancellable, on_claimed,
                             room);
}

static void
room_place (SkRoom *room)
{
  sk_store_get_placement_async (room->manager->store, room->name, room->cancellable, on_placement,
                                room);
}

/* ---- proxy: a room hosted on another node ----------------------------------------------- */

static void
on_publication_state (SkRemotePublication *publication, SkRemoteState state, const GError *error,
                      gpointer user_data)
{
  SkParticipant *p = user_data;

  if (state == SK_REMOTE_FAILED)
    g_warning ("room %s: participant %s cannot publish to host %s: %s; retrying", p->room->name,
               p->sid, p->room->host_node, error != NULL ? error->message : "failed");
  else if (state == SK_REMOTE_PUBLISHING)
    g_message ("room %s: participant %s publishes to host %s", p->room->name, p->sid,
               p->room->host_node);
}

static const char *
room_host_url (SkRoom *room)
{
  return sk_cluster_get_node_url (room->manager->cluster, room->host_node);
}

/* Our media of @p goes to the room's host, under @p's sids. */
static void
participant_start_remote (SkParticipant *p)
{
  g_autoptr (JsonObject) o = participant_to_json (p);
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), o);
  g_autofree char *json = json_to_string (node, FALSE);
  const char *url = room_host_url (p->room);

  SK_TIMING ("room %s: participant %s publishes to host %s (%u tracks)", p->room->name, p->sid,
             p->room->host_node, p->tracks->len);
  g_clear_pointer (&p->publication, sk_remote_publication_free);
  p->publication = sk_remote_publication_new (p->room->manager->config, p->room->name, json,
                                              on_publication_state, p);
  sk_remote_publication_expect_tracks (p->publication, p->expected_tracks);
  for (guint i = 0; i < p->tracks->len; i++)
    sk_remote_publication_add_track (p->publication, g_ptr_array_index (p->tracks, i));
  if (url != NULL)
    sk_remote_publication_set_target (p->publication, url);
}

/*
 * The room lives on @node: what we queued for its log is the host's to write (it will, from
 * our publications: ParticipantConnected and TrackPublished under the same sids), and our
 * participants' media goes there.
 */
static void
room_become_proxy (SkRoom *room, const char *node, guint64 incarnation, guint64 epoch)
{
  g_message ("room %s is hosted on node %s (epoch %" G_GUINT64_FORMAT
             "); publishing %u participant(s) there",
             room->name, node, epoch, room->participants->len);
  g_queue_clear_full (&room->pending, (GDestroyNotify)pending_event_free);
  room->remote = TRUE;
  room->fresh = FALSE;
  room->placed = FALSE;
  g_free (room->host_node);
  room->host_node = g_strdup (node);
  room->host_incarnation = incarnation;
  room->host_epoch = epoch;
  for (guint i = 0; i < room->participants->len; i++)
    participant_start_remote (g_ptr_array_index (room->participants, i));
}

/* The view says where the room is now. */
static void
room_follow_host (SkRoom *room, SkStorePlacement *pl)
{
  SkRoomManager *self = room->manager;
  SkNodeLiveness liveness;

  if (pl == NULL) {
    /* The host let the room go (it saw nobody): start it here again, with our participants. */
    g_message ("room %s: its host released it; hosting it here", room->name);
  } else if (pl->epoch == room->host_epoch && g_strcmp0 (pl->node, room->host_node) == 0) {
    liveness = sk_cluster_get_liveness (self->cluster, pl->node, pl->incarnation);
    if (liveness != SK_NODE_DEAD)
      return;
    /* Our publishers live: this node is the natural new host. */
    g_message ("room %s: its host %s died; claiming it here", room->name, pl->node);
  } else if (g_strcmp0 (pl->node, room->host_node) == 0
             && pl->incarnation == room->host_incarnation) {
    room->host_epoch = pl->epoch; /* the same host re-claimed it (a hand-over completing) */
    return;
  } else if (strcmp (pl->node, self->config->node_id) != 0
             && sk_cluster_get_liveness (self->cluster, pl->node, pl->incarnation)
                    == SK_NODE_ALIVE) {
    g_message ("room %s moved to node %s (epoch %" G_GUINT64_FORMAT "); republishing there",
               room->name, pl->node, pl->epoch);
    g_free (room->host_node);
    room->host_node = g_strdup (pl->node);
    room->host_incarnation = pl->incarnation;
    room->host_epoch = pl->epoch;
    for (guint i = 0; i < room->participants->len; i++) {
      SkParticipant *p = g_ptr_array_index (room->participants, i);
      const char *url = room_host_url (room);

      if (p->publication != NULL && url != NULL)
        sk_remote_publication_set_target (p->publication, url);
    }
    return;
  } else {
    return; /* not settled yet: the next view tells */
  }

  /* Host here: the publications stop (nobody to tell), placement decides the rest. */
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    g_clear_pointer (&p->publication, sk_remote_publication_free);
  }
  room->remote = FALSE;
  if (pl == NULL) {
    /* A new life of the room: it starts, and our participants join it again. */
    room->fresh = TRUE;
    room->epoch = 0;
    for (guint i = 0; i < room->participants->len; i++) {
      SkParticipant *p = g_ptr_array_index (room->participants, i);

      room_enqueue (room, participant_event_new (p, "ParticipantConnected"), "participant_joined");
      for (guint j = 0; j < p->tracks->len; j++) {
        JsonObject *event = participant_event_new (p, "TrackPublished");

        json_object_set_object_member (event, "track",
                                       track_to_json (g_ptr_array_index (p->tracks, j)));
        room_enqueue (room, event, "track_published");
      }
    }
  } else {
    /* A takeover (the log names our participants already): rebuilt, no events for them. */
    room->fresh = TRUE;
    room->epoch = 0;
  }
  room_place (room);
}

/* ---- takeover: a dead host's room is rebuilt from the store ------------------------------ */

typedef struct {
  SkRoom *room;
  JsonObject *participants; /* sid → participant object with "tracks" (object sid → track) */
  GPtrArray *order;         /* sids in join order */
  char *writer;             /* node that wrote the snapshot (the previous host) */
  guint64 seq;              /* state as of this seq */
  gboolean open;            /* the log leaves the room started (not finished, not empty) */
} Rebuild;

static void
rebuild_free (Rebuild *rb)
{
  json_object_unref (rb->participants);
  g_ptr_array_unref (rb->order);
  g_free (rb->writer);
  g_free (rb);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Rebuild, rebuild_free)

static void
rebuild_add_participant (Rebuild *rb, JsonObject *participant)
{
  const char *sid = json_object_get_string_member_with_default (participant, "sid", NULL);
  JsonObject *copy;

  if (sid == NULL)
    return;
  copy = json_object_new ();
  static const char *const fields[] = { "sid", "identity", "name", "kind", "ingress_node" };
  for (guint i = 0; i < G_N_ELEMENTS (fields); i++)
    json_object_set_string_member (
        copy, fields[i], json_object_get_string_member_with_default (participant, fields[i], ""));
  json_object_set_int_member (
      copy, "ingress_incarnation",
      json_object_get_int_member_with_default (participant, "ingress_incarnation", 0));
  json_object_set_object_member (copy, "tracks", json_object_new ());
  if (!json_object_has_member (rb->participants, sid))
    g_ptr_array_add (rb->order, g_strdup (sid));
  json_object_set_object_member (rb->participants, sid, copy);
}

static void
rebuild_remove_participant (Rebuild *rb, const char *sid)
{
  guint index;

  json_object_remove_member (rb->participants, sid);
  if (g_ptr_array_find_with_equal_func (rb->order, sid, g_str_equal, &index))
    g_ptr_array_remove_index (rb->order, index);
}

static void
rebuild_clear (Rebuild *rb)
{
  json_object_unref (rb->participants);
  rb->participants = json_object_new ();
  g_ptr_array_set_size (rb->order, 0);
}

/* Folds one logged event into the state. */
static void
rebuild_apply (Rebuild *rb, JsonObject *event)
{
  const char *type = json_object_get_string_member_with_default (event, "event", "");
  JsonObject *p = json_get_object (event, "participant", NULL);
  JsonObject *t = json_get_object (event, "track", NULL);
  const char *sid = p != NULL ? json_object_get_string_member_with_default (p, "sid", "") : "";
  JsonObject *known = sid[0] != '\0' && json_object_has_member (rb->participants, sid)
                          ? json_object_get_object_member (rb->participants, sid)
                          : NULL;

  if (strcmp (type, "RoomStarted") == 0 || strcmp (type, "RoomFinished") == 0) {
    rebuild_clear (rb);
    rb->open = strcmp (type, "RoomStarted") == 0;
  } else if (strcmp (type, "RoomMoved") == 0) {
    rb->open = TRUE;
  } else if (strcmp (type, "ParticipantConnected") == 0 && p != NULL) {
    rebuild_add_participant (rb, p);
  } else if (strcmp (type, "ParticipantDisconnected") == 0) {
    rebuild_remove_participant (rb, sid);
  } else if (strcmp (type, "TrackPublished") == 0 && known != NULL && t != NULL) {
    const char *track_sid = json_object_get_string_member_with_default (t, "sid", NULL);

    if (track_sid != NULL)
      json_object_set_object_member (json_object_get_object_member (known, "tracks"), track_sid,
                                     json_object_ref (t));
  } else if (strcmp (type, "TrackUnpublished") == 0 && known != NULL && t != NULL) {
    const char *track_sid = json_object_get_string_member_with_default (t, "sid", NULL);

    if (track_sid != NULL)
      json_object_remove_member (json_object_get_object_member (known, "tracks"), track_sid);
  }
}

static GstCaps *
caps_for_codec (const char *kind, const char *codec)
{
  if (g_strcmp0 (kind, "audio") == 0)
    return gst_caps_new_empty_simple ("audio/x-opus");
  if (g_ascii_strcasecmp (codec, "VP8") == 0)
    return gst_caps_new_empty_simple ("video/x-vp8");
  return gst_caps_new_simple ("video/x-h264", "stream-format", G_TYPE_STRING, "byte-stream",
                              "alignment", G_TYPE_STRING, "au", NULL);
}

static gboolean
participant_ingress_is_dead (SkRoom *room, SkParticipant *p)
{
  SkRoomManager *self = room->manager;
  guint64 incarnation = p->ingress_incarnation;

  if (self->cluster == NULL)
    return FALSE;
  /* Joined on the dead host itself: its incarnation is the placement's. */
  if (incarnation == 0 && g_strcmp0 (p->ingress_node, room->prev_node) == 0)
    incarnation = room->prev_incarnation;
  if (incarnation == 0)
    return FALSE;
  return sk_cluster_get_liveness (self->cluster, p->ingress_node, incarnation) == SK_NODE_DEAD;
}

static SkParticipant *participant_new (SkRoom *room, const char *sid, const char *identity,
                                       const char *name, const char *kind,
                                       const char *ingress_node);
static void participant_depart (SkParticipant *p, const char *reason);
static void participant_evict (SkParticipant *p, const char *reason);

/*
 * The state is known: the participants the dead host had are back in the room (without
 * events: they never left), RoomMoved goes first, then the departures owed for participants
 * whose ingress died with it (node_failure), then what was queued here while placing.
 */
static void
rebuild_finish (Rebuild *rb)
{
  SkRoom *room = rb->room;
  GQueue queued = room->pending;
  JsonObject *moved;
  guint n_local = room->participants->len;

  g_queue_init (&room->pending);
  room->fresh = FALSE;
  room->rebuilding = FALSE;

  for (guint i = 0; i < rb->order->len; i++) {
    const char *sid = g_ptr_array_index (rb->order, i);
    JsonObject *po = json_object_get_object_member (rb->participants, sid);
    JsonObject *tracks = json_object_get_object_member (po, "tracks");
    g_autoptr (GList) track_sids = json_object_get_members (tracks);
    SkParticipant *p;

    if (room_find_participant (room, sid) != NULL)
      continue;
    p = participant_new (room, sid, json_object_get_string_member (po, "identity"),
                         json_object_get_string_member (po, "name"),
                         json_object_get_string_member (po, "kind"),
                         json_object_get_string_member (po, "ingress_node"));
    p->ingress_incarnation = (guint64)json_object_get_int_member (po, "ingress_incarnation");
    /* Rebuilt ones go before the ones that joined here meanwhile: that was the join order. */
    g_ptr_array_insert (room->participants, (gint)(room->participants->len - n_local), p);
    for (GList *l = track_sids; l != NULL; l = l->next) {
      JsonObject *to = json_object_get_object_member (tracks, l->data);
      const char *kind = json_object_get_string_member_with_default (to, "kind", "video");
      g_autoptr (GstCaps) caps
          = caps_for_codec (kind, json_object_get_string_member_with_default (to, "codec", "H264"));

      g_ptr_array_add (
          p->tracks,
          sk_track_new (g_strcmp0 (kind, "audio") == 0 ? SK_TRACK_KIND_AUDIO : SK_TRACK_KIND_VIDEO,
                        l->data, caps));
    }
  }

  /* A room handed over by a draining node was placed on us by that node itself. */
  const char *from = room->prev_node;
  gboolean handed_over = g_strcmp0 (from, room->manager->config->node_id) == 0;
  if (handed_over && rb->writer != NULL)
    from = rb->writer;
  if (!rb->open) {
    /* Nothing had started it: placed here by a node over its max_rooms (or a dead host's
     * room that had already finished). */
    g_message ("room %s: placed on this node (epoch %" G_GUINT64_FORMAT "); starting it",
               room->name, room->epoch);
    room_enqueue (room, room_event_new (room, "RoomStarted"), "room_started");
  } else {
    moved = room_event_new (room, "RoomMoved");
    json_object_set_string_member (moved, "from_node", from);
    json_object_set_int_member (moved, "epoch", (gint64)room->epoch);
    json_object_set_string_member (moved, "reason",
                                   handed_over ? SK_REASON_DRAIN : SK_REASON_NODE_FAILURE);
    g_message ("room %s: rebuilt here from node %s (epoch %" G_GUINT64_FORMAT
               ", %u participants, %s)",
               room->name, from, room->epoch, rb->order->len,
               handed_over ? "handed over" : "its host died");
    room_enqueue (room, moved, NULL);
  }
  SK_TIMING ("room %s: rebuilt", room->name);

  for (guint i = 0; i < room->participants->len;) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    if (i < room->participants->len - n_local && participant_ingress_is_dead (room, p)) {
      g_message ("room %s: participant %s (%s) ran on dead node %s", room->name, p->sid,
                 p->identity, p->ingress_node);
      participant_evict (p, SK_REASON_NODE_FAILURE);
      continue;
    }
    i++;
  }
  /* Invariant 4 across the move: a newcomer here replaces a rebuilt one of its identity. */
  for (guint i = 0; i + n_local < room->participants->len;) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);
    gboolean replaced = FALSE;

    for (guint j = room->participants->len - n_local; j < room->participants->len; j++) {
      if (strcmp (((SkParticipant *)g_ptr_array_index (room->participants, j))->identity,
                  p->identity)
          == 0) {
        participant_evict (p, SK_REASON_REPLACED);
        replaced = TRUE;
        break;
      }
    }
    if (!replaced)
      i++;
  }
  /* What joined here while the room was being placed is queued already (sids borrowed from
   * @queued, appended below). */
  g_autoptr (GHashTable) queued_sids = g_hash_table_new (g_str_hash, g_str_equal);
  for (GList *l = queued.head; l != NULL; l = l->next) {
    JsonObject *event = ((PendingEvent *)l->data)->event;
    const char *type = json_object_get_string_member_with_default (event, "event", "");
    JsonObject *o = strcmp (type, "ParticipantConnected") == 0
                        ? json_get_object (event, "participant", NULL)
                    : strcmp (type, "TrackPublished") == 0 ? json_get_object (event, "track", NULL)
                                                           : NULL;

    if (o != NULL)
      g_hash_table_add (queued_sids,
                        (gpointer)json_object_get_string_member_with_default (o, "sid", ""));
  }
  /* Ours, proxied to the dead host: what it never wrote (its POST was not through, a track
   * came or went meanwhile) is written now. */
  for (guint i = room->participants->len - n_local; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);
    JsonObject *known = json_get_object (rb->participants, p->sid, NULL);
    JsonObject *known_tracks = known != NULL ? json_get_object (known, "tracks", NULL) : NULL;

    if (known == NULL && !g_hash_table_contains (queued_sids, p->sid))
      room_enqueue (room, participant_event_new (p, "ParticipantConnected"), "participant_joined");
    for (guint j = 0; j < p->tracks->len; j++) {
      SkTrack *track = g_ptr_array_index (p->tracks, j);

      if ((known_tracks == NULL || !json_object_has_member (known_tracks, sk_track_get_sid (track)))
          && !g_hash_table_contains (queued_sids, sk_track_get_sid (track))) {
        JsonObject *event = participant_event_new (p, "TrackPublished");

        json_object_set_object_member (event, "track", track_to_json (track));
        room_enqueue (room, event, "track_published");
      }
    }
  }

  if (room->participants->len > 0)
    g_clear_handle_id (&room->empty_timeout_id, g_source_remove);

  while (!g_queue_is_empty (&queued))
    g_queue_push_tail (&room->pending, g_queue_pop_head (&queued));
  rebuild_free (rb);
  room_pump (room);
}

static void
on_rebuild_events (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Rebuild *rb = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) events = NULL;

  if (store_op_cancelled (result)) {
    rebuild_free (rb);
    return;
  }
  events = sk_store_read_events_finish (rb->room->manager->store, result, &error);
  if (events == NULL) {
    room_lost (rb->room, error);
    rebuild_free (rb);
    return;
  }
  for (guint i = 0; i < events->len; i++) {
    SkStoreEvent *ev = g_ptr_array_index (events, i);
    g_autoptr (JsonNode) node = json_from_string (ev->json, NULL);

    if (node != NULL && JSON_NODE_HOLDS_OBJECT (node))
      rebuild_apply (rb, json_node_get_object (node));
    rb->seq = ev->seq;
  }
  if (events->len == REBUILD_READ_LIMIT && rb->seq < rb->room->last_seq) {
    sk_store_read_events_async (rb->room->manager->store, rb->room->name, rb->seq,
                                REBUILD_READ_LIMIT, rb->room->cancellable, on_rebuild_events, rb);
    return;
  }
  rebuild_finish (rb);
}

static void
on_rebuild_snapshot (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Rebuild *rb = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *json = NULL;

  if (store_op_cancelled (result)) {
    rebuild_free (rb);
    return;
  }
  json = sk_store_get_finish (rb->room->manager->store, result, &error);
  if (json != NULL) {
    g_autoptr (JsonNode) node = json_from_string (json, NULL);
    JsonObject *o
        = node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : NULL;
    JsonArray *ps = o != NULL ? json_get_array (o, "participants", NULL) : NULL;

    if (ps != NULL
        && (guint64)json_object_get_int_member_with_default (o, "seq", 0) <= rb->room->last_seq) {
      rb->seq = (guint64)json_object_get_int_member_with_default (o, "seq", 0);
      rb->writer = g_strdup (json_object_get_string_member_with_default (o, "node", NULL));
      rb->open = TRUE; /* snapshots are written of started rooms only */
      for (guint i = 0; i < json_array_get_length (ps); i++) {
        JsonObject *po = json_array_get_object_element (ps, i);
        JsonArray *tracks = json_get_array (po, "tracks", NULL);
        JsonObject *known;

        rebuild_add_participant (rb, po);
        known = json_object_get_object_member (
            json_object_get_object_member (rb->participants,
                                           json_object_get_string_member (po, "sid")),
            "tracks");
        for (guint j = 0; tracks != NULL && j < json_array_get_length (tracks); j++) {
          JsonObject *to = json_array_get_object_element (tracks, j);
          const char *track_sid = json_object_get_string_member_with_default (to, "sid", NULL);

          if (track_sid != NULL)
            json_object_set_object_member (known, track_sid, json_object_ref (to));
        }
      }
    }
  }
  /* No snapshot (or an unreadable one): the log from its start tells the same story. */
  sk_store_read_events_async (rb->room->manager->store, rb->room->name, rb->seq, REBUILD_READ_LIMIT,
                              rb->room->cancellable, on_rebuild_events, rb);
}

static void
room_rebuild (SkRoom *room)
{
  Rebuild *rb = g_new0 (Rebuild, 1);

  rb->room = room;
  rb->participants = json_object_new ();
  rb->order = g_ptr_array_new_with_free_func (g_free);
  sk_store_get_async (room->manager->store, SK_ROOMS_NS, room->name, room->cancellable,
                      on_rebuild_snapshot, rb);
}

/* ---- rooms ------------------------------------------------------------------------------ */

static void
room_free (gpointer data)
{
  SkRoom *room = data;

  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);
  g_clear_handle_id (&room->retry_id, g_source_remove);
  g_queue_clear_full (&room->pending, (GDestroyNotify)pending_event_free);
  g_clear_pointer (&room->in_flight, pending_event_free);
  g_ptr_array_unref (room->participants);
  g_free (room->prev_node);
  g_free (room->host_node);
  g_clear_handle_id (&room->done_idle_id, g_source_remove);
  g_cancellable_cancel (room->cancellable);
  g_object_unref (room->cancellable);
  g_free (room->name);
  g_free (room);
}

/* A finished room that gets a participant again before its RoomFinished was written. */
static void
room_restart (SkRoom *room)
{
  room->finished = FALSE;
  room_enqueue (room, room_event_new (room, "RoomStarted"), "room_started");
}

static SkRoom *
room_new (SkRoomManager *self, const char *name)
{
  SkRoom *room = g_new0 (SkRoom, 1);

  room->manager = self;
  room->name = g_strdup (name);
  room->participants = g_ptr_array_new_with_free_func ((GDestroyNotify)participant_free);
  g_queue_init (&room->pending);
  room->fresh = TRUE; /* RoomStarted (or RoomMoved) once the placement is known */
  room->cancellable = g_cancellable_new ();
  g_hash_table_insert (self->rooms, room->name, room);
  room_place (room);
  return room;
}

static void
room_finish (SkRoom *room)
{
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);
  if (room->finished)
    return;
  room->finished = TRUE;
  room_enqueue (room, room_event_new (room, "RoomFinished"), "room_finished");
}

static gboolean
room_empty_timeout_cb (gpointer user_data)
{
  SkRoom *room = user_data;

  room->empty_timeout_id = 0;
  SK_TIMING ("room %s: empty timeout", room->name);
  room_finish (room);
  return G_SOURCE_REMOVE;
}

/* ---- participants ----------------------------------------------------------------------- */

static void
participant_free (SkParticipant *p)
{
  g_clear_pointer (&p->publication, sk_remote_publication_free);
  g_ptr_array_unref (p->tracks);
  g_free (p->sid);
  g_free (p->identity);
  g_free (p->name);
  g_free (p->kind);
  g_free (p->ingress_node);
  g_free (p);
}

static SkParticipant *
participant_new (SkRoom *room, const char *sid, const char *identity, const char *name,
                 const char *kind, const char *ingress_node)
{
  SkParticipant *p = g_new0 (SkParticipant, 1);

  p->room = room;
  p->sid = sid != NULL ? g_strdup (sid) : sk_id_new ("PA_");
  p->identity = g_strdup (identity);
  p->name = g_strdup (name != NULL ? name : "");
  p->kind = g_strdup (kind != NULL ? kind : "standard");
  p->ingress_node = g_strdup (ingress_node != NULL ? ingress_node : room->manager->config->node_id);
  p->tracks = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_track_unref);
  return p;
}

static JsonObject *
participant_event_new (SkParticipant *p, const char *type)
{
  JsonObject *o = room_event_new (p->room, type);

  json_object_set_object_member (o, "participant", participant_to_json (p));
  return o;
}

/* Removes track @index of @p with TrackUnpublished. */
static void
participant_unpublish_index (SkParticipant *p, guint index, const char *reason)
{
  g_autoptr (SkTrack) track = g_ptr_array_steal_index (p->tracks, index);
  JsonObject *event = participant_event_new (p, "TrackUnpublished");

  json_object_set_object_member (event, "track", track_to_json (track));
  json_object_set_string_member (event, "reason", reason);
  room_enqueue (p->room, event, "track_unpublished");
  if (p->publication != NULL)
    sk_remote_publication_remove_track (p->publication, track);
  sk_track_end (track);
  notify_track (p->room, p, track, FALSE);
}

/* Writes the participant's way out (tracks, then ParticipantDisconnected) and takes it out of
 * its room; the caller frees it. */
static void
participant_depart (SkParticipant *p, const char *reason)
{
  SkRoom *room = p->room;
  SkRoomManager *self = room->manager;
  JsonObject *event;
  guint index;

  /* Proxied: one DELETE makes the host write the tracks' and the participant's way out. */
  if (p->publication != NULL)
    sk_remote_publication_end (p->publication, reason);
  while (p->tracks->len > 0)
    participant_unpublish_index (p, 0, reason);
  event = participant_event_new (p, "ParticipantDisconnected");
  json_object_set_string_member (event, "reason", reason);
  room_enqueue (room, event, "participant_left");

  p->departed = TRUE;
  if (g_ptr_array_find (room->participants, p, &index))
    g_ptr_array_steal_index (room->participants, index);

  if (room->participants->len == 0 && room->remote) {
    /* Nothing of ours is left in a room another node hosts. */
    room->finished = TRUE;
    if (room->done_idle_id == 0)
      room->done_idle_id = g_idle_add (room_check_done_idle, room);
  } else if (room->participants->len == 0 && !self->shutting_down) {
    g_clear_handle_id (&room->empty_timeout_id, g_source_remove);
    room->empty_timeout_id
        = g_timeout_add (self->config->room_empty_timeout_ms, room_empty_timeout_cb, room);
  }
}

/* The room manager's own removal (replaced, shutdown): the owner is told, then it is freed. */
static void
participant_evict (SkParticipant *p, const char *reason)
{
  participant_depart (p, reason);
  if (p->evicted != NULL)
    p->evicted (p, reason, p->user_data);
  participant_free (p);
}

static SkParticipant *
room_manager_join (SkRoomManager *self, const char *room_name, const char *sid,
                   const char *identity, const char *name, const char *kind,
                   const char *ingress_node, SkParticipantEvictedFunc evicted, gpointer user_data,
                   GError **error)
{
  SkParticipant *p;
  SkRoom *room;

  g_return_val_if_fail (self != NULL, NULL);

  if (self->shutting_down) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE, "the node is shutting down");
    return NULL;
  }
  if (!room_name_is_valid (room_name)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "room name must be 1-%d characters of A-Z a-z 0-9 _ . -", ROOM_NAME_MAX);
    return NULL;
  }
  if (identity == NULL || identity[0] == '\0' || strlen (identity) > PARTICIPANT_FIELD_MAX
      || !g_utf8_validate (identity, -1, NULL)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "participant identity must be 1-%d bytes of UTF-8", PARTICIPANT_FIELD_MAX);
    return NULL;
  }
  if (name != NULL
      && (strlen (name) > PARTICIPANT_FIELD_MAX || !g_utf8_validate (name, -1, NULL))) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "participant name must be at most %d bytes of UTF-8", PARTICIPANT_FIELD_MAX);
    return NULL;
  }

  room = g_hash_table_lookup (self->rooms, room_name);
  SK_TIMING ("room %s: %s joins (room %s)", room_name, identity,
             room == NULL     ? "new"
             : room->finished ? "finishing"
             : room->remote   ? "proxied"
             : room->placed   ? "placed"
                              : "placing");
  if (room == NULL)
    room = room_new (self, room_name);
  else if (room->finished)
    room_restart (room); /* RoomFinished is still being written: the same object restarts */
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);

  /* Invariant 4: one connected participant per identity, the newest wins. */
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *old = g_ptr_array_index (room->participants, i);

    if (strcmp (old->identity, identity) == 0) {
      participant_evict (old, SK_REASON_REPLACED);
      break;
    }
  }
  /* The eviction may have armed the empty timer; the room is not empty. */
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);

  p = participant_new (room, sid, identity, name, kind, ingress_node);
  if (ingress_node == NULL || strcmp (ingress_node, self->config->node_id) == 0)
    p->ingress_incarnation = manager_incarnation (self);
  else if (self->cluster != NULL)
    p->ingress_incarnation = sk_cluster_get_live_incarnation (self->cluster, ingress_node);
  p->evicted = evicted;
  p->user_data = user_data;
  g_ptr_array_add (room->participants, p);
  if (room->remote)
    participant_start_remote (p);

  room_enqueue (room, participant_event_new (p, "ParticipantConnected"), "participant_joined");
  return p;
}

SkParticipant *
sk_room_manager_join (SkRoomManager *self, const char *room_name, const char *identity,
                      const char *name, const char *kind, SkParticipantEvictedFunc evicted,
                      gpointer user_data, GError **error)
{
  return room_manager_join (self, room_name, NULL, identity, name, kind, NULL, evicted, user_data,
                            error);
}

static gboolean
sid_is_valid (const char *sid, const char *prefix)
{
  gsize len = sid != NULL ? strlen (sid) : 0;

  if (len <= strlen (prefix) || len > 64 || !g_str_has_prefix (sid, prefix))
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    if (!g_ascii_isalnum (sid[i]) && sid[i] != '_')
      return FALSE;
  }
  return TRUE;
}

static SkParticipant *
room_find_participant (SkRoom *room, const char *sid)
{
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    if (strcmp (p->sid, sid) == 0)
      return p;
  }
  return NULL;
}

SkParticipant *
sk_room_manager_join_remote (SkRoomManager *self, const char *room_name, const char *sid,
                             const char *identity, const char *name, const char *kind,
                             const char *ingress_node, SkParticipantEvictedFunc evicted,
                             gpointer user_data, GError **error)
{
  SkRoom *room;
  SkParticipant *p;

  g_return_val_if_fail (self != NULL, NULL);

  if (!sid_is_valid (sid, "PA_") || ingress_node == NULL || ingress_node[0] == '\0'
      || strlen (ingress_node) > PARTICIPANT_FIELD_MAX) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "a remote participant needs a PA_ sid and its ingress node");
    return NULL;
  }
  /* Rebuilt here after a move: the participant is already in the room, only its media and
   * its owner are new. */
  room = g_hash_table_lookup (self->rooms, room_name);
  /* In a cluster a remote publisher only comes to the room's host: until the room is placed
   * and rebuilt here, the sids it brings may be ones the log already has. It retries. */
  if (self->cluster != NULL
      && (room == NULL || room->remote || room->rebuilding || !room->placed || room->lost)) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE, "room %s is not hosted here (yet)",
                 room_name);
    return NULL;
  }
  p = room != NULL && !room->finished ? room_find_participant (room, sid) : NULL;
  if (p != NULL) {
    if (strcmp (p->identity, identity != NULL ? identity : "") != 0) {
      g_set_error (error, SK_ERROR, SK_ERROR_CONFLICT, "participant %s has another identity", sid);
      return NULL;
    }
    p->evicted = evicted;
    p->user_data = user_data;
    g_free (p->ingress_node);
    p->ingress_node = g_strdup (ingress_node);
    if (self->cluster != NULL)
      p->ingress_incarnation = sk_cluster_get_live_incarnation (self->cluster, ingress_node);
    return p;
  }
  return room_manager_join (self, room_name, sid, identity, name, kind, ingress_node, evicted,
                            user_data, error);
}

const char *
sk_participant_get_sid (SkParticipant *participant)
{
  return participant->sid;
}

const char *
sk_participant_get_room (SkParticipant *participant)
{
  return participant->room->name;
}

const char *
sk_participant_get_identity (SkParticipant *participant)
{
  return participant->identity;
}

static SkTrack *
participant_publish_track (SkParticipant *p, const char *sid, SkTrackKind kind, GstCaps *caps)
{
  JsonObject *event;
  SkTrack *track;

  track = sk_track_new (kind, sid, caps);
  g_ptr_array_add (p->tracks, track);

  event = participant_event_new (p, "TrackPublished");
  json_object_set_object_member (event, "track", track_to_json (track));
  room_enqueue (p->room, event, "track_published");
  if (p->publication != NULL)
    sk_remote_publication_add_track (p->publication, track);
  notify_track (p->room, p, track, TRUE);
  return track;
}

void
sk_participant_expect_tracks (SkParticipant *p, guint n_tracks)
{
  g_return_if_fail (p != NULL);

  p->expected_tracks = n_tracks;
  if (p->publication != NULL)
    sk_remote_publication_expect_tracks (p->publication, n_tracks);
}

SkTrack *
sk_participant_publish_track (SkParticipant *p, SkTrackKind kind, GstCaps *caps)
{
  g_autofree char *sid = NULL;

  g_return_val_if_fail (p != NULL && caps != NULL, NULL);
  g_return_val_if_fail (!p->departed, NULL);

  sid = sk_id_new ("TR_");
  return participant_publish_track (p, sid, kind, caps);
}

SkTrack *
sk_participant_publish_track_with_sid (SkParticipant *p, const char *sid, SkTrackKind kind,
                                       GstCaps *caps)
{
  g_return_val_if_fail (p != NULL && caps != NULL, NULL);
  g_return_val_if_fail (!p->departed, NULL);

  if (!sid_is_valid (sid, "TR_"))
    return NULL;
  for (guint i = 0; i < p->tracks->len; i++) {
    SkTrack *track = g_ptr_array_index (p->tracks, i);

    if (strcmp (sk_track_get_sid (track), sid) != 0)
      continue;
    if (sk_track_get_kind (track) != kind)
      return NULL;
    /* Re-bound after a move: subscribers already follow this track object. */
    sk_track_set_caps (track, caps);
    return track;
  }
  return participant_publish_track (p, sid, kind, caps);
}

void
sk_participant_unpublish_track (SkParticipant *p, SkTrack *track, const char *reason)
{
  guint index;

  g_return_if_fail (p != NULL && track != NULL);
  /* An evicted participant's tracks were already unpublished. */
  if (p->departed || !g_ptr_array_find (p->tracks, track, &index))
    return;
  participant_unpublish_index (p, index, reason != NULL ? reason : SK_REASON_CLIENT_INITIATED);
}

void
sk_participant_leave (SkParticipant *p, const char *reason)
{
  g_return_if_fail (p != NULL);
  /* Called from its own evicted callback: the eviction already wrote it and frees it. */
  if (p->departed)
    return;
  participant_depart (p, reason != NULL ? reason : SK_REASON_CLIENT_INITIATED);
  participant_free (p);
}

/* ---- HTTP: /v1/rooms… -------------------------------------------------------------------- */

static JsonNode *
room_to_json (SkRoom *room, gboolean snapshot)
{
  JsonObject *o = json_object_new ();
  JsonArray *participants = json_array_new ();

  json_object_set_string_member (o, "name", room->name);
  json_object_set_string_member (o, "node", room->manager->config->node_id);
  json_object_set_int_member (o, "epoch", (gint64)room->epoch);
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);
    JsonObject *po = participant_to_json (p);
    JsonArray *tracks = json_array_new ();

    if (snapshot)
      json_object_set_int_member (po, "ingress_incarnation", (gint64)p->ingress_incarnation);
    for (guint j = 0; j < p->tracks->len; j++)
      json_array_add_object_element (tracks, track_to_json (g_ptr_array_index (p->tracks, j)));
    json_object_set_array_member (po, "tracks", tracks);
    json_array_add_object_element (participants, po);
  }
  json_object_set_array_member (o, "participants", participants);
  if (snapshot)
    json_object_set_int_member (o, "seq", (gint64)room->last_seq);
  {
    JsonNode *node = json_node_new (JSON_NODE_OBJECT);

    json_node_take_object (node, o);
    return node;
  }
}

static gint
compare_room_names (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(SkRoom *const *)a)->name, (*(SkRoom *const *)b)->name);
}

static void
rooms_http_list (SkRoomManager *self, SoupServerMessage *msg)
{
  g_autoptr (GPtrArray) rooms = g_ptr_array_new ();
  g_autoptr (JsonNode) root = NULL;
  JsonObject *o = json_object_new ();
  JsonArray *array = json_array_new ();
  GHashTableIter iter;
  SkRoom *room;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room)) {
    /* Rooms this node hosts; one it only publishes into is listed by its host. */
    if (!room->finished && !room->remote && !room->lost)
      g_ptr_array_add (rooms, room);
  }
  g_ptr_array_sort (rooms, compare_room_names);
  for (guint i = 0; i < rooms->len; i++)
    json_array_add_element (array, room_to_json (g_ptr_array_index (rooms, i), FALSE));
  json_object_set_array_member (o, "rooms", array);
  root = json_node_init_object (json_node_alloc (), o);
  json_object_unref (o);
  sk_http_reply_json (msg, SOUP_STATUS_OK, root);
}

/* WHEP for a room hosted on another live node: 307 there (DESIGN.md, data path 4). A room
 * placed nowhere is waited for here, as on a single node. */
static gboolean
manager_redirect_to_host (SkRoomManager *self, SoupServerMessage *msg, const char *room_name)
{
  SkRoom *room = g_hash_table_lookup (self->rooms, room_name);
  const char *host, *url;
  g_autofree char *location = NULL;
  GUri *uri;

  if (self->cluster == NULL || (room != NULL && !room->lost && !room->remote))
    return FALSE;
  host = room != NULL && room->remote ? room->host_node
                                      : g_hash_table_lookup (self->hosts, room_name);
  if (host == NULL || strcmp (host, self->config->node_id) == 0)
    return FALSE;
  url = sk_cluster_get_node_url (self->cluster, host);
  if (url == NULL || url[0] == '\0') {
    /* Its host holds no lease (it died, or left): the room is being rebuilt elsewhere. A
     * subscriber here would wait for a room this node may never get; the viewer retries. */
    sk_http_add_cors (msg, "POST, OPTIONS");
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "room_moving",
                         "room %s: its host %s is gone and the room is not rebuilt yet; retry",
                         room_name, host);
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Retry-After",
                                  "1");
    return TRUE;
  }
  uri = soup_server_message_get_uri (msg);
  location = g_strdup_printf ("%s%s%s%s", url, g_uri_get_path (uri),
                              g_uri_get_query (uri) != NULL ? "?" : "",
                              g_uri_get_query (uri) != NULL ? g_uri_get_query (uri) : "");
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Location",
                                location);
  soup_server_message_set_status (msg, SOUP_STATUS_TEMPORARY_REDIRECT, NULL);
  return TRUE;
}

static void
on_room_snapshot_for_http (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (SoupServerMessage) msg = user_data;
  g_autoptr (GError) error = NULL;
  SkRoomManager *self;
  g_autofree char *json = NULL;
  g_autoptr (JsonNode) node = NULL;

  if (store_op_cancelled (result))
    return; /* the node is shutting down; the server drops the connection */
  self = g_object_get_data (G_OBJECT (msg), "sk-room-manager");
  json = sk_store_get_finish (self->store, result, &error);
  node = json != NULL ? json_from_string (json, NULL) : NULL;

  if (node != NULL && JSON_NODE_HOLDS_OBJECT (node)) {
    json_object_remove_member (json_node_get_object (node), "seq");
    sk_http_reply_json (msg, SOUP_STATUS_OK, node);
  } else if (error != NULL && !g_error_matches (error, SK_ERROR, SK_ERROR_NOT_FOUND)) {
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "unavailable", "%s", error->message);
  } else {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "room is not active");
  }
  soup_server_message_unpause (msg);
}

static void
rooms_http_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                    gpointer user_data)
{
  SkRoomManager *self = user_data;
  const char *method = soup_server_message_get_method (msg);
  const char *rest = path + strlen ("/v1/rooms");
  const char *slash;
  g_autofree char *room_name = NULL;
  SkRoom *room;

  if (*rest != '\0' && *rest != '/') {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such resource");
    return;
  }
  if (*rest == '/')
    rest++;

  if (*rest == '\0') {
    if (method != SOUP_METHOD_GET) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
      return;
    }
    if (sk_http_require_token (msg, self->config->api_token))
      rooms_http_list (self, msg);
    return;
  }

  slash = strchr (rest, '/');
  room_name = slash != NULL ? g_strndup (rest, slash - rest) : g_strdup (rest);
  rest = slash != NULL ? slash + 1 : "";
  if (!room_name_is_valid (room_name)) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                         "room name must be 1-%d characters of A-Z a-z 0-9 _ . -", ROOM_NAME_MAX);
    return;
  }

  if (strcmp (rest, "events") == 0) {
    if (method != SOUP_METHOD_GET) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
      return;
    }
    sk_events_http_handle (self->events, msg, room_name);
  } else if (strcmp (rest, "whep") == 0) {
    if (method != SOUP_METHOD_POST && method != SOUP_METHOD_OPTIONS) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                           "use POST (WHEP offer) or OPTIONS");
      return;
    }
    if (method == SOUP_METHOD_POST && manager_redirect_to_host (self, msg, room_name))
      return;
    sk_whep_server_handle_offer (self->whep, msg, room_name);
  } else if (*rest == '\0') {
    if (method != SOUP_METHOD_GET) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
      return;
    }
    if (!sk_http_require_token (msg, self->config->api_token))
      return;
    room = g_hash_table_lookup (self->rooms, room_name);
    if (room == NULL || room->finished || room->lost || room->remote) {
      /* Hosted elsewhere in the cluster (or nowhere): the host's snapshot in the store. */
      soup_server_message_pause (msg);
      g_object_set_data (G_OBJECT (msg), "sk-room-manager", self);
      sk_store_get_async (self->store, SK_ROOMS_NS, room_name, self->cancellable,
                          on_room_snapshot_for_http, g_object_ref (msg));
      return;
    }
    {
      g_autoptr (JsonNode) root = room_to_json (room, FALSE);

      sk_http_reply_json (msg, SOUP_STATUS_OK, root);
    }
  } else {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such resource");
  }
}

void
sk_room_manager_attach_http (SkRoomManager *self, SoupServer *server)
{
  soup_server_add_handler (server, "/v1/rooms", rooms_http_handler, self, NULL);
  sk_whep_server_attach_http (self->whep, server);
}

/* ---- cluster: failure handling --------------------------------------------------------- */

static GPtrArray *
manager_rooms (SkRoomManager *self)
{
  GPtrArray *rooms = g_ptr_array_new ();
  GHashTableIter iter;
  SkRoom *room;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room))
    g_ptr_array_add (rooms, room);
  return rooms;
}

/* Participants published from another node that died leave with node_failure. */
static void
room_check_remote_participants (SkRoom *room)
{
  const char *me = room->manager->config->node_id;

  for (guint i = 0; i < room->participants->len;) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    if (strcmp (p->ingress_node, me) != 0 && participant_ingress_is_dead (room, p)) {
      g_message ("room %s: participant %s (%s): its ingress node %s died", room->name, p->sid,
                 p->identity, p->ingress_node);
      participant_evict (p, SK_REASON_NODE_FAILURE);
      continue;
    }
    i++;
  }
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

/* One survivor is the first choice for each orphaned room (spreading them by name); the
 * others step in only if it does not. The placement's compare-and-set settles any race. */
static gboolean
manager_is_first_choice (SkRoomManager *self, const char *room)
{
  g_autoptr (GPtrArray) live = sk_cluster_get_live_nodes (self->cluster);

  g_ptr_array_add (live, (gpointer)self->config->node_id);
  g_ptr_array_sort (live, compare_strings);
  return strcmp (g_ptr_array_index (live, g_str_hash (room) % live->len), self->config->node_id)
         == 0;
}

static SkStorePlacement *
manager_find_placement (GPtrArray *placements, const char *room)
{
  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *pl = g_ptr_array_index (placements, i);

    if (strcmp (pl->room, room) == 0)
      return pl;
  }
  return NULL;
}

static gboolean
on_orphan_view (gpointer user_data)
{
  SkRoomManager *self = user_data;

  self->orphan_view_id = 0;
  sk_cluster_refresh_view (self->cluster);
  return G_SOURCE_REMOVE;
}

static void
on_cluster_view (SkCluster *cluster, GPtrArray *placements, gpointer user_data)
{
  SkRoomManager *self = user_data;
  g_autoptr (GPtrArray) rooms = NULL;

  if (self->shutting_down || sk_cluster_get_state (cluster) != SK_CLUSTER_MEMBER)
    return;

  g_hash_table_remove_all (self->hosts);
  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *pl = g_ptr_array_index (placements, i);

    g_hash_table_insert (self->hosts, g_strdup (pl->room), g_strdup (pl->node));
  }

  rooms = manager_rooms (self);
  for (guint i = 0; i < rooms->len; i++) {
    SkRoom *room = g_ptr_array_index (rooms, i);

    if (room->remote && !room->finished)
      room_follow_host (room, manager_find_placement (placements, room->name));
    else if (room->placed && !room->rebuilding && !room->lost)
      room_check_remote_participants (room);
  }

  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *pl = g_ptr_array_index (placements, i);
    guint views;

    /* Handed to us by a draining node: ours to rebuild at once. */
    if (strcmp (pl->node, self->config->node_id) == 0
        && pl->incarnation == sk_cluster_get_incarnation (cluster)
        && !g_hash_table_contains (self->rooms, pl->room)
        && !g_hash_table_contains (self->releasing, pl->room)) {
      g_message ("room %s: handed over to this node; rebuilding it", pl->room);
      room_new (self, pl->room)->adopted = TRUE;
      continue;
    }

    if (g_hash_table_contains (self->rooms, pl->room)
        || sk_cluster_get_liveness (cluster, pl->node, pl->incarnation) != SK_NODE_DEAD) {
      g_hash_table_remove (self->orphan_seen, pl->room);
      continue;
    }
    views = GPOINTER_TO_UINT (g_hash_table_lookup (self->orphan_seen, pl->room)) + 1;
    g_hash_table_insert (self->orphan_seen, g_strdup (pl->room), GUINT_TO_POINTER (views));
    if (views == 1 && self->orphan_view_id == 0)
      self->orphan_view_id = g_timeout_add (ORPHAN_DEFER_MS, on_orphan_view, self);
    /* A full node leaves its first choices to the others, unless nobody takes them. */
    if (views > ORPHAN_PATIENCE_VIEWS
        || (views > 1 && !manager_is_full (self, NULL)
            && manager_is_first_choice (self, pl->room))) {
      SkRoom *room;

      g_message ("room %s: host %s (incarnation %" G_GUINT64_FORMAT ") is dead; claiming it",
                 pl->room, pl->node, pl->incarnation);
      g_hash_table_remove (self->orphan_seen, pl->room);
      SK_TIMING ("room %s: claiming from dead host %s", pl->room, pl->node);
      room = room_new (self, pl->room);
      room->adopted = TRUE;
    }
  }
}

static void
on_cluster_fenced (SkCluster *cluster, gpointer user_data)
{
  SkRoomManager *self = user_data;
  g_autoptr (GPtrArray) rooms = manager_rooms (self);
  g_autoptr (GError) error
      = g_error_new (SK_ERROR, SK_ERROR_STALE_EPOCH, "this node was declared dead (fenced)");

  /* Survivors own these rooms and their logs now: drop them without a word. */
  for (guint i = 0; i < rooms->len; i++)
    room_lost (g_ptr_array_index (rooms, i), error);
}

guint
sk_room_manager_get_n_hosted (SkRoomManager *self)
{
  return manager_n_hosted (self, NULL);
}

SkCluster *
sk_room_manager_get_cluster (SkRoomManager *self)
{
  return self->cluster;
}

void
sk_room_manager_set_cluster (SkRoomManager *self, SkCluster *cluster)
{
  static const SkClusterCallbacks callbacks = {
    .fenced = on_cluster_fenced,
    .view = on_cluster_view,
  };

  self->cluster = cluster;
  sk_cluster_add_callbacks (cluster, &callbacks, self);
}

/* ---- drain: hand every hosted room to another node --------------------------------------- */

typedef struct {
  SkRoomManager *manager;
  char *room;
  char *node;
  guint64 incarnation;
} HandOver;

static void
hand_over_free (HandOver *ho)
{
  g_free (ho->room);
  g_free (ho->node);
  g_free (ho);
}

static void
drain_step_done (SkRoomManager *self)
{
  if (--self->drain_pending > 0 || self->drain_task == NULL)
    return;
  g_task_return_boolean (self->drain_task, TRUE);
  g_clear_object (&self->drain_task);
}

/* Runs on the manager's cancellable, not the room's: every hand-over is answered (and counted)
 * while the manager lives, even if its room went away meanwhile. */
static void
on_handed_over (GObject *source, GAsyncResult *result, gpointer user_data)
{
  HandOver *ho = user_data;
  g_autoptr (GError) error = NULL;
  SkRoomManager *self = ho->manager;
  SkRoom *room;
  guint64 epoch = 0;

  if (store_op_cancelled (result)) {
    hand_over_free (ho);
    return;
  }
  room = g_hash_table_lookup (self->rooms, ho->room);
  if (sk_store_claim_room_finish (self->store, result, &epoch, &error)) {
    /* The new host rebuilds it from the store; our participants now publish there and
     * leave through it when their sessions close. */
    if (room != NULL && !room->remote && !room->lost)
      room_become_proxy (room, ho->node, ho->incarnation, epoch);
    self->drain_moved++;
  } else {
    g_warning ("room %s: cannot hand it over to %s: %s; it ends here", ho->room, ho->node,
               error->message);
  }
  hand_over_free (ho);
  drain_step_done (self);
}

void
sk_room_manager_drain_async (SkRoomManager *self, GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GPtrArray) rooms = manager_rooms (self);
  g_autoptr (GPtrArray) live = NULL;
  GTask *task = g_task_new (NULL, NULL, callback, user_data);

  g_task_set_source_tag (task, sk_room_manager_drain_async);
  if (self->cluster == NULL || self->drain_task != NULL) {
    g_task_return_boolean (task, TRUE);
    g_object_unref (task);
    return;
  }
  live = sk_cluster_get_live_nodes (self->cluster);
  self->drain_task = task;
  self->drain_pending = 1;
  for (guint i = 0; i < rooms->len && live->len > 0; i++) {
    SkRoom *room = g_ptr_array_index (rooms, i);
    const char *target;
    guint64 incarnation = 0;
    HandOver *ho;

    if (!room->placed || room->remote || room->finished || room->lost || room->rebuilding)
      continue;
    /* A node with room to spare; over capacity rather than ending the room; any live node
     * rather than none (a draining one would hand it on again). */
    target = manager_pick_host (self, room->name, TRUE, &incarnation);
    if (target == NULL)
      target = manager_pick_host (self, room->name, FALSE, &incarnation);
    if (target == NULL) {
      target = g_ptr_array_index (live, g_str_hash (room->name) % live->len);
      incarnation = sk_cluster_get_live_incarnation (self->cluster, target);
    }
    /* The load counted for the next room includes this one. */
    g_hash_table_insert (self->hosts, g_strdup (room->name), g_strdup (target));
    ho = g_new0 (HandOver, 1);
    ho->manager = self;
    ho->room = g_strdup (room->name);
    ho->node = g_strdup (target);
    ho->incarnation = incarnation;
    g_message ("room %s: handing it over to node %s (drain)", room->name, target);
    self->drain_pending++;
    sk_store_claim_room_async (self->store, room->name, target, ho->incarnation, room->epoch,
                               self->cancellable, on_handed_over, ho);
  }
  drain_step_done (self);
}

gboolean
sk_room_manager_drain_finish (SkRoomManager *self, GAsyncResult *result, guint *n_moved,
                              GError **error)
{
  g_return_val_if_fail (g_async_result_is_tagged (result, sk_room_manager_drain_async), FALSE);
  if (n_moved != NULL)
    *n_moved = self->drain_moved;
  return g_task_propagate_boolean (G_TASK (result), error);
}

/* ---- the manager ------------------------------------------------------------------------ */

SkRoomManager *
sk_room_manager_new (const SkConfig *config, SkStore *store, SkWebhooks *webhooks, GError **error)
{
  SkRoomManager *self;

  g_return_val_if_fail (config != NULL && store != NULL, NULL);
  if (config->node_id == NULL || config->node_id[0] == '\0') {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "the room manager needs a node id");
    return NULL;
  }

  self = g_new0 (SkRoomManager, 1);
  self->config = config;
  self->store = store;
  self->webhooks = webhooks;
  self->cancellable = g_cancellable_new ();
  self->rooms = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, room_free);
  self->track_watches = g_hash_table_new_full (NULL, NULL, NULL, track_watch_free);
  self->orphan_seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->hosts = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  self->releasing = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->events = sk_events_http_new (store, config);
  self->whep = sk_whep_server_new (self, config);
  return self;
}

void
sk_room_manager_free (SkRoomManager *self)
{
  if (self == NULL)
    return;
  /* Outstanding store callbacks see the cancellation and leave the rooms alone. */
  g_cancellable_cancel (self->cancellable);
  g_clear_handle_id (&self->orphan_view_id, g_source_remove);
  g_clear_pointer (&self->whep, sk_whep_server_free);
  g_clear_pointer (&self->events, sk_events_http_free);
  g_hash_table_remove_all (self->rooms);
  g_hash_table_unref (self->track_watches);
  g_hash_table_unref (self->orphan_seen);
  g_hash_table_unref (self->hosts);
  g_hash_table_unref (self->releasing);
  if (self->drain_task != NULL) {
    g_task_return_new_error (self->drain_task, G_IO_ERROR, G_IO_ERROR_CANCELLED,
                             "room manager freed during drain");
    g_clear_object (&self->drain_task);
  }
  g_hash_table_unref (self->rooms);
  if (self->shutdown_task != NULL) {
    g_task_return_new_error (self->shutdown_task, G_IO_ERROR, G_IO_ERROR_CANCELLED,
                             "room manager freed during shutdown");
    g_clear_object (&self->shutdown_task);
  }
  g_object_unref (self->cancellable);
  g_free (self);
}

void
sk_room_manager_shutdown_async (SkRoomManager *self, GAsyncReadyCallback callback,
                                gpointer user_data)
{
  g_autoptr (GPtrArray) rooms = g_ptr_array_new ();
  GTask *task = g_task_new (NULL, NULL, callback, user_data);
  GHashTableIter iter;
  SkRoom *room;

  g_task_set_source_tag (task, sk_room_manager_shutdown_async);
  if (self->shutdown_task != NULL) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_INVALID, "already shutting down");
    g_object_unref (task);
    return;
  }
  self->shutting_down = TRUE;
  self->shutdown_task = task;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room))
    g_ptr_array_add (rooms, room);
  for (guint i = 0; i < rooms->len; i++) {
    room = g_ptr_array_index (rooms, i);
    while (room->participants->len > 0)
      participant_evict (g_ptr_array_index (room->participants, 0), SK_REASON_SERVER_SHUTDOWN);
    room_finish (room);
  }

  /* Nothing was hosted (or everything was already written): complete now, from an idle. */
  if (g_hash_table_size (self->rooms) == 0)
    shutdown_complete (self);
}

gboolean
sk_room_manager_shutdown_finish (SkRoomManager *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

const SkConfig *
sk_room_manager_get_config (SkRoomManager *self)
{
  return self->config;
}
