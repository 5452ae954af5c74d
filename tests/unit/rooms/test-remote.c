/*
 * Remote publication between two "nodes" in one process, each with its own memory store and
 * room manager: the ingress node's SkRemotePublication (real x264enc/opusenc tracks) publishes
 * over WebRTC on 127.0.0.1 into the host's internal endpoint (SkWhipInternal on a SoupServer);
 * the sk-whep-client binary decodes the room on the host.
 */
#include <string.h>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "common/sk-common.h"
#include "ingress/whip/sk-whip-internal.h"
#include "ingress/whip/sk-whip-participant.h"
#include "rooms/sk-remote.h"
#include "rooms/sk-rooms.h"
#include "rooms-test-util.h"

#define SECRET "cluster-secret-for-tests"

typedef struct {
  /* the host */
  SkConfig *host_config;
  SkStore *host_store;
  SkRoomManager *host_rooms;
  SkWhipInternal *internal;
  SoupServer *server;
  char *base;
  SoupSession *http;

  /* the ingress node */
  SkConfig *ing_config;
  SkStore *ing_store;
  SkRoomManager *ing_rooms;
  SkParticipant *participant;
  SkTrack *video, *audio;
  GstElement *pipeline;

  /* publication states seen */
  guint n_publishing;
  guint n_failed;
  guint n_connecting; /* sessions started */
  SkRemoteState state;
} Fixture;

/* ---- the ingress node's local participant: real encoders ------------------------------- */

static GstFlowReturn
on_sample (GstAppSink *sink, gpointer user_data)
{
  SkTrack *track = user_data;
  g_autoptr (GstSample) sample = gst_app_sink_pull_sample (sink);
  if (sample == NULL)
    return GST_FLOW_EOS;
  GstCaps *caps = gst_sample_get_caps (sample);
  if (caps != NULL)
    sk_track_set_caps (track, caps);
  GstSegment *segment = gst_sample_get_segment (sample);
  g_autoptr (GstBuffer) buf = gst_buffer_copy (gst_sample_get_buffer (sample));
  GST_BUFFER_PTS (buf)
      = gst_segment_to_running_time (segment, GST_FORMAT_TIME, GST_BUFFER_PTS (buf));
  GST_BUFFER_DTS (buf) = GST_CLOCK_TIME_NONE;
  sk_track_push (track, buf);
  return GST_FLOW_OK;
}

static void
attach_appsink (GstElement *pipeline, const char *name, SkTrack *track)
{
  g_autoptr (GstElement) sink = gst_bin_get_by_name (GST_BIN (pipeline), name);
  GstAppSinkCallbacks cb = { .new_sample = on_sample };
  gst_app_sink_set_callbacks (GST_APP_SINK (sink), &cb, sk_track_ref (track),
                              (GDestroyNotify)sk_track_unref);
}

static SkConfig *
node_config (const char *node_id)
{
  SkConfig *config = rt_config_new ();

  g_free (config->node_id);
  config->node_id = g_strdup (node_id);
  config->cluster_secret = g_strdup (SECRET);
  config->room_empty_timeout_ms = 60000; /* no RoomFinished in the middle of a test */
  g_strfreev (config->ice_addresses);
  config->ice_addresses = g_strsplit ("127.0.0.1", ",", -1);
  return config;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->host_config = node_config ("host");
  f->host_store = sk_store_memory_new ();
  f->host_rooms = sk_room_manager_new (f->host_config, f->host_store, NULL, &error);
  g_assert_no_error (error);
  f->internal = sk_whip_internal_new (f->host_config, f->host_rooms);
  f->server = soup_server_new (NULL, NULL);
  sk_room_manager_attach_http (f->host_rooms, f->server);
  sk_whip_internal_attach_http (f->internal, f->server);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  soup_server_listen (f->server, addr, 0, &error);
  g_assert_no_error (error);
  GSList *uris = soup_server_get_uris (f->server);
  f->base = g_strdup_printf ("http://127.0.0.1:%d", g_uri_get_port (uris->data));
  g_slist_free_full (uris, (GDestroyNotify)g_uri_unref);
  f->http = soup_session_new ();

  f->ing_config = node_config ("ing");
  f->ing_store = sk_store_memory_new ();
  f->ing_rooms = sk_room_manager_new (f->ing_config, f->ing_store, NULL, &error);
  g_assert_no_error (error);
}

static void
publisher_start (Fixture *f)
{
  g_autoptr (GError) error = NULL;

  f->participant
      = sk_room_manager_join (f->ing_rooms, "src", "cam1", "Cam 1", "ingress", NULL, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GstCaps) vcaps
      = gst_caps_from_string ("video/x-h264,stream-format=byte-stream,alignment=au");
  g_autoptr (GstCaps) acaps = gst_caps_from_string ("audio/x-opus");
  f->video
      = sk_track_ref (sk_participant_publish_track (f->participant, SK_TRACK_KIND_VIDEO, vcaps));
  f->audio
      = sk_track_ref (sk_participant_publish_track (f->participant, SK_TRACK_KIND_AUDIO, acaps));
  f->pipeline = gst_parse_launch (
      "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! "
      "x264enc tune=zerolatency bframes=0 key-int-max=30 speed-preset=ultrafast ! "
      "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! "
      "appsink name=v sync=false "
      "audiotestsrc is-live=true ! audioconvert ! audioresample ! opusenc ! "
      "appsink name=a sync=false",
      &error);
  g_assert_no_error (error);
  attach_appsink (f->pipeline, "v", f->video);
  attach_appsink (f->pipeline, "a", f->audio);
  gst_element_set_state (f->pipeline, GST_STATE_PLAYING);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  if (f->pipeline != NULL) {
    gst_element_set_state (f->pipeline, GST_STATE_NULL);
    gst_object_unref (f->pipeline);
  }
  if (f->participant != NULL)
    sk_participant_leave (f->participant, SK_REASON_CLIENT_INITIATED);
  g_clear_pointer (&f->video, sk_track_unref);
  g_clear_pointer (&f->audio, sk_track_unref);
  g_object_unref (f->http);
  soup_server_disconnect (f->server);
  g_object_unref (f->server);
  sk_whip_internal_free (f->internal);
  sk_room_manager_free (f->host_rooms);
  sk_room_manager_free (f->ing_rooms);
  sk_store_free (f->host_store);
  sk_store_free (f->ing_store);
  sk_config_free (f->host_config);
  sk_config_free (f->ing_config);
  g_free (f->base);
  /* Deferred frees (sessions, pipelines) run on the main context. */
  rt_spin (200);
}

/* ---- HTTP ------------------------------------------------------------------------------- */

typedef struct {
  gboolean done;
  guint status;
} Reply;

static void
on_reply (GObject *source, GAsyncResult *res, gpointer data)
{
  Reply *r = data;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, NULL);
  r->status = soup_message_get_status (msg);
  r->done = TRUE;
}

/* @...: NULL-terminated name/value pairs of request headers. Returns the status. */
static guint
http (Fixture *f, const char *method, const char *path, const char *body, ...)
{
  g_autofree char *url = g_strconcat (f->base, path, NULL);
  g_autoptr (SoupMessage) msg = soup_message_new (method, url);
  Reply r = { 0 };
  va_list ap;

  if (body != NULL) {
    g_autoptr (GBytes) bytes = g_bytes_new (body, strlen (body));
    soup_message_set_request_body_from_bytes (msg, "application/sdp", bytes);
  }
  va_start (ap, body);
  for (const char *name = va_arg (ap, const char *); name != NULL; name = va_arg (ap, const char *))
    soup_message_headers_replace (soup_message_get_request_headers (msg), name,
                                  va_arg (ap, const char *));
  va_end (ap);
  soup_session_send_and_read_async (f->http, msg, G_PRIORITY_DEFAULT, NULL, on_reply, &r);
  rt_wait_flag (&r.done, 10000);
  return r.status;
}

/* ---- the viewer on the host -------------------------------------------------------------- */

typedef struct {
  gboolean done;
  gboolean ok;
  GPtrArray *lines;
  GDataInputStream *out;
} Viewer;

static void
on_line (GObject *source, GAsyncResult *res, gpointer data)
{
  Viewer *v = data;
  char *line = g_data_input_stream_read_line_finish (G_DATA_INPUT_STREAM (source), res, NULL, NULL);
  if (line == NULL)
    return;
  g_test_message ("client: %s", line);
  g_ptr_array_add (v->lines, line);
  g_data_input_stream_read_line_async (v->out, G_PRIORITY_DEFAULT, NULL, on_line, v);
}

static void
on_client_exit (GObject *source, GAsyncResult *res, gpointer data)
{
  Viewer *v = data;
  v->ok = g_subprocess_wait_check_finish (G_SUBPROCESS (source), res, NULL);
  v->done = TRUE;
}

/* Runs the WHEP client on the host's room "demo" until it decoded @frames video frames and
 * some audio; returns its verdict. */
static JsonObject *
run_viewer (Fixture *f, const char *frames)
{
  const char *client = g_getenv ("SK_WHEP_CLIENT");
  g_autoptr (GError) error = NULL;
  Viewer v = { 0 };

  if (client == NULL)
    client = "tests/tools/sk-whep-client";
  g_autofree char *url = g_strconcat (f->base, "/v1/rooms/demo/whep", NULL);
  g_autoptr (GSubprocess) proc = g_subprocess_new (
      G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, client, "--url", url, "--ice-address", "127.0.0.1",
      "--frames", frames, "--timeout", "25", "--expect-audio", "--delete", NULL);
  g_assert_no_error (error);
  v.lines = g_ptr_array_new_with_free_func (g_free);
  v.out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (proc));
  g_data_input_stream_read_line_async (v.out, G_PRIORITY_DEFAULT, NULL, on_line, &v);
  g_subprocess_wait_check_async (proc, NULL, on_client_exit, &v);
  rt_wait_flag (&v.done, 40000);
  rt_spin (50); /* the last lines */
  g_assert_true (v.ok);
  g_assert_cmpuint (v.lines->len, >, 0);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_assert_true (
      json_parser_load_from_data (parser, g_ptr_array_index (v.lines, v.lines->len - 1), -1, NULL));
  JsonObject *verdict = json_object_ref (json_node_get_object (json_parser_get_root (parser)));
  g_object_unref (v.out);
  g_ptr_array_unref (v.lines);
  return verdict;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static void
on_state (SkRemotePublication *publication, SkRemoteState state, const GError *error,
          gpointer user_data)
{
  Fixture *f = user_data;

  f->state = state;
  if (state == SK_REMOTE_CONNECTING)
    f->n_connecting++;
  if (state == SK_REMOTE_PUBLISHING)
    f->n_publishing++;
  else if (state == SK_REMOTE_FAILED)
    f->n_failed++;
  if (error != NULL)
    g_test_message ("publication: %s", error->message);
}

static void
wait_publishing (Fixture *f, guint n)
{
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  while (f->n_publishing < n) {
    if (g_get_monotonic_time () > deadline)
      g_error ("the publication did not reach PUBLISHING #%u", n);
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (200);
  }
}

/* Waits until the host's log of "demo" holds at least @n events. */
static GPtrArray *
wait_log (Fixture *f, guint n)
{
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  for (;;) {
    GPtrArray *log = rt_read_log (f->host_store, "demo");
    if (log->len >= n)
      return log;
    g_ptr_array_unref (log);
    if (g_get_monotonic_time () > deadline)
      g_error ("the host's log did not reach %u events", n);
    rt_spin (20);
  }
}

static const char *
event_name (GPtrArray *log, guint i)
{
  return json_object_get_string_member (g_ptr_array_index (log, i), "event");
}

static const char *
event_member (GPtrArray *log, guint i, const char *object, const char *member)
{
  JsonObject *e = g_ptr_array_index (log, i);
  return json_object_get_string_member (json_object_get_object_member (e, object), member);
}

static char *
participant_json (Fixture *f)
{
  return g_strdup_printf ("{\"sid\":\"%s\",\"identity\":\"cam1\",\"name\":\"Cam 1\","
                          "\"kind\":\"ingress\",\"ingress_node\":\"ing\"}",
                          sk_participant_get_sid (f->participant));
}

/* ---- tests ------------------------------------------------------------------------------ */

/* Publish, play on the host, retarget (no events, media resumes), end (exact events). */
static void
test_publish_retarget_end (Fixture *f, gconstpointer data)
{
  publisher_start (f);
  g_autofree char *json = participant_json (f);
  SkRemotePublication *pub = sk_remote_publication_new (f->ing_config, "demo", json, on_state, f);
  sk_remote_publication_add_track (pub, f->video);
  sk_remote_publication_add_track (pub, f->audio);
  sk_remote_publication_set_target (pub, f->base);
  wait_publishing (f, 1);

  /* Events on the host: the ingress node's sids and node. */
  g_autoptr (GPtrArray) log = wait_log (f, 1);
  guint connected = G_MAXUINT, published = 0;
  for (guint tries = 0; published < 2 && tries < 200; tries++) {
    g_ptr_array_unref (log);
    log = wait_log (f, 1);
    published = 0;
    for (guint i = 0; i < log->len; i++) {
      if (g_str_equal (event_name (log, i), "ParticipantConnected"))
        connected = i;
      else if (g_str_equal (event_name (log, i), "TrackPublished"))
        published++;
    }
    if (published < 2)
      rt_spin (50); /* tracks are published with their first buffer */
  }
  g_assert_cmpuint (published, ==, 2);
  g_assert_cmpuint (connected, !=, G_MAXUINT);
  g_assert_cmpstr (event_member (log, connected, "participant", "sid"), ==,
                   sk_participant_get_sid (f->participant));
  g_assert_cmpstr (event_member (log, connected, "participant", "identity"), ==, "cam1");
  g_assert_cmpstr (event_member (log, connected, "participant", "ingress_node"), ==, "ing");
  for (guint i = connected + 1; i < log->len; i++) {
    g_assert_cmpstr (event_name (log, i), ==, "TrackPublished");
    const char *sid = event_member (log, i, "track", "sid");
    g_assert_true (g_str_equal (sid, sk_track_get_sid (f->video))
                   || g_str_equal (sid, sk_track_get_sid (f->audio)));
  }
  guint n_events = log->len;

  /* H.264 and Opus decode on the host. */
  g_autoptr (JsonObject) verdict = run_viewer (f, "30");
  g_assert_cmpstr (json_object_get_string_member (verdict, "result"), ==, "ok");
  g_assert_cmpint (json_object_get_int_member (verdict, "width"), ==, 320);
  g_assert_cmpint (json_object_get_int_member (verdict, "audio_buffers"), >, 0);

  /* The room "moved" to the same host: a new session, no events, media again. */
  sk_remote_publication_set_target (pub, f->base);
  wait_publishing (f, 2);
  g_autoptr (JsonObject) verdict2 = run_viewer (f, "30");
  g_assert_cmpstr (json_object_get_string_member (verdict2, "result"), ==, "ok");
  g_ptr_array_unref (log);
  log = rt_read_log (f->host_store, "demo");
  g_assert_cmpuint (log->len, ==, n_events);
  g_assert_cmpuint (sk_whip_internal_get_n_publications (f->internal), ==, 1);
  g_assert_cmpuint (sk_whip_internal_get_n_attached (f->internal), ==, 1);

  /* The participant leaves for good. */
  sk_remote_publication_end (pub, SK_REASON_CLIENT_INITIATED);
  sk_remote_publication_free (pub);
  g_ptr_array_unref (log);
  log = wait_log (f, n_events + 3);
  g_assert_cmpstr (event_name (log, n_events), ==, "TrackUnpublished");
  g_assert_cmpstr (event_name (log, n_events + 1), ==, "TrackUnpublished");
  g_assert_cmpstr (event_name (log, n_events + 2), ==, "ParticipantDisconnected");
  g_assert_cmpstr (json_object_get_string_member (g_ptr_array_index (log, n_events + 2), "reason"),
                   ==, SK_REASON_CLIENT_INITIATED);
  g_assert_cmpstr (event_member (log, n_events + 2, "participant", "sid"), ==,
                   sk_participant_get_sid (f->participant));
  g_assert_cmpuint (sk_whip_internal_get_n_publications (f->internal), ==, 0);
  g_assert_cmpuint (f->n_failed, ==, 0);
}

/* A track removed on the ingress node: re-POST with one m-line, TrackUnpublished for the
 * other, nothing else; the media session dies without DELETE: no events at all. */
static void
test_track_removed_and_detach (Fixture *f, gconstpointer data)
{
  publisher_start (f);
  g_autofree char *json = participant_json (f);
  SkRemotePublication *pub = sk_remote_publication_new (f->ing_config, "demo", json, on_state, f);
  sk_remote_publication_add_track (pub, f->video);
  sk_remote_publication_add_track (pub, f->audio);
  sk_remote_publication_set_target (pub, f->base);
  wait_publishing (f, 1);
  g_autoptr (GPtrArray) log = NULL;
  for (guint published = 0; published < 2;) {
    g_clear_pointer (&log, g_ptr_array_unref);
    log = wait_log (f, 1);
    published = 0;
    for (guint i = 0; i < log->len; i++)
      published += g_str_equal (event_name (log, i), "TrackPublished");
    rt_spin (20);
  }
  guint n = log->len;

  sk_remote_publication_remove_track (pub, f->audio);
  wait_publishing (f, 2);
  g_ptr_array_unref (log);
  log = wait_log (f, n + 1);
  rt_spin (300);
  g_ptr_array_unref (log);
  log = rt_read_log (f->host_store, "demo");
  g_assert_cmpuint (log->len, ==, n + 1);
  g_assert_cmpstr (event_name (log, n), ==, "TrackUnpublished");
  g_assert_cmpstr (event_member (log, n, "track", "sid"), ==, sk_track_get_sid (f->audio));

  /* The ingress node vanishes without DELETE: the host's media times out, silently. */
  f->host_config->publisher_timeout_ms = 300;
  sk_remote_publication_free (pub);
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (sk_whip_internal_get_n_attached (f->internal) > 0 && g_get_monotonic_time () < deadline)
    rt_spin (20);
  g_assert_cmpuint (sk_whip_internal_get_n_attached (f->internal), ==, 0);
  g_assert_cmpuint (sk_whip_internal_get_n_publications (f->internal), ==, 1);
  g_ptr_array_unref (log);
  log = rt_read_log (f->host_store, "demo");
  g_assert_cmpuint (log->len, ==, n + 1);

  /* Until the cluster declares its node dead. */
  g_assert_cmpuint (sk_whip_internal_end_node (f->internal, "ing", SK_REASON_NODE_FAILURE), ==, 1);
  g_ptr_array_unref (log);
  log = wait_log (f, n + 3);
  g_assert_cmpstr (event_name (log, n + 1), ==, "TrackUnpublished");
  g_assert_cmpstr (event_name (log, n + 2), ==, "ParticipantDisconnected");
  g_assert_cmpstr (json_object_get_string_member (g_ptr_array_index (log, n + 2), "reason"), ==,
                   SK_REASON_NODE_FAILURE);
}

/* Announced tracks: one session with both, not one per track; the host publishes them when
 * that session's POST arrives (TrackPublished ×2 at once). A track that never comes does not
 * hold the publication back for long. */
static void
test_expected_tracks (Fixture *f, gconstpointer data)
{
  publisher_start (f);
  g_autofree char *json = participant_json (f);
  SkRemotePublication *pub = sk_remote_publication_new (f->ing_config, "demo", json, on_state, f);
  sk_remote_publication_expect_tracks (pub, 2);
  sk_remote_publication_add_track (pub, f->video);
  sk_remote_publication_set_target (pub, f->base);
  rt_spin (100);
  g_assert_cmpuint (f->n_connecting, ==, 0);
  g_assert_cmpuint (sk_whip_internal_get_n_publications (f->internal), ==, 0);
  sk_remote_publication_add_track (pub, f->audio);
  wait_publishing (f, 1);
  g_assert_cmpuint (f->n_connecting, ==, 1);
  g_autoptr (GPtrArray) log = wait_log (f, 3); /* ParticipantConnected, TrackPublished ×2 */
  guint published = 0;
  for (guint i = 0; i < log->len; i++)
    published += g_str_equal (event_name (log, i), "TrackPublished");
  g_assert_cmpuint (published, ==, 2);
  sk_remote_publication_end (pub, SK_REASON_CLIENT_INITIATED);
  sk_remote_publication_free (pub);

  /* Two announced, one comes: the session starts with it after the wait. */
  g_autofree char *json2
      = g_strdup ("{\"sid\":\"PA_other\",\"identity\":\"cam2\",\"name\":\"Cam 2\","
                  "\"kind\":\"ingress\",\"ingress_node\":\"ing\"}");
  pub = sk_remote_publication_new (f->ing_config, "demo", json2, on_state, f);
  sk_remote_publication_expect_tracks (pub, 2);
  sk_remote_publication_add_track (pub, f->video);
  sk_remote_publication_set_target (pub, f->base);
  wait_publishing (f, 2);
  g_assert_cmpuint (f->n_connecting, ==, 2);
  sk_remote_publication_end (pub, SK_REASON_CLIENT_INITIATED);
  sk_remote_publication_free (pub);
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (sk_whip_internal_get_n_publications (f->internal) > 0
         && g_get_monotonic_time () < deadline)
    rt_spin (20);
  g_assert_cmpuint (sk_whip_internal_get_n_publications (f->internal), ==, 0);
  g_assert_cmpuint (f->n_failed, ==, 0);
}

static const char bad_offer[] = "not an SDP\r\n";

static void
test_http_errors (Fixture *f, gconstpointer data)
{
  const char *path = "/internal/v1/rooms/demo/publish";
  const char *good = "{\"sid\":\"PA_abc\",\"identity\":\"x\",\"name\":\"\",\"kind\":\"ingress\","
                     "\"ingress_node\":\"ing\",\"tracks\":[{\"sid\":\"TR_v\",\"kind\":\"video\"}]}";
  const char *auth = "Bearer " SECRET;

  g_assert_cmpuint (http (f, "POST", path, bad_offer, "X-Streamkeeper-Participant", good, NULL), ==,
                    401);
  g_assert_cmpuint (http (f, "POST", path, bad_offer, "Authorization", "Bearer nope",
                          "X-Streamkeeper-Participant", good, NULL),
                    ==, 401);
  g_assert_cmpuint (
      http (f, "POST", path, NULL, "Authorization", auth, "X-Streamkeeper-Participant", good, NULL),
      ==, 415);
  g_assert_cmpuint (http (f, "POST", path, bad_offer, "Authorization", auth, NULL), ==, 400);
  static const char *const bad_headers[] = {
    "not json",
    "[]",
    "{\"sid\":\"XX_abc\",\"identity\":\"x\",\"kind\":\"ingress\",\"ingress_node\":\"ing\","
    "\"tracks\":[{\"sid\":\"TR_v\",\"kind\":\"video\"}]}",
    "{\"sid\":\"PA_abc\",\"identity\":\"x\",\"kind\":\"ingress\",\"ingress_node\":\"ing\","
    "\"tracks\":[{\"sid\":\"TR_v\",\"kind\":\"data\"}]}",
    "{\"sid\":\"PA_abc\",\"identity\":\"x\",\"kind\":\"ingress\",\"ingress_node\":\"ing\","
    "\"tracks\":[{\"sid\":\"TR_v\",\"kind\":\"video\"},{\"sid\":\"TR_w\",\"kind\":\"video\"}]}",
    "{\"sid\":\"PA_abc\",\"identity\":\"x\",\"kind\":\"ingress\",\"ingress_node\":\"a b\","
    "\"tracks\":[{\"sid\":\"TR_v\",\"kind\":\"video\"}]}",
    "{\"sid\":\"PA_abc\",\"identity\":\"x\",\"kind\":\"ingress\",\"ingress_node\":\"ing\","
    "\"tracks\":[]}",
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad_headers); i++)
    g_assert_cmpuint (http (f, "POST", path, bad_offer, "Authorization", auth,
                            "X-Streamkeeper-Participant", bad_headers[i], NULL),
                      ==, 400);
  /* A valid header with an offer that is no SDP. */
  g_assert_cmpuint (http (f, "POST", path, bad_offer, "Authorization", auth,
                          "X-Streamkeeper-Participant", good, NULL),
                    ==, 400);

  g_assert_cmpuint (
      http (f, "DELETE", "/internal/v1/publications/nope", NULL, "Authorization", auth, NULL), ==,
      404);
  g_assert_cmpuint (http (f, "DELETE", "/internal/v1/publications/nope", NULL, "Authorization",
                          auth, "X-Streamkeeper-Reason", "because", NULL),
                    ==, 400);
  g_assert_cmpuint (http (f, "DELETE", "/internal/v1/publications/nope", NULL, NULL), ==, 401);
  g_assert_cmpuint (http (f, "GET", "/internal/v1/whatever", NULL, NULL), ==, 404);

  /* A node without a cluster secret refuses everything. */
  g_clear_pointer (&f->host_config->cluster_secret, g_free);
  g_assert_cmpuint (http (f, "POST", path, bad_offer, "Authorization", "Bearer ",
                          "X-Streamkeeper-Participant", good, NULL),
                    ==, 403);
  g_assert_cmpuint (
      http (f, "DELETE", "/internal/v1/publications/nope", NULL, "Authorization", auth, NULL), ==,
      403);

  /* Nothing joined, nothing allocated. */
  g_assert_cmpuint (sk_whip_internal_get_n_publications (f->internal), ==, 0);
  g_autoptr (GPtrArray) log = rt_read_log (f->host_store, "demo");
  g_assert_cmpuint (log->len, ==, 0);
}

static void
test_participant_header (void)
{
  g_autoptr (GError) error = NULL;
  const char *ok = "{\"sid\":\"PA_1\",\"identity\":\"\\u00e9t\\u00e9\",\"kind\":\"ingress\","
                   "\"ingress_node\":\"n-1.a\",\"tracks\":[{\"sid\":\"TR_a\",\"kind\":\"audio\"},"
                   "{\"sid\":\"TR_v\",\"kind\":\"video\"}]}";
  g_autoptr (SkWhipParticipant) p = sk_whip_participant_parse (ok, strlen (ok), &error);
  g_assert_no_error (error);
  g_assert_cmpstr (p->identity, ==, "été");
  g_assert_cmpstr (p->name, ==, "");
  g_assert_cmpuint (p->n_tracks, ==, 2);
  g_assert_cmpint (p->tracks[0].kind, ==, SK_TRACK_KIND_AUDIO);
  g_assert_cmpstr (sk_whip_participant_get_track (p, SK_TRACK_KIND_VIDEO)->sid, ==, "TR_v");

  /* A NUL inside the value would hide the rest from json-glib. */
  const char with_nul[] = "{\"sid\":\"PA_1\"}\0garbage";
  g_assert_null (sk_whip_participant_parse (with_nul, sizeof with_nul - 1, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);

  g_autofree char *big = g_strnfill (SK_WHIP_PARTICIPANT_MAX_BYTES + 1, ' ');
  g_assert_null (sk_whip_participant_parse (big, strlen (big), &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_TOO_LARGE);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/remote/participant-header", test_participant_header);
  g_test_add ("/remote/http-errors", Fixture, NULL, fixture_setup, test_http_errors,
              fixture_teardown);
  g_test_add ("/remote/expected-tracks", Fixture, NULL, fixture_setup, test_expected_tracks,
              fixture_teardown);
  g_test_add ("/remote/publish-retarget-end", Fixture, NULL, fixture_setup,
              test_publish_retarget_end, fixture_teardown);
  g_test_add ("/remote/track-removed-and-detach", Fixture, NULL, fixture_setup,
              test_track_removed_and_detach, fixture_teardown);
  return g_test_run ();
}
