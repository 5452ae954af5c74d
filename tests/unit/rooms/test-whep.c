/*
 * WHEP playback end to end: a room manager on a SoupServer (127.0.0.1), a publisher fed by
 * real x264enc/opusenc pipelines, and the sk-whep-client binary (webrtcbin) as the viewer.
 */
#include <string.h>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "common/sk-common.h"
#include "rooms/sk-rooms.h"
#include "rooms/sk-webrtc.h"

typedef struct {
  SkConfig *config;
  SkStore *store;
  SkRoomManager *rooms;
  SoupServer *server;
  SoupSession *session;
  char *base; /* http://127.0.0.1:PORT */
} Fixture;

/* ---- a publisher: real encoders feeding a participant's tracks ------------------------ */

typedef struct {
  SkParticipant *participant;
  SkTrack *video; /* strong */
  SkTrack *audio; /* strong */
  GstElement *pipeline;
} Publisher;

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
  /* Tracks carry the publisher's running time (x264enc's segment starts at 1000 h). */
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

static Publisher *
publisher_start (Fixture *f, const char *room, const char *identity, int pattern)
{
  Publisher *pub = g_new0 (Publisher, 1);
  g_autoptr (GError) error = NULL;

  pub->participant
      = sk_room_manager_join (f->rooms, room, identity, identity, "ingress", NULL, NULL, &error);
  g_assert_no_error (error);
  g_autoptr (GstCaps) vcaps
      = gst_caps_from_string ("video/x-h264,stream-format=byte-stream,alignment=au");
  g_autoptr (GstCaps) acaps = gst_caps_from_string ("audio/x-opus");
  pub->video
      = sk_track_ref (sk_participant_publish_track (pub->participant, SK_TRACK_KIND_VIDEO, vcaps));
  pub->audio
      = sk_track_ref (sk_participant_publish_track (pub->participant, SK_TRACK_KIND_AUDIO, acaps));

  g_autofree char *desc = g_strdup_printf (
      "videotestsrc is-live=true pattern=%d ! video/x-raw,width=320,height=240,framerate=30/1 ! "
      "x264enc tune=zerolatency bframes=0 key-int-max=30 speed-preset=ultrafast ! "
      "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! "
      "appsink name=v sync=false "
      "audiotestsrc is-live=true ! audioconvert ! audioresample ! opusenc ! "
      "appsink name=a sync=false",
      pattern);
  pub->pipeline = gst_parse_launch (desc, &error);
  g_assert_no_error (error);
  attach_appsink (pub->pipeline, "v", pub->video);
  attach_appsink (pub->pipeline, "a", pub->audio);
  gst_element_set_state (pub->pipeline, GST_STATE_PLAYING);
  return pub;
}

static void
publisher_stop (Publisher *pub, const char *reason)
{
  gst_element_set_state (pub->pipeline, GST_STATE_NULL);
  gst_object_unref (pub->pipeline);
  sk_participant_leave (pub->participant, reason);
  sk_track_unref (pub->video);
  sk_track_unref (pub->audio);
  g_free (pub);
}

/* ---- HTTP from the test, with the main loop running for the server ------------------- */

typedef struct {
  GMainLoop *loop;
  guint status;
  GBytes *body;
  SoupMessageHeaders *headers;
} Reply;

static void
reply_clear (Reply *r)
{
  g_clear_pointer (&r->body, g_bytes_unref);
  g_clear_pointer (&r->headers, soup_message_headers_unref);
  g_clear_pointer (&r->loop, g_main_loop_unref);
}

static void
on_reply (GObject *source, GAsyncResult *res, gpointer data)
{
  Reply *r = data;
  g_autoptr (GError) error = NULL;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  r->body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);
  g_assert_no_error (error);
  r->status = soup_message_get_status (msg);
  r->headers = soup_message_headers_ref (soup_message_get_response_headers (msg));
  g_main_loop_quit (r->loop);
}

/* @extra: NULL-terminated name/value pairs of request headers. */
static void
http (Fixture *f, const char *method, const char *path, const char *content_type, const char *body,
      gsize body_len, Reply *r, ...)
{
  g_autofree char *url = g_strconcat (f->base, path, NULL);
  g_autoptr (SoupMessage) msg = soup_message_new (method, url);
  va_list ap;

  if (body != NULL) {
    g_autoptr (GBytes) bytes = g_bytes_new (body, body_len);
    soup_message_set_request_body_from_bytes (msg, content_type, bytes);
  }
  va_start (ap, r);
  for (const char *name = va_arg (ap, const char *); name != NULL; name = va_arg (ap, const char *))
    soup_message_headers_replace (soup_message_get_request_headers (msg), name,
                                  va_arg (ap, const char *));
  va_end (ap);

  memset (r, 0, sizeof *r);
  r->loop = g_main_loop_new (NULL, FALSE);
  soup_session_send_and_read_async (f->session, msg, G_PRIORITY_DEFAULT, NULL, on_reply, r);
  g_main_loop_run (r->loop);
}

static char *
reply_text (Reply *r)
{
  return g_strndup (g_bytes_get_data (r->body, NULL), g_bytes_get_size (r->body));
}

/* ---- fixture --------------------------------------------------------------------------- */

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->config = sk_config_new ();
  g_free (f->config->node_id);
  f->config->node_id = g_strdup ("n1");
  g_free (f->config->api_token);
  f->config->api_token = g_strdup ("secret-token");
  g_strfreev (f->config->ice_addresses);
  f->config->ice_addresses = g_strsplit ("127.0.0.1", ",", -1);
  f->config->max_subscribers = 10;
  f->store = sk_store_memory_new ();
  f->rooms = sk_room_manager_new (f->config, f->store, NULL, &error);
  g_assert_no_error (error);

  f->server = soup_server_new (NULL, NULL);
  sk_room_manager_attach_http (f->rooms, f->server);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  soup_server_listen (f->server, addr, 0, &error);
  g_assert_no_error (error);
  GSList *uris = soup_server_get_uris (f->server);
  f->base = g_strdup_printf ("http://127.0.0.1:%d", g_uri_get_port (uris->data));
  g_slist_free_full (uris, (GDestroyNotify)g_uri_unref);
  f->session = soup_session_new ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_object_unref (f->session);
  soup_server_disconnect (f->server);
  g_object_unref (f->server);
  sk_room_manager_free (f->rooms);
  sk_store_free (f->store);
  sk_config_free (f->config);
  g_free (f->base);
  /* Let deferred subscriber frees run. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

/* A minimal browser-like recvonly offer for one H.264 m-line. */
static const char offer_sdp[]
    = "v=0\r\n"
      "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
      "s=-\r\n"
      "t=0 0\r\n"
      "a=group:BUNDLE 0\r\n"
      "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"
      "c=IN IP4 0.0.0.0\r\n"
      "a=mid:0\r\n"
      "a=recvonly\r\n"
      "a=rtcp-mux\r\n"
      "a=ice-ufrag:Xy1z\r\n"
      "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
      "a=fingerprint:sha-256 "
      "19:E2:1C:3B:4B:9F:81:E6:B8:5C:F4:A5:A8:D8:73:04:BB:05:2F:70:9F:04:A9:0E:05:E9:26:33:E8:70:"
      "88:A2\r\n"
      "a=setup:actpass\r\n"
      "a=rtpmap:96 H264/90000\r\n"
      "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n"
      "a=rtpmap:97 H264/90000\r\n"
      "a=rtcp-fb:97 nack pli\r\n"
      "a=fmtp:97 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

static void
test_sdp_validation (void)
{
  GstSDPMessage *sdp = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (sk_webrtc_parse_sdp (offer_sdp, strlen (offer_sdp), &sdp, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gst_sdp_message_medias_len (sdp), ==, 1);
  gst_sdp_message_free (sdp);

  const char *bad[] = {
    "",
    "hello world",
    "v=1\r\nm=video 9 RTP/AVP 96\r\n",
    "v=0\r\ns=-\r\n",
    "v=0\r\nthis is not sdp\r\nm=video 9 RTP/AVP 96\r\n",
    "v=0\r\nm=video 9 RTP/AVP\r\n",
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_clear_error (&error);
    g_assert_false (sk_webrtc_parse_sdp (bad[i], strlen (bad[i]), &sdp, &error));
    g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
    g_assert_null (sdp);
  }
  g_autofree char *big = g_strnfill (100 * 1024, 'a');
  memcpy (big, "v=0\n", 4);
  g_clear_error (&error);
  g_assert_false (sk_webrtc_parse_sdp (big, strlen (big), &sdp, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_TOO_LARGE);
  char nul[] = "v=0\r\nm=video 9 RTP/AVP 96\r\n\0x";
  g_clear_error (&error);
  g_assert_false (sk_webrtc_parse_sdp (nul, sizeof nul - 1, &sdp, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
}

static void
test_http_errors (Fixture *f, gconstpointer data)
{
  Reply r;

  http (f, "OPTIONS", "/v1/rooms/demo/whep", NULL, NULL, 0, &r, NULL);
  g_assert_cmpuint (r.status, ==, 204);
  g_assert_cmpstr (soup_message_headers_get_one (r.headers, "Accept-Post"), ==, "application/sdp");
  g_assert_nonnull (soup_message_headers_get_one (r.headers, "Access-Control-Allow-Origin"));
  reply_clear (&r);

  http (f, "POST", "/v1/rooms/demo/whep", "text/plain", offer_sdp, strlen (offer_sdp), &r, NULL);
  g_assert_cmpuint (r.status, ==, 415);
  reply_clear (&r);

  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", "hello", 5, &r, NULL);
  g_assert_cmpuint (r.status, ==, 400);
  g_autofree char *text = reply_text (&r);
  g_assert_nonnull (strstr (text, "\"error\""));
  reply_clear (&r);

  const char no_media[] = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", no_media, strlen (no_media), &r, NULL);
  g_assert_cmpuint (r.status, ==, 400);
  reply_clear (&r);

  g_autofree char *big = g_strnfill (70 * 1024, 'a');
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", big, strlen (big), &r, NULL);
  g_assert_cmpuint (r.status, ==, 413);
  reply_clear (&r);

  http (f, "DELETE", "/v1/whep/doesnotexist", NULL, NULL, 0, &r, NULL);
  g_assert_cmpuint (r.status, ==, 404);
  reply_clear (&r);
  http (f, "PATCH", "/v1/whep/doesnotexist", "application/trickle-ice-sdpfrag", "a=x", 3, &r, NULL);
  g_assert_cmpuint (r.status, ==, 404);
  reply_clear (&r);

  /* With whep_require_token: no token → 401, the API token → accepted (past auth). */
  f->config->whep_require_token = TRUE;
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", "hello", 5, &r, NULL);
  g_assert_cmpuint (r.status, ==, 401);
  reply_clear (&r);
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", "hello", 5, &r, "Authorization",
        "Bearer secret-token", NULL);
  g_assert_cmpuint (r.status, ==, 400);
  reply_clear (&r);
  f->config->whep_require_token = FALSE;
}

/* A session for a hand-written offer, before any publisher: answer, limits, PATCH, DELETE. */
static void
test_session_lifecycle (Fixture *f, gconstpointer data)
{
  Reply r;

  f->config->max_subscribers = 1;
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", offer_sdp, strlen (offer_sdp), &r,
        NULL);
  g_autofree char *answer = reply_text (&r);
  g_assert_cmpuint (r.status, ==, 201);
  g_assert_cmpstr (soup_message_headers_get_content_type (r.headers, NULL), ==, "application/sdp");
  g_autofree char *location = g_strdup (soup_message_headers_get_one (r.headers, "Location"));
  g_autofree char *etag = g_strdup (soup_message_headers_get_one (r.headers, "ETag"));
  g_assert_true (g_str_has_prefix (location, "/v1/whep/"));
  g_assert_cmpuint (strlen (location), >, strlen ("/v1/whep/") + 16);
  g_assert_nonnull (etag);
  g_assert_nonnull (soup_message_headers_get_one (r.headers, "Access-Control-Allow-Origin"));
  reply_clear (&r);
  g_test_message ("answer:\n%s", answer);

  /* The answer: sendonly, the pm=1 payload type, and host candidates on 127.0.0.1 only. */
  g_assert_nonnull (strstr (answer, "a=sendonly"));
  g_assert_nonnull (strstr (answer, "a=rtpmap:97 H264/90000"));
  g_assert_null (strstr (answer, "a=rtpmap:96 "));
  g_auto (GStrv) lines = g_strsplit (answer, "\n", 0);
  guint n_candidates = 0;
  for (guint i = 0; lines[i] != NULL; i++) {
    if (!g_str_has_prefix (lines[i], "a=candidate:"))
      continue;
    n_candidates++;
    g_assert_nonnull (strstr (lines[i], " 127.0.0.1 "));
  }
  g_assert_cmpuint (n_candidates, >, 0);

  /* Over the subscriber limit. */
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", offer_sdp, strlen (offer_sdp), &r,
        NULL);
  g_assert_cmpuint (r.status, ==, 503);
  g_assert_nonnull (soup_message_headers_get_one (r.headers, "Retry-After"));
  reply_clear (&r);

  /* PATCH preconditions, ICE restart, and a trickled candidate. */
  const char frag[] = "a=ice-ufrag:Xy1z\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=video 9 "
                      "UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                      "a=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host\r\n";
  const char restart[] = "a=ice-ufrag:NEW1\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\n";
  const char *ct = "application/trickle-ice-sdpfrag";
  http (f, "PATCH", location, "application/sdp", frag, strlen (frag), &r, "If-Match", etag, NULL);
  g_assert_cmpuint (r.status, ==, 415);
  reply_clear (&r);
  http (f, "PATCH", location, ct, frag, strlen (frag), &r, NULL);
  g_assert_cmpuint (r.status, ==, 428);
  reply_clear (&r);
  http (f, "PATCH", location, ct, frag, strlen (frag), &r, "If-Match", "\"nope\"", NULL);
  g_assert_cmpuint (r.status, ==, 412);
  reply_clear (&r);
  http (f, "PATCH", location, ct, restart, strlen (restart), &r, "If-Match", etag, NULL);
  g_assert_cmpuint (r.status, ==, 422);
  reply_clear (&r);
  http (f, "PATCH", location, ct, frag, strlen (frag), &r, "If-Match", etag, NULL);
  g_assert_cmpuint (r.status, ==, 204);
  reply_clear (&r);

  http (f, "OPTIONS", location, NULL, NULL, 0, &r, NULL);
  g_assert_cmpuint (r.status, ==, 204);
  reply_clear (&r);

  http (f, "DELETE", location, NULL, NULL, 0, &r, NULL);
  g_assert_cmpuint (r.status, ==, 200);
  reply_clear (&r);
  http (f, "DELETE", location, NULL, NULL, 0, &r, NULL);
  g_assert_cmpuint (r.status, ==, 404);
  reply_clear (&r);

  /* The slot is free again. */
  http (f, "POST", "/v1/rooms/demo/whep", "application/sdp", offer_sdp, strlen (offer_sdp), &r,
        NULL);
  g_assert_cmpuint (r.status, ==, 201);
  reply_clear (&r);
}

/* ---- the real viewer -------------------------------------------------------------------- */

typedef struct {
  Fixture *f;
  GMainLoop *loop;
  GDataInputStream *out;
  GPtrArray *lines;
  char *location;
  gboolean exited;
  gboolean exit_ok;
  /* reconnect test */
  Publisher **swap;
  gboolean swapped;
  gint frames_at_swap;
} Viewer;

static void read_next_line (Viewer *v);

static void
on_line (GObject *source, GAsyncResult *res, gpointer data)
{
  Viewer *v = data;
  g_autofree char *line
      = g_data_input_stream_read_line_finish (G_DATA_INPUT_STREAM (source), res, NULL, NULL);
  if (line == NULL) {
    if (v->exited)
      g_main_loop_quit (v->loop);
    v->exited = TRUE; /* wait for both EOF and exit */
    return;
  }
  g_test_message ("client: %s", line);
  g_autoptr (JsonParser) parser = json_parser_new ();
  if (json_parser_load_from_data (parser, line, -1, NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser))) {
    JsonObject *o = json_node_get_object (json_parser_get_root (parser));
    if (json_object_has_member (o, "location"))
      v->location = g_strdup (json_object_get_string_member (o, "location"));
    /* Once the first publisher's frames play, replace it (OBS reconnecting). */
    if (v->swap != NULL && !v->swapped && !json_object_has_member (o, "result")
        && json_object_has_member (o, "video_frames")
        && json_object_get_int_member (o, "video_frames") > 0) {
      v->swapped = TRUE;
      v->frames_at_swap = json_object_get_int_member (o, "video_frames");
      publisher_stop (*v->swap, SK_REASON_PUBLISHER_LOST);
      *v->swap = publisher_start (v->f, "demo", "cam1", 18 /* ball */);
    }
  }
  g_ptr_array_add (v->lines, g_steal_pointer (&line));
  read_next_line (v);
}

static void
read_next_line (Viewer *v)
{
  g_data_input_stream_read_line_async (v->out, G_PRIORITY_DEFAULT, NULL, on_line, v);
}

static void
on_client_exit (GObject *source, GAsyncResult *res, gpointer data)
{
  Viewer *v = data;
  v->exit_ok = g_subprocess_wait_check_finish (G_SUBPROCESS (source), res, NULL);
  if (v->exited)
    g_main_loop_quit (v->loop);
  v->exited = TRUE;
}

static JsonObject *
run_viewer (Fixture *f, Viewer *v, const char *frames, gboolean *ok)
{
  const char *client = g_getenv ("SK_WHEP_CLIENT");
  g_autoptr (GError) error = NULL;

  if (client == NULL)
    client = "tests/tools/sk-whep-client";
  g_autofree char *url = g_strconcat (f->base, "/v1/rooms/demo/whep", NULL);
  g_autoptr (GSubprocess) proc = g_subprocess_new (
      G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, client, "--url", url, "--ice-address", "127.0.0.1",
      "--frames", frames, "--timeout", "25", "--expect-audio", "--delete", NULL);
  g_assert_no_error (error);
  v->f = f;
  v->loop = g_main_loop_new (NULL, FALSE);
  v->lines = g_ptr_array_new_with_free_func (g_free);
  v->out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (proc));
  read_next_line (v);
  g_subprocess_wait_check_async (proc, NULL, on_client_exit, v);
  g_main_loop_run (v->loop);

  *ok = v->exit_ok;
  g_assert_cmpuint (v->lines->len, >, 0);
  /* The last line is the verdict. */
  g_autoptr (JsonParser) parser = json_parser_new ();
  const char *last = g_ptr_array_index (v->lines, v->lines->len - 1);
  g_assert_true (json_parser_load_from_data (parser, last, -1, NULL));
  JsonObject *o = json_node_get_object (json_parser_get_root (parser));
  return json_object_ref (o);
}

static void
viewer_clear (Viewer *v)
{
  g_clear_object (&v->out);
  g_clear_pointer (&v->lines, g_ptr_array_unref);
  g_clear_pointer (&v->loop, g_main_loop_unref);
  g_free (v->location);
}

static void
test_playback (Fixture *f, gconstpointer data)
{
  Publisher *pub = publisher_start (f, "demo", "cam1", 0);
  Viewer v = { 0 };
  gboolean ok;

  g_autoptr (JsonObject) verdict = run_viewer (f, &v, "30", &ok);
  g_assert_cmpstr (json_object_get_string_member (verdict, "result"), ==, "ok");
  g_assert_true (ok);
  g_assert_cmpint (json_object_get_int_member (verdict, "video_frames"), >=, 30);
  g_assert_cmpint (json_object_get_int_member (verdict, "audio_buffers"), >, 0);
  g_assert_cmpint (json_object_get_int_member (verdict, "width"), ==, 320);
  g_assert_cmpint (json_object_get_int_member (verdict, "height"), ==, 240);

  /* The client deleted its session: the resource is gone. */
  g_assert_nonnull (v.location);
  Reply r;
  const char *path = strstr (v.location, "/v1/whep/");
  g_assert_nonnull (path);
  http (f, "DELETE", path, NULL, NULL, 0, &r, NULL);
  g_assert_cmpuint (r.status, ==, 404);
  reply_clear (&r);

  viewer_clear (&v);
  publisher_stop (pub, SK_REASON_CLIENT_INITIATED);
}

/* The viewer keeps playing when the publisher reconnects as a new participant. */
static void
test_publisher_reconnect (Fixture *f, gconstpointer data)
{
  Publisher *pub = publisher_start (f, "demo", "cam1", 0);
  Viewer v = { .swap = &pub };
  gboolean ok;

  g_autoptr (JsonObject) verdict = run_viewer (f, &v, "150", &ok);
  g_assert_true (v.swapped);
  g_assert_cmpstr (json_object_get_string_member (verdict, "result"), ==, "ok");
  g_assert_true (ok);
  /* Well over what the first publisher delivered before it was replaced. */
  g_assert_cmpint (json_object_get_int_member (verdict, "video_frames") - v.frames_at_swap, >=, 60);
  viewer_clear (&v);
  publisher_stop (pub, SK_REASON_CLIENT_INITIATED);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/whep/sdp-validation", test_sdp_validation);
  g_test_add ("/whep/http-errors", Fixture, NULL, fixture_setup, test_http_errors,
              fixture_teardown);
  g_test_add ("/whep/session-lifecycle", Fixture, NULL, fixture_setup, test_session_lifecycle,
              fixture_teardown);
  g_test_add ("/whep/playback", Fixture, NULL, fixture_setup, test_playback, fixture_teardown);
  g_test_add ("/whep/publisher-reconnect", Fixture, NULL, fixture_setup, test_publisher_reconnect,
              fixture_teardown);
  return g_test_run ();
}
