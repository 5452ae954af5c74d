/*
 * sk-whep-client: a real WHEP subscriber (webrtcbin + libsoup) for tests and benchmarks.
 *
 *   sk-whep-client --url http://127.0.0.1:8080/v1/rooms/ROOM/whep [--token T]
 *                  [--ice-address 127.0.0.1] [--frames N] [--timeout S] [--expect-audio]
 *                  [--delete] [--latency] [--no-decode] [--codec h264|vp8|any]
 *                  [--jitterbuffer-ms N] [--faststart N] [--h264-profiles P,P...]
 *                  [--resubscribe-after-ms N]
 *
 * Offers recvonly video (H.264 by default; --codec vp8 or any: VP8, or both) + Opus, decodes
 * what arrives (asking for a keyframe with a PLI, as a browser does, until one comes) and prints
 * one JSON line per second
 * ({"video_frames":N,"audio_buffers":M,"width":W,"height":H}, then one per jitter buffer with
 * the packets it pushed, lost, got late and asked again for) and a final
 * {"result":"ok"|"timeout"|"error",...}; after the POST, {"location":URL}. Exit status 0 once N
 * frames (and audio if asked) were decoded before the timeout. --latency adds one line per decoded
 * frame with the local monotonic time and the frame's PTS, and "g2g_ms" when the frame carries
 * a publisher's capture-time stamp (sk-whip-publisher --stamp, tests/tools/sk-stamp.h): the time
 * from capture to decoded picture on this machine. --no-decode counts depayloaded frames
 * instead of decoded ones, so that a benchmark can run many subscribers on a small machine.
 * The decoders' plugins are loaded before the POST, as a browser has its decoders ready: loading
 * gst-libav inside the first buffer's pad-added took over a second on a busy machine, which
 * first-frame figures would have charged to the server. --jitterbuffer-ms sets webrtcbin's
 * latency (default 200), which the first packet of each stream waits out before going on, unless
 * --faststart N lets a stream go after N packets in sequence (rtpjitterbuffer's
 * faststart-min-packets; 0, the default, waits): a browser decodes a frame once it is complete.
 *
 * --resubscribe-after-ms N makes it behave like a player that recovers by itself: when no frame
 * was decoded for N ms (a new session gets max(N, 3 s) for its first frame) or the peer
 * connection fails, it tears its peer connection down and POSTs a new offer to the --url
 * again (following a 307 to the room's host), retrying every 100 ms while the answer is a 5xx,
 * a 404 or a connection error. Frames keep being counted across sessions, on one monotonic
 * clock: {"resubscribe":K,"why":...,"mono_us":T} when it gives up a session,
 * {"post_status":S,"mono_us":T} for each POST that must be retried, and the {"location":...}
 * line of each session carries "answer_us" (when its 201 arrived).
 */
#include <string.h>

#include <gst/gst.h>
#include <gst/rtp/rtp.h>
#include <gst/sdp/sdp.h>
#include <gst/video/video.h>
#include <gst/webrtc/webrtc.h>
#include <libsoup/soup.h>
#include <nice/agent.h>
#include <sys/socket.h>

#include "rooms/sk-webrtc.h"
#include "sk-stamp.h"

typedef struct _Client Client;

/* One WebRTC session (one POST): replaced whole when the client re-subscribes. Never freed
 * before exit, so a callback that arrives late finds it and sees it is stale. */
typedef struct {
  Client *c;
  guint index;
  GstElement *pipeline;
  GstElement *webrtc;
  guint bus_watch;
  GUri *url; /* where the next POST goes (a 307 changes it) */
  guint redirects;
  gboolean offer_sent;
  char *offer; /* SDP text, kept for retried POSTs */
  GCancellable *cancellable;
  gint64 answered_us; /* 0 until the 201 */
  gboolean ended;
  GMutex lock;
  GPtrArray *jitterbuffers; /* GstElement*, under lock: one per SSRC, made on rtpbin's threads */
} Peer;

struct _Client {
  GMainLoop *loop;
  SoupSession *session;
  Peer *peer;     /* the current session */
  GPtrArray *old; /* Peer*: replaced sessions */
  GUri *url;      /* --url */
  char *resource; /* absolute URL of the session (Location) */
  gboolean done;
  const char *result;
  char *error;
  int exit_code;

  /* Counted on streaming threads. */
  gint video_frames;
  gint audio_buffers;
  gint width, height;
  gint64 post_us;       /* CLOCK_MONOTONIC when the (first) POST went out */
  gint64 last_frame_us; /* of the newest decoded video frame (atomic) */
  guint resubscribes;
  guint retry_id;
};

static char *opt_url;
static char *opt_token;
static char **opt_ice;
static int opt_frames = 30;
static int opt_timeout = 20;
static gboolean opt_audio;
static gboolean opt_delete;
static gboolean opt_latency;
static gboolean opt_no_decode;
static char *opt_codec;
static int opt_jitterbuffer_ms = 200;
static int opt_resubscribe_ms;

static int opt_faststart;
static gboolean opt_no_pli;
static int opt_pli_after_frames;
static char *opt_h264_profiles;

/* A new session's first frame may take ICE, DTLS and a keyframe: give it at least this. */
#define FIRST_FRAME_GRACE_MS 3000
#define OFFER_OPUS_PT 111 /* our offer's Opus payload type: tells audio packets from video */
#define POST_RETRY_MS 100

static GOptionEntry entries[] = {
  { "url", 0, 0, G_OPTION_ARG_STRING, &opt_url, "WHEP endpoint URL", "URL" },
  { "token", 0, 0, G_OPTION_ARG_STRING, &opt_token, "Bearer token", "T" },
  { "ice-address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_ice,
    "local ICE address (repeatable; default 127.0.0.1)", "ADDR" },
  { "frames", 0, 0, G_OPTION_ARG_INT, &opt_frames, "video frames to decode (default 30)", "N" },
  { "timeout", 0, 0, G_OPTION_ARG_INT, &opt_timeout, "seconds before giving up (default 20)", "S" },
  { "expect-audio", 0, 0, G_OPTION_ARG_NONE, &opt_audio, "also require decoded audio", NULL },
  { "delete", 0, 0, G_OPTION_ARG_NONE, &opt_delete, "DELETE the session at the end", NULL },
  { "latency", 0, 0, G_OPTION_ARG_NONE, &opt_latency, "print a line per decoded frame", NULL },
  { "no-decode", 0, 0, G_OPTION_ARG_NONE, &opt_no_decode,
    "count depayloaded frames instead of decoding them (cheap, for benchmarks)", NULL },
  { "codec", 0, 0, G_OPTION_ARG_STRING, &opt_codec,
    "video codec to offer: h264 (default), vp8, any", "CODEC" },
  { "jitterbuffer-ms", 0, 0, G_OPTION_ARG_INT, &opt_jitterbuffer_ms,
    "jitter buffer latency (default 200, webrtcbin's)", "N" },
  { "resubscribe-after-ms", 0, 0, G_OPTION_ARG_INT, &opt_resubscribe_ms,
    "re-subscribe (new POST to --url) after N ms without a decoded frame, or when the peer "
    "connection fails; retry a failed POST every 100 ms (default 0: never)",
    "N" },
  { "h264-profiles", 0, 0, G_OPTION_ARG_STRING, &opt_h264_profiles,
    "H.264 profile-level-ids to offer, in this order (default 42e01f,64001f; Chromium offers "
    "42001f first)",
    "P,P..." },
  { "no-pli", 0, 0, G_OPTION_ARG_NONE, &opt_no_pli,
    "never ask for a keyframe (no PLI): wait for one to come", NULL },
  { "pli-after-frames", 0, 0, G_OPTION_ARG_INT, &opt_pli_after_frames,
    "ask for a keyframe (PLI) once, after N decoded frames, as a browser after a decoding error",
    "N" },
  { "faststart", 0, 0, G_OPTION_ARG_INT, &opt_faststart,
    "start a stream after N packets in sequence, not after the latency (default 0: wait)", "N" },
  { NULL },
};

static void
client_finish (Client *c, const char *result, const char *error)
{
  if (c->done)
    return;
  c->done = TRUE;
  c->result = result;
  c->error = g_strdup (error);
  g_main_loop_quit (c->loop);
}

/* What each jitter buffer of the current session saw: packets lost (never came, even after a
 * NACK) or late (came after their deadline) tell the network's and this process's share of
 * missing frames from the server's. */
static void
print_jitterbuffer_stats (Peer *peer)
{
  g_mutex_lock (&peer->lock);
  for (guint i = 0; i < peer->jitterbuffers->len; i++) {
    g_autoptr (GstStructure) stats = NULL;
    guint64 pushed = 0, lost = 0, late = 0, duplicates = 0, rtx = 0, rtx_success = 0;

    g_object_get (g_ptr_array_index (peer->jitterbuffers, i), "stats", &stats, NULL);
    if (stats == NULL)
      continue;
    gst_structure_get (stats, "num-pushed", G_TYPE_UINT64, &pushed, "num-lost", G_TYPE_UINT64,
                       &lost, "num-late", G_TYPE_UINT64, &late, "num-duplicates", G_TYPE_UINT64,
                       &duplicates, "rtx-count", G_TYPE_UINT64, &rtx, "rtx-success-count",
                       G_TYPE_UINT64, &rtx_success, NULL);
    g_print ("{\"jitterbuffer\":%u,\"pushed\":%" G_GUINT64_FORMAT ",\"lost\":%" G_GUINT64_FORMAT
             ",\"late\":%" G_GUINT64_FORMAT ",\"duplicates\":%" G_GUINT64_FORMAT
             ",\"rtx\":%" G_GUINT64_FORMAT ",\"rtx_success\":%" G_GUINT64_FORMAT "}\n",
             i, pushed, lost, late, duplicates, rtx, rtx_success);
  }
  g_mutex_unlock (&peer->lock);
}

/* --no-pli: whoever asks for a keyframe (depayloader, parser, decoder), it does not reach the
 * RTP session, which would send the PLI. */
static GstPadProbeReturn
drop_keyframe_requests (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  GstEvent *event = GST_PAD_PROBE_INFO_EVENT (info);
  return gst_event_has_name (event, "GstForceKeyUnit") ? GST_PAD_PROBE_DROP : GST_PAD_PROBE_OK;
}

static void
print_stats (Client *c)
{
  g_print ("{\"video_frames\":%d,\"audio_buffers\":%d,\"width\":%d,\"height\":%d}\n",
           g_atomic_int_get (&c->video_frames), g_atomic_int_get (&c->audio_buffers),
           g_atomic_int_get (&c->width), g_atomic_int_get (&c->height));
  print_jitterbuffer_stats (c->peer);
}

static gboolean
goals_met (Client *c)
{
  return g_atomic_int_get (&c->video_frames) >= opt_frames
         && (!opt_audio || g_atomic_int_get (&c->audio_buffers) > 0);
}

static gboolean
on_check_goals (gpointer data)
{
  Client *c = data;
  if (goals_met (c))
    client_finish (c, "ok", NULL);
  return G_SOURCE_REMOVE;
}

/* Every second, as a killed client prints nothing at its end. */
static gboolean
on_tick (gpointer data)
{
  print_stats (data);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_timeout (gpointer data)
{
  client_finish (data, "timeout", NULL);
  return G_SOURCE_REMOVE;
}

/* --latency: one line per start-up moment, {"event":WHAT,"mono_us":T}, for timelines. */
static void
print_event (const char *what)
{
  if (!opt_latency)
    return;
  gint64 now = g_get_monotonic_time ();
  g_print ("{\"event\":\"%s\",\"mono_us\":%" G_GINT64_FORMAT "}\n", what, now);
  /* The same moment in the debug log (GST_DEBUG=default:4), to place other lines on it. */
  GST_INFO ("event %s mono_us=%" G_GINT64_FORMAT, what, now);
}

/* ------------------------------------------------------------------------------------- */
/* Decoding */

static GstPadProbeReturn
on_first_depayloaded (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  print_event (data);
  return GST_PAD_PROBE_REMOVE;
}

static GstPadProbeReturn
on_video_frame (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Client *c = data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);

  /* The size of the newest frame: a room's publisher may change, and the picture with it. */
  {
    g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
    if (caps != NULL) {
      GstStructure *s = gst_caps_get_structure (caps, 0);
      int w = 0, h = 0;
      gst_structure_get_int (s, "width", &w);
      gst_structure_get_int (s, "height", &h);
      g_atomic_int_set (&c->width, w);
      g_atomic_int_set (&c->height, h);
    }
  }
  int n = g_atomic_int_add (&c->video_frames, 1) + 1;
  gint64 now = g_get_monotonic_time ();
  __atomic_store_n (&c->last_frame_us, now, __ATOMIC_RELAXED);
  if (n == opt_pli_after_frames) {
    /* Upstream through the depayloader to the RTP session, which sends the PLI. */
    GstStructure *s
        = gst_structure_new ("GstForceKeyUnit", "all-headers", G_TYPE_BOOLEAN, TRUE, NULL);
    gst_pad_send_event (pad, gst_event_new_custom (GST_EVENT_CUSTOM_UPSTREAM, s));
    g_print ("{\"pli\":%d,\"mono_us\":%" G_GINT64_FORMAT "}\n", n, g_get_monotonic_time ());
  }
  if (opt_latency) {
    gint64 stamp = -1;
    g_autoptr (GstCaps) caps = opt_no_decode ? NULL : gst_pad_get_current_caps (pad);
    GstVideoInfo vinfo;
    GstVideoFrame frame;
    if (caps != NULL && gst_video_info_from_caps (&vinfo, caps)
        && gst_video_frame_map (&frame, &vinfo, buf, GST_MAP_READ)) {
      stamp = sk_stamp_read (&frame);
      gst_video_frame_unmap (&frame);
    }
    g_autofree char *g2g = stamp >= 0 ? g_strdup_printf (",\"g2g_ms\":%" G_GINT64_FORMAT,
                                                         sk_stamp_age_ms (stamp, now))
                                      : g_strdup ("");
    g_print ("{\"frame\":%d,\"mono_us\":%" G_GINT64_FORMAT ",\"pts_ns\":%" G_GINT64_FORMAT "%s}\n",
             n, now, GST_BUFFER_PTS_IS_VALID (buf) ? (gint64)GST_BUFFER_PTS (buf) : (gint64)-1,
             g2g);
  }
  if (n == opt_frames)
    g_idle_add (on_check_goals, c);
  return GST_PAD_PROBE_OK;
}

static GstPadProbeReturn
on_audio_buffer (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Client *c = data;
  if (g_atomic_int_add (&c->audio_buffers, 1) == 0)
    g_idle_add (on_check_goals, c);
  return GST_PAD_PROBE_OK;
}

static void
on_pad_added (GstElement *webrtc, GstPad *pad, gpointer data)
{
  Peer *peer = data;
  Client *c = peer->c;

  if (GST_PAD_DIRECTION (pad) != GST_PAD_SRC)
    return;
  g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
  if (caps == NULL)
    caps = gst_pad_query_caps (pad, NULL);
  const GstStructure *s = gst_caps_get_structure (caps, 0);
  const char *media = gst_structure_get_string (s, "media");
  const char *encoding = gst_structure_get_string (s, "encoding-name");
  gboolean video = g_strcmp0 (media, "video") == 0;
  gboolean vp8 = video && g_ascii_strcasecmp (encoding ? encoding : "", "VP8") == 0;
  const char *desc;
  /* The depayloaders wait for a keyframe and ask for one (a PLI), as a browser does. Counting
   * only: depayload on the jitter buffer's thread, no queue thread of our own; every
   * depayloaded buffer is one whole frame (alignment=au). */
  if (opt_no_decode)
    desc = !video ? "rtpopusdepay name=dec ! fakesink sync=false async=false"
           : vp8  ? "rtpvp8depay name=dec wait-for-keyframe=true request-keyframe=true ! "
                    "fakesink sync=false async=false"
                  : "rtph264depay name=dec wait-for-keyframe=true request-keyframe=true ! "
                    "fakesink sync=false async=false";
  else
    desc = !video ? "queue ! rtpopusdepay ! opusdec name=dec ! fakesink sync=false async=false"
           : vp8  ? "queue ! rtpvp8depay name=depay wait-for-keyframe=true request-keyframe=true ! "
                    "vp8dec name=dec ! fakesink sync=false async=false"
                 : "queue ! rtph264depay name=depay wait-for-keyframe=true request-keyframe=true ! "
                   "h264parse ! avdec_h264 name=dec ! fakesink sync=false async=false";
  g_autoptr (GError) error = NULL;
  GstElement *bin = gst_parse_bin_from_description (desc, TRUE, &error);
  if (bin == NULL) {
    g_printerr ("cannot build the %s decoder: %s\n", video ? "video" : "audio", error->message);
    return;
  }
  gst_bin_add (GST_BIN (peer->pipeline), bin);
  g_autoptr (GstElement) dec = gst_bin_get_by_name (GST_BIN (bin), "dec");
  g_autoptr (GstPad) decsrc = gst_element_get_static_pad (dec, "src");
  gst_pad_add_probe (decsrc, GST_PAD_PROBE_TYPE_BUFFER, video ? on_video_frame : on_audio_buffer, c,
                     NULL);
  g_autoptr (GstElement) depay = gst_bin_get_by_name (GST_BIN (bin), "depay");
  if (video && opt_no_pli)
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_EVENT_UPSTREAM, drop_keyframe_requests, NULL, NULL);
  if (depay != NULL && opt_latency) {
    g_autoptr (GstPad) depay_src = gst_element_get_static_pad (depay, "src");
    gst_pad_add_probe (depay_src, GST_PAD_PROBE_TYPE_BUFFER, on_first_depayloaded,
                       (gpointer) "video_depayloaded", NULL);
  }
  print_event (video ? "video_pad" : "audio_pad");
  g_autoptr (GstPad) sink = gst_element_get_static_pad (bin, "sink");
  gst_element_sync_state_with_parent (bin);
  if (gst_pad_link (pad, sink) != GST_PAD_LINK_OK)
    g_printerr ("cannot link the incoming %s stream\n", video ? "video" : "audio");
}

/* ------------------------------------------------------------------------------------- */
/* Signalling */

static void peer_start (Client *c);
static void client_resubscribe (Client *c, const char *why);

static gboolean
peer_is_current (Peer *peer)
{
  return peer == peer->c->peer && !peer->ended && !peer->c->done;
}

static void
on_answer_set (GstPromise *promise, gpointer data)
{
  gst_promise_unref (promise);
}

static gboolean post_offer (gpointer data);

static gboolean
on_retry_post (gpointer data)
{
  Peer *peer = data;

  peer->c->retry_id = 0;
  if (!peer_is_current (peer))
    return G_SOURCE_REMOVE;
  /* From the start again: the host we were sent to may be the one that is gone. */
  g_uri_unref (peer->url);
  peer->url = g_uri_ref (peer->c->url);
  peer->redirects = 0;
  peer->offer_sent = FALSE;
  post_offer (peer);
  return G_SOURCE_REMOVE;
}

/* A POST that a re-subscribing player would simply try again. */
static gboolean
post_retry (Peer *peer, guint status, const char *why)
{
  Client *c = peer->c;

  if (opt_resubscribe_ms <= 0)
    return FALSE;
  g_autofree char *escaped = g_strescape (why, NULL);
  g_print ("{\"post_status\":%u,\"error\":\"%s\",\"mono_us\":%" G_GINT64_FORMAT "}\n", status,
           escaped, g_get_monotonic_time ());
  g_clear_handle_id (&c->retry_id, g_source_remove);
  c->retry_id = g_timeout_add (POST_RETRY_MS, on_retry_post, peer);
  return TRUE;
}

static void
on_post_done (GObject *source, GAsyncResult *res, gpointer data)
{
  Peer *peer = data;
  Client *c = peer->c;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);

  if (!peer_is_current (peer))
    return;
  if (body == NULL) {
    if (!post_retry (peer, 0, error->message))
      client_finish (c, "error", error->message);
    return;
  }
  guint status = soup_message_get_status (msg);
  const char *redirect
      = soup_message_headers_get_one (soup_message_get_response_headers (msg), "Location");
  if ((status == SOUP_STATUS_TEMPORARY_REDIRECT || status == SOUP_STATUS_PERMANENT_REDIRECT)
      && redirect != NULL && peer->redirects++ < 3) {
    /* A cluster node that does not host the room sends us to its host; keep the offer. */
    g_autoptr (GUri) next = g_uri_parse_relative (peer->url, redirect, SOUP_HTTP_URI_FLAGS, NULL);
    if (next != NULL) {
      g_print ("{\"redirect\":\"%s\"}\n", redirect);
      g_uri_unref (peer->url);
      peer->url = g_steal_pointer (&next);
      peer->offer_sent = FALSE;
      post_offer (peer);
      return;
    }
  }
  if (status != SOUP_STATUS_CREATED) {
    g_autofree char *text = g_strndup (g_bytes_get_data (body, NULL), g_bytes_get_size (body));
    g_autofree char *why = g_strdup_printf ("POST answered %u: %s", status, text);
    if ((status >= 500 || status == SOUP_STATUS_NOT_FOUND) && post_retry (peer, status, why))
      return;
    client_finish (c, "error", why);
    return;
  }
  peer->answered_us = g_get_monotonic_time ();
  const char *location
      = soup_message_headers_get_one (soup_message_get_response_headers (msg), "Location");
  g_clear_pointer (&c->resource, g_free);
  if (location != NULL) {
    g_autoptr (GUri) abs = g_uri_parse_relative (peer->url, location, SOUP_HTTP_URI_FLAGS, NULL);
    if (abs != NULL)
      c->resource = g_uri_to_string (abs);
    g_print ("{\"location\":\"%s\",\"post_us\":%" G_GINT64_FORMAT ",\"answer_us\":%" G_GINT64_FORMAT
             "}\n",
             c->resource != NULL ? c->resource : location, c->post_us, peer->answered_us);
  }

  GstSDPMessage *sdp = NULL;
  gst_sdp_message_new (&sdp);
  if (gst_sdp_message_parse_buffer (g_bytes_get_data (body, NULL), g_bytes_get_size (body), sdp)
      != GST_SDP_OK) {
    gst_sdp_message_free (sdp);
    client_finish (c, "error", "the answer is not SDP");
    return;
  }
  GstWebRTCSessionDescription *answer
      = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
  g_signal_emit_by_name (peer->webrtc, "set-remote-description", answer,
                         gst_promise_new_with_change_func (on_answer_set, peer, NULL));
  gst_webrtc_session_description_free (answer);
}

static gboolean
post_offer (gpointer data)
{
  Peer *peer = data;
  Client *c = peer->c;

  if (!peer_is_current (peer) || peer->offer_sent)
    return G_SOURCE_REMOVE;
  peer->offer_sent = TRUE;
  if (peer->offer == NULL) {
    GstWebRTCSessionDescription *local = NULL;
    g_object_get (peer->webrtc, "local-description", &local, NULL);
    if (local == NULL) {
      client_finish (c, "error", "no local description");
      return G_SOURCE_REMOVE;
    }
    peer->offer = gst_sdp_message_as_text (local->sdp);
    gst_webrtc_session_description_free (local);
  }

  SoupMessage *msg = soup_message_new_from_uri ("POST", peer->url);
  g_autoptr (GBytes) body = g_bytes_new (peer->offer, strlen (peer->offer));
  soup_message_set_request_body_from_bytes (msg, "application/sdp", body);
  if (opt_token != NULL) {
    g_autofree char *auth = g_strdup_printf ("Bearer %s", opt_token);
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization", auth);
  }
  if (c->post_us == 0)
    c->post_us = g_get_monotonic_time ();
  soup_session_send_and_read_async (c->session, msg, G_PRIORITY_DEFAULT, peer->cancellable,
                                    on_post_done, peer);
  g_object_unref (msg);
  return G_SOURCE_REMOVE;
}

static void
on_gathering_state (GstElement *webrtc, GParamSpec *pspec, gpointer data)
{
  GstWebRTCICEGatheringState state;
  g_object_get (webrtc, "ice-gathering-state", &state, NULL);
  /* Non-trickle WHEP: the offer carries every candidate. */
  if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
    g_idle_add (post_offer, data);
}

/* webrtcbin 1.22 offers an rtx pt for the first codec of an m-line only; a browser offers one
 * for each. Add the missing ones, so that repair works whichever H.264 pt the server picks. */
static void
add_missing_rtx (GstSDPMessage *sdp)
{
  /* Unique across the bundle: a pt must mean one thing on the shared transport. */
  gboolean used[128] = { FALSE };
  for (guint i = 0; i < gst_sdp_message_medias_len (sdp); i++) {
    const GstSDPMedia *media = gst_sdp_message_get_media (sdp, i);
    for (guint j = 0; j < gst_sdp_media_formats_len (media); j++) {
      guint64 pt = g_ascii_strtoull (gst_sdp_media_get_format (media, j), NULL, 10);
      if (pt < 128)
        used[pt] = TRUE;
    }
  }
  for (guint i = 0; i < gst_sdp_message_medias_len (sdp); i++) {
    GstSDPMedia *media = (GstSDPMedia *)gst_sdp_message_get_media (sdp, i);
    if (g_strcmp0 (gst_sdp_media_get_media (media), "video") != 0)
      continue;
    gboolean has_rtx[128] = { FALSE };
    for (guint j = 0; j < gst_sdp_media_attributes_len (media); j++) {
      const GstSDPAttribute *attr = gst_sdp_media_get_attribute (media, j);
      const char *apt = attr->value != NULL ? strstr (attr->value, " apt=") : NULL;
      guint64 target = apt != NULL ? g_ascii_strtoull (apt + 5, NULL, 10) : 128;
      if (g_strcmp0 (attr->key, "fmtp") == 0 && target < 128)
        has_rtx[target] = TRUE;
    }
    guint n_formats = gst_sdp_media_formats_len (media);
    for (guint j = 0; j < n_formats; j++) {
      guint64 pt = g_ascii_strtoull (gst_sdp_media_get_format (media, j), NULL, 10);
      g_autofree char *rtpmap_prefix = g_strdup_printf ("%u H264/", (guint)pt);
      gboolean h264 = FALSE;
      for (guint k = 0; k < gst_sdp_media_attributes_len (media); k++) {
        const GstSDPAttribute *attr = gst_sdp_media_get_attribute (media, k);
        h264 |= g_strcmp0 (attr->key, "rtpmap") == 0 && attr->value != NULL
                && g_str_has_prefix (attr->value, rtpmap_prefix);
      }
      if (pt >= 128 || !h264 || has_rtx[pt])
        continue;
      guint rtx = 96;
      while (rtx < 128 && used[rtx])
        rtx++;
      if (rtx == 128)
        return;
      used[rtx] = TRUE;
      g_autofree char *fmt = g_strdup_printf ("%u", rtx);
      g_autofree char *rtpmap = g_strdup_printf ("%u rtx/90000", rtx);
      g_autofree char *fmtp = g_strdup_printf ("%u apt=%u", rtx, (guint)pt);
      gst_sdp_media_add_format (media, fmt);
      gst_sdp_media_add_attribute (media, "rtpmap", rtpmap);
      gst_sdp_media_add_attribute (media, "fmtp", fmtp);
    }
  }
}

static void
on_offer_created (GstPromise *promise, gpointer data)
{
  Peer *peer = data;
  GstWebRTCSessionDescription *offer = NULL;
  const GstStructure *reply = gst_promise_get_reply (promise);

  if (reply != NULL)
    gst_structure_get (reply, "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, NULL);
  gst_promise_unref (promise);
  if (offer == NULL) {
    g_printerr ("create-offer failed\n");
    return;
  }
  add_missing_rtx (offer->sdp);
  g_signal_emit_by_name (peer->webrtc, "set-local-description", offer, NULL);
  gst_webrtc_session_description_free (offer);
}

static void
on_negotiation_needed (GstElement *webrtc, gpointer data)
{
  g_signal_emit_by_name (webrtc, "create-offer", NULL,
                         gst_promise_new_with_change_func (on_offer_created, data, NULL));
}

/* A receiver that is not scheduled for a while (20 of them on a loaded 2-core machine) must
 * not lose packets in its socket: give the selected ICE socket(s) a few seconds of media.
 * Capped by net.core.rmem_max. */
#define CLIENT_RCVBUF (4 * 1024 * 1024)

static void
on_ice_connection_state (GstElement *webrtc, GParamSpec *pspec, gpointer data)
{
  GstWebRTCICEConnectionState state;
  g_object_get (webrtc, "ice-connection-state", &state, NULL);
  if (state != GST_WEBRTC_ICE_CONNECTION_STATE_CONNECTED
      && state != GST_WEBRTC_ICE_CONNECTION_STATE_COMPLETED)
    return;
  print_event ("ice_connected");
  g_autoptr (GstObject) ice = NULL;
  g_object_get (webrtc, "ice-agent", &ice, NULL);
  if (ice == NULL || g_object_class_find_property (G_OBJECT_GET_CLASS (ice), "agent") == NULL)
    return;
  g_autoptr (GObject) agent = NULL;
  g_object_get (ice, "agent", &agent, NULL);
  if (!NICE_IS_AGENT (agent))
    return;
  /* Streams are numbered from 1; max-bundle uses the first, RTCP is muxed (component 1). */
  for (guint stream = 1; stream <= 4; stream++) {
    g_autoptr (GSocket) socket = nice_agent_get_selected_socket (NICE_AGENT (agent), stream, 1);
    if (socket != NULL)
      g_socket_set_option (socket, SOL_SOCKET, SO_RCVBUF, CLIENT_RCVBUF, NULL);
  }
}

static gboolean
on_peer_failed (gpointer data)
{
  Peer *peer = data;

  if (peer_is_current (peer))
    client_resubscribe (peer->c, "peer connection failed");
  return G_SOURCE_REMOVE;
}

static void
on_connection_state (GstElement *webrtc, GParamSpec *pspec, gpointer data)
{
  GstWebRTCPeerConnectionState state;
  g_object_get (webrtc, "connection-state", &state, NULL);
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_FAILED) {
    g_printerr ("peer connection failed\n");
    if (opt_resubscribe_ms > 0)
      g_idle_add (on_peer_failed, data);
  } else if (state == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED)
    print_event ("connected");
}

/* The first packet of an SSRC, before its jitter buffer.
 * webrtcbin turns retransmission on for every jitter buffer of a bundle when the first
 * m-line asks for it; like a browser we ask only for video, so audio's is turned off here. */
static GstPadProbeReturn
on_first_rtp (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  guint8 b[2];
  if (gst_buffer_extract (GST_PAD_PROBE_INFO_BUFFER (info), 0, b, 2) != 2)
    return GST_PAD_PROBE_REMOVE;
  gboolean audio = (b[1] & 0x7f) == OFFER_OPUS_PT;
  if (audio) {
    g_autoptr (GstObject) jitterbuffer = gst_pad_get_parent (pad);
    if (jitterbuffer != NULL)
      g_object_set (jitterbuffer, "do-retransmission", FALSE, NULL);
  }
  if (opt_latency)
    print_event (audio ? "first_rtp_audio" : "first_rtp_video");
  return GST_PAD_PROBE_REMOVE;
}

/* --latency: one line per video frame that leaves the jitter buffer whole (its last packet,
 * the one with the marker bit), with its RTP timestamp. Unlike a frame's PTS, which the jitter
 * buffer may shift when it resets its clock skew, the sender's timestamps step by exactly one
 * frame duration: a benchmark counts missing frames from them. */
static void
print_rtp_frame (GstBuffer *buffer)
{
  GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;

  if (!gst_rtp_buffer_map (buffer, GST_MAP_READ, &rtp))
    return;
  if (gst_rtp_buffer_get_marker (&rtp) && gst_rtp_buffer_get_payload_type (&rtp) != OFFER_OPUS_PT)
    g_print ("{\"rtp_frame\":%u,\"mono_us\":%" G_GINT64_FORMAT "}\n",
             gst_rtp_buffer_get_timestamp (&rtp), g_get_monotonic_time ());
  gst_rtp_buffer_unmap (&rtp);
}

static gboolean
print_rtp_frame_in_list (GstBuffer **buffer, guint idx, gpointer data)
{
  print_rtp_frame (*buffer);
  return TRUE;
}

static GstPadProbeReturn
on_jitterbuffer_output (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER)
    print_rtp_frame (GST_PAD_PROBE_INFO_BUFFER (info));
  else if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST)
    gst_buffer_list_foreach (GST_PAD_PROBE_INFO_BUFFER_LIST (info), print_rtp_frame_in_list, NULL);
  return GST_PAD_PROBE_OK;
}

/* rtpbin makes a jitter buffer for an SSRC when its first packet arrives. */
static void
on_deep_element_added (GstBin *bin, GstBin *sub_bin, GstElement *element, gpointer data)
{
  GstElementFactory *factory = gst_element_get_factory (element);
  const char *name = factory != NULL ? GST_OBJECT_NAME (factory) : "";
  if (g_str_equal (name, "rtpsession")) {
    sk_webrtc_prompt_feedback (element); /* NACKs as prompt as a browser's */
    return;
  }
  if (!g_str_equal (name, "rtpjitterbuffer"))
    return;
  print_event ("first_rtp");
  Peer *peer = data;
  g_mutex_lock (&peer->lock);
  g_ptr_array_add (peer->jitterbuffers, gst_object_ref (element));
  g_mutex_unlock (&peer->lock);
  g_autoptr (GstPad) sink = gst_element_get_static_pad (element, "sink");
  gst_pad_add_probe (sink, GST_PAD_PROBE_TYPE_BUFFER, on_first_rtp, NULL, NULL);
  if (opt_latency) {
    g_autoptr (GstPad) src = gst_element_get_static_pad (element, "src");
    gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
                       on_jitterbuffer_output, NULL, NULL);
  }
  if (opt_faststart > 0)
    g_object_set (element, "faststart-min-packets", (guint)opt_faststart, NULL);
}

static gboolean
on_bus (GstBus *bus, GstMessage *message, gpointer data)
{
  Peer *peer = data;
  if (GST_MESSAGE_TYPE (message) == GST_MESSAGE_ERROR && peer_is_current (peer)) {
    g_autoptr (GError) error = NULL;
    gst_message_parse_error (message, &error, NULL);
    if (opt_resubscribe_ms > 0)
      client_resubscribe (peer->c, error->message);
    else
      client_finish (peer->c, "error", error->message);
  }
  return G_SOURCE_CONTINUE;
}

static void
add_recvonly (GstElement *webrtc, const char *caps_str, gboolean nack)
{
  g_autoptr (GstCaps) caps = gst_caps_from_string (caps_str);
  GstWebRTCRTPTransceiver *trans = NULL;
  g_signal_emit_by_name (webrtc, "add-transceiver", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_RECVONLY,
                         caps, &trans);
  /* Like a browser: the video jitter buffer asks for lost packets and the offer carries rtx
   * pts; Chromium's offer has no NACK for Opus, neither has ours. */
  if (trans != NULL)
    g_object_set (trans, "do-nack", nack, NULL);
  gst_clear_object (&trans);
}

/* ------------------------------------------------------------------------------------- */
/* Sessions */

static const char *opt_video_caps;

static void
peer_start (Client *c)
{
  Peer *peer = g_new0 (Peer, 1);

  peer->c = c;
  g_mutex_init (&peer->lock);
  peer->jitterbuffers = g_ptr_array_new_with_free_func (gst_object_unref);
  peer->index = c->resubscribes;
  peer->url = g_uri_ref (c->url);
  peer->cancellable = g_cancellable_new ();
  c->peer = peer;
  g_autofree char *name = g_strdup_printf ("whep-client-%u", peer->index);
  peer->pipeline = gst_pipeline_new (name);
  peer->webrtc = gst_element_factory_make ("webrtcbin", "webrtc");
  gst_bin_add (GST_BIN (peer->pipeline), peer->webrtc);
  gst_util_set_object_arg (G_OBJECT (peer->webrtc), "bundle-policy", "max-bundle");
  g_object_set (peer->webrtc, "latency", (guint)MAX (opt_jitterbuffer_ms, 0), NULL);
  const char *loopback[] = { "127.0.0.1", NULL };
  sk_webrtc_configure_ice (peer->webrtc, opt_ice != NULL ? (const char *const *)opt_ice : loopback,
                           0, 0);
  add_recvonly (peer->webrtc, opt_video_caps, TRUE);
  add_recvonly (peer->webrtc,
                "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,"
                "payload=" G_STRINGIFY (OFFER_OPUS_PT) ",encoding-params=(string)2",
                FALSE);
  g_signal_connect (peer->webrtc, "on-negotiation-needed", G_CALLBACK (on_negotiation_needed),
                    peer);
  g_signal_connect (peer->webrtc, "notify::ice-gathering-state", G_CALLBACK (on_gathering_state),
                    peer);
  g_signal_connect (peer->webrtc, "notify::connection-state", G_CALLBACK (on_connection_state),
                    peer);
  g_signal_connect (peer->webrtc, "notify::ice-connection-state",
                    G_CALLBACK (on_ice_connection_state), peer);
  g_signal_connect (peer->webrtc, "pad-added", G_CALLBACK (on_pad_added), peer);
  g_signal_connect (peer->pipeline, "deep-element-added", G_CALLBACK (on_deep_element_added), peer);

  g_autoptr (GstBus) bus = gst_pipeline_get_bus (GST_PIPELINE (peer->pipeline));
  peer->bus_watch = gst_bus_add_watch (bus, on_bus, peer);
  gst_element_set_state (peer->pipeline, GST_STATE_PLAYING);
}

/* Stops the session's media; late callbacks find it ended. */
static void
peer_end (Peer *peer)
{
  if (peer->ended)
    return;
  peer->ended = TRUE;
  g_cancellable_cancel (peer->cancellable);
  g_clear_handle_id (&peer->bus_watch, g_source_remove);
  gst_element_set_state (peer->pipeline, GST_STATE_NULL);
}

static void
peer_free (Peer *peer)
{
  peer_end (peer);
  gst_object_unref (peer->pipeline);
  g_ptr_array_unref (peer->jitterbuffers);
  g_mutex_clear (&peer->lock);
  g_object_unref (peer->cancellable);
  g_uri_unref (peer->url);
  g_free (peer->offer);
  g_free (peer);
}

/* Like a player: drop the session and ask for a new one (the room may have moved). */
static void
client_resubscribe (Client *c, const char *why)
{
  Peer *old = c->peer;

  if (c->done)
    return;
  c->resubscribes++;
  g_autofree char *escaped = g_strescape (why, NULL);
  g_print ("{\"resubscribe\":%u,\"why\":\"%s\",\"mono_us\":%" G_GINT64_FORMAT "}\n",
           c->resubscribes, escaped, g_get_monotonic_time ());
  g_clear_handle_id (&c->retry_id, g_source_remove);
  peer_end (old);
  g_ptr_array_add (c->old, old);
  g_clear_pointer (&c->resource, g_free);
  peer_start (c);
}

static gboolean
on_stall_check (gpointer data)
{
  Client *c = data;
  Peer *peer = c->peer;
  gint64 now = g_get_monotonic_time ();
  gint64 last = __atomic_load_n (&c->last_frame_us, __ATOMIC_RELAXED);
  gint64 limit_us = (gint64)opt_resubscribe_ms * 1000;

  /* Until the answer, the POST's own retries are the player's business. */
  if (peer->answered_us == 0 || c->done)
    return G_SOURCE_CONTINUE;
  if (last < peer->answered_us) {
    last = peer->answered_us;
    limit_us = MAX (limit_us, (gint64)FIRST_FRAME_GRACE_MS * 1000);
  }
  if (now - last > limit_us) {
    g_autofree char *why
        = g_strdup_printf ("no frame for %" G_GINT64_FORMAT " ms", (now - last) / 1000);
    client_resubscribe (c, why);
  }
  return G_SOURCE_CONTINUE;
}

static void
on_delete_done (GObject *source, GAsyncResult *res, gpointer data)
{
  Client *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), res);
  if (body == NULL || soup_message_get_status (msg) != SOUP_STATUS_OK) {
    g_printerr ("DELETE failed: %s\n",
                error != NULL ? error->message : soup_message_get_reason_phrase (msg));
    c->exit_code = 1;
  }
  g_main_loop_quit (c->loop);
}

int
main (int argc, char **argv)
{
  Client c = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- WHEP test subscriber");

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || opt_url == NULL) {
    g_printerr ("%s\n", error != NULL ? error->message : "--url is required");
    return 2;
  }
  c.url = g_uri_parse (opt_url, SOUP_HTTP_URI_FLAGS, &error);
  if (c.url == NULL) {
    g_printerr ("bad --url: %s\n", error->message);
    return 2;
  }

  /* Load the decoders' plugins now, not in the streaming thread of the first buffer. */
  for (guint i = 0; i < 3; i++) {
    const char *names[] = { "avdec_h264", "vp8dec", "opusdec" };
    GstElement *e = gst_element_factory_make (names[i], NULL);
    if (e != NULL)
      gst_object_unref (gst_object_ref_sink (e));
  }

  const char *h264 = "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                     "payload=102,packetization-mode=(string)1,profile-level-id=(string)42e01f;"
                     "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                     "payload=104,packetization-mode=(string)1,profile-level-id=(string)64001f";
  const char *vp8 = "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96";
  g_autofree char *h264_custom = NULL;
  if (opt_h264_profiles != NULL) {
    g_auto (GStrv) plids = g_strsplit (opt_h264_profiles, ",", 8);
    GString *caps = g_string_new (NULL);
    for (guint i = 0; plids[i] != NULL; i++)
      g_string_append_printf (caps,
                              "%sapplication/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                              "payload=%u,packetization-mode=(string)1,profile-level-id=(string)%s",
                              i > 0 ? ";" : "", 102 + 2 * i, plids[i]);
    h264 = h264_custom = g_string_free (caps, FALSE);
  }
  g_autofree char *video_caps = NULL;
  if (opt_codec == NULL || g_strcmp0 (opt_codec, "h264") == 0)
    video_caps = g_strdup (h264);
  else if (g_strcmp0 (opt_codec, "vp8") == 0)
    video_caps = g_strdup (vp8);
  else if (g_strcmp0 (opt_codec, "any") == 0)
    video_caps = g_strdup_printf ("%s;%s", h264, vp8);
  else {
    g_printerr ("--codec h264|vp8|any\n");
    return 2;
  }
  opt_video_caps = video_caps;

  c.loop = g_main_loop_new (NULL, FALSE);
  /* A player that re-subscribes does not wait forever for a host that accepted and hangs. */
  c.session = opt_resubscribe_ms > 0 ? soup_session_new_with_options ("timeout", 5, NULL)
                                     : soup_session_new ();
  c.old = g_ptr_array_new_with_free_func ((GDestroyNotify)peer_free);
  peer_start (&c);

  guint tick_id = g_timeout_add_seconds (1, on_tick, &c);
  guint stall_id = opt_resubscribe_ms > 0 ? g_timeout_add (50, on_stall_check, &c) : 0;
  g_timeout_add_seconds (opt_timeout, on_timeout, &c);

  g_main_loop_run (c.loop);
  /* The verdict must stay the last line: no tick while the DELETE below runs the loop. */
  g_source_remove (tick_id);
  g_clear_handle_id (&stall_id, g_source_remove);
  g_clear_handle_id (&c.retry_id, g_source_remove);

  print_stats (&c);
  g_autofree char *escaped = c.error != NULL ? g_strescape (c.error, NULL) : NULL;
  g_print ("{\"result\":\"%s\",\"video_frames\":%d,\"audio_buffers\":%d,\"width\":%d,"
           "\"height\":%d,\"resubscribes\":%u%s%s%s}\n",
           c.result, g_atomic_int_get (&c.video_frames), g_atomic_int_get (&c.audio_buffers),
           g_atomic_int_get (&c.width), g_atomic_int_get (&c.height), c.resubscribes,
           c.error != NULL ? ",\"error\":\"" : "", escaped != NULL ? escaped : "",
           c.error != NULL ? "\"" : "");
  c.exit_code = g_strcmp0 (c.result, "ok") == 0 ? 0 : 1;

  peer_end (c.peer);
  if (opt_delete && c.resource != NULL) {
    SoupMessage *msg = soup_message_new ("DELETE", c.resource);
    if (opt_token != NULL) {
      g_autofree char *auth = g_strdup_printf ("Bearer %s", opt_token);
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization", auth);
    }
    soup_session_send_and_read_async (c.session, msg, G_PRIORITY_DEFAULT, NULL, on_delete_done, &c);
    g_object_unref (msg);
    g_main_loop_run (c.loop);
  }

  peer_free (c.peer);
  g_ptr_array_unref (c.old);
  g_object_unref (c.session);
  g_main_loop_unref (c.loop);
  g_uri_unref (c.url);
  g_free (c.resource);
  g_free (c.error);
  return c.exit_code;
}
