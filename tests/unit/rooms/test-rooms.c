/* Unit tests of the room manager: the event log a room writes, identity replacement, watches,
 * fencing, shutdown, and the /v1/rooms HTTP API on a real SoupServer on 127.0.0.1. */
#include "rooms-test-util.h"

#include <gst/gst.h>

#include "rooms/sk-rooms.h"
#include "tests/unit/common/sk-test-http.h"

typedef struct {
  SkConfig *config;
  SkStore *store;
  SkRoomManager *rooms;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->config = rt_config_new ();
  f->store = sk_store_memory_new ();
  f->rooms = sk_room_manager_new (f->config, f->store, NULL, &error);
  g_assert_no_error (error);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  sk_room_manager_free (f->rooms);
  rt_spin (10); /* cancelled store callbacks run and must touch nothing */
  sk_store_free (f->store);
  sk_config_free (f->config);
}

static GstCaps *
h264_caps (void)
{
  return gst_caps_from_string ("video/x-h264, stream-format=byte-stream, alignment=au");
}

static GstCaps *
opus_caps (void)
{
  return gst_caps_from_string ("audio/x-opus, channels=2, rate=48000");
}

/* Waits until the log of @room holds @n events. */
static GPtrArray *
wait_log (SkStore *store, const char *room, guint n)
{
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  for (;;) {
    GPtrArray *log = rt_read_log (store, room);

    if (log->len >= n) {
      g_assert_cmpuint (log->len, ==, n);
      return log;
    }
    g_ptr_array_unref (log);
    if (g_get_monotonic_time () > deadline)
      g_error ("room %s: log did not reach %u events", room, n);
    rt_spin (5);
  }
}

static JsonObject *
log_at (GPtrArray *log, guint i)
{
  return g_ptr_array_index (log, i);
}

static const char *
member_of (JsonObject *event, const char *object, const char *member)
{
  return json_object_get_string_member (json_object_get_object_member (event, object), member);
}

/* A whole lifecycle, then the same room name again: exact events, seq never goes back. */
static void
test_lifecycle (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) log = NULL;
  g_autoptr (GstCaps) vcaps = h264_caps ();
  g_autoptr (GstCaps) acaps = opus_caps ();
  g_autofree char *names = NULL;
  g_autofree char *psid = NULL;
  SkParticipant *p;
  SkTrack *video, *audio;
  JsonObject *e;

  p = sk_room_manager_join (f->rooms, "demo", "obs-1", "Cam 1", "ingress", NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (p);
  psid = g_strdup (sk_participant_get_sid (p));
  g_assert_true (g_str_has_prefix (psid, "PA_"));
  g_assert_cmpstr (sk_participant_get_room (p), ==, "demo");
  g_assert_cmpstr (sk_participant_get_identity (p), ==, "obs-1");

  video = sk_participant_publish_track (p, SK_TRACK_KIND_VIDEO, vcaps);
  audio = sk_participant_publish_track (p, SK_TRACK_KIND_AUDIO, acaps);
  g_assert_true (g_str_has_prefix (sk_track_get_sid (video), "TR_"));
  g_assert_cmpstr (sk_track_get_sid (video), !=, sk_track_get_sid (audio));
  sk_participant_unpublish_track (p, audio, SK_REASON_CLIENT_INITIATED);
  sk_track_ref (video);
  sk_participant_leave (p, SK_REASON_PUBLISHER_LOST);
  g_assert_true (sk_track_is_ended (video));

  log = wait_log (f->store, "demo", 8);
  names = rt_event_names (log, 0);
  g_assert_cmpstr (names, ==,
                   "RoomStarted,ParticipantConnected,TrackPublished,TrackPublished,"
                   "TrackUnpublished,TrackUnpublished,ParticipantDisconnected,RoomFinished");
  rt_assert_contiguous (log);

  /* Exactly the JSON of DESIGN.md. */
  e = log_at (log, 0);
  g_assert_cmpstr (json_object_get_string_member (e, "room"), ==, "demo");
  g_assert_cmpstr (json_object_get_string_member (e, "node"), ==, "n1");
  g_assert_cmpint (json_object_get_int_member (e, "at_ms"), >, 1700000000000);
  g_assert_false (json_object_has_member (e, "participant"));
  e = log_at (log, 1);
  g_assert_cmpstr (member_of (e, "participant", "sid"), ==, psid);
  g_assert_cmpstr (member_of (e, "participant", "identity"), ==, "obs-1");
  g_assert_cmpstr (member_of (e, "participant", "name"), ==, "Cam 1");
  g_assert_cmpstr (member_of (e, "participant", "kind"), ==, "ingress");
  e = log_at (log, 2);
  g_assert_cmpstr (member_of (e, "track", "sid"), ==, sk_track_get_sid (video));
  g_assert_cmpstr (member_of (e, "track", "kind"), ==, "video");
  g_assert_cmpstr (member_of (e, "track", "codec"), ==, "H264");
  g_assert_cmpstr (member_of (e, "participant", "sid"), ==, psid);
  e = log_at (log, 3);
  g_assert_cmpstr (member_of (e, "track", "kind"), ==, "audio");
  g_assert_cmpstr (member_of (e, "track", "codec"), ==, "opus");
  e = log_at (log, 4);
  g_assert_cmpstr (member_of (e, "track", "kind"), ==, "audio");
  g_assert_cmpstr (json_object_get_string_member (e, "reason"), ==, "client_initiated");
  e = log_at (log, 5);
  g_assert_cmpstr (member_of (e, "track", "sid"), ==, sk_track_get_sid (video));
  g_assert_cmpstr (json_object_get_string_member (e, "reason"), ==, "publisher_lost");
  e = log_at (log, 6);
  g_assert_cmpstr (member_of (e, "participant", "sid"), ==, psid);
  g_assert_cmpstr (json_object_get_string_member (e, "reason"), ==, "publisher_lost");
  sk_track_unref (video);
  g_clear_pointer (&log, g_ptr_array_unref);
  g_clear_pointer (&names, g_free);

  /* The room was forgotten; the same name starts again and continues the seq. */
  rt_spin (20);
  p = sk_room_manager_join (f->rooms, "demo", "obs-2", NULL, "ingress", NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (sk_participant_get_sid (p), !=, psid);
  sk_participant_leave (p, SK_REASON_CLIENT_INITIATED);
  log = wait_log (f->store, "demo", 12);
  names = rt_event_names (log, 8);
  g_assert_cmpstr (names, ==,
                   "RoomStarted,ParticipantConnected,ParticipantDisconnected,RoomFinished");
  rt_assert_contiguous (log);
}

/* A participant that rejoins before the empty timeout keeps the room alive (no Finished). */
static void
test_rejoin_before_timeout (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) log = NULL;
  g_autofree char *names = NULL;
  SkParticipant *p;

  f->config->room_empty_timeout_ms = 300;
  p = sk_room_manager_join (f->rooms, "r", "a", NULL, NULL, NULL, NULL, NULL);
  sk_participant_leave (p, SK_REASON_CLIENT_INITIATED);
  rt_spin (50);
  p = sk_room_manager_join (f->rooms, "r", "a", NULL, NULL, NULL, NULL, NULL);
  rt_spin (400);
  log = wait_log (f->store, "r", 4);
  names = rt_event_names (log, 0);
  g_assert_cmpstr (names, ==,
                   "RoomStarted,ParticipantConnected,ParticipantDisconnected,"
                   "ParticipantConnected");
  sk_participant_leave (p, SK_REASON_CLIENT_INITIATED);
}

typedef struct {
  SkParticipant *participant;
  char *reason;
  char *sid;
  gboolean calls; /* set once called: rt_wait_flag waits on it */
} Evicted;

static void
on_evicted (SkParticipant *participant, const char *reason, gpointer user_data)
{
  Evicted *ev = user_data;

  g_assert_false (ev->calls);
  ev->calls = TRUE;
  g_assert_true (participant == ev->participant);
  ev->reason = g_strdup (reason);
  ev->sid = g_strdup (sk_participant_get_sid (participant));
  /* Calling leave from here is harmless: the eviction already wrote it. */
  sk_participant_leave (participant, SK_REASON_CLIENT_INITIATED);
}

/* Invariant 4: the same identity joining again evicts the old one first ("replaced"). */
static void
test_identity_replacement (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) log = NULL;
  g_autoptr (GstCaps) vcaps = h264_caps ();
  g_autofree char *names = NULL;
  Evicted ev = { 0 };
  SkParticipant *old, *other, *fresh;
  SkTrack *track;
  g_autofree char *old_sid = NULL;

  old = sk_room_manager_join (f->rooms, "r", "obs-1", "Cam", "ingress", on_evicted, &ev, NULL);
  ev.participant = old;
  old_sid = g_strdup (sk_participant_get_sid (old));
  track = sk_participant_publish_track (old, SK_TRACK_KIND_VIDEO, vcaps);
  sk_track_ref (track);
  other = sk_room_manager_join (f->rooms, "r", "obs-2", NULL, "ingress", NULL, NULL, NULL);

  fresh = sk_room_manager_join (f->rooms, "r", "obs-1", "Cam", "ingress", NULL, NULL, NULL);
  g_assert_true (ev.calls);
  g_assert_cmpstr (ev.reason, ==, "replaced");
  g_assert_cmpstr (ev.sid, ==, old_sid);
  g_assert_true (sk_track_is_ended (track));
  g_assert_cmpstr (sk_participant_get_sid (fresh), !=, old_sid);

  log = wait_log (f->store, "r", 7);
  names = rt_event_names (log, 0);
  g_assert_cmpstr (names, ==,
                   "RoomStarted,ParticipantConnected,TrackPublished,ParticipantConnected,"
                   "TrackUnpublished,ParticipantDisconnected,ParticipantConnected");
  g_assert_cmpstr (json_object_get_string_member (log_at (log, 4), "reason"), ==, "replaced");
  g_assert_cmpstr (member_of (log_at (log, 4), "track", "sid"), ==, sk_track_get_sid (track));
  g_assert_cmpstr (json_object_get_string_member (log_at (log, 5), "reason"), ==, "replaced");
  g_assert_cmpstr (member_of (log_at (log, 5), "participant", "sid"), ==, old_sid);
  g_assert_cmpstr (member_of (log_at (log, 6), "participant", "sid"), ==,
                   sk_participant_get_sid (fresh));

  sk_track_unref (track);
  sk_participant_leave (other, NULL);
  sk_participant_leave (fresh, NULL);
  g_free (ev.reason);
  g_free (ev.sid);
}

static void
test_join_invalid (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *long_name = g_strnfill (129, 'a');
  const char *bad[] = { "", "a/b", "a b", "é", long_name };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_assert_null (sk_room_manager_join (f->rooms, bad[i], "x", NULL, NULL, NULL, NULL, &error));
    g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
    g_clear_error (&error);
  }
  g_assert_null (sk_room_manager_join (f->rooms, "ok", "", NULL, NULL, NULL, NULL, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);
  long_name[128] = '\0';
  sk_participant_leave (
      sk_room_manager_join (f->rooms, long_name, "x", NULL, NULL, NULL, NULL, &error), NULL);
  g_assert_no_error (error);
}

typedef struct {
  GString *log;
  gboolean destroyed;
} TrackWatchLog;

static void
on_track (const char *room, SkParticipant *p, SkTrack *track, gboolean published, gpointer data)
{
  TrackWatchLog *w = data;

  g_string_append_printf (w->log, "%s%s:%s;", published ? "+" : "-", room,
                          sk_track_kind_to_string (sk_track_get_kind (track)));
}

static void
on_track_watch_destroy (gpointer data)
{
  ((TrackWatchLog *)data)->destroyed = TRUE;
}

static void
test_watch_tracks (Fixture *f, gconstpointer data)
{
  g_autoptr (GstCaps) vcaps = h264_caps ();
  g_autoptr (GstCaps) acaps = opus_caps ();
  TrackWatchLog early = { g_string_new (NULL) }, late = { g_string_new (NULL) };
  SkParticipant *p, *q;
  SkTrack *audio;
  guint early_id, late_id;

  early_id = sk_room_manager_watch_tracks (f->rooms, "r", on_track, &early, on_track_watch_destroy);
  p = sk_room_manager_join (f->rooms, "r", "a", NULL, NULL, NULL, NULL, NULL);
  q = sk_room_manager_join (f->rooms, "other", "a", NULL, NULL, NULL, NULL, NULL);
  sk_participant_publish_track (p, SK_TRACK_KIND_VIDEO, vcaps);
  audio = sk_participant_publish_track (p, SK_TRACK_KIND_AUDIO, acaps);
  sk_participant_publish_track (q, SK_TRACK_KIND_VIDEO, vcaps);
  g_assert_cmpstr (early.log->str, ==, "+r:video;+r:audio;");

  /* A late watcher is told at once about what is already there. */
  late_id = sk_room_manager_watch_tracks (f->rooms, "r", on_track, &late, NULL);
  g_assert_cmpstr (late.log->str, ==, "+r:video;+r:audio;");

  sk_participant_unpublish_track (p, audio, SK_REASON_CLIENT_INITIATED);
  sk_participant_leave (p, SK_REASON_CLIENT_INITIATED);
  g_assert_cmpstr (early.log->str, ==, "+r:video;+r:audio;-r:audio;-r:video;");

  sk_room_manager_unwatch_tracks (f->rooms, early_id);
  g_assert_true (early.destroyed);
  sk_room_manager_unwatch_tracks (f->rooms, late_id);
  sk_participant_leave (q, NULL);
  g_string_free (early.log, TRUE);
  g_string_free (late.log, TRUE);
}

/* Another node claimed the room (a newer epoch): this node's next write is refused, the room
 * is dropped and its participants are handed back without writing history. */
static void
test_fenced (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) log = NULL;
  RtAsync a = { 0 };
  Evicted ev = { 0 };
  SkParticipant *p;
  guint64 epoch = 0;

  p = sk_room_manager_join (f->rooms, "r", "a", NULL, NULL, on_evicted, &ev, NULL);
  ev.participant = p;
  g_clear_pointer (&log, g_ptr_array_unref);
  log = wait_log (f->store, "r", 2);

  sk_store_claim_room_async (f->store, "r", "n2", 0, 1, NULL, rt_async_cb, &a);
  g_assert_true (sk_store_claim_room_finish (f->store, rt_async_wait (&a), &epoch, NULL));
  g_assert_cmpuint (epoch, ==, 2);
  rt_async_clear (&a);

  g_test_expect_message ("sk-rooms", G_LOG_LEVEL_WARNING, "room r: lost (*older than 2)*");
  {
    g_autoptr (GstCaps) vcaps = h264_caps ();

    sk_participant_publish_track (p, SK_TRACK_KIND_VIDEO, vcaps);
  }
  rt_wait_flag (&ev.calls, 2000);
  g_test_assert_expected_messages ();
  g_assert_true (ev.calls);
  g_assert_cmpstr (ev.reason, ==, "node_failure");
  rt_spin (100);
  g_clear_pointer (&log, g_ptr_array_unref);
  log = rt_read_log (f->store, "r");
  g_assert_cmpuint (log->len, ==, 2);
  /* The room is gone from this node. */
  p = sk_room_manager_join (f->rooms, "r", "b", NULL, NULL, NULL, NULL, NULL);
  g_assert_nonnull (p);
  sk_participant_leave (p, NULL);
  g_free (ev.reason);
  g_free (ev.sid);
}

/* Many events issued at once reach the (asynchronous) store in order, without gaps. */
static void
test_ordering_burst (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) log = NULL;
  g_autoptr (GstCaps) vcaps = h264_caps ();
  SkParticipant *p[5];
  GPtrArray *sids = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; i < 5; i++) {
    g_autofree char *identity = g_strdup_printf ("p%u", i);

    p[i] = sk_room_manager_join (f->rooms, "burst", identity, NULL, NULL, NULL, NULL, NULL);
    for (guint j = 0; j < 3; j++)
      g_ptr_array_add (sids, g_strdup (sk_track_get_sid (
                                 sk_participant_publish_track (p[i], SK_TRACK_KIND_VIDEO, vcaps))));
  }
  for (guint i = 0; i < 5; i++)
    sk_participant_leave (p[i], NULL);

  /* 1 + 5 × (connected + 3 published + 3 unpublished + disconnected) + finished */
  log = wait_log (f->store, "burst", 1 + 5 * 8 + 1);
  rt_assert_contiguous (log);
  for (guint i = 0; i < 5; i++) {
    for (guint j = 0; j < 3; j++) {
      JsonObject *e = log_at (log, 1 + i * 4 + 1 + j);

      g_assert_cmpstr (json_object_get_string_member (e, "event"), ==, "TrackPublished");
      g_assert_cmpstr (member_of (e, "track", "sid"), ==, g_ptr_array_index (sids, i * 3 + j));
    }
  }
  g_ptr_array_unref (sids);
}

typedef struct {
  gboolean done;
  gboolean ok;
  guint log_len;
  SkStore *store;
} ShutdownState;

static void
on_shutdown (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ShutdownState *s = user_data;

  s->ok = sk_room_manager_shutdown_finish (NULL, result, NULL);
  s->done = TRUE;
}

static void
test_shutdown (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) a = NULL;
  g_autoptr (GPtrArray) b = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GstCaps) vcaps = h264_caps ();
  g_autofree char *names = NULL;
  ShutdownState s = { 0 };
  Evicted ev1 = { 0 }, ev2 = { 0 };
  SkParticipant *p1, *p2;

  p1 = sk_room_manager_join (f->rooms, "a", "x", NULL, NULL, on_evicted, &ev1, NULL);
  ev1.participant = p1;
  sk_participant_publish_track (p1, SK_TRACK_KIND_VIDEO, vcaps);
  p2 = sk_room_manager_join (f->rooms, "b", "y", NULL, NULL, on_evicted, &ev2, NULL);
  ev2.participant = p2;

  sk_room_manager_shutdown_async (f->rooms, on_shutdown, &s);
  g_assert_false (s.done);
  g_assert_cmpstr (ev1.reason, ==, "server_shutdown");
  g_assert_cmpstr (ev2.reason, ==, "server_shutdown");
  rt_wait_flag (&s.done, 5000);
  g_assert_true (s.ok);

  /* Everything was in the log when the callback ran. */
  a = rt_read_log (f->store, "a");
  names = rt_event_names (a, 0);
  g_assert_cmpstr (names, ==,
                   "RoomStarted,ParticipantConnected,TrackPublished,TrackUnpublished,"
                   "ParticipantDisconnected,RoomFinished");
  g_assert_cmpstr (json_object_get_string_member (log_at (a, 4), "reason"), ==, "server_shutdown");
  b = rt_read_log (f->store, "b");
  g_assert_cmpuint (b->len, ==, 4);

  /* No new joins while shutting down. */
  g_assert_null (sk_room_manager_join (f->rooms, "c", "z", NULL, NULL, NULL, NULL, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE);
  g_free (ev1.reason);
  g_free (ev1.sid);
  g_free (ev2.reason);
  g_free (ev2.sid);
}

static void
test_shutdown_idle (Fixture *f, gconstpointer data)
{
  ShutdownState s = { 0 };

  sk_room_manager_shutdown_async (f->rooms, on_shutdown, &s);
  g_assert_false (s.done);
  rt_wait_flag (&s.done, 1000);
  g_assert_true (s.ok);
}

static void
test_http (Fixture *f, gconstpointer data)
{
  g_autoptr (SoupServer) server = soup_server_new (NULL, NULL);
  g_autoptr (SoupSession) session = sk_test_session_new ();
  g_autofree char *base = sk_test_server_listen (server);
  g_autofree char *url = NULL;
  g_autoptr (GstCaps) vcaps = h264_caps ();
  SkParticipant *p;
  SkTrack *track;
  JsonObject *o, *po, *to;
  JsonArray *participants;

  sk_room_manager_attach_http (f->rooms, server);
  p = sk_room_manager_join (f->rooms, "demo", "obs-1", "Cam 1", "ingress", NULL, NULL, NULL);
  track = sk_participant_publish_track (p, SK_TRACK_KIND_VIDEO, vcaps);
  g_ptr_array_unref (wait_log (f->store, "demo", 3));

  url = g_strconcat (base, "/v1/rooms/demo", NULL);
  {
    g_autoptr (SkTestReply) r = sk_test_request (session, "GET", url, NULL, NULL, NULL);
    sk_test_assert_error (r, 401, "unauthorized");
  }
  {
    g_autoptr (SkTestReply) r = sk_test_request (session, "GET", url, "test-token", NULL, NULL);

    g_assert_cmpuint (r->status, ==, 200);
    o = sk_test_reply_object (r);
    g_assert_cmpstr (json_object_get_string_member (o, "name"), ==, "demo");
    g_assert_cmpstr (json_object_get_string_member (o, "node"), ==, "n1");
    g_assert_cmpint (json_object_get_int_member (o, "epoch"), ==, 1);
    participants = json_object_get_array_member (o, "participants");
    g_assert_cmpuint (json_array_get_length (participants), ==, 1);
    po = json_array_get_object_element (participants, 0);
    g_assert_cmpstr (json_object_get_string_member (po, "sid"), ==, sk_participant_get_sid (p));
    g_assert_cmpstr (json_object_get_string_member (po, "identity"), ==, "obs-1");
    g_assert_cmpstr (json_object_get_string_member (po, "name"), ==, "Cam 1");
    g_assert_cmpstr (json_object_get_string_member (po, "kind"), ==, "ingress");
    to = json_array_get_object_element (json_object_get_array_member (po, "tracks"), 0);
    g_assert_cmpstr (json_object_get_string_member (to, "sid"), ==, sk_track_get_sid (track));
    g_assert_cmpstr (json_object_get_string_member (to, "kind"), ==, "video");
    g_assert_cmpstr (json_object_get_string_member (to, "codec"), ==, "H264");
  }
  g_free (url);
  url = g_strconcat (base, "/v1/rooms", NULL);
  {
    g_autoptr (SkTestReply) r = sk_test_request (session, "GET", url, "test-token", NULL, NULL);
    JsonArray *rooms;

    g_assert_cmpuint (r->status, ==, 200);
    rooms = json_object_get_array_member (sk_test_reply_object (r), "rooms");
    g_assert_cmpuint (json_array_get_length (rooms), ==, 1);
    g_assert_cmpstr (
        json_object_get_string_member (json_array_get_object_element (rooms, 0), "name"), ==,
        "demo");
  }
  g_free (url);
  url = g_strconcat (base, "/v1/rooms/nope", NULL);
  {
    g_autoptr (SkTestReply) r = sk_test_request (session, "GET", url, "test-token", NULL, NULL);
    sk_test_assert_error (r, 404, "not_found");
  }
  g_free (url);
  url = g_strconcat (base, "/v1/rooms/bad%21name", NULL);
  {
    g_autoptr (SkTestReply) r = sk_test_request (session, "GET", url, "test-token", NULL, NULL);
    sk_test_assert_error (r, 400, "invalid");
  }
  g_free (url);
  url = g_strconcat (base, "/v1/rooms/demo", NULL);
  {
    g_autoptr (SkTestReply) r = sk_test_request (session, "DELETE", url, "test-token", NULL, NULL);
    g_assert_cmpuint (r->status, ==, 405);
  }
  sk_participant_leave (p, NULL);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) g_test_add (path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("/rooms/lifecycle", test_lifecycle);
  ADD ("/rooms/rejoin-before-timeout", test_rejoin_before_timeout);
  ADD ("/rooms/identity-replacement", test_identity_replacement);
  ADD ("/rooms/join-invalid", test_join_invalid);
  ADD ("/rooms/watch-tracks", test_watch_tracks);
  ADD ("/rooms/fenced", test_fenced);
  ADD ("/rooms/ordering-burst", test_ordering_burst);
  ADD ("/rooms/shutdown", test_shutdown);
  ADD ("/rooms/shutdown-idle", test_shutdown_idle);
  ADD ("/rooms/http", test_http);
#undef ADD
  return g_test_run ();
}
