/*
 * sk-whip-publisher: a WHIP client (RFC 9725) on webrtcbin + libsoup, for tests, benchmarks and
 * the gst-launch recipes (GStreamer 1.22 has no WHIP sink).
 *
 *   sk-whip-publisher --url http://127.0.0.1:8080/whip --token KEY [--ice-address 127.0.0.1]
 *                     [--video h264|vp8|none] [--audio opus|none] [--no-candidates]
 *                     [--duration S] [--width W --height H --fps F] [--bitrate KBPS]
 *                     [--no-delete] [--keyframe-interval S] [--ice-restart-after S] [--stamp]
 *                     [--file MEDIA.mkv]
 *
 * Publishes a live test pattern (videotestsrc) and tone (audiotestsrc), or with --file a
 * Matroska file's H.264 (constrained baseline, no B-frames) and Opus, paced in real time and
 * not re-encoded (keyframes come when the file has them). The offer carries every
 * local candidate (non-trickle), or none with --no-candidates (as OBS 30.2+ does: the server
 * then learns ours as peer-reflexive). Prints JSON lines: {"location":…,"etag":…} after the
 * POST, {"state":"connected"}, {"keyframe_request":N} each time the server asks the encoder for
 * a keyframe (a PLI/FIR from it reached the encoder), and a final {"result":"ok"|"error",…}.
 * SIGINT/SIGTERM or the end of --duration sends DELETE and exits 0 if that and the POST succeeded.
 *
 * --ice-restart-after S restarts ICE S seconds after the answer, the way RFC 9725 §4.4.2 says:
 * new local credentials (libnice under webrtcbin, sk_webrtc_ice_restart), a PATCH with
 * If-Match: "*" carrying them and our candidates, then the server's new credentials and
 * candidates from the 200. Prints {"ice_restart":"ok","etag":…} (or an error) and each ICE
 * state after it ({"ice_state":"ready"} once the new checks picked a pair).
 *
 * Video is offered with NACK retransmission (RTX), like a browser; --no-nack leaves it out.
 * --drop-every N loses every Nth video RTP packet (not its retransmission) just before the
 * socket, as a lossy link would; at the end {"video_packets":…,"dropped":…,"retransmitted":…}
 * tells what happened (retransmitted: RTX packets sent in answer to the server's NACKs).
 *
 * --stamp draws the capture time into each frame (tests/tools/sk-stamp.h; width >= 512) for
 * sk-whep-client --latency to print glass-to-glass figures.
 */
#include <string.h>

#include <glib-unix.h>
#include <gst/gst.h>
#include <gst/sdp/sdp.h>
#include <gst/video/video.h>
#include <gst/webrtc/webrtc.h>
#include <libsoup/soup.h>

#include <agent.h>

#include "rooms/sk-webrtc.h"
#include "sk-stamp.h"

typedef struct {
  GMainLoop *loop;
  SoupSession *session;
  GstElement *pipeline;
  GstElement *webrtc;
  GUri *url;
  char *resource; /* absolute URL of the session (Location) */
  char *etag;
  gboolean offer_sent, stopping, connected;
  gboolean restarting; /* an ICE restart was started: report ICE states */
  int exit_code;
  gint64 post_us;
} Publisher;

static char *opt_url;
static char *opt_token;
static char **opt_ice;
static char *opt_video = NULL;
static char *opt_audio = NULL;
static gboolean opt_sps_in_offer_only;
static gboolean opt_no_candidates;
static gboolean opt_no_delete;
static int opt_duration;
static int opt_width = 640, opt_height = 360, opt_fps = 30, opt_kbps = 1500;
static int opt_keyframe_s = 2;
static int opt_ice_restart_s;
static gboolean opt_stamp;
static gboolean opt_no_nack;
static int opt_drop_every;
static char *opt_file;
static gint keyframe_requests;
static gint video_packets, video_dropped; /* --drop-every, on the sending thread */

static GOptionEntry entries[] = {
  { "url", 0, 0, G_OPTION_ARG_STRING, &opt_url, "WHIP endpoint URL", "URL" },
  { "token", 0, 0, G_OPTION_ARG_STRING, &opt_token, "Bearer token (the stream key)", "KEY" },
  { "ice-address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_ice,
    "local ICE address (repeatable; default 127.0.0.1)", "ADDR" },
  { "video", 0, 0, G_OPTION_ARG_STRING, &opt_video, "h264 (default), vp8 or none", "CODEC" },
  { "sps-in-offer-only", 0, 0, G_OPTION_ARG_NONE, &opt_sps_in_offer_only,
    "H.264: SPS/PPS only in the offer (sprop-parameter-sets), never in the packets", NULL },
  { "audio", 0, 0, G_OPTION_ARG_STRING, &opt_audio, "opus (default) or none", "CODEC" },
  { "no-candidates", 0, 0, G_OPTION_ARG_NONE, &opt_no_candidates,
    "offer without any candidate (OBS 30.2+)", NULL },
  { "duration", 0, 0, G_OPTION_ARG_INT, &opt_duration, "stop after S seconds (default: never)",
    "S" },
  { "width", 0, 0, G_OPTION_ARG_INT, &opt_width, "video width (640)", "W" },
  { "height", 0, 0, G_OPTION_ARG_INT, &opt_height, "video height (360)", "H" },
  { "fps", 0, 0, G_OPTION_ARG_INT, &opt_fps, "frame rate (30)", "F" },
  { "bitrate", 0, 0, G_OPTION_ARG_INT, &opt_kbps, "video bitrate in kbit/s (1500)", "KBPS" },
  { "no-delete", 0, 0, G_OPTION_ARG_NONE, &opt_no_delete, "do not DELETE the session at the end",
    NULL },
  { "keyframe-interval", 0, 0, G_OPTION_ARG_INT, &opt_keyframe_s,
    "seconds between scheduled keyframes (2)", "S" },
  { "ice-restart-after", 0, 0, G_OPTION_ARG_INT, &opt_ice_restart_s,
    "restart ICE S seconds after the answer (PATCH, RFC 9725 4.4.2)", "S" },
  { "stamp", 0, 0, G_OPTION_ARG_NONE, &opt_stamp,
    "draw the capture time into each frame (glass-to-glass marks)", NULL },
  { "no-nack", 0, 0, G_OPTION_ARG_NONE, &opt_no_nack,
    "offer video without NACK retransmission (a browser and OBS offer it)", NULL },
  { "file", 0, 0, G_OPTION_ARG_FILENAME, &opt_file,
    "publish this Matroska file's H.264 and Opus, paced in real time, instead of encoding",
    "PATH" },
  { "drop-every", 0, 0, G_OPTION_ARG_INT, &opt_drop_every,
    "lose every Nth video RTP packet on its way out (retransmissions are never lost)", "N" },
  { NULL },
};

static void
print_result (const char *result, const char *error)
{
  g_autofree char *escaped = error != NULL ? g_strescape (error, NULL) : NULL;
  g_print ("{\"result\":\"%s\"%s%s%s}\n", result, escaped ? ",\"error\":\"" : "",
           escaped ? escaped : "", escaped ? "\"" : "");
}

static void fail (Publisher *p, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
fail (Publisher *p, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *message = g_strdup_vprintf (format, args);
  va_end (args);
  if (p->stopping)
    return;
  p->stopping = TRUE;
  p->exit_code = 1;
  print_result ("error", message);
  g_main_loop_quit (p->loop);
}

static SoupMessage *
new_request (Publisher *p, const char *method, const char *url)
{
  SoupMessage *msg = soup_message_new (method, url);
  if (opt_token != NULL) {
    g_autofree char *auth = g_strdup_printf ("Bearer %s", opt_token);
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization", auth);
  }
  return msg;
}

/* ------------------------------------------------------------------------------------- */
/* Ending: DELETE the resource, then quit */

static void
on_delete_done (GObject *source, GAsyncResult *res, gpointer data)
{
  Publisher *p = data;
  g_autoptr (GError) error = NULL;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);

  if (body == NULL || soup_message_get_status (msg) != SOUP_STATUS_OK) {
    g_autofree char *why = g_strdup_printf (
        "DELETE failed: %s", error ? error->message : soup_message_get_reason_phrase (msg));
    print_result ("error", why);
    p->exit_code = 1;
  } else {
    print_result ("ok", NULL);
  }
  g_main_loop_quit (p->loop);
}

/* RTX packets rtprtxsend sent, in answer to NACKs. */
static guint
retransmitted (Publisher *p)
{
  guint total = 0;
  g_autoptr (GstIterator) it = gst_bin_iterate_recurse (GST_BIN (p->webrtc));
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = g_value_get_object (&item);
    GstElementFactory *factory = gst_element_get_factory (e);
    if (factory != NULL && g_str_equal (GST_OBJECT_NAME (factory), "rtprtxsend")) {
      guint n = 0;
      g_object_get (e, "num-rtx-packets", &n, NULL);
      total += n;
    }
    g_value_reset (&item);
  }
  g_value_unset (&item);
  return total;
}

static void
print_loss (Publisher *p)
{
  g_print ("{\"video_packets\":%d,\"dropped\":%d,\"retransmitted\":%u}\n",
           g_atomic_int_get (&video_packets), g_atomic_int_get (&video_dropped), retransmitted (p));
}

static gboolean
stop (gpointer data)
{
  Publisher *p = data;

  if (p->stopping)
    return G_SOURCE_CONTINUE;
  p->stopping = TRUE;
  if (opt_drop_every > 0)
    print_loss (p);
  gst_element_set_state (p->pipeline, GST_STATE_NULL);
  if (p->resource == NULL || opt_no_delete) {
    if (p->resource == NULL)
      p->exit_code = 1;
    print_result (p->resource ? "ok" : "error", p->resource ? NULL : "never published");
    g_main_loop_quit (p->loop);
    return G_SOURCE_CONTINUE;
  }
  SoupMessage *msg = new_request (p, "DELETE", p->resource);
  soup_session_send_and_read_async (p->session, msg, G_PRIORITY_DEFAULT, NULL, on_delete_done, p);
  g_object_unref (msg);
  return G_SOURCE_CONTINUE;
}

/* ------------------------------------------------------------------------------------- */
/* Offer → POST → answer */

static void
on_answer_set (GstPromise *promise, gpointer data)
{
  gst_promise_unref (promise);
}

static void
set_answer (Publisher *p, GstSDPMessage *sdp)
{
  GstWebRTCSessionDescription *answer
      = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
  g_signal_emit_by_name (p->webrtc, "set-remote-description", answer,
                         gst_promise_new_with_change_func (on_answer_set, p, NULL));
  gst_webrtc_session_description_free (answer);
}

/* ------------------------------------------------------------------------------------- */
/* ICE restart (RFC 9725 4.4.2) */

static gboolean ice_restart (gpointer data);

static void
on_restart_done (GObject *source, GAsyncResult *res, gpointer data)
{
  Publisher *p = data;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);

  if (body == NULL || soup_message_get_status (msg) != SOUP_STATUS_OK) {
    g_autofree char *text
        = body != NULL ? g_strndup (g_bytes_get_data (body, NULL), g_bytes_get_size (body)) : NULL;
    g_autofree char *esc = g_strescape (text ? text : error ? error->message : "", NULL);
    g_print ("{\"ice_restart\":\"error\",\"status\":%u,\"error\":\"%s\"}\n",
             soup_message_get_status (msg), esc);
    return;
  }
  /* Every mid of ours maps to m-line 0: the bundle has one transport. */
  g_autoptr (GHashTable) mids = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  GstWebRTCSessionDescription *local = NULL;
  g_object_get (p->webrtc, "local-description", &local, NULL);
  for (guint i = 0; local != NULL && i < gst_sdp_message_medias_len (local->sdp); i++) {
    const char *mid
        = gst_sdp_media_get_attribute_val (gst_sdp_message_get_media (local->sdp, i), "mid");
    if (mid != NULL)
      g_hash_table_insert (mids, g_strdup (mid), GUINT_TO_POINTER (1));
  }
  g_clear_pointer (&local, gst_webrtc_session_description_free);
  g_auto (SkTrickleFragment) frag = { 0 };
  if (!sk_webrtc_parse_trickle_fragment (g_bytes_get_data (body, NULL), g_bytes_get_size (body),
                                         mids, 64, &frag, &error)
      || frag.ufrag == NULL || frag.pwd == NULL
      || !sk_webrtc_ice_set_remote_credentials (p->webrtc, frag.ufrag, frag.pwd, &error)) {
    g_print ("{\"ice_restart\":\"error\",\"error\":\"bad answer: %s\"}\n",
             error ? error->message : "no credentials");
    return;
  }
  for (guint i = 0; i < frag.candidates->len; i++)
    g_signal_emit_by_name (p->webrtc, "add-ice-candidate", 0,
                           (const char *)g_ptr_array_index (frag.candidates, i));
  const char *etag = soup_message_headers_get_one (soup_message_get_response_headers (msg), "ETag");
  g_free (p->etag);
  p->etag = g_strdup (etag);
  g_autofree char *etag_esc = g_strescape (etag ? etag : "", NULL);
  g_print ("{\"ice_restart\":\"ok\",\"etag\":\"%s\",\"candidates\":%u}\n", etag_esc,
           frag.candidates->len);
}

static gboolean
ice_restart (gpointer data)
{
  Publisher *p = data;
  g_autofree char *ufrag = NULL, *pwd = NULL;
  g_autoptr (GError) error = NULL;

  if (p->stopping || p->resource == NULL)
    return G_SOURCE_REMOVE;
  GstWebRTCSessionDescription *local = NULL;
  g_object_get (p->webrtc, "local-description", &local, NULL);
  if (local == NULL || gst_sdp_message_medias_len (local->sdp) == 0) {
    g_clear_pointer (&local, gst_webrtc_session_description_free);
    return G_SOURCE_REMOVE;
  }
  const GstSDPMedia *first = gst_sdp_message_get_media (local->sdp, 0);
  g_autofree char *media = g_strdup (gst_sdp_media_get_media (first));
  g_autofree char *mid = g_strdup (gst_sdp_media_get_attribute_val (first, "mid"));
  gst_webrtc_session_description_free (local);

  p->restarting = TRUE;
  if (!sk_webrtc_ice_restart (p->webrtc, &ufrag, &pwd, &error)) {
    g_print ("{\"ice_restart\":\"error\",\"error\":\"%s\"}\n", error->message);
    return G_SOURCE_REMOVE;
  }
  g_autofree char *cands = sk_webrtc_ice_get_local_candidates (p->webrtc);
  char *frag = g_strdup_printf ("a=ice-ufrag:%s\r\na=ice-pwd:%s\r\n"
                                "m=%s 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:%s\r\n%s"
                                "a=end-of-candidates\r\n",
                                ufrag, pwd, media, mid ? mid : "0", cands);
  SoupMessage *msg = new_request (p, "PATCH", p->resource);
  soup_message_headers_replace (soup_message_get_request_headers (msg), "If-Match", "*");
  g_autoptr (GBytes) body = g_bytes_new_take (frag, strlen (frag));
  soup_message_set_request_body_from_bytes (msg, "application/trickle-ice-sdpfrag", body);
  soup_session_send_and_read_async (p->session, msg, G_PRIORITY_DEFAULT, NULL, on_restart_done, p);
  g_object_unref (msg);
  return G_SOURCE_REMOVE;
}

static void
on_ice_component_state (NiceAgent *agent, guint stream_id, guint component_id, guint state,
                        gpointer data)
{
  Publisher *p = data;
  if (p->restarting)
    g_print ("{\"ice_state\":\"%s\"}\n", nice_component_state_to_string (state));
}

static void
on_post_done (GObject *source, GAsyncResult *res, gpointer data)
{
  Publisher *p = data;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);

  if (body == NULL) {
    fail (p, "POST failed: %s", error->message);
    return;
  }
  guint status = soup_message_get_status (msg);
  g_autofree char *text = g_strndup (g_bytes_get_data (body, NULL), g_bytes_get_size (body));
  if (status != SOUP_STATUS_CREATED) {
    g_print ("{\"post_status\":%u}\n", status);
    fail (p, "POST answered %u: %s", status, text);
    return;
  }
  SoupMessageHeaders *h = soup_message_get_response_headers (msg);
  const char *location = soup_message_headers_get_one (h, "Location");
  if (location == NULL) {
    fail (p, "201 without Location");
    return;
  }
  g_autoptr (GUri) abs = g_uri_parse_relative (p->url, location, SOUP_HTTP_URI_FLAGS, NULL);
  p->resource = abs != NULL ? g_uri_to_string (abs) : g_strdup (location);
  p->etag = g_strdup (soup_message_headers_get_one (h, "ETag"));
  g_autofree char *etag_esc = p->etag ? g_strescape (p->etag, NULL) : g_strdup ("");
  /* post_us: CLOCK_MONOTONIC when the POST went out, for benchmarks on the same machine. */
  g_print ("{\"location\":\"%s\",\"etag\":\"%s\",\"post_ms\":%.1f,\"post_us\":%" G_GINT64_FORMAT
           "}\n",
           p->resource, etag_esc, (g_get_monotonic_time () - p->post_us) / 1000.0, p->post_us);

  GstSDPMessage *sdp = NULL;
  gst_sdp_message_new (&sdp);
  if (gst_sdp_message_parse_buffer ((const guint8 *)text, strlen (text), sdp) != GST_SDP_OK) {
    gst_sdp_message_free (sdp);
    fail (p, "the answer is not SDP");
    return;
  }
  set_answer (p, sdp);
  if (opt_ice_restart_s > 0)
    g_timeout_add_seconds (opt_ice_restart_s, ice_restart, p);
}

/* Drops a=candidate / a=end-of-candidates lines: the offer of a publisher that gathers only
 * after the answer. */
static char *
strip_candidates (const char *text)
{
  g_auto (GStrv) lines = g_strsplit (text, "\r\n", -1);
  GString *out = g_string_new (NULL);
  for (guint i = 0; lines[i] != NULL; i++) {
    if (lines[i][0] == '\0' || g_str_has_prefix (lines[i], "a=candidate:")
        || g_str_has_prefix (lines[i], "a=end-of-candidates"))
      continue;
    g_string_append_printf (out, "%s\r\n", lines[i]);
  }
  return g_string_free (out, FALSE);
}

static gboolean
post_offer (gpointer data)
{
  Publisher *p = data;
  GstWebRTCSessionDescription *local = NULL;

  if (p->offer_sent || p->stopping)
    return G_SOURCE_REMOVE;
  p->offer_sent = TRUE;
  g_object_get (p->webrtc, "local-description", &local, NULL);
  if (local == NULL) {
    fail (p, "no local description");
    return G_SOURCE_REMOVE;
  }
  g_autofree char *text = gst_sdp_message_as_text (local->sdp);
  gst_webrtc_session_description_free (local);
  char *offer = opt_no_candidates ? strip_candidates (text) : g_strdup (text);

  SoupMessage *msg = new_request (p, "POST", opt_url);
  g_autoptr (GBytes) body = g_bytes_new_take (offer, strlen (offer));
  soup_message_set_request_body_from_bytes (msg, "application/sdp", body);
  p->post_us = g_get_monotonic_time ();
  soup_session_send_and_read_async (p->session, msg, G_PRIORITY_DEFAULT, NULL, on_post_done, p);
  g_object_unref (msg);
  return G_SOURCE_REMOVE;
}

static void
on_gathering_state (GstElement *webrtc, GParamSpec *pspec, gpointer data)
{
  GstWebRTCICEGatheringState state;
  g_object_get (webrtc, "ice-gathering-state", &state, NULL);
  if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
    g_idle_add (post_offer, data);
}

static void
on_offer_set (GstPromise *promise, gpointer data)
{
  gst_promise_unref (promise);
  /* Without candidates the offer goes at once; else when gathering completes. */
  if (opt_no_candidates)
    g_idle_add (post_offer, data);
}

static void
on_offer_created (GstPromise *promise, gpointer data)
{
  Publisher *p = data;
  GstWebRTCSessionDescription *offer = NULL;
  const GstStructure *reply = gst_promise_get_reply (promise);

  if (reply != NULL)
    gst_structure_get (reply, "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, NULL);
  gst_promise_unref (promise);
  if (offer == NULL) {
    g_printerr ("create-offer failed\n");
    return;
  }
  g_signal_emit_by_name (p->webrtc, "set-local-description", offer,
                         gst_promise_new_with_change_func (on_offer_set, p, NULL));
  gst_webrtc_session_description_free (offer);
}

static void
on_negotiation_needed (GstElement *webrtc, gpointer data)
{
  Publisher *p = data;

  if (p->offer_sent)
    return;
  /* A publisher only sends. */
  g_autoptr (GArray) transceivers = NULL;
  g_signal_emit_by_name (webrtc, "get-transceivers", &transceivers);
  for (guint i = 0; transceivers != NULL && i < transceivers->len; i++) {
    GstWebRTCRTPTransceiver *trans = g_array_index (transceivers, GstWebRTCRTPTransceiver *, i);
    /* The pipeline links video (if any) first: "kind" is not known before caps flow. */
    gboolean video = i == 0 && g_strcmp0 (opt_video, "none") != 0;
    g_object_set (trans, "direction", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_SENDONLY, "do-nack",
                  video && !opt_no_nack, NULL);
  }
  g_signal_emit_by_name (webrtc, "create-offer", NULL,
                         gst_promise_new_with_change_func (on_offer_created, p, NULL));
}

static gboolean
report_connected (gpointer data)
{
  g_print ("{\"state\":\"connected\",\"mono_us\":%" G_GINT64_FORMAT "}\n", g_get_monotonic_time ());
  return G_SOURCE_REMOVE;
}

static gboolean
report_failed (gpointer data)
{
  fail (data, "peer connection failed");
  return G_SOURCE_REMOVE;
}

static void
on_connection_state (GstElement *webrtc, GParamSpec *pspec, gpointer data)
{
  Publisher *p = data;
  GstWebRTCPeerConnectionState state;
  g_object_get (webrtc, "connection-state", &state, NULL);
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED && !p->connected) {
    p->connected = TRUE;
    g_idle_add (report_connected, p);
  } else if (state == GST_WEBRTC_PEER_CONNECTION_STATE_FAILED) {
    g_idle_add (report_failed, p);
  }
}

static gboolean
on_bus (GstBus *bus, GstMessage *message, gpointer data)
{
  Publisher *p = data;
  if (GST_MESSAGE_TYPE (message) == GST_MESSAGE_ERROR) {
    g_autoptr (GError) error = NULL;
    gst_message_parse_error (message, &error, NULL);
    fail (p, "pipeline error: %s", error->message);
  }
  return G_SOURCE_CONTINUE;
}

/* ------------------------------------------------------------------------------------- */

/* A PLI or FIR from the server became an upstream GstForceKeyUnit that reached the encoder. */
static GstPadProbeReturn
on_encoder_event (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  GstEvent *event = GST_PAD_PROBE_INFO_EVENT (info);

  if (GST_EVENT_TYPE (event) == GST_EVENT_CUSTOM_UPSTREAM
      && gst_event_has_name (event, "GstForceKeyUnit"))
    g_print ("{\"keyframe_request\":%d,\"mono_us\":%" G_GINT64_FORMAT "}\n",
             g_atomic_int_add (&keyframe_requests, 1) + 1, g_get_monotonic_time ());
  return GST_PAD_PROBE_OK;
}

/* The frame leaves the (live) source at its capture time: stamp it with that moment. */
static GstPadProbeReturn
on_raw_frame (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
  GstVideoInfo vinfo;
  GstVideoFrame frame;

  if (caps == NULL || !gst_video_info_from_caps (&vinfo, caps))
    return GST_PAD_PROBE_OK;
  GstBuffer *buf = gst_buffer_make_writable (GST_PAD_PROBE_INFO_BUFFER (info));
  GST_PAD_PROBE_INFO_DATA (info) = buf;
  if (gst_video_frame_map (&frame, &vinfo, buf, GST_MAP_WRITE)) {
    sk_stamp_write (&frame, now);
    gst_video_frame_unmap (&frame);
  }
  return GST_PAD_PROBE_OK;
}

/* --drop-every: RTP (version 2) of the video payload type, headers in the clear under SRTP;
 * its retransmissions travel with the RTX payload type and always get through. */
static gboolean
drop_packet (GstBuffer *buffer)
{
  guint8 header[2];
  guint video_pt = g_strcmp0 (opt_video, "vp8") == 0 ? 97 : 96;
  if (gst_buffer_extract (buffer, 0, header, 2) != 2 || (header[0] >> 6) != 2
      || (header[1] & 0x7f) != video_pt)
    return FALSE;
  return g_atomic_int_add (&video_packets, 1) % opt_drop_every == opt_drop_every - 1;
}

static gboolean
drop_from_list (GstBuffer **buffer, guint idx, gpointer user_data)
{
  if (drop_packet (*buffer)) {
    g_atomic_int_inc (&video_dropped);
    gst_clear_buffer (buffer);
  }
  return TRUE;
}

static GstPadProbeReturn
on_packet_out (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST) {
    GstBufferList *list = gst_buffer_list_make_writable (GST_PAD_PROBE_INFO_BUFFER_LIST (info));
    gst_buffer_list_foreach (list, drop_from_list, NULL);
    info->data = list;
    return GST_PAD_PROBE_OK;
  }
  if (!drop_packet (GST_PAD_PROBE_INFO_BUFFER (info)))
    return GST_PAD_PROBE_OK;
  g_atomic_int_inc (&video_dropped);
  return GST_PAD_PROBE_DROP;
}

static void
on_deep_element_added (GstBin *bin, GstBin *sub_bin, GstElement *element, gpointer data)
{
  GstElementFactory *factory = gst_element_get_factory (element);
  if (factory == NULL || !g_str_equal (GST_OBJECT_NAME (factory), "nicesink"))
    return;
  g_autoptr (GstPad) sink = gst_element_get_static_pad (element, "sink");
  gst_pad_add_probe (sink, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
                     on_packet_out, NULL, NULL);
}

/* --file: already-encoded media costs the publisher a fraction of an encoder, so a benchmark
 * can run many publishers beside the node without starving it. clocksync paces the file in
 * real time; what goes out before ICE is up is lost, as with a live source. */
static char *
file_pipeline_description (void)
{
  g_autofree char *location = g_strescape (opt_file, NULL);
  return g_strdup_printf ("webrtcbin name=webrtc bundle-policy=max-bundle "
                          "filesrc location=\"%s\" ! matroskademux name=demux "
                          "demux.video_0 ! queue ! h264parse ! clocksync ! "
                          "rtph264pay config-interval=-1 aggregate-mode=zero-latency pt=96 ! "
                          "application/x-rtp,media=video,encoding-name=H264,payload=96 ! webrtc. "
                          "demux.audio_0 ! queue ! opusparse ! clocksync ! rtpopuspay pt=111 ! "
                          "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! webrtc. ",
                          location);
}

static char *
pipeline_description (void)
{
  if (opt_file != NULL)
    return file_pipeline_description ();
  GString *d = g_string_new ("webrtcbin name=webrtc bundle-policy=max-bundle ");
  const char *video = opt_video ? opt_video : "h264";
  const char *audio = opt_audio ? opt_audio : "opus";

  if (g_strcmp0 (video, "none") != 0) {
    g_string_append_printf (d,
                            "videotestsrc is-live=true pattern=smpte ! "
                            "video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1 ! "
                            "timeoverlay name=overlay valignment=bottom ! "
                            "videoconvert ! queue max-size-buffers=2 ! ",
                            opt_width, opt_height, opt_fps);
    if (g_strcmp0 (video, "vp8") == 0)
      g_string_append_printf (d,
                              "vp8enc name=venc deadline=1 cpu-used=8 keyframe-max-dist=%d "
                              "target-bitrate=%d ! rtpvp8pay pt=97 ! "
                              "application/x-rtp,media=video,encoding-name=VP8,payload=97 ! ",
                              opt_keyframe_s * opt_fps, opt_kbps * 1000);
    else
      g_string_append_printf (
          d,
          "x264enc name=venc tune=zerolatency speed-preset=ultrafast bframes=0 "
          "key-int-max=%d bitrate=%d %s ! video/x-h264,profile=constrained-baseline%s ! "
          "rtph264pay config-interval=%d aggregate-mode=zero-latency pt=96 ! "
          "application/x-rtp,media=video,encoding-name=H264,payload=96 ! ",
          opt_keyframe_s * opt_fps, opt_kbps,
          /* avc: x264 puts SPS/PPS in codec_data only, and the payloader in its caps only */
          opt_sps_in_offer_only ? "option-string=repeat-headers=0" : "",
          opt_sps_in_offer_only ? ",stream-format=avc" : "", opt_sps_in_offer_only ? 0 : -1);
    g_string_append (d, "webrtc. ");
  }
  if (g_strcmp0 (audio, "none") != 0)
    g_string_append (d, "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
                        "audio/x-raw,rate=48000,channels=2 ! opusenc ! rtpopuspay pt=111 ! "
                        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! webrtc. ");
  return g_string_free (d, FALSE);
}

int
main (int argc, char **argv)
{
  Publisher p = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- WHIP test publisher");

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || opt_url == NULL) {
    g_printerr ("%s\n", error != NULL ? error->message : "--url is required");
    return 2;
  }
  if (opt_keyframe_s < 1) {
    g_printerr ("--keyframe-interval must be at least 1\n");
    return 2;
  }
  if ((opt_video
       && !g_strv_contains ((const char *const[]){ "h264", "vp8", "none", NULL }, opt_video))
      || (opt_audio && !g_strv_contains ((const char *const[]){ "opus", "none", NULL }, opt_audio))
      || (g_strcmp0 (opt_video, "none") == 0 && g_strcmp0 (opt_audio, "none") == 0)) {
    g_printerr ("--video h264|vp8|none, --audio opus|none, not both none\n");
    return 2;
  }
  if (opt_file != NULL && (opt_video || opt_audio || opt_stamp || opt_sps_in_offer_only)) {
    g_printerr ("--file publishes the file's own H.264 and Opus: no --video, --audio, --stamp "
                "or --sps-in-offer-only with it\n");
    return 2;
  }
  p.url = g_uri_parse (opt_url, SOUP_HTTP_URI_FLAGS, &error);
  if (p.url == NULL) {
    g_printerr ("bad --url: %s\n", error->message);
    return 2;
  }

  p.loop = g_main_loop_new (NULL, FALSE);
  p.session = soup_session_new ();
  g_autofree char *desc = pipeline_description ();
  p.pipeline = gst_parse_launch (desc, &error);
  if (p.pipeline == NULL) {
    g_printerr ("cannot build the pipeline: %s\n", error->message);
    return 1;
  }
  p.webrtc = gst_bin_get_by_name (GST_BIN (p.pipeline), "webrtc");
  g_autoptr (GstElement) venc = gst_bin_get_by_name (GST_BIN (p.pipeline), "venc");
  if (venc != NULL) {
    g_autoptr (GstPad) venc_src = gst_element_get_static_pad (venc, "src");
    gst_pad_add_probe (venc_src, GST_PAD_PROBE_TYPE_EVENT_UPSTREAM, on_encoder_event, NULL, NULL);
  }
  if (opt_stamp && venc != NULL) {
    if (opt_width < SK_STAMP_MIN_WIDTH) {
      g_printerr ("--stamp needs --width %d or more\n", SK_STAMP_MIN_WIDTH);
      return 2;
    }
    g_autoptr (GstElement) overlay = gst_bin_get_by_name (GST_BIN (p.pipeline), "overlay");
    g_autoptr (GstPad) overlay_src = gst_element_get_static_pad (overlay, "src");
    gst_pad_add_probe (overlay_src, GST_PAD_PROBE_TYPE_BUFFER, on_raw_frame, NULL, NULL);
  }
  const char *loopback[] = { "127.0.0.1", NULL };
  sk_webrtc_configure_ice (p.webrtc, opt_ice != NULL ? (const char *const *)opt_ice : loopback, 0,
                           0);
  g_signal_connect (p.webrtc, "on-negotiation-needed", G_CALLBACK (on_negotiation_needed), &p);
  if (opt_drop_every > 0)
    g_signal_connect (p.pipeline, "deep-element-added", G_CALLBACK (on_deep_element_added), NULL);
  if (opt_ice_restart_s > 0) {
    g_autoptr (GstWebRTCICE) ice = NULL;
    g_autoptr (GObject) agent = NULL;
    g_object_get (p.webrtc, "ice-agent", &ice, NULL);
    g_object_get (ice, "agent", &agent, NULL);
    g_signal_connect (agent, "component-state-changed", G_CALLBACK (on_ice_component_state), &p);
  }
  g_signal_connect (p.webrtc, "notify::ice-gathering-state", G_CALLBACK (on_gathering_state), &p);
  g_signal_connect (p.webrtc, "notify::connection-state", G_CALLBACK (on_connection_state), &p);

  g_autoptr (GstBus) bus = gst_pipeline_get_bus (GST_PIPELINE (p.pipeline));
  gst_bus_add_watch (bus, on_bus, &p);
  g_unix_signal_add (SIGINT, stop, &p);
  g_unix_signal_add (SIGTERM, stop, &p);
  if (opt_duration > 0)
    g_timeout_add_seconds (opt_duration, stop, &p);

  gst_element_set_state (p.pipeline, GST_STATE_PLAYING);
  g_main_loop_run (p.loop);

  gst_element_set_state (p.pipeline, GST_STATE_NULL);
  gst_object_unref (p.webrtc);
  gst_object_unref (p.pipeline);
  g_object_unref (p.session);
  g_uri_unref (p.url);
  g_free (p.resource);
  g_free (p.etag);
  g_main_loop_unref (p.loop);
  return p.exit_code;
}
