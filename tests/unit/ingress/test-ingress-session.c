/*
 * Unit tests: ingress sessions end to end through the C API — real FLV tags (an ffmpeg-made
 * file, read by a small FLV tag reader) into the real pipeline and room manager; the room's
 * event log in the store shows what a client would see.
 */
#include <string.h>

#include <glib/gstdio.h>
#include <gst/gst.h>

#include "common/sk-common.h"
#include "ingress/sk-ingress-private.h"

static char *flv_path;

typedef struct {
  guint8 type;
  guint32 ts;
  GBytes *data;
} FlvTag;

static void
flv_tag_free (FlvTag *t)
{
  g_bytes_unref (t->data);
  g_free (t);
}

/* FLV file: 9-byte header, then (previous tag size, tag)*. A tag: type, 24-bit size, 24-bit
 * timestamp + 8-bit extension, 24-bit stream id, payload. */
static GPtrArray *
read_flv (const char *path)
{
  g_autofree guint8 *buf = NULL;
  gsize len = 0;
  GPtrArray *tags = g_ptr_array_new_with_free_func ((GDestroyNotify)flv_tag_free);

  g_assert_true (g_file_get_contents (path, (char **)&buf, &len, NULL));
  g_assert_cmpuint (len, >=, 13);
  g_assert_true (memcmp (buf, "FLV", 3) == 0);
  gsize pos = ((gsize)buf[5] << 24 | buf[6] << 16 | buf[7] << 8 | buf[8]) + 4;
  while (pos + 11 <= len) {
    const guint8 *h = buf + pos;
    gsize size = (gsize)h[1] << 16 | h[2] << 8 | h[3];
    if (pos + 11 + size > len)
      break;
    FlvTag *t = g_new0 (FlvTag, 1);
    t->type = h[0] & 0x1f;
    t->ts = (guint32)h[7] << 24 | h[4] << 16 | h[5] << 8 | h[6];
    t->data = g_bytes_new (h + 11, size);
    g_ptr_array_add (tags, t);
    pos += 11 + size + 4;
  }
  return tags;
}

typedef struct {
  SkConfig *config;
  SkStore *store;
  SkRoomManager *rooms;
  SkIngressRegistry *registry;
  GPtrArray *tags;
} Fixture;

/* What a transport saw of the registry. */
typedef struct {
  int n_closed;
  char *reason;
} Transport;

static void
transport_close (gpointer transport, const char *reason)
{
  Transport *t = transport;
  t->n_closed++;
  g_free (t->reason);
  t->reason = g_strdup (reason);
}

static void
transport_clear (Transport *t)
{
  g_free (t->reason);
}

static void
setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  if (flv_path == NULL) {
    g_test_skip ("ffmpeg could not make the test FLV file");
    return;
  }
  f->config = sk_config_new ();
  f->config->api_token = g_strdup ("test-api-token-0123456789");
  f->config->public_host = g_strdup ("127.0.0.1");
  f->config->node_id = g_strdup ("n1");
  f->config->room_empty_timeout_ms = 60000;
  f->store = sk_store_memory_new ();
  f->rooms = sk_room_manager_new (f->config, f->store, NULL, &error);
  g_assert_no_error (error);
  f->registry = sk_ingress_registry_new (f->config, f->store, f->rooms, NULL);
  f->tags = read_flv (flv_path);
  g_assert_cmpuint (f->tags->len, >, 20);
}

static void
spin (guint ms)
{
  gint64 end = g_get_monotonic_time () + ms * 1000;
  while (g_get_monotonic_time () < end)
    g_main_context_iteration (NULL, FALSE) || (g_usleep (1000), TRUE);
}

static void
teardown (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  sk_ingress_registry_free (f->registry);
  sk_room_manager_free (f->rooms);
  spin (50);
  sk_store_free (f->store);
  sk_config_free (f->config);
  g_ptr_array_unref (f->tags);
}

static SkIngressRecord *
add_ingress (Fixture *f, SkInputType type, const char *room, const char *identity)
{
  SkIngressRecord *rec = sk_ingress_record_new (f->registry, type);
  rec->name = g_strdup (identity);
  rec->room_name = g_strdup (room);
  rec->participant_identity = g_strdup (identity);
  rec->participant_name = g_strdup (identity);
  sk_ingress_registry_insert (f->registry, rec);
  return rec;
}

static gboolean
push_all (Fixture *f, SkIngressSession *s, GError **error)
{
  for (guint i = 0; i < f->tags->len; i++) {
    FlvTag *t = f->tags->pdata[i];
    gsize size;
    const guint8 *d = g_bytes_get_data (t->data, &size);
    if (!sk_ingress_session_push_flv_tag (s, t->type, t->ts, d, size, error))
      return FALSE;
    g_main_context_iteration (NULL, FALSE);
  }
  return TRUE;
}

/* Spins until @rec's status is @status (or fails after 10 s). */
static void
wait_status (SkIngressRecord *rec, const char *status)
{
  gint64 end = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (g_strcmp0 (rec->status, status) != 0) {
    if (g_get_monotonic_time () > end)
      g_error ("status stayed %s, expected %s (error: %s)", rec->status, status, rec->error);
    g_main_context_iteration (NULL, FALSE) || (g_usleep (1000), TRUE);
  }
}

typedef struct {
  SkStore *store;
  GPtrArray *events;
  gboolean done;
} ReadEvents;

static void
read_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  ReadEvents *r = user_data;
  r->events = sk_store_read_events_finish (r->store, res, NULL);
  r->done = TRUE;
}

/* The room's participant events as "Event participant-sid reason" lines, in log order. */
static char *
room_events (Fixture *f, const char *room)
{
  ReadEvents r = { f->store };
  GString *out = g_string_new (NULL);

  spin (20); /* appends complete from idles */
  sk_store_read_events_async (f->store, room, 0, 1000, NULL, read_done, &r);
  while (!r.done)
    g_main_context_iteration (NULL, TRUE);
  for (guint i = 0; r.events && i < r.events->len; i++) {
    SkStoreEvent *e = r.events->pdata[i];
    g_autoptr (JsonNode) node = json_from_string (e->json, NULL);
    JsonObject *o = json_node_get_object (node);
    const char *name = json_object_get_string_member (o, "event");
    if (!json_object_has_member (o, "participant"))
      continue;
    JsonObject *p = json_object_get_object_member (o, "participant");
    g_string_append_printf (out, "%s %s %s\n", name, json_object_get_string_member (p, "sid"),
                            json_object_get_string_member_with_default (o, "reason", "-"));
  }
  g_clear_pointer (&r.events, g_ptr_array_unref);
  return g_string_free (out, FALSE);
}

static char *
expect_events (const char *sid, const char *reason, gboolean connected)
{
  g_autofree char *head = connected
                              ? g_strdup_printf ("ParticipantConnected %s -\nTrackPublished %s -\n"
                                                 "TrackPublished %s -\n",
                                                 sid, sid, sid)
                              : g_strdup ("");
  if (reason == NULL)
    return g_steal_pointer (&head);
  return g_strdup_printf ("%sTrackUnpublished %s %s\nTrackUnpublished %s %s\n"
                          "ParticipantDisconnected %s %s\n",
                          head, sid, reason, sid, reason, sid, reason);
}

/* Starts a session for @rec, pushes the file and waits for PUBLISHING; returns its sid. */
static char *
publish (Fixture *f, SkIngressRecord *rec, Transport *t, SkIngressSession **out)
{
  g_autoptr (GError) error = NULL;
  SkIngressSession *s = sk_ingress_registry_start_session (
      f->registry, SK_INPUT_RTMP, rec->stream_key, "127.0.0.1:1", transport_close, t, &error);

  g_assert_no_error (error);
  g_assert_nonnull (s);
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_BUFFERING);
  g_assert_cmpstr (sk_ingress_session_get_ingress_id (s), ==, rec->ingress_id);
  g_assert_true (push_all (f, s, &error));
  g_assert_no_error (error);
  wait_status (rec, SK_INGRESS_PUBLISHING);
  g_assert_nonnull (rec->participant_sid);
  *out = s;
  return g_strdup (rec->participant_sid);
}

static void
test_publish_and_end (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  Transport t = { 0 };
  SkIngressSession *s;
  g_autofree char *sid = publish (f, rec, &t, &s);

  g_assert_cmpuint (sk_ingress_registry_get_n_sessions (f->registry), ==, 1);
  g_assert_cmpint (rec->started_at_ms, >, 0);
  g_assert_cmpstr (rec->node, ==, "n1");
  g_assert_cmpstr (rec->input.video_codec, ==, "H264");
  g_assert_cmpuint (rec->input.width, ==, 160);

  sk_ingress_session_end (s, SK_REASON_CLIENT_INITIATED);
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_INACTIVE);
  g_assert_cmpint (rec->ended_at_ms, >=, rec->started_at_ms);
  g_assert_cmpuint (sk_ingress_registry_get_n_sessions (f->registry), ==, 0);
  spin (50);
  g_assert_cmpint (t.n_closed, ==, 0); /* the front end ended it: no close func */

  g_autofree char *events = room_events (f, "demo");
  g_autofree char *expected = expect_events (sid, "client_initiated", TRUE);
  g_assert_cmpstr (events, ==, expected);
  transport_clear (&t);
}

static void
test_replace (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  Transport t1 = { 0 }, t2 = { 0 };
  SkIngressSession *s1, *s2;
  g_autofree char *sid1 = publish (f, rec, &t1, &s1);

  /* Same key again (OBS reconnecting before the old TCP connection died). */
  g_autofree char *sid2 = publish (f, rec, &t2, &s2);
  g_assert_cmpint (t1.n_closed, ==, 1);
  g_assert_cmpstr (t1.reason, ==, "replaced");
  g_assert_cmpint (t2.n_closed, ==, 0);
  g_assert_cmpstr (sid1, !=, sid2);
  g_assert_cmpuint (sk_ingress_registry_get_n_sessions (f->registry), ==, 1);

  /* The old participant is gone, with reason replaced, before the new one joins. */
  g_autofree char *events = room_events (f, "demo");
  g_autofree char *a = expect_events (sid1, "replaced", TRUE);
  g_autofree char *b = expect_events (sid2, NULL, TRUE);
  g_autofree char *expected = g_strconcat (a, b, NULL);
  g_assert_cmpstr (events, ==, expected);

  sk_ingress_session_end (s2, SK_REASON_PUBLISHER_LOST);
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_INACTIVE);
  transport_clear (&t1);
  transport_clear (&t2);
}

/* @key starts no session: the registry refuses it with @code. */
static void
assert_key_refused (Fixture *f, const char *key, gint code)
{
  g_autoptr (GError) error = NULL;
  Transport t = { 0 };

  g_assert_null (sk_ingress_registry_start_session (f->registry, SK_INPUT_RTMP, key, NULL,
                                                    transport_close, &t, &error));
  g_assert_error (error, SK_ERROR, code);
  g_assert_cmpint (t.n_closed, ==, 0);
}

static void
test_refusals (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *a = add_ingress (f, SK_INPUT_RTMP, "demo", "a");
  SkIngressRecord *b = add_ingress (f, SK_INPUT_RTMP, "demo", "b");
  SkIngressRecord *w = add_ingress (f, SK_INPUT_WHIP, "demo", "w");
  Transport t = { 0 };
  g_autoptr (GError) error = NULL;

  assert_key_refused (f, "nonsense", SK_ERROR_NOT_FOUND);

  /* A key of the right length that differs in its last character. */
  g_autofree char *near = g_strdup (a->stream_key);
  near[strlen (near) - 1] ^= 1;
  assert_key_refused (f, near, SK_ERROR_NOT_FOUND);

  assert_key_refused (f, w->stream_key, SK_ERROR_NOT_FOUND);

  b->enabled = FALSE;
  assert_key_refused (f, b->stream_key, SK_ERROR_UNAUTHORIZED);
  b->enabled = TRUE;

  /* Capacity: one stream; replacing the live one stays within it. */
  f->config->max_streams = 1;
  SkIngressSession *s = sk_ingress_registry_start_session (
      f->registry, SK_INPUT_RTMP, a->stream_key, NULL, transport_close, &t, &error);
  g_assert_no_error (error);
  g_assert_false (sk_ingress_registry_is_ready (f->registry));
  g_assert_null (sk_ingress_registry_start_session (f->registry, SK_INPUT_RTMP, b->stream_key, NULL,
                                                    transport_close, &t, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_LIMIT);
  g_clear_error (&error);

  f->config->on_duplicate_key = SK_DUPLICATE_KEY_REJECT;
  g_assert_null (sk_ingress_registry_start_session (f->registry, SK_INPUT_RTMP, a->stream_key, NULL,
                                                    transport_close, &t, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_CONFLICT);
  g_clear_error (&error);
  g_assert_cmpstr (a->status, ==, SK_INGRESS_BUFFERING); /* the live one is untouched */

  f->config->on_duplicate_key = SK_DUPLICATE_KEY_REPLACE;
  SkIngressSession *s2 = sk_ingress_registry_start_session (
      f->registry, SK_INPUT_RTMP, a->stream_key, NULL, transport_close, &t, &error);
  g_assert_no_error (error);
  spin (20);
  g_assert_cmpint (t.n_closed, ==, 1);

  sk_ingress_registry_set_accepting (f->registry, FALSE);
  g_assert_false (sk_ingress_registry_is_ready (f->registry));
  g_assert_null (sk_ingress_registry_start_session (f->registry, SK_INPUT_RTMP, b->stream_key, NULL,
                                                    transport_close, &t, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE);

  sk_ingress_session_end (s2, SK_REASON_CLIENT_INITIATED);
  (void)s;
  transport_clear (&t);
}

static void
test_push_error (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  Transport t = { 0 };
  SkIngressSession *s;
  g_autofree char *sid = publish (f, rec, &t, &s);
  g_autoptr (GError) error = NULL;
  static const guint8 junk[] = { 1, 2, 3 };

  /* Tag type 5 is not audio, video or script data. */
  g_assert_false (sk_ingress_session_push_flv_tag (s, 5, 0, junk, sizeof junk, &error));
  g_assert_nonnull (error);
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_ERROR);
  g_assert_nonnull (rec->error);
  g_assert_cmpuint (strlen (rec->error), >, 0);
  /* Closing, not closed: more media is refused and the close func comes from an idle. */
  g_assert_cmpint (t.n_closed, ==, 0);
  g_clear_error (&error);
  g_assert_false (sk_ingress_session_push_flv_tag (s, 5, 0, junk, sizeof junk, &error));
  spin (20);
  g_assert_cmpint (t.n_closed, ==, 1);
  g_assert_cmpstr (t.reason, ==, "error");

  g_autofree char *events = room_events (f, "demo");
  g_autofree char *expected = expect_events (sid, "publisher_lost", TRUE);
  g_assert_cmpstr (events, ==, expected);
  transport_clear (&t);
}

static void
test_delete_live (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  Transport t = { 0 };
  SkIngressSession *s;
  g_autofree char *sid = publish (f, rec, &t, &s);

  sk_ingress_registry_delete (f->registry, rec);
  g_assert_cmpuint (sk_ingress_registry_get_n_sessions (f->registry), ==, 0);
  spin (20);
  g_assert_cmpint (t.n_closed, ==, 1);
  g_assert_cmpstr (t.reason, ==, "ingress_deleted");

  g_autofree char *events = room_events (f, "demo");
  g_autofree char *expected = expect_events (sid, "ingress_deleted", TRUE);
  g_assert_cmpstr (events, ==, expected);
  transport_clear (&t);
}

static void
refresh_answered (const GError *error, gpointer user_data)
{
  g_assert_no_error (error);
  *(gboolean *)user_data = TRUE;
}

/* One store read of the records, from start to answer, with @between run while it is under
 * way (after the store took its snapshot, before the registry saw it). */
static void
refresh_around (Fixture *f, void (*between) (Fixture *f, gpointer data), gpointer data)
{
  gboolean answered = FALSE;

  spin (20); /* writes already made are through */
  sk_ingress_registry_refresh (f->registry, 5000, refresh_answered, &answered);
  between (f, data);
  while (!answered)
    g_main_context_iteration (NULL, TRUE);
  spin (20);
}

static void
end_session (Fixture *f, gpointer s)
{
  sk_ingress_session_end (s, SK_REASON_CLIENT_INITIATED);
}

static void
delete_record (Fixture *f, gpointer rec)
{
  sk_ingress_registry_delete (f->registry, rec);
}

static void
nothing (Fixture *f, gpointer data)
{
}

/* The store's copy from a read that began before our own write is not news: the record
 * keeps the state we wrote (a session that just ended must not look live again). */
static void
test_end_during_store_read (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  Transport t = { 0 };
  SkIngressSession *s;
  g_autofree char *sid = publish (f, rec, &t, &s);

  refresh_around (f, end_session, s);
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_INACTIVE);
  g_assert_null (rec->participant_sid);
  refresh_around (f, nothing, NULL);
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_INACTIVE);
  transport_clear (&t);
}

/* A record deleted while a store read is under way does not come back from that read, and
 * its key stays refused. */
static void
test_delete_during_store_read (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  g_autofree char *id = g_strdup (rec->ingress_id);
  g_autofree char *key = g_strdup (rec->stream_key);

  refresh_around (f, delete_record, rec);
  g_assert_null (sk_ingress_registry_lookup (f->registry, id));
  refresh_around (f, nothing, NULL);
  g_assert_null (sk_ingress_registry_lookup (f->registry, id));
  assert_key_refused (f, key, SK_ERROR_NOT_FOUND);
}

static void
store_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  *(gboolean *)user_data = TRUE;
}

/* Deleted through another node (gone from the store): forgotten here at the next read, unless
 * a session runs it here or the read held a record it could not parse. */
static void
test_deleted_elsewhere (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *idle = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  SkIngressRecord *live = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-2");
  g_autofree char *idle_id = g_strdup (idle->ingress_id);
  g_autofree char *key = g_strdup (idle->stream_key);
  Transport t = { 0 };
  SkIngressSession *s;
  g_autofree char *sid = publish (f, live, &t, &s);
  gboolean removed = FALSE;

  refresh_around (f, nothing, NULL);
  g_assert_nonnull (sk_ingress_registry_lookup (f->registry, idle_id));
  sk_store_remove_async (f->store, "ingress", idle_id, NULL, store_done, &removed);
  while (!removed)
    g_main_context_iteration (NULL, TRUE);

  /* A record the registry cannot read might be that one: nothing is forgotten meanwhile. */
  gboolean written = FALSE;
  sk_store_put_async (f->store, "ingress", "IN_unreadable", "{", NULL, store_done, &written);
  while (!written)
    g_main_context_iteration (NULL, TRUE);
  g_test_expect_message ("sk-ingress", G_LOG_LEVEL_WARNING, "*unreadable ingress record*");
  refresh_around (f, nothing, NULL);
  g_test_assert_expected_messages ();
  g_assert_nonnull (sk_ingress_registry_lookup (f->registry, idle_id));

  removed = FALSE;
  sk_store_remove_async (f->store, "ingress", "IN_unreadable", NULL, store_done, &removed);
  while (!removed)
    g_main_context_iteration (NULL, TRUE);
  refresh_around (f, nothing, NULL);
  g_assert_null (sk_ingress_registry_lookup (f->registry, idle_id));
  assert_key_refused (f, key, SK_ERROR_NOT_FOUND);
  g_assert_true (sk_ingress_registry_lookup (f->registry, live->ingress_id) == live);
  sk_ingress_session_end (s, SK_REASON_CLIENT_INITIATED);
  transport_clear (&t);
}

static void
test_close_all_and_late_end (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *a = add_ingress (f, SK_INPUT_RTMP, "r1", "a");
  SkIngressRecord *b = add_ingress (f, SK_INPUT_RTMP, "r2", "b");
  Transport ta = { 0 }, tb = { 0 };
  SkIngressSession *sa, *sb;
  g_autofree char *sid_a = publish (f, a, &ta, &sa);
  g_autofree char *sid_b = publish (f, b, &tb, &sb);

  sk_ingress_registry_close_all (f->registry, SK_REASON_SERVER_SHUTDOWN);
  g_assert_cmpuint (sk_ingress_registry_get_n_sessions (f->registry), ==, 0);
  g_assert_cmpstr (a->status, ==, SK_INGRESS_INACTIVE);
  /* The front end of b drops its connection before the close func ran: it may still end the
   * session, and then is never called back. */
  sk_ingress_session_end (sb, SK_REASON_PUBLISHER_LOST);
  spin (20);
  g_assert_cmpint (ta.n_closed, ==, 1);
  g_assert_cmpstr (ta.reason, ==, "server_shutdown");
  g_assert_cmpint (tb.n_closed, ==, 0);

  g_autofree char *ea = room_events (f, "r1");
  g_autofree char *xa = expect_events (sid_a, "server_shutdown", TRUE);
  g_assert_cmpstr (ea, ==, xa);
  g_autofree char *eb = room_events (f, "r2");
  g_autofree char *xb = expect_events (sid_b, "server_shutdown", TRUE);
  g_assert_cmpstr (eb, ==, xb);
  transport_clear (&ta);
  transport_clear (&tb);
}

static void
test_publisher_timeout (Fixture *f, gconstpointer data)
{
  if (f->config == NULL)
    return;
  SkIngressRecord *rec = add_ingress (f, SK_INPUT_RTMP, "demo", "obs-1");
  Transport t = { 0 };
  g_autoptr (GError) error = NULL;

  f->config->publisher_timeout_ms = 200;
  SkIngressSession *s = sk_ingress_registry_start_session (
      f->registry, SK_INPUT_RTMP, rec->stream_key, NULL, transport_close, &t, &error);
  g_assert_nonnull (s);
  spin (100);
  g_assert_cmpint (t.n_closed, ==, 0);
  spin (400);
  g_assert_cmpint (t.n_closed, ==, 1);
  g_assert_cmpstr (t.reason, ==, "publisher_lost");
  g_assert_cmpstr (rec->status, ==, SK_INGRESS_INACTIVE);
  transport_clear (&t);
}

static void
make_flv (void)
{
  g_autofree char *dir = g_dir_make_tmp ("sk-ingress-XXXXXX", NULL);
  char *path = g_build_filename (dir, "test.flv", NULL);
  const char *argv[]
      = { "ffmpeg",   "-nostdin", "-loglevel", "error",
          "-f",       "lavfi",    "-i",        "testsrc=size=160x120:rate=15",
          "-f",       "lavfi",    "-i",        "sine=frequency=440:sample_rate=48000",
          "-t",       "2",        "-c:v",      "libx264",
          "-bf",      "0",        "-g",        "15",
          "-pix_fmt", "yuv420p",  "-c:a",      "aac",
          "-f",       "flv",      path,        NULL };
  int status = 0;

  if (g_spawn_sync (NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, &status,
                    NULL)
      && g_spawn_check_wait_status (status, NULL))
    flv_path = path;
  else
    g_free (path);
}

static void
remove_flv (void)
{
  if (flv_path == NULL)
    return;
  g_autofree char *dir = g_path_get_dirname (flv_path);
  g_unlink (flv_path);
  g_rmdir (dir);
  g_clear_pointer (&flv_path, g_free);
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);
  gst_init (&argc, &argv);
  make_flv ();
  g_test_add ("/ingress-session/publish-and-end", Fixture, NULL, setup, test_publish_and_end,
              teardown);
  g_test_add ("/ingress-session/replace", Fixture, NULL, setup, test_replace, teardown);
  g_test_add ("/ingress-session/refusals", Fixture, NULL, setup, test_refusals, teardown);
  g_test_add ("/ingress-session/push-error", Fixture, NULL, setup, test_push_error, teardown);
  g_test_add ("/ingress-session/delete-live", Fixture, NULL, setup, test_delete_live, teardown);
  g_test_add ("/ingress-session/close-all-and-late-end", Fixture, NULL, setup,
              test_close_all_and_late_end, teardown);
  g_test_add ("/ingress-session/end-during-store-read", Fixture, NULL, setup,
              test_end_during_store_read, teardown);
  g_test_add ("/ingress-session/delete-during-store-read", Fixture, NULL, setup,
              test_delete_during_store_read, teardown);
  g_test_add ("/ingress-session/deleted-elsewhere", Fixture, NULL, setup, test_deleted_elsewhere,
              teardown);
  g_test_add ("/ingress-session/publisher-timeout", Fixture, NULL, setup, test_publisher_timeout,
              teardown);
  ret = g_test_run ();
  remove_flv ();
  return ret;
}
