/*
 * streamkeeper: the ingress registry and the publishing session state machine.
 *
 * A session lives from start_session until either the front end ends it
 * (sk_ingress_session_end) or the registry does (replaced, deleted, error, eviction,
 * publisher timeout, shutdown). A registry-initiated end happens in two steps: at once, the
 * participant leaves and the record's state changes (so a "replaced" leave is in the room log
 * before the new session joins); then, from an idle, the pipeline is freed and the front end's
 * close func runs. Until then the session is "closing": it ignores pipeline callbacks and
 * refuses media, and the front end may still end it (which cancels the close func).
 */
#include "ingress/sk-ingress-private.h"

#include <string.h>

#include "common/sk-common.h"

#define SK_INGRESS_NS "ingress"
/* Stream keys are base62 secrets; anything longer is not one of ours, so it is not hashed. */
#define SK_STREAM_KEY_MAX 256
#define REGISTRY_REFRESH_MS 1000
/* self->deleted values that no store read can pass: the removal is under way, or failed. */
#define DELETED_REMOVING G_MAXUINT
#define DELETED_RETRY (G_MAXUINT - 1)

struct _SkIngressSession {
  SkIngressRegistry *registry;
  SkIngressRecord *record; /* NULL once the session is closing or ended */
  char *ingress_id;
  SkInputType type;
  char *remote_address;

  /* The record's settings when the session started: a PATCH applies to the next session. */
  char *room_name, *identity, *name;
  SkTranscodeMode transcode;

  SkIngressCloseFunc close_func;
  gpointer transport;
  SkIngressPipeline *pipeline;
  SkParticipant *participant;
  gboolean started; /* ingress_started was sent */

  gint64 last_media_us; /* monotonic time of the last audio/video tag */
  guint timeout_id;

  gboolean closing;
  char *close_reason;
  guint close_idle_id;
};

static void session_close (SkIngressSession *s, const char *leave_reason, const char *status,
                           const char *message, const char *close_reason);

const char *
sk_input_type_to_string (SkInputType type)
{
  return type == SK_INPUT_WHIP ? "whip" : "rtmp";
}

gboolean
sk_input_type_from_string (const char *s, SkInputType *out)
{
  if (g_strcmp0 (s, "rtmp") == 0)
    *out = SK_INPUT_RTMP;
  else if (g_strcmp0 (s, "whip") == 0)
    *out = SK_INPUT_WHIP;
  else
    return FALSE;
  return TRUE;
}

/* ---- records ---- */

static char *
format_url (const SkConfig *config, SkInputType type)
{
  const char *host = config->public_host ? config->public_host : "localhost";
  /* A literal IPv6 address needs brackets in a URL. */
  g_autofree char *h
      = strchr (host, ':') && host[0] != '[' ? g_strdup_printf ("[%s]", host) : g_strdup (host);

  if (type == SK_INPUT_WHIP)
    return g_strdup_printf ("http://%s:%u/whip", h, config->http_port);
  return g_strdup_printf ("rtmp://%s:%u/live", h, config->rtmp_port);
}

SkIngressRecord *
sk_ingress_record_new (SkIngressRegistry *self, SkInputType type)
{
  SkIngressRecord *rec = g_new0 (SkIngressRecord, 1);

  rec->ingress_id = sk_id_new ("IN_");
  rec->stream_key = sk_secret_new (128);
  rec->key_hash = sk_sha256_hex (rec->stream_key);
  rec->input_type = type;
  rec->url = format_url (self->config, type);
  rec->transcode = SK_TRANSCODE_AUTO;
  rec->enabled = TRUE;
  rec->created_at_ms = sk_now_ms ();
  rec->status = SK_INGRESS_INACTIVE;
  return rec;
}

void
sk_ingress_record_free (SkIngressRecord *rec)
{
  if (rec == NULL)
    return;
  g_free (rec->ingress_id);
  g_free (rec->stream_key);
  g_free (rec->key_hash);
  g_free (rec->url);
  g_free (rec->name);
  g_free (rec->room_name);
  g_free (rec->participant_identity);
  g_free (rec->participant_name);
  g_free (rec->error);
  sk_input_info_clear (&rec->input);
  g_free (rec->node);
  g_free (rec->participant_sid);
  g_free (rec);
}

static void
add_string (JsonBuilder *b, const char *name, const char *value)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, value ? value : "");
}

static void
add_int (JsonBuilder *b, const char *name, gint64 value)
{
  json_builder_set_member_name (b, name);
  json_builder_add_int_value (b, value);
}

JsonNode *
sk_ingress_record_to_json (const SkIngressRecord *rec, gboolean with_key)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  const SkInputInfo *in = &rec->input;

  json_builder_begin_object (b);
  add_string (b, "ingress_id", rec->ingress_id);
  add_string (b, "name", rec->name);
  if (with_key)
    add_string (b, "stream_key", rec->stream_key);
  add_string (b, "url", rec->url);
  add_string (b, "input_type", sk_input_type_to_string (rec->input_type));
  add_string (b, "room_name", rec->room_name);
  add_string (b, "participant_identity", rec->participant_identity);
  add_string (b, "participant_name", rec->participant_name);
  add_string (b, "transcode", sk_transcode_mode_to_string (rec->transcode));
  json_builder_set_member_name (b, "enabled");
  json_builder_add_boolean_value (b, rec->enabled);
  add_int (b, "created_at_ms", rec->created_at_ms);

  json_builder_set_member_name (b, "state");
  json_builder_begin_object (b);
  add_string (b, "status", rec->status);
  add_string (b, "error", rec->error);
  add_int (b, "started_at_ms", rec->started_at_ms);
  if (rec->ended_at_ms)
    add_int (b, "ended_at_ms", rec->ended_at_ms);
  json_builder_set_member_name (b, "input");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "video");
  json_builder_begin_object (b);
  add_string (b, "codec", in->video_codec);
  add_int (b, "width", in->width);
  add_int (b, "height", in->height);
  json_builder_set_member_name (b, "fps");
  json_builder_add_double_value (b, in->fps);
  add_int (b, "bitrate", (gint64)in->video_bitrate_bps);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "audio");
  json_builder_begin_object (b);
  add_string (b, "codec", in->audio_codec);
  add_int (b, "sample_rate", in->sample_rate);
  add_int (b, "channels", in->channels);
  add_int (b, "bitrate", (gint64)in->audio_bitrate_bps);
  json_builder_end_object (b);
  json_builder_end_object (b); /* input */
  add_string (b, "node", rec->node);
  if (rec->node_incarnation)
    add_int (b, "node_incarnation", (gint64)rec->node_incarnation);
  if (rec->participant_sid)
    add_string (b, "participant_sid", rec->participant_sid);
  json_builder_end_object (b); /* state */

  json_builder_end_object (b);
  return json_builder_get_root (b);
}

static const char *status_intern (const char *status);

/* The session state another node (or an earlier run) wrote: a session runs on one node, and
 * the others show what it last wrote. */
static void
record_apply_state (SkIngressRecord *rec, JsonObject *o)
{
  JsonNode *state_node = json_object_get_member (o, "state");
  JsonObject *st, *in, *v, *a;

  if (state_node == NULL || !JSON_NODE_HOLDS_OBJECT (state_node))
    return;
  st = json_node_get_object (state_node);
  rec->status = status_intern (json_object_get_string_member_with_default (st, "status", NULL));
  g_free (rec->error);
  rec->error = g_strdup (json_object_get_string_member_with_default (st, "error", NULL));
  rec->started_at_ms = json_object_get_int_member_with_default (st, "started_at_ms", 0);
  rec->ended_at_ms = json_object_get_int_member_with_default (st, "ended_at_ms", 0);
  g_free (rec->node);
  rec->node = g_strdup (json_object_get_string_member_with_default (st, "node", NULL));
  rec->node_incarnation
      = (guint64)json_object_get_int_member_with_default (st, "node_incarnation", 0);
  g_free (rec->participant_sid);
  rec->participant_sid
      = g_strdup (json_object_get_string_member_with_default (st, "participant_sid", NULL));
  sk_input_info_clear (&rec->input);
  in = json_object_has_member (st, "input") ? json_object_get_object_member (st, "input") : NULL;
  v = in != NULL && json_object_has_member (in, "video")
          ? json_object_get_object_member (in, "video")
          : NULL;
  a = in != NULL && json_object_has_member (in, "audio")
          ? json_object_get_object_member (in, "audio")
          : NULL;
  if (v != NULL) {
    rec->input.video_codec
        = g_strdup (json_object_get_string_member_with_default (v, "codec", NULL));
    rec->input.width = (guint)json_object_get_int_member_with_default (v, "width", 0);
    rec->input.height = (guint)json_object_get_int_member_with_default (v, "height", 0);
    rec->input.fps = json_object_get_double_member_with_default (v, "fps", 0);
    rec->input.video_bitrate_bps
        = (guint64)json_object_get_int_member_with_default (v, "bitrate", 0);
  }
  if (a != NULL) {
    rec->input.audio_codec
        = g_strdup (json_object_get_string_member_with_default (a, "codec", NULL));
    rec->input.sample_rate = (guint)json_object_get_int_member_with_default (a, "sample_rate", 0);
    rec->input.channels = (guint)json_object_get_int_member_with_default (a, "channels", 0);
    rec->input.audio_bitrate_bps
        = (guint64)json_object_get_int_member_with_default (a, "bitrate", 0);
  }
}

/* Rebuilds a record written by sk_ingress_record_to_json (the store's copy). */
static SkIngressRecord *
record_from_json (const char *text)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  SkInputType type;

  if (!json_parser_load_from_data (parser, text, -1, NULL)
      || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    return NULL;
  JsonObject *o = json_node_get_object (json_parser_get_root (parser));
#define STR(name) json_object_get_string_member_with_default (o, name, NULL)
  if (!STR ("ingress_id") || !STR ("stream_key") || !STR ("room_name")
      || !sk_input_type_from_string (STR ("input_type"), &type))
    return NULL;

  SkIngressRecord *rec = g_new0 (SkIngressRecord, 1);
  rec->ingress_id = g_strdup (STR ("ingress_id"));
  rec->stream_key = g_strdup (STR ("stream_key"));
  rec->key_hash = sk_sha256_hex (rec->stream_key);
  rec->input_type = type;
  rec->url = g_strdup (STR ("url"));
  rec->name = g_strdup (STR ("name"));
  rec->room_name = g_strdup (STR ("room_name"));
  rec->participant_identity = g_strdup (STR ("participant_identity"));
  rec->participant_name = g_strdup (STR ("participant_name"));
  if (!sk_transcode_mode_from_string (STR ("transcode"), &rec->transcode))
    rec->transcode = SK_TRANSCODE_AUTO;
  rec->enabled = json_object_get_boolean_member_with_default (o, "enabled", TRUE);
  rec->created_at_ms = json_object_get_int_member_with_default (o, "created_at_ms", 0);
#undef STR
  rec->status = SK_INGRESS_INACTIVE;
  record_apply_state (rec, o);
  return rec;
}

static const char *
status_intern (const char *status)
{
  static const char *const known[]
      = { SK_INGRESS_INACTIVE, SK_INGRESS_BUFFERING, SK_INGRESS_PUBLISHING, SK_INGRESS_ERROR,
          SK_INGRESS_COMPLETE };

  for (guint i = 0; i < G_N_ELEMENTS (known); i++) {
    if (g_strcmp0 (status, known[i]) == 0)
      return known[i];
  }
  return SK_INGRESS_INACTIVE;
}

/* A store write or removal of one record, answered after the registry may be gone. */
typedef struct {
  SkIngressRegistry *registry;
  char *ingress_id;
} StoreCall;

static StoreCall *
store_call_new (SkIngressRegistry *self, const char *ingress_id)
{
  StoreCall *call = g_new0 (StoreCall, 1);

  call->registry = self;
  call->ingress_id = g_strdup (ingress_id);
  return call;
}

static void
store_call_free (StoreCall *call)
{
  g_free (call->ingress_id);
  g_free (call);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (StoreCall, store_call_free)

/* The registry cancels before it frees itself. */
static gboolean
store_call_registry_gone (GAsyncResult *res)
{
  GCancellable *cancellable = g_task_get_cancellable (G_TASK (res));
  return cancellable != NULL && g_cancellable_is_cancelled (cancellable);
}

static void
persist_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (StoreCall) call = user_data;
  g_autoptr (GError) error = NULL;
  SkIngressRegistry *self = call->registry;

  if (store_call_registry_gone (res))
    return;
  SkIngressRecord *rec = g_hash_table_lookup (self->records, call->ingress_id);
  if (rec != NULL) {
    rec->writes_in_flight--;
    rec->fresh_reads_from = self->lists_started + 1;
  }
  if (!sk_store_put_finish (self->store, res, &error)) {
    /* Written again by the next refresh: the store must not keep a stale state. */
    if (!g_hash_table_contains (self->unsaved, call->ingress_id))
      g_warning ("ingress %s: cannot write its record to the store (%s); retrying",
                 call->ingress_id, error->message);
    g_hash_table_add (self->unsaved, g_steal_pointer (&call->ingress_id));
  }
}

void
sk_ingress_registry_persist (SkIngressRegistry *self, SkIngressRecord *rec)
{
  g_autoptr (JsonNode) node = sk_ingress_record_to_json (rec, TRUE);
  g_autofree char *json = json_to_string (node, FALSE);

  rec->writes_in_flight++;
  g_hash_table_remove (self->unsaved, rec->ingress_id);
  sk_store_put_async (self->store, SK_INGRESS_NS, rec->ingress_id, json, self->cancellable,
                      persist_done, store_call_new (self, rec->ingress_id));
}

/* Records whose last write failed (store unreachable) are written again. */
static void
registry_persist_unsaved (SkIngressRegistry *self)
{
  g_autoptr (GPtrArray) ids = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  gpointer id;

  g_hash_table_iter_init (&iter, self->unsaved);
  while (g_hash_table_iter_next (&iter, &id, NULL))
    g_ptr_array_add (ids, g_strdup (id));
  for (guint i = 0; i < ids->len; i++) {
    SkIngressRecord *rec = g_hash_table_lookup (self->records, g_ptr_array_index (ids, i));

    if (rec != NULL)
      sk_ingress_registry_persist (self, rec);
    else
      g_hash_table_remove (self->unsaved, g_ptr_array_index (ids, i));
  }
}

static void
remove_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (StoreCall) call = user_data;
  g_autoptr (GError) error = NULL;
  SkIngressRegistry *self = call->registry;

  if (store_call_registry_gone (res))
    return;
  if (!sk_store_remove_finish (self->store, res, &error)
      && !g_error_matches (error, SK_ERROR, SK_ERROR_NOT_FOUND)) {
    g_warning ("ingress %s: cannot remove its record from the store (%s); retrying",
               call->ingress_id, error->message);
    g_hash_table_insert (self->deleted, g_steal_pointer (&call->ingress_id),
                         GUINT_TO_POINTER (DELETED_RETRY));
    return;
  }
  /* Reads that begin from now on cannot bring it back. */
  g_hash_table_insert (self->deleted, g_steal_pointer (&call->ingress_id),
                       GUINT_TO_POINTER (self->lists_started + 1));
}

static void
registry_remove_from_store (SkIngressRegistry *self, const char *ingress_id)
{
  g_hash_table_insert (self->deleted, g_strdup (ingress_id), GUINT_TO_POINTER (DELETED_REMOVING));
  sk_store_remove_async (self->store, SK_INGRESS_NS, ingress_id, self->cancellable, remove_done,
                         store_call_new (self, ingress_id));
}

/* Removals that failed (store unreachable) are tried again. */
static void
registry_remove_deleted (SkIngressRegistry *self)
{
  g_autoptr (GPtrArray) ids = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  gpointer id, value;

  g_hash_table_iter_init (&iter, self->deleted);
  while (g_hash_table_iter_next (&iter, &id, &value))
    if (GPOINTER_TO_UINT (value) == DELETED_RETRY)
      g_ptr_array_add (ids, g_strdup (id));
  for (guint i = 0; i < ids->len; i++)
    registry_remove_from_store (self, g_ptr_array_index (ids, i));
}

static void
registry_add (SkIngressRegistry *self, SkIngressRecord *rec)
{
  g_hash_table_insert (self->records, rec->ingress_id, rec);
  g_hash_table_insert (self->by_key, rec->key_hash, rec);
}

void
sk_ingress_registry_insert (SkIngressRegistry *self, SkIngressRecord *rec)
{
  registry_add (self, rec);
  sk_ingress_registry_persist (self, rec);
}

SkIngressRecord *
sk_ingress_registry_lookup (SkIngressRegistry *self, const char *ingress_id)
{
  return g_hash_table_lookup (self->records, ingress_id);
}

static gint
compare_created (gconstpointer a, gconstpointer b)
{
  const SkIngressRecord *ra = *(SkIngressRecord *const *)a;
  const SkIngressRecord *rb = *(SkIngressRecord *const *)b;

  if (ra->created_at_ms != rb->created_at_ms)
    return ra->created_at_ms < rb->created_at_ms ? -1 : 1;
  return strcmp (ra->ingress_id, rb->ingress_id);
}

GPtrArray *
sk_ingress_registry_list (SkIngressRegistry *self, const char *room)
{
  GPtrArray *out = g_ptr_array_new ();
  GHashTableIter it;
  gpointer value;

  g_hash_table_iter_init (&it, self->records);
  while (g_hash_table_iter_next (&it, NULL, &value)) {
    SkIngressRecord *rec = value;
    if (room == NULL || g_strcmp0 (rec->room_name, room) == 0)
      g_ptr_array_add (out, rec);
  }
  g_ptr_array_sort (out, compare_created);
  return out;
}

void
sk_ingress_registry_delete (SkIngressRegistry *self, SkIngressRecord *rec)
{
  if (rec->session)
    session_close (rec->session, SK_REASON_INGRESS_DELETED, SK_INGRESS_INACTIVE, NULL,
                   SK_REASON_INGRESS_DELETED);
  g_hash_table_remove (self->by_key, rec->key_hash);
  registry_remove_from_store (self, rec->ingress_id);
  g_hash_table_remove (self->records, rec->ingress_id); /* frees rec */
}

static void send_webhook (SkIngressRegistry *self, const char *event, SkIngressRecord *rec);

static void
record_take_state (SkIngressRecord *to, SkIngressRecord *from)
{
  to->status = from->status;
  g_free (to->error);
  to->error = g_steal_pointer (&from->error);
  to->started_at_ms = from->started_at_ms;
  to->ended_at_ms = from->ended_at_ms;
  g_free (to->node);
  to->node = g_steal_pointer (&from->node);
  to->node_incarnation = from->node_incarnation;
  g_free (to->participant_sid);
  to->participant_sid = g_steal_pointer (&from->participant_sid);
  sk_input_info_clear (&to->input);
  to->input = from->input;
  memset (&from->input, 0, sizeof from->input);
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

/* A session whose node died ends here, written once by one survivor (picked by the ingress
 * id among the live nodes): ENDPOINT_INACTIVE (the key stays usable) and ingress_ended. */
static void
registry_end_dead_sessions (SkIngressRegistry *self)
{
  SkCluster *cluster = self->rooms != NULL ? sk_room_manager_get_cluster (self->rooms) : NULL;
  GHashTableIter iter;
  gpointer value;

  if (cluster == NULL || sk_cluster_get_state (cluster) != SK_CLUSTER_MEMBER
      || sk_cluster_in_grace (cluster))
    return;
  g_autoptr (GPtrArray) live = sk_cluster_get_live_nodes (cluster);
  g_ptr_array_add (live, (gpointer)self->config->node_id);
  g_ptr_array_sort (live, compare_strings);

  g_hash_table_iter_init (&iter, self->records);
  while (g_hash_table_iter_next (&iter, NULL, &value)) {
    SkIngressRecord *rec = value;

    if (rec->session != NULL || rec->node == NULL || rec->node_incarnation == 0
        || (g_strcmp0 (rec->status, SK_INGRESS_BUFFERING) != 0
            && g_strcmp0 (rec->status, SK_INGRESS_PUBLISHING) != 0))
      continue;
    if (sk_cluster_get_liveness (cluster, rec->node, rec->node_incarnation) != SK_NODE_DEAD)
      continue;
    if (strcmp (g_ptr_array_index (live, g_str_hash (rec->ingress_id) % live->len),
                self->config->node_id)
        != 0)
      continue;
    g_message ("ingress %s: its session ran on dead node %s; ended", rec->ingress_id, rec->node);
    rec->status = SK_INGRESS_INACTIVE;
    rec->ended_at_ms = sk_now_ms ();
    g_clear_pointer (&rec->participant_sid, g_free);
    sk_ingress_registry_persist (self, rec);
    send_webhook (self, "ingress_ended", rec);
  }
}

/* ---- on-demand refresh (a key created through another node moments ago) ---- */

typedef struct {
  SkIngressRegistry *registry;
  guint id;
  guint need_list; /* answered once this store read (lists_started numbering) is done */
  guint timeout_id;
  SkIngressRefreshFunc func;
  gpointer user_data;
} RefreshWaiter;

static void load_done (GObject *source, GAsyncResult *res, gpointer user_data);

static void
registry_start_list (SkIngressRegistry *self)
{
  self->refresh_in_flight = TRUE;
  self->lists_started++;
  sk_store_list_async (self->store, SK_INGRESS_NS, self->cancellable, load_done, self);
}

static void
refresh_waiter_free (RefreshWaiter *w)
{
  g_clear_handle_id (&w->timeout_id, g_source_remove);
  g_free (w);
}

/* Takes @w out of the registry and calls it. */
static void
refresh_waiter_answer (RefreshWaiter *w, const GError *error)
{
  SkIngressRegistry *self = w->registry;

  self->refresh_waiters = g_list_remove (self->refresh_waiters, w);
  w->func (error, w->user_data);
  refresh_waiter_free (w);
}

static gboolean
refresh_waiter_timeout (gpointer user_data)
{
  RefreshWaiter *w = user_data;
  g_autoptr (GError) error
      = g_error_new_literal (SK_ERROR, SK_ERROR_UNAVAILABLE, "the state store did not answer");

  w->timeout_id = 0;
  refresh_waiter_answer (w, error);
  return G_SOURCE_REMOVE;
}

/* A store read is done (@error: it failed): answer whoever waited for it, and start the read
 * that later waiters need. */
static void
registry_answer_waiters (SkIngressRegistry *self, const GError *error)
{
  gboolean more = FALSE;

  self->lists_done = self->lists_started;
  /* From the start again after each answer: a callback may cancel other waiters. */
  for (GList *l = self->refresh_waiters; l != NULL;) {
    RefreshWaiter *w = l->data;

    if (w->need_list <= self->lists_done) {
      refresh_waiter_answer (w, error);
      l = self->refresh_waiters;
      more = FALSE;
      continue;
    }
    more = TRUE;
    l = l->next;
  }
  if (more && !self->refresh_in_flight)
    registry_start_list (self);
}

guint
sk_ingress_registry_refresh (SkIngressRegistry *self, guint timeout_ms, SkIngressRefreshFunc func,
                             gpointer user_data)
{
  RefreshWaiter *w = g_new0 (RefreshWaiter, 1);

  w->registry = self;
  w->id = ++self->next_waiter_id;
  w->func = func;
  w->user_data = user_data;
  /* A read already under way may have started before the record was written: the next. */
  w->need_list = self->lists_started + 1;
  w->timeout_id = g_timeout_add (timeout_ms, refresh_waiter_timeout, w);
  self->refresh_waiters = g_list_append (self->refresh_waiters, w);
  if (!self->refresh_in_flight)
    registry_start_list (self);
  return w->id;
}

void
sk_ingress_registry_cancel_refresh (SkIngressRegistry *self, guint id)
{
  for (GList *l = self->refresh_waiters; l != NULL; l = l->next) {
    RefreshWaiter *w = l->data;

    if (w->id == id) {
      self->refresh_waiters = g_list_delete_link (self->refresh_waiters, l);
      refresh_waiter_free (w);
      return;
    }
  }
}

/* Whether the store read that just ended knows @rec better than we do: no session runs it
 * here, and the read began after our last write of it went through. */
static gboolean
registry_read_is_news (SkIngressRegistry *self, SkIngressRecord *rec)
{
  return rec->session == NULL && rec->writes_in_flight == 0
         && !g_hash_table_contains (self->unsaved, rec->ingress_id)
         && self->lists_started >= rec->fresh_reads_from;
}

/* Records another process (or an earlier run) wrote to the store, changed or deleted. */
static void
load_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  SkIngressRegistry *self = user_data;
  g_autoptr (GPtrArray) values = sk_store_list_finish (self->store, res, &error);

  if (values == NULL) {
    if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
      self->refresh_in_flight = FALSE;
      g_debug ("cannot read ingress records from the store: %s", error->message);
      registry_answer_waiters (self, error);
    }
    return;
  }
  guint added = 0;
  gboolean unreadable = FALSE;
  g_autoptr (GHashTable) listed = g_hash_table_new (g_str_hash, g_str_equal);

  self->refresh_in_flight = FALSE;
  for (guint i = 0; i < values->len; i++) {
    g_autoptr (SkIngressRecord) rec = record_from_json (values->pdata[i]);

    if (rec == NULL) {
      g_warning ("ignoring an unreadable ingress record in the store");
      unreadable = TRUE;
      continue;
    }
    SkIngressRecord *known = g_hash_table_lookup (self->records, rec->ingress_id);
    if (known != NULL) {
      g_hash_table_add (listed, known->ingress_id);
      if (registry_read_is_news (self, known))
        record_take_state (known, rec);
    } else if (self->lists_started
               >= GPOINTER_TO_UINT (g_hash_table_lookup (self->deleted, rec->ingress_id))) {
      g_hash_table_add (listed, rec->ingress_id);
      registry_add (self, g_steal_pointer (&rec));
      added++;
    }
  }
  /* Deleted through another node (or by hand): gone from the store, so gone here. A record
   * we could not read may be one of ours: then nothing counts as gone. */
  GHashTableIter iter;
  gpointer value;
  g_hash_table_iter_init (&iter, self->records);
  while (!unreadable && g_hash_table_iter_next (&iter, NULL, &value)) {
    SkIngressRecord *rec = value;
    if (!g_hash_table_contains (listed, rec->ingress_id) && registry_read_is_news (self, rec)) {
      g_message ("ingress %s: deleted from the store; forgotten", rec->ingress_id);
      g_hash_table_remove (self->by_key, rec->key_hash);
      g_hash_table_iter_remove (&iter);
    }
  }
  /* Tombstones that every later read gets past. */
  g_hash_table_iter_init (&iter, self->deleted);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (self->lists_started >= GPOINTER_TO_UINT (value))
      g_hash_table_iter_remove (&iter);
  if (added)
    g_message ("loaded %u ingress records from the store", added);
  registry_end_dead_sessions (self);
  registry_answer_waiters (self, NULL);
}

/* Records created through another node's API: a publisher may land here next (the store is
 * the truth; this cache follows it within a second). */
static gboolean
registry_refresh_cb (gpointer user_data)
{
  SkIngressRegistry *self = user_data;

  registry_persist_unsaved (self);
  registry_remove_deleted (self);
  if (!self->refresh_in_flight)
    registry_start_list (self);
  return G_SOURCE_CONTINUE;
}

/* ---- registry ---- */

SkIngressRegistry *
sk_ingress_registry_new (const SkConfig *config, SkStore *store, SkRoomManager *rooms,
                         SkWebhooks *webhooks)
{
  SkIngressRegistry *self = g_new0 (SkIngressRegistry, 1);

  self->config = config;
  self->store = store;
  self->rooms = rooms;
  self->webhooks = webhooks;
  self->records = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                         (GDestroyNotify)sk_ingress_record_free);
  self->by_key = g_hash_table_new (g_str_hash, g_str_equal);
  self->unsaved = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->deleted = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->accepting = TRUE;
  self->cancellable = g_cancellable_new ();
  registry_start_list (self);
  self->refresh_id = g_timeout_add (REGISTRY_REFRESH_MS, registry_refresh_cb, self);
  return self;
}

static void session_free (SkIngressSession *s);

void
sk_ingress_registry_free (SkIngressRegistry *self)
{
  if (self == NULL)
    return;
  /* Front ends are freed first (they end their sessions); what is left has no transport
   * that could still be told anything. */
  g_list_free_full (g_steal_pointer (&self->closing), (GDestroyNotify)session_free);
  if (self->n_live)
    g_warning ("registry freed with %u live sessions", self->n_live);
  g_clear_handle_id (&self->refresh_id, g_source_remove);
  /* The front ends that asked are gone already. */
  g_list_free_full (g_steal_pointer (&self->refresh_waiters), (GDestroyNotify)refresh_waiter_free);
  g_cancellable_cancel (self->cancellable);
  g_hash_table_unref (self->unsaved);
  g_hash_table_unref (self->deleted);
  g_clear_object (&self->cancellable);
  g_hash_table_destroy (self->by_key);
  g_hash_table_destroy (self->records);
  g_free (self);
}

guint
sk_ingress_registry_get_n_sessions (SkIngressRegistry *self)
{
  return self->n_live;
}

void
sk_ingress_registry_set_accepting (SkIngressRegistry *self, gboolean accepting)
{
  self->accepting = accepting;
}

gboolean
sk_ingress_registry_is_ready (SkIngressRegistry *self)
{
  guint max = self->config->max_streams;
  return self->accepting && (max == 0 || self->n_live < max);
}

void
sk_ingress_registry_close_all (SkIngressRegistry *self, const char *reason)
{
  GHashTableIter it;
  gpointer value;
  g_autoptr (GPtrArray) live = g_ptr_array_new ();

  /* Collect first: closing a session touches its record. */
  g_hash_table_iter_init (&it, self->records);
  while (g_hash_table_iter_next (&it, NULL, &value))
    if (((SkIngressRecord *)value)->session)
      g_ptr_array_add (live, ((SkIngressRecord *)value)->session);
  for (guint i = 0; i < live->len; i++)
    session_close (live->pdata[i], reason, SK_INGRESS_INACTIVE, NULL, reason);
}

/* ---- sessions ---- */

static void
send_webhook (SkIngressRegistry *self, const char *event, SkIngressRecord *rec)
{
  if (self->webhooks == NULL)
    return;
  g_autoptr (JsonObject) payload = json_object_new ();
  json_object_set_member (payload, "ingressInfo", sk_ingress_record_to_json (rec, FALSE));
  sk_webhooks_send (self->webhooks, event, payload);
}

/* The live part of a session ends: the participant leaves (unless it already has), the
 * record takes its final state and the session detaches from it. Runs at once, in order. */
static void
session_finish (SkIngressSession *s, const char *leave_reason, const char *status,
                const char *message)
{
  SkIngressRegistry *self = s->registry;
  SkIngressRecord *rec = s->record;

  if (s->participant)
    sk_participant_leave (g_steal_pointer (&s->participant), leave_reason);
  g_clear_handle_id (&s->timeout_id, g_source_remove);
  if (rec == NULL)
    return;

  rec->status = status;
  g_free (rec->error);
  rec->error = g_strdup (message);
  rec->ended_at_ms = sk_now_ms ();
  g_clear_pointer (&rec->participant_sid, g_free);
  rec->session = NULL;
  s->record = NULL;
  self->n_live--;

  if (message)
    g_message ("ingress %s: session ended with an error (%s): %s", s->ingress_id, leave_reason,
               message);
  else
    g_message ("ingress %s: session ended (%s)", s->ingress_id, leave_reason);
  sk_ingress_registry_persist (self, rec);
  if (s->started)
    send_webhook (self, "ingress_ended", rec);
}

static void
session_free (SkIngressSession *s)
{
  g_clear_handle_id (&s->close_idle_id, g_source_remove);
  g_clear_handle_id (&s->timeout_id, g_source_remove);
  g_clear_pointer (&s->pipeline, sk_ingress_pipeline_free);
  g_free (s->ingress_id);
  g_free (s->remote_address);
  g_free (s->room_name);
  g_free (s->identity);
  g_free (s->name);
  g_free (s->close_reason);
  g_free (s);
}

static gboolean
session_close_idle (gpointer data)
{
  SkIngressSession *s = data;
  SkIngressCloseFunc func = s->close_func;
  gpointer transport = s->transport;
  g_autofree char *reason = g_steal_pointer (&s->close_reason);

  s->close_idle_id = 0;
  s->registry->closing = g_list_remove (s->registry->closing, s);
  session_free (s);
  if (func)
    func (transport, reason);
  return G_SOURCE_REMOVE;
}

/* The registry ends a session: see the comment at the top. @leave_reason NULL: the participant
 * is already gone. */
static void
session_close (SkIngressSession *s, const char *leave_reason, const char *status,
               const char *message, const char *close_reason)
{
  if (s->closing)
    return;
  s->closing = TRUE;
  s->close_reason = g_strdup (close_reason);
  session_finish (s, leave_reason ? leave_reason : close_reason, status, message);
  s->registry->closing = g_list_prepend (s->registry->closing, s);
  s->close_idle_id = g_idle_add (session_close_idle, s);
}

/* The room manager removed our participant on its own (same identity joined elsewhere). */
static void
on_evicted (SkParticipant *participant, const char *reason, gpointer user_data)
{
  SkIngressSession *s = user_data;

  if (s->participant == participant)
    s->participant = NULL; /* freed by the room manager */
  session_close (s, NULL, SK_INGRESS_INACTIVE, NULL, reason);
}

static SkTrack *
on_track_ready (SkIngressPipeline *pipeline, SkTrackKind kind, GstCaps *caps, gpointer user_data)
{
  SkIngressSession *s = user_data;
  g_autoptr (GError) error = NULL;

  if (s->closing)
    return NULL;
  SK_TIMING ("ingress %s: %s track ready", s->ingress_id, sk_track_kind_to_string (kind));
  if (s->participant == NULL) {
    s->participant = sk_room_manager_join (s->registry->rooms, s->room_name, s->identity, s->name,
                                           "ingress", on_evicted, s, &error);
    if (s->participant == NULL) {
      g_autofree char *message
          = g_strdup_printf ("cannot join room %s: %s", s->room_name, error->message);
      session_close (s, SK_REASON_PUBLISHER_LOST, SK_INGRESS_ERROR, message, "error");
      return NULL;
    }
    if (s->pipeline != NULL)
      sk_participant_expect_tracks (s->participant,
                                    sk_ingress_pipeline_get_n_outputs (s->pipeline));
    g_free (s->record->participant_sid);
    s->record->participant_sid = g_strdup (sk_participant_get_sid (s->participant));
    sk_ingress_registry_persist (s->registry, s->record);
  }
  return sk_participant_publish_track (s->participant, kind, caps);
}

static void
on_publishing (SkIngressPipeline *pipeline, gpointer user_data)
{
  SkIngressSession *s = user_data;

  if (s->closing || s->started)
    return;
  s->started = TRUE;
  s->record->status = SK_INGRESS_PUBLISHING;
  s->record->started_at_ms = sk_now_ms ();
  g_message ("ingress %s: publishing into room %s as %s", s->ingress_id, s->room_name, s->identity);
  SK_TIMING ("ingress %s: media flowing", s->ingress_id);
  sk_ingress_registry_persist (s->registry, s->record);
  send_webhook (s->registry, "ingress_started", s->record);
}

static void
on_input_info (SkIngressPipeline *pipeline, const SkInputInfo *info, gpointer user_data)
{
  SkIngressSession *s = user_data;
  SkInputInfo *in;

  if (s->closing)
    return;
  in = &s->record->input;
  sk_input_info_clear (in);
  *in = *info;
  in->video_codec = g_strdup (info->video_codec);
  in->audio_codec = g_strdup (info->audio_codec);
  sk_ingress_registry_persist (s->registry, s->record);
}

static void
on_pipeline_error (SkIngressPipeline *pipeline, const char *message, gpointer user_data)
{
  SkIngressSession *s = user_data;

  /* The participant leaves as publisher_lost (its media is gone, as for a dropped
   * connection); the ingress state keeps ENDPOINT_ERROR and the message. */
  session_close (s, SK_REASON_PUBLISHER_LOST, SK_INGRESS_ERROR, message, "error");
}

static const SkIngressPipelineCallbacks pipeline_callbacks = {
  .track_ready = on_track_ready,
  .publishing = on_publishing,
  .input_info = on_input_info,
  .error = on_pipeline_error,
};

static gboolean
check_publisher_timeout (gpointer data)
{
  SkIngressSession *s = data;
  gint64 idle_ms = (g_get_monotonic_time () - s->last_media_us) / 1000;

  if (idle_ms < s->registry->config->publisher_timeout_ms)
    return G_SOURCE_CONTINUE;
  s->timeout_id = 0;
  g_message ("ingress %s: no media for %" G_GINT64_FORMAT " ms", s->ingress_id, idle_ms);
  session_close (s, SK_REASON_PUBLISHER_LOST, SK_INGRESS_INACTIVE, NULL, SK_REASON_PUBLISHER_LOST);
  return G_SOURCE_REMOVE;
}

/* The enabled record of @type whose stream key is @stream_key. */
static SkIngressRecord *
lookup_key (SkIngressRegistry *self, SkInputType type, const char *stream_key, GError **error)
{
  SkIngressRecord *rec = NULL;

  if (stream_key && strlen (stream_key) <= SK_STREAM_KEY_MAX) {
    g_autofree char *hash = sk_sha256_hex (stream_key);
    rec = g_hash_table_lookup (self->by_key, hash);
  }
  /* The hash finds the candidate; the constant-time compare decides. */
  if (rec == NULL || !sk_secure_equal (rec->stream_key, stream_key)) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_NOT_FOUND, "unknown stream key");
    return NULL;
  }
  if (rec->input_type != type) {
    g_set_error (error, SK_ERROR, SK_ERROR_NOT_FOUND, "this stream key is for %s",
                 sk_input_type_to_string (rec->input_type));
    return NULL;
  }
  if (!rec->enabled) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNAUTHORIZED, "ingress %s is disabled", rec->ingress_id);
    return NULL;
  }
  return rec;
}

gboolean
sk_ingress_registry_check_key (SkIngressRegistry *self, SkInputType type, const char *stream_key,
                               GError **error)
{
  return lookup_key (self, type, stream_key, error) != NULL;
}

SkIngressSession *
sk_ingress_registry_start_session (SkIngressRegistry *self, SkInputType type,
                                   const char *stream_key, const char *remote_address,
                                   SkIngressCloseFunc close_func, gpointer transport,
                                   GError **error)
{
  const SkConfig *config = self->config;
  SkIngressRecord *rec = NULL;

  if (!self->accepting) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_UNAVAILABLE,
                         "this node does not accept streams right now");
    return NULL;
  }
  rec = lookup_key (self, type, stream_key, error);
  if (rec == NULL)
    return NULL;

  SkIngressSession *old = rec->session;
  if (old && config->on_duplicate_key == SK_DUPLICATE_KEY_REJECT) {
    g_set_error (error, SK_ERROR, SK_ERROR_CONFLICT, "ingress %s is already being published",
                 rec->ingress_id);
    return NULL;
  }
  if (config->max_streams && self->n_live - (old ? 1 : 0) >= config->max_streams) {
    g_set_error (error, SK_ERROR, SK_ERROR_LIMIT, "this node is full (max_streams %u)",
                 config->max_streams);
    return NULL;
  }
  if (old) {
    g_message ("ingress %s: stream key published again from %s, replacing the live session",
               rec->ingress_id, remote_address ? remote_address : "?");
    session_close (old, SK_REASON_REPLACED, SK_INGRESS_INACTIVE, NULL, SK_REASON_REPLACED);
  }

  SkIngressSession *s = g_new0 (SkIngressSession, 1);
  s->registry = self;
  s->ingress_id = g_strdup (rec->ingress_id);
  s->type = type;
  s->remote_address = g_strdup (remote_address);
  s->room_name = g_strdup (rec->room_name);
  s->identity = g_strdup (rec->participant_identity);
  s->name = g_strdup (rec->participant_name ? rec->participant_name : rec->participant_identity);
  s->transcode = rec->transcode;
  s->close_func = close_func;
  s->transport = transport;

  if (type == SK_INPUT_RTMP) {
    g_autoptr (GError) local = NULL;

    s->pipeline = sk_ingress_pipeline_new_flv (rec->ingress_id, s->transcode, config,
                                               &pipeline_callbacks, s, &local);
    if (s->pipeline == NULL) {
      rec->status = SK_INGRESS_ERROR;
      g_free (rec->error);
      rec->error = g_strdup (local->message);
      sk_ingress_registry_persist (self, rec);
      g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "cannot start a pipeline: %s",
                   local->message);
      session_free (s);
      return NULL;
    }
  }

  s->record = rec;
  rec->session = s;
  self->n_live++;
  rec->status = SK_INGRESS_BUFFERING;
  g_clear_pointer (&rec->error, g_free);
  rec->started_at_ms = 0;
  rec->ended_at_ms = 0;
  sk_input_info_clear (&rec->input);
  g_free (rec->node);
  rec->node = g_strdup (config->node_id);
  {
    SkCluster *cluster = self->rooms != NULL ? sk_room_manager_get_cluster (self->rooms) : NULL;
    rec->node_incarnation = cluster != NULL ? sk_cluster_get_incarnation (cluster) : 0;
  }
  g_clear_pointer (&rec->participant_sid, g_free);
  sk_ingress_registry_persist (self, rec);

  s->last_media_us = g_get_monotonic_time ();
  s->timeout_id
      = g_timeout_add (MAX (config->publisher_timeout_ms / 4, 25u), check_publisher_timeout, s);

  g_message ("ingress %s: %s session from %s into room %s", rec->ingress_id,
             sk_input_type_to_string (type), remote_address ? remote_address : "?", rec->room_name);
  return s;
}

const char *
sk_ingress_session_get_ingress_id (SkIngressSession *session)
{
  return session->ingress_id;
}

gboolean
sk_ingress_session_push_flv_tag (SkIngressSession *s, guint8 tag_type, guint32 timestamp_ms,
                                 const guint8 *data, gsize size, GError **error)
{
  g_autoptr (GError) local = NULL;

  if (s->closing) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_UNAVAILABLE, "the session is closing");
    return FALSE;
  }
  if (s->pipeline == NULL) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                         "this session does not take FLV tags");
    return FALSE;
  }
  if (tag_type == 8 || tag_type == 9)
    s->last_media_us = g_get_monotonic_time ();
  if (sk_ingress_pipeline_push_flv_tag (s->pipeline, tag_type, timestamp_ms, data, size, &local))
    return TRUE;

  session_close (s, SK_REASON_PUBLISHER_LOST, SK_INGRESS_ERROR, local->message, "error");
  g_propagate_error (error, g_steal_pointer (&local));
  return FALSE;
}

void
sk_ingress_session_end (SkIngressSession *s, const char *reason)
{
  if (s->closing) {
    /* The registry already ended it; the transport is going anyway: skip the close func. */
    s->registry->closing = g_list_remove (s->registry->closing, s);
  } else {
    session_finish (s, reason, SK_INGRESS_INACTIVE, NULL);
  }
  session_free (s);
}

/* ---- sessions fed with encoded tracks (WHIP) ---- */

SkTrack *
sk_ingress_session_publish_track (SkIngressSession *s, SkTrackKind kind, GstCaps *caps,
                                  GError **error)
{
  SkTrack *track;

  if (s->closing) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_UNAVAILABLE, "the session is closing");
    return NULL;
  }
  /* Same path as a pipeline's output: join on the first track, then publish. */
  track = on_track_ready (NULL, kind, caps, s);
  if (track == NULL)
    g_set_error_literal (error, SK_ERROR, SK_ERROR_UNAVAILABLE,
                         "the room did not accept the participant");
  return track;
}

SkTranscodeMode
sk_ingress_session_get_transcode (SkIngressSession *s)
{
  return s->transcode;
}

void
sk_ingress_session_set_publishing (SkIngressSession *s)
{
  on_publishing (NULL, s);
}

void
sk_ingress_session_set_input_info (SkIngressSession *s, const SkInputInfo *info)
{
  on_input_info (NULL, info, s);
}

void
sk_ingress_session_media_received (SkIngressSession *s)
{
  if (!s->closing)
    s->last_media_us = g_get_monotonic_time ();
}
