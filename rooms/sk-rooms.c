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
#include "rooms/sk-rooms-private.h"

#include <string.h>

#include "common/sk-http.h"
#include "rooms/sk-events-http.h"
#include "rooms/sk-whep.h"

#define PARTICIPANT_FIELD_MAX 256
#define STORE_RETRY_MS 500
#define APPEND_MAX_RETRIES 10
#define SK_SSE_DRAIN_TIMEOUT_MS 2000 /* SSE clients get this long to take the end of the log */

static void room_write_snapshot (SkRoom *room);

/* ---- helpers ---------------------------------------------------------------------------- */

gboolean
sk_room_name_is_valid (const char *name)
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
gboolean
sk_rooms_store_op_cancelled (GAsyncResult *result)
{
  GCancellable *cancellable = g_task_get_cancellable (G_TASK (result));

  return cancellable != NULL && g_cancellable_is_cancelled (cancellable);
}

JsonObject *
sk_participant_to_json (SkParticipant *p)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "sid", p->sid);
  json_object_set_string_member (o, "identity", p->identity);
  json_object_set_string_member (o, "name", p->name);
  json_object_set_string_member (o, "kind", p->kind);
  json_object_set_string_member (o, "ingress_node", p->ingress_node);
  return o;
}

JsonObject *
sk_rooms_track_to_json (SkTrack *track)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "sid", sk_track_get_sid (track));
  json_object_set_string_member (o, "kind", sk_track_kind_to_string (sk_track_get_kind (track)));
  json_object_set_string_member (o, "codec", sk_track_get_codec (track));
  return o;
}

void
sk_rooms_pending_event_free (PendingEvent *pe)
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

JsonObject *
sk_room_event_new (SkRoom *room, const char *type)
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
void
sk_room_enqueue (SkRoom *room, JsonObject *event, const char *webhook)
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
  sk_room_pump (room);
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

  if (!sk_rooms_store_op_cancelled (result)) {
    SK_TIMING ("room %s: released", call->room);
    g_hash_table_remove (call->manager->releasing, call->room);
  }
  g_free (call->room);
  g_free (call);
}

void
sk_room_dispose (SkRoom *room)
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
    sk_room_dispose (room);
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
    sk_room_pump (room);
  else
    sk_room_place (room);
  return G_SOURCE_REMOVE;
}

void
sk_room_retry_later (SkRoom *room)
{
  if (room->retry_id == 0)
    room->retry_id = g_timeout_add (STORE_RETRY_MS, room_retry_cb, room);
}

static void participant_free (SkParticipant *p);

static void
on_snapshot_written (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;

  if (sk_rooms_store_op_cancelled (result))
    return;
  room->snapshot_in_flight = FALSE;
  if (!sk_store_put_finish (room->manager->store, result, &error))
    g_debug ("room %s: snapshot: %s", room->name, error->message);
  room_write_snapshot (room);
  room_check_done (room);
}

/* The room as GET /v1/rooms/{room} shows it, or (@snapshot) as the store keeps it for a
 * node that rebuilds it. */
JsonNode *
sk_room_to_json (SkRoom *room, gboolean snapshot)
{
  JsonObject *o = json_object_new ();
  JsonArray *participants = json_array_new ();

  json_object_set_string_member (o, "name", room->name);
  json_object_set_string_member (o, "node", room->manager->config->node_id);
  json_object_set_int_member (o, "epoch", (gint64)room->epoch);
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);
    JsonObject *po = sk_participant_to_json (p);
    JsonArray *tracks = json_array_new ();

    if (snapshot)
      json_object_set_int_member (po, "ingress_incarnation", (gint64)p->ingress_incarnation);
    for (guint j = 0; j < p->tracks->len; j++)
      json_array_add_object_element (tracks,
                                     sk_rooms_track_to_json (g_ptr_array_index (p->tracks, j)));
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
  node = sk_room_to_json (room, TRUE);
  json = json_to_string (node, FALSE);
  sk_store_put_async (room->manager->store, SK_ROOMS_NS, room->name, json, room->cancellable,
                      on_snapshot_written, room);
}

/*
 * The room cannot be written any more (another node holds a newer epoch, or the store never
 * let us claim it): drop what is queued, hand every participant back to its owner without
 * events (the new owner writes them), and forget the room.
 */
void
sk_room_lost (SkRoom *room, const GError *error)
{
  g_warning ("room %s: lost (%s); dropping %u queued events", room->name,
             error != NULL ? error->message : "unknown", g_queue_get_length (&room->pending));

  g_queue_clear_full (&room->pending, (GDestroyNotify)sk_rooms_pending_event_free);
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
  sk_room_dispose (room);
}

static void
on_appended (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  PendingEvent *pe;

  if (sk_rooms_store_op_cancelled (result))
    return;
  pe = g_steal_pointer (&room->in_flight);
  if (room->remote) {
    /* Handed over meanwhile: whatever the answer, the new host owns the log now. */
    sk_rooms_pending_event_free (pe);
    return;
  }

  if (!sk_store_append_event_finish (room->manager->store, result, &error)) {
    if (g_error_matches (error, SK_ERROR, SK_ERROR_STALE_EPOCH)) {
      sk_rooms_pending_event_free (pe);
      sk_room_lost (room, error);
      return;
    }
    if (g_error_matches (error, SK_ERROR, SK_ERROR_CONFLICT)) {
      /* Someone else wrote at our epoch: our idea of last_seq is wrong. Re-read it. */
      g_warning ("room %s: %s; re-reading the log position", room->name, error->message);
      g_queue_push_head (&room->pending, pe);
      room->placed = FALSE;
      sk_room_place (room);
      return;
    }
    if (++pe->retries > APPEND_MAX_RETRIES) {
      g_warning ("room %s: dropping event seq %" G_GUINT64_FORMAT " after %u attempts: %s",
                 room->name, pe->seq, pe->retries, error->message);
      sk_rooms_pending_event_free (pe);
      sk_room_pump (room);
      room_check_done (room);
      return;
    }
    g_queue_push_head (&room->pending, pe);
    sk_room_retry_later (room);
    return;
  }

  room->last_seq = pe->seq;
  SK_TIMING ("room %s: seq %" G_GUINT64_FORMAT " %s written", room->name, pe->seq,
             json_object_get_string_member_with_default (pe->event, "event", "?"));
  room_send_webhook (room, pe);
  sk_rooms_pending_event_free (pe);
  room->snapshot_dirty = TRUE;
  sk_room_pump (room);
  room_write_snapshot (room);
  room_check_done (room);
}

void
sk_room_pump (SkRoom *room)
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

/* ---- rooms ------------------------------------------------------------------------------ */

static void
room_free (gpointer data)
{
  SkRoom *room = data;

  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);
  g_clear_handle_id (&room->retry_id, g_source_remove);
  g_queue_clear_full (&room->pending, (GDestroyNotify)sk_rooms_pending_event_free);
  g_clear_pointer (&room->in_flight, sk_rooms_pending_event_free);
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
  sk_room_enqueue (room, sk_room_event_new (room, "RoomStarted"), "room_started");
}

SkRoom *
sk_room_new (SkRoomManager *self, const char *name)
{
  SkRoom *room = g_new0 (SkRoom, 1);

  room->manager = self;
  room->name = g_strdup (name);
  room->participants = g_ptr_array_new_with_free_func ((GDestroyNotify)participant_free);
  g_queue_init (&room->pending);
  room->fresh = TRUE; /* RoomStarted (or RoomMoved) once the placement is known */
  room->cancellable = g_cancellable_new ();
  g_hash_table_insert (self->rooms, room->name, room);
  sk_room_place (room);
  return room;
}

static void
room_finish (SkRoom *room)
{
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);
  if (room->finished)
    return;
  room->finished = TRUE;
  sk_room_enqueue (room, sk_room_event_new (room, "RoomFinished"), "room_finished");
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

SkParticipant *
sk_participant_new (SkRoom *room, const char *sid, const char *identity, const char *name,
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

JsonObject *
sk_participant_event_new (SkParticipant *p, const char *type)
{
  JsonObject *o = sk_room_event_new (p->room, type);

  json_object_set_object_member (o, "participant", sk_participant_to_json (p));
  return o;
}

/* Removes track @index of @p with TrackUnpublished. */
static void
participant_unpublish_index (SkParticipant *p, guint index, const char *reason)
{
  g_autoptr (SkTrack) track = g_ptr_array_steal_index (p->tracks, index);
  JsonObject *event = sk_participant_event_new (p, "TrackUnpublished");

  json_object_set_object_member (event, "track", sk_rooms_track_to_json (track));
  json_object_set_string_member (event, "reason", reason);
  sk_room_enqueue (p->room, event, "track_unpublished");
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
  event = sk_participant_event_new (p, "ParticipantDisconnected");
  json_object_set_string_member (event, "reason", reason);
  sk_room_enqueue (room, event, "participant_left");

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
void
sk_participant_evict (SkParticipant *p, const char *reason)
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
  if (!sk_room_name_is_valid (room_name)) {
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
    room = sk_room_new (self, room_name);
  else if (room->finished)
    room_restart (room); /* RoomFinished is still being written: the same object restarts */
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);

  /* Invariant 4: one connected participant per identity, the newest wins. */
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *old = g_ptr_array_index (room->participants, i);

    if (strcmp (old->identity, identity) == 0) {
      sk_participant_evict (old, SK_REASON_REPLACED);
      break;
    }
  }
  /* The eviction may have armed the empty timer; the room is not empty. */
  g_clear_handle_id (&room->empty_timeout_id, g_source_remove);

  p = sk_participant_new (room, sid, identity, name, kind, ingress_node);
  if (ingress_node == NULL || strcmp (ingress_node, self->config->node_id) == 0)
    p->ingress_incarnation = sk_room_manager_incarnation (self);
  else if (self->cluster != NULL)
    p->ingress_incarnation = sk_cluster_get_live_incarnation (self->cluster, ingress_node);
  p->evicted = evicted;
  p->user_data = user_data;
  g_ptr_array_add (room->participants, p);
  if (room->remote)
    sk_participant_start_remote (p);

  sk_room_enqueue (room, sk_participant_event_new (p, "ParticipantConnected"),
                   "participant_joined");
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

SkParticipant *
sk_room_find_participant (SkRoom *room, const char *sid)
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
  p = room != NULL && !room->finished ? sk_room_find_participant (room, sid) : NULL;
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

  event = sk_participant_event_new (p, "TrackPublished");
  json_object_set_object_member (event, "track", sk_rooms_track_to_json (track));
  sk_room_enqueue (p->room, event, "track_published");
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
  self->orphan_seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
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
      sk_participant_evict (g_ptr_array_index (room->participants, 0), SK_REASON_SERVER_SHUTDOWN);
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
