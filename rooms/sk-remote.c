/*
 * streamkeeper: remote publication (see sk-remote.h), an in-process WHIP client.
 *
 * One RemoteSession per attempt: webrtcbin (sendonly, one m-line per track, max-bundle),
 * non-trickle offer (all candidates) POSTed to the host; once ICE+DTLS connect, each m-line
 * binds to its track's sink, video starting from the cached GOP. A session that fails, or is
 * replaced (new target, track set changed), is dropped without a word to the host: the next
 * POST with the same participant sid replaces it there. Only end() sends DELETE.
 *
 * Sessions are refcounted: webrtcbin's threads, track sinks and HTTP callbacks hold refs and
 * find session->pub NULL once the publication dropped it.
 */
#include "rooms/sk-remote.h"

#include <string.h>

#include <gst/app/gstappsrc.h>
#include <gst/webrtc/webrtc.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "common/sk-common.h"
#include "rooms/sk-rtp.h"
#include "rooms/sk-webrtc.h"

GST_DEBUG_CATEGORY_STATIC (sk_remote_debug);
#define GST_CAT_DEFAULT sk_remote_debug

#define SK_REMOTE_VIDEO_PT 96
#define SK_REMOTE_AUDIO_PT 111
#define SK_REMOTE_RETRY_MIN_MS 100
#define SK_REMOTE_RETRY_MAX_MS 2000
/* From session start (gathering, POST, ICE, DTLS) to connected. */
#define SK_REMOTE_CONNECT_TIMEOUT_MS 10000
#define SK_REMOTE_HTTP_TIMEOUT_S 5
#define SK_REMOTE_MAX_ANSWER_BYTES (64 * 1024)
#define SK_REMOTE_MAX_TRACKS 2
/* A publisher's tracks get their caps within a few frames of each other. */
#define SK_REMOTE_TRACK_WAIT_MS 300

typedef struct _RemoteSession RemoteSession;

typedef struct {
  RemoteSession *session; /* weak: the media lives inside it */
  SkTrack *track;
  SkTrackKind kind;
  GstElement *appsrc;
  guint sink_id;
  GThread *replay_thread; /* set while sk_track_add_sink replays the GOP */
  GPtrArray *pending;     /* replayed buffers, pushed once the live edge is known */
  GstClockTime last_out;
  /* The track carries forwarded RTP packets: the appsrc takes them, rewritten. A track that
   * changes form cannot go through the m-line (the owner re-adds it); until then: dropped. */
  gboolean rtp;
  gboolean form_differs;
  SkRtpRewriter rewriter;
} RemoteMedia;

struct _RemoteSession {
  gint refcount;
  SkRemotePublication *pub; /* NULL once dropped */
  GMainContext *context;
  char *name;
  GstElement *pipeline;
  GstElement *webrtcbin;
  GstClock *clock;
  GstClockTime base_time;
  guint bus_watch;
  RemoteMedia media[SK_REMOTE_MAX_TRACKS];
  guint n_media;
  gboolean local_set, gathered, posted, answered, connected;

  /* Re-stamping the publisher's PTS into our running time; shared by the tracks (sync). */
  GMutex lock;
  gboolean have_offset;
  GstClockTimeDiff offset;

  GCancellable *cancellable; /* the POST */
  char *delete_reason;       /* end() came while the POST was in flight: DELETE once answered */
};

struct _SkRemotePublication {
  const SkConfig *config;
  char *room;
  JsonObject *participant; /* sid, identity, name, kind, ingress_node */
  char *sid;
  SkRemoteStateFunc state_func;
  gpointer user_data;
  GPtrArray *tracks; /* SkTrack (refs), in m-line order */

  SoupSession *http;
  char *host_url;
  char *location; /* of the newest accepted POST to host_url */
  RemoteSession *session;
  guint retry_id;
  guint retry_ms;
  guint connect_timeout_id;
  gboolean ended;
  guint expected_tracks; /* 0: start with whatever there is */
  guint track_wait_id;
  gboolean track_waited;
};

static void publication_start (SkRemotePublication *pub);
static void publication_failed (SkRemotePublication *pub, const GError *error);

/* ---------------------------------------------------------------------------------------- */
/* Sessions: lifetime */

static RemoteSession *
session_ref (RemoteSession *s)
{
  g_atomic_int_inc (&s->refcount);
  return s;
}

static gboolean
session_free_on_main (gpointer data)
{
  RemoteSession *s = data;

  for (guint i = 0; i < s->n_media; i++) {
    g_clear_object (&s->media[i].appsrc);
    g_clear_pointer (&s->media[i].track, sk_track_unref);
    g_clear_pointer (&s->media[i].pending, g_ptr_array_unref);
  }
  if (s->pipeline != NULL) {
    gst_element_set_state (s->pipeline, GST_STATE_NULL);
    gst_object_unref (s->pipeline);
  }
  gst_clear_object (&s->webrtcbin);
  gst_clear_object (&s->clock);
  g_clear_object (&s->cancellable);
  g_mutex_clear (&s->lock);
  g_main_context_unref (s->context);
  g_free (s->delete_reason);
  g_free (s->name);
  g_free (s);
  return G_SOURCE_REMOVE;
}

static void
session_unref (RemoteSession *s)
{
  if (!g_atomic_int_dec_and_test (&s->refcount))
    return;
  /* The last ref may go on one of the pipeline's own threads. */
  g_main_context_invoke (s->context, session_free_on_main, s);
}

static void
closure_unref (gpointer data, GClosure *closure)
{
  session_unref (data);
}

typedef void (*SessionFunc) (RemoteSession *s);

typedef struct {
  RemoteSession *s;
  SessionFunc func;
} SessionCall;

static gboolean
session_call_dispatch (gpointer data)
{
  SessionCall *call = data;
  if (call->s->pub != NULL)
    call->func (call->s);
  return G_SOURCE_REMOVE;
}

static void
session_call_free (gpointer data)
{
  SessionCall *call = data;
  session_unref (call->s);
  g_free (call);
}

/* Runs @func on the main context unless the session was dropped in between. */
static void
session_call_on_main (RemoteSession *s, SessionFunc func)
{
  SessionCall *call = g_new0 (SessionCall, 1);
  call->s = session_ref (s);
  call->func = func;
  GSource *source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_HIGH);
  g_source_set_callback (source, session_call_dispatch, call, session_call_free);
  g_source_attach (source, s->context);
  g_source_unref (source);
}

/* Stops the media synchronously (no track sink runs afterwards) and forgets the publication.
 * The session itself goes with its last ref. */
static void
session_drop (RemoteSession *s)
{
  s->pub = NULL;
  for (guint i = 0; i < s->n_media; i++) {
    RemoteMedia *m = &s->media[i];
    if (m->sink_id != 0) {
      sk_track_remove_sink (m->track, m->sink_id);
      m->sink_id = 0;
    }
  }
  if (s->delete_reason == NULL)
    g_cancellable_cancel (s->cancellable);
  if (s->webrtcbin != NULL)
    g_signal_handlers_disconnect_by_data (s->webrtcbin, s);
  g_clear_handle_id (&s->bus_watch, g_source_remove);
  if (s->pipeline != NULL)
    gst_element_set_state (s->pipeline, GST_STATE_NULL);
  session_unref (s);
}

/* ---------------------------------------------------------------------------------------- */
/* Media: track sinks → re-stamp → appsrc (the track's pushing thread) */

static void
media_push_locked (RemoteMedia *m, GstBuffer *buffer, GstClockTime anchor)
{
  RemoteSession *s = m->session;
  GstClockTime pts = GST_BUFFER_PTS (buffer);

  if (!GST_CLOCK_TIME_IS_VALID (pts) || m->form_differs)
    return;
  if (!s->have_offset) {
    /* The publisher's live edge is "now" here: live media goes out at once, and a replayed
     * GOP (older than the edge) is in the past and goes out immediately too. */
    GstClockTime now = gst_clock_get_time (s->clock);
    s->offset = GST_CLOCK_DIFF (anchor, now > s->base_time ? now - s->base_time : 0);
    s->have_offset = TRUE;
  }
  GstClockTimeDiff out = (GstClockTimeDiff)pts + s->offset;
  GstClockTime out_pts = out > 0 ? (GstClockTime)out : 0;
  if (GST_CLOCK_TIME_IS_VALID (m->last_out) && out_pts <= m->last_out)
    out_pts = m->last_out + 1;
  m->last_out = out_pts;

  GstBuffer *copy = m->rtp ? sk_rtp_rewriter_process (&m->rewriter, buffer)
                           : gst_buffer_copy (buffer); /* shares the memory */
  if (copy == NULL)
    return;
  GST_BUFFER_PTS (copy) = out_pts;
  GST_BUFFER_DTS (copy) = GST_CLOCK_TIME_NONE;
  gst_app_src_push_buffer (GST_APP_SRC (m->appsrc), copy);
}

static void
media_flush_pending_locked (RemoteMedia *m)
{
  if (m->pending->len == 0)
    return;
  GstBuffer *newest = g_ptr_array_index (m->pending, m->pending->len - 1);
  GstClockTime anchor = GST_BUFFER_PTS (newest);
  for (guint i = 0; i < m->pending->len; i++)
    media_push_locked (m, g_ptr_array_index (m->pending, i), anchor);
  g_ptr_array_set_size (m->pending, 0);
}

static void
media_on_buffer (SkTrack *track, GstBuffer *buffer, gpointer user_data)
{
  RemoteMedia *m = user_data;
  RemoteSession *s = m->session;

  g_mutex_lock (&s->lock);
  if (m->replay_thread == g_thread_self ()) {
    g_ptr_array_add (m->pending, gst_buffer_ref (buffer));
  } else {
    media_flush_pending_locked (m);
    media_push_locked (m, buffer, GST_BUFFER_PTS (buffer));
  }
  g_mutex_unlock (&s->lock);
}

static void
media_on_caps (SkTrack *track, GstCaps *caps, gpointer user_data)
{
  RemoteMedia *m = user_data;

  /* A new codec cannot go through the negotiated m-line: the owner re-adds the track. */
  m->form_differs = sk_rtp_caps_is_rtp (caps) != m->rtp;
  if (!m->rtp && !m->form_differs && gst_caps_is_fixed (caps))
    gst_app_src_set_caps (GST_APP_SRC (m->appsrc), caps);
}

static void
media_sink_destroy (gpointer data)
{
  RemoteMedia *m = data;
  session_unref (m->session);
}

/* Connected: every m-line starts from its track (video: the cached GOP first). */
static void
session_bind_tracks (RemoteSession *s)
{
  for (guint i = 0; i < s->n_media; i++) {
    RemoteMedia *m = &s->media[i];
    g_autoptr (GstCaps) caps = sk_track_get_caps (m->track);

    if (caps != NULL && !m->rtp && gst_caps_is_fixed (caps))
      gst_app_src_set_caps (GST_APP_SRC (m->appsrc), caps);
    g_mutex_lock (&s->lock);
    m->replay_thread = g_thread_self ();
    g_mutex_unlock (&s->lock);
    session_ref (s);
    m->sink_id
        = sk_track_add_sink (m->track, media_on_buffer, media_on_caps, m, media_sink_destroy);
    g_mutex_lock (&s->lock);
    m->replay_thread = NULL;
    media_flush_pending_locked (m);
    g_mutex_unlock (&s->lock);
  }
}

/* ---------------------------------------------------------------------------------------- */
/* Signalling */

static void
session_fail (RemoteSession *s, const char *message)
{
  g_autoptr (GError) error = g_error_new_literal (SK_ERROR, SK_ERROR_UNAVAILABLE, message);

  if (s->pub != NULL && s->pub->session == s)
    publication_failed (s->pub, error);
}

static void
session_failed_main (RemoteSession *s)
{
  session_fail (s, "the peer connection to the host failed");
}

static void
session_connected_main (RemoteSession *s)
{
  SkRemotePublication *pub = s->pub;

  if (s->connected || pub->session != s)
    return;
  s->connected = TRUE;
  SK_TIMING ("%s: connected", s->name);
  g_clear_handle_id (&pub->connect_timeout_id, g_source_remove);
  pub->retry_ms = SK_REMOTE_RETRY_MIN_MS;
  session_bind_tracks (s);
  g_message ("remote publication %s -> %s: publishing %u tracks", pub->sid, pub->host_url,
             s->n_media);
  if (pub->state_func != NULL)
    pub->state_func (pub, SK_REMOTE_PUBLISHING, NULL, pub->user_data);
}

static void
on_connection_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  RemoteSession *s = user_data;
  GstWebRTCPeerConnectionState state;

  g_object_get (webrtcbin, "connection-state", &state, NULL);
  GST_DEBUG ("%s: connection state %d", s->name, state);
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED)
    session_call_on_main (s, session_connected_main);
  else if (state == GST_WEBRTC_PEER_CONNECTION_STATE_FAILED
           || state == GST_WEBRTC_PEER_CONNECTION_STATE_CLOSED)
    session_call_on_main (s, session_failed_main);
}

static gboolean
promise_ok (GstPromise *promise, const char *what, RemoteSession *s)
{
  if (gst_promise_wait (promise) != GST_PROMISE_RESULT_REPLIED)
    return FALSE;
  const GstStructure *reply = gst_promise_get_reply (promise);
  if (reply != NULL && gst_structure_has_field (reply, "error")) {
    g_autoptr (GError) error = NULL;
    gst_structure_get (reply, "error", G_TYPE_ERROR, &error, NULL);
    GST_WARNING ("%s: %s failed: %s", s->name, what, error != NULL ? error->message : "?");
    return FALSE;
  }
  return TRUE;
}

static void
session_remote_failed_main (RemoteSession *s)
{
  session_fail (s, "the host's answer was not accepted");
}

static void
on_remote_set (GstPromise *promise, gpointer user_data)
{
  RemoteSession *s = user_data;

  if (!promise_ok (promise, "set-remote-description", s))
    session_call_on_main (s, session_remote_failed_main);
}

/* The local part of the ASCII range as is; any other character as \uXXXX: an HTTP header
 * value is safest in ASCII, and inside JSON non-ASCII can only be in strings. */
static char *
json_ascii (const char *json)
{
  GString *out = g_string_sized_new (strlen (json));

  for (const char *p = json; *p != '\0'; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    if (c < 0x80) {
      g_string_append_c (out, (char)c);
    } else if (c < 0x10000) {
      g_string_append_printf (out, "\\u%04x", c);
    } else {
      c -= 0x10000;
      g_string_append_printf (out, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
    }
  }
  return g_string_free (out, FALSE);
}

static char *
participant_header (SkRemotePublication *pub, RemoteSession *s)
{
  static const char *const members[] = { "sid", "identity", "name", "kind", "ingress_node" };
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  for (guint i = 0; i < G_N_ELEMENTS (members); i++) {
    const char *value
        = json_object_get_string_member_with_default (pub->participant, members[i], NULL);
    if (value == NULL)
      continue;
    json_builder_set_member_name (b, members[i]);
    json_builder_add_string_value (b, value);
  }
  json_builder_set_member_name (b, "tracks");
  json_builder_begin_array (b);
  for (guint i = 0; i < s->n_media; i++) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "sid");
    json_builder_add_string_value (b, sk_track_get_sid (s->media[i].track));
    json_builder_set_member_name (b, "kind");
    json_builder_add_string_value (b, sk_track_kind_to_string (s->media[i].kind));
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autofree char *text = json_to_string (root, FALSE);
  return json_ascii (text);
}

/* DELETE {location} with @reason; nobody waits for the answer. */
static void
on_delete_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (SoupMessage) msg = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body
      = soup_session_send_and_read_finish (SOUP_SESSION (source), result, &error);

  if (body == NULL)
    g_warning ("remote publication: DELETE failed: %s", error->message);
  else if (!SOUP_STATUS_IS_SUCCESSFUL (soup_message_get_status (msg)))
    g_warning ("remote publication: DELETE answered %u", soup_message_get_status (msg));
  g_object_unref (source);
}

static void
send_delete (SoupSession *http, const char *location, const char *secret, const char *reason)
{
  SoupMessage *msg = soup_message_new (SOUP_METHOD_DELETE, location);

  if (msg == NULL) {
    g_warning ("remote publication: cannot DELETE %s: not a URL", location);
    return;
  }
  SoupMessageHeaders *h = soup_message_get_request_headers (msg);
  g_autofree char *auth = g_strconcat ("Bearer ", secret != NULL ? secret : "", NULL);
  soup_message_headers_replace (h, "Authorization", auth);
  soup_message_headers_replace (h, "X-Streamkeeper-Reason", reason);
  /* The session ref keeps the request going after the publication is freed. */
  soup_session_send_and_read_async (g_object_ref (http), msg, G_PRIORITY_DEFAULT, NULL,
                                    on_delete_done, msg);
}

typedef struct {
  RemoteSession *s;
  SoupMessage *msg;
  SoupSession *http;
  char *host_url;
  char *secret;
} PostCall;

static void
post_call_free (PostCall *call)
{
  session_unref (call->s);
  g_object_unref (call->msg);
  g_object_unref (call->http);
  g_free (call->host_url);
  g_free (call->secret);
  g_free (call);
}

static void
on_post_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  PostCall *call = user_data;
  RemoteSession *s = call->s;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (call->http, result, &error);
  guint status = soup_message_get_status (call->msg);
  const char *location
      = soup_message_headers_get_one (soup_message_get_response_headers (call->msg), "Location");
  g_autofree char *url = NULL;

  s->answered = TRUE;
  SK_TIMING ("%s: POST answered %u", s->name, status);
  if (body != NULL && status == SOUP_STATUS_CREATED && location != NULL) {
    g_autoptr (GUri) base = g_uri_parse (call->host_url, G_URI_FLAGS_NONE, NULL);
    g_autoptr (GUri) resolved
        = base != NULL ? g_uri_parse_relative (base, location, G_URI_FLAGS_NONE, NULL) : NULL;
    url = resolved != NULL ? g_uri_to_string (resolved) : NULL;
  }
  if (s->delete_reason != NULL) {
    /* end() came while we waited: the host made the participant, take it out again. */
    if (url != NULL)
      send_delete (call->http, url, call->secret, s->delete_reason);
    post_call_free (call);
    return;
  }
  SkRemotePublication *pub = s->pub;
  if (pub == NULL || pub->session != s) {
    post_call_free (call);
    return;
  }
  if (body == NULL || url == NULL) {
    g_autofree char *message = NULL;
    if (body == NULL)
      message = g_strdup_printf ("POST to %s failed: %s", call->host_url, error->message);
    else if (status == SOUP_STATUS_CREATED)
      message
          = g_strdup_printf ("the host at %s answered without a usable Location", call->host_url);
    else
      message = g_strdup_printf ("the host at %s answered %u: %.200s", call->host_url, status,
                                 (const char *)g_bytes_get_data (body, NULL));
    g_autoptr (GError) failure = g_error_new_literal (
        SK_ERROR, status == 401 || status == 403 ? SK_ERROR_UNAUTHORIZED : SK_ERROR_UNAVAILABLE,
        message);
    post_call_free (call);
    publication_failed (pub, failure);
    return;
  }
  g_free (pub->location);
  pub->location = g_steal_pointer (&url);

  GstSDPMessage *sdp = NULL;
  g_autoptr (GError) parse_error = NULL;
  gsize len = 0;
  const char *text = g_bytes_get_data (body, &len);
  if (len > SK_REMOTE_MAX_ANSWER_BYTES || !sk_webrtc_parse_sdp (text, len, &sdp, &parse_error)) {
    g_autoptr (GError) failure
        = g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "the host's answer is not usable: %s",
                       parse_error != NULL ? parse_error->message : "too large");
    post_call_free (call);
    publication_failed (pub, failure);
    return;
  }
  GstWebRTCSessionDescription *answer
      = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
  GstPromise *promise = gst_promise_new_with_change_func (on_remote_set, session_ref (s),
                                                          (GDestroyNotify)session_unref);
  g_signal_emit_by_name (s->webrtcbin, "set-remote-description", answer, promise);
  gst_promise_unref (promise);
  gst_webrtc_session_description_free (answer);
  post_call_free (call);
}

/* Local description set and every candidate gathered: POST the offer. */
static void
session_maybe_post (RemoteSession *s)
{
  SkRemotePublication *pub = s->pub;
  GstWebRTCSessionDescription *local = NULL;

  if (!s->local_set || !s->gathered || s->posted)
    return;
  s->posted = TRUE;
  g_object_get (s->webrtcbin, "local-description", &local, NULL);
  if (local == NULL) {
    session_fail (s, "webrtcbin has no local description");
    return;
  }
  g_autofree char *offer = gst_sdp_message_as_text (local->sdp);
  gst_webrtc_session_description_free (local);

  g_autofree char *url
      = g_strdup_printf ("%s/internal/v1/rooms/%s/publish", pub->host_url, pub->room);
  SoupMessage *msg = soup_message_new (SOUP_METHOD_POST, url);
  if (msg == NULL) {
    session_fail (s, "the host URL is not a URL");
    return;
  }
  SoupMessageHeaders *h = soup_message_get_request_headers (msg);
  const char *secret = pub->config->cluster_secret;
  g_autofree char *auth = g_strconcat ("Bearer ", secret != NULL ? secret : "", NULL);
  g_autofree char *participant = participant_header (pub, s);
  soup_message_headers_replace (h, "Authorization", auth);
  soup_message_headers_replace (h, "X-Streamkeeper-Participant", participant);
  gsize offer_len = strlen (offer);
  g_autoptr (GBytes) body = g_bytes_new_take (g_steal_pointer (&offer), offer_len);
  soup_message_set_request_body_from_bytes (msg, "application/sdp", body);

  PostCall *call = g_new0 (PostCall, 1);
  call->s = session_ref (s);
  call->msg = msg;
  call->http = g_object_ref (pub->http);
  call->host_url = g_strdup (pub->host_url);
  call->secret = g_strdup (secret);
  GST_INFO ("%s: POST %s", s->name, url);
  SK_TIMING ("%s: POST %s", s->name, url);
  soup_session_send_and_read_async (pub->http, msg, G_PRIORITY_DEFAULT, s->cancellable,
                                    on_post_done, call);
}

static void
session_local_set_main (RemoteSession *s)
{
  SK_TIMING ("%s: local description set", s->name);
  s->local_set = TRUE;
  session_maybe_post (s);
}

static void
session_gathered_main (RemoteSession *s)
{
  SK_TIMING ("%s: candidates gathered", s->name);
  s->gathered = TRUE;
  session_maybe_post (s);
}

static void
session_offer_failed_main (RemoteSession *s)
{
  session_fail (s, "webrtcbin could not make an offer");
}

static void
on_gathering_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  RemoteSession *s = user_data;
  GstWebRTCICEGatheringState state;

  g_object_get (webrtcbin, "ice-gathering-state", &state, NULL);
  if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
    session_call_on_main (s, session_gathered_main);
}

static void
on_local_set (GstPromise *promise, gpointer user_data)
{
  RemoteSession *s = user_data;

  if (promise_ok (promise, "set-local-description", s))
    session_call_on_main (s, session_local_set_main);
  else
    session_call_on_main (s, session_offer_failed_main);
}

static void
on_offer_created (GstPromise *promise, gpointer user_data)
{
  RemoteSession *s = user_data;
  GstWebRTCSessionDescription *offer = NULL;

  if (promise_ok (promise, "create-offer", s))
    gst_structure_get (gst_promise_get_reply (promise), "offer",
                       GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, NULL);
  if (offer == NULL) {
    session_call_on_main (s, session_offer_failed_main);
    return;
  }
  SK_TIMING ("%s: offer created", s->name);
  GstPromise *next = gst_promise_new_with_change_func (on_local_set, session_ref (s),
                                                       (GDestroyNotify)session_unref);
  g_signal_emit_by_name (s->webrtcbin, "set-local-description", offer, next);
  gst_promise_unref (next);
  gst_webrtc_session_description_free (offer);
}

static gboolean
on_bus (GstBus *bus, GstMessage *message, gpointer user_data)
{
  RemoteSession *s = user_data;

  switch (GST_MESSAGE_TYPE (message)) {
    case GST_MESSAGE_ERROR: {
      g_autoptr (GError) error = NULL;
      gst_message_parse_error (message, &error, NULL);
      GST_WARNING ("%s: error from %s: %s", s->name, GST_OBJECT_NAME (GST_MESSAGE_SRC (message)),
                   error->message);
      g_autofree char *text = g_strdup_printf ("pipeline error: %s", error->message);
      if (s->pub != NULL)
        session_fail (s, text);
      break;
    }
    case GST_MESSAGE_LATENCY:
      /* webrtcbin's send sessions appear after PLAYING: give them a latency. */
      gst_bin_recalculate_latency (GST_BIN (s->pipeline));
      break;
    default:
      break;
  }
  return G_SOURCE_CONTINUE;
}

/* The codec preferences of an m-line we send. */
static GstCaps *
send_caps (SkTrackKind kind, const char *codec)
{
  if (kind == SK_TRACK_KIND_VIDEO && g_ascii_strcasecmp (codec, "VP8") == 0)
    return gst_caps_new_simple ("application/x-rtp", "media", G_TYPE_STRING, "video",
                                "encoding-name", G_TYPE_STRING, "VP8", "clock-rate", G_TYPE_INT,
                                SK_RTP_VIDEO_CLOCK_RATE, "payload", G_TYPE_INT, SK_REMOTE_VIDEO_PT,
                                NULL);
  if (kind == SK_TRACK_KIND_VIDEO)
    return gst_caps_new_simple ("application/x-rtp", "media", G_TYPE_STRING, "video",
                                "encoding-name", G_TYPE_STRING, "H264", "clock-rate", G_TYPE_INT,
                                SK_RTP_VIDEO_CLOCK_RATE, "payload", G_TYPE_INT, SK_REMOTE_VIDEO_PT,
                                "packetization-mode", G_TYPE_STRING, "1", NULL);
  return gst_caps_new_simple ("application/x-rtp", "media", G_TYPE_STRING, "audio", "encoding-name",
                              G_TYPE_STRING, "OPUS", "clock-rate", G_TYPE_INT,
                              SK_RTP_AUDIO_CLOCK_RATE, "payload", G_TYPE_INT, SK_REMOTE_AUDIO_PT,
                              "encoding-params", G_TYPE_STRING, "2", NULL);
}

static RemoteSession *
session_new (SkRemotePublication *pub, GError **error)
{
  static guint serial = 0;
  RemoteSession *s = g_new0 (RemoteSession, 1);

  s->refcount = 1;
  s->pub = pub;
  s->context = g_main_context_ref_thread_default ();
  s->name = g_strdup_printf ("remote-%s-%u", pub->sid, ++serial);
  s->cancellable = g_cancellable_new ();
  g_mutex_init (&s->lock);

  s->pipeline = gst_object_ref_sink (gst_pipeline_new (s->name));
  s->webrtcbin = gst_element_factory_make ("webrtcbin", NULL);
  if (s->webrtcbin == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "webrtcbin is not available");
    session_drop (s);
    return NULL;
  }
  gst_object_ref (s->webrtcbin);
  sk_webrtc_use_own_srtp (s->webrtcbin);
  gst_bin_add (GST_BIN (s->pipeline), s->webrtcbin);
  gst_util_set_object_arg (G_OBJECT (s->webrtcbin), "bundle-policy", "max-bundle");
  sk_webrtc_configure_ice (s->webrtcbin, (const char *const *)pub->config->ice_addresses,
                           pub->config->ice_port_min, pub->config->ice_port_max);

  /* Our own clock and base time, so buffers can be stamped before PLAYING completes. */
  s->clock = gst_system_clock_obtain ();
  gst_pipeline_use_clock (GST_PIPELINE (s->pipeline), s->clock);
  s->base_time = gst_clock_get_time (s->clock);
  gst_element_set_start_time (s->pipeline, GST_CLOCK_TIME_NONE);
  gst_element_set_base_time (s->pipeline, s->base_time);

  for (guint i = 0; i < pub->tracks->len && s->n_media < SK_REMOTE_MAX_TRACKS; i++) {
    SkTrack *track = g_ptr_array_index (pub->tracks, i);
    SkTrackKind kind = sk_track_get_kind (track);
    RemoteMedia *m = &s->media[s->n_media];
    const char *codec = sk_track_get_codec (track);
    g_autoptr (GstCaps) caps = send_caps (kind, codec);
    g_autoptr (GstCaps) track_caps = sk_track_get_caps (track);
    guint pt = kind == SK_TRACK_KIND_VIDEO ? SK_REMOTE_VIDEO_PT : SK_REMOTE_AUDIO_PT;
    guint32 ssrc = 0;

    m->rtp = sk_rtp_caps_is_rtp (track_caps);
    if (m->rtp) {
      ssrc = g_random_int () | 1; /* never 0: that means "payloaded" */
      sk_rtp_rewriter_init (&m->rewriter, ssrc, pt, sk_rtp_clock_rate_of (kind));
    }
    m->appsrc = sk_webrtc_add_send_track (GST_BIN (s->pipeline), s->webrtcbin, kind, codec,
                                          s->n_media, pt, caps, FALSE, ssrc, error);
    if (m->appsrc == NULL) {
      session_drop (s);
      return NULL;
    }
    m->session = s;
    m->track = sk_track_ref (track);
    m->kind = kind;
    m->pending = g_ptr_array_new_with_free_func ((GDestroyNotify)gst_buffer_unref);
    m->last_out = GST_CLOCK_TIME_NONE;
    s->n_media++;
  }

  g_autoptr (GstBus) bus = gst_pipeline_get_bus (GST_PIPELINE (s->pipeline));
  s->bus_watch = gst_bus_add_watch_full (bus, G_PRIORITY_DEFAULT, on_bus, session_ref (s),
                                         (GDestroyNotify)session_unref);
  g_signal_connect_data (s->webrtcbin, "notify::ice-gathering-state",
                         G_CALLBACK (on_gathering_state), session_ref (s), closure_unref, 0);
  g_signal_connect_data (s->webrtcbin, "notify::connection-state", G_CALLBACK (on_connection_state),
                         session_ref (s), closure_unref, 0);
  if (gst_element_set_state (s->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL,
                 "the remote publication pipeline did not start");
    session_drop (s);
    return NULL;
  }
  GstPromise *promise = gst_promise_new_with_change_func (on_offer_created, session_ref (s),
                                                          (GDestroyNotify)session_unref);
  g_signal_emit_by_name (s->webrtcbin, "create-offer", NULL, promise);
  gst_promise_unref (promise);
  return s;
}

/* ---------------------------------------------------------------------------------------- */
/* The publication */

static void
publication_set_state (SkRemotePublication *pub, SkRemoteState state, const GError *error)
{
  if (pub->state_func != NULL)
    pub->state_func (pub, state, error, pub->user_data);
}

static void
publication_drop_session (SkRemotePublication *pub)
{
  g_clear_handle_id (&pub->connect_timeout_id, g_source_remove);
  g_clear_pointer (&pub->session, session_drop);
}

static gboolean
on_retry (gpointer data)
{
  SkRemotePublication *pub = data;

  pub->retry_id = 0;
  publication_start (pub);
  return G_SOURCE_REMOVE;
}

/* The current session failed: report it and try again after the backoff. */
static void
publication_failed (SkRemotePublication *pub, const GError *error)
{
  g_warning ("remote publication %s -> %s: %s; retrying in %u ms", pub->sid, pub->host_url,
             error->message, pub->retry_ms);
  publication_drop_session (pub);
  g_clear_handle_id (&pub->retry_id, g_source_remove);
  pub->retry_id = g_timeout_add (pub->retry_ms, on_retry, pub);
  pub->retry_ms = MIN (pub->retry_ms * 2, SK_REMOTE_RETRY_MAX_MS);
  publication_set_state (pub, SK_REMOTE_FAILED, error);
}

static gboolean
on_connect_timeout (gpointer data)
{
  SkRemotePublication *pub = data;
  g_autoptr (GError) error
      = g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "not connected to the host after %u ms",
                     SK_REMOTE_CONNECT_TIMEOUT_MS);

  pub->connect_timeout_id = 0;
  publication_failed (pub, error);
  return G_SOURCE_REMOVE;
}

static gboolean
on_track_wait (gpointer data)
{
  SkRemotePublication *pub = data;

  pub->track_wait_id = 0;
  pub->track_waited = TRUE;
  publication_start (pub);
  return G_SOURCE_REMOVE;
}

/* A new session to the current target with the current tracks (the old one is dropped). */
static void
publication_start (SkRemotePublication *pub)
{
  g_autoptr (GError) error = NULL;

  publication_drop_session (pub);
  g_clear_handle_id (&pub->retry_id, g_source_remove);
  if (pub->ended || pub->host_url == NULL || pub->tracks->len == 0)
    return;
  /* The first session: one POST with every track rather than one per track. */
  if (pub->tracks->len < pub->expected_tracks && !pub->track_waited) {
    if (pub->track_wait_id == 0)
      pub->track_wait_id = g_timeout_add (SK_REMOTE_TRACK_WAIT_MS, on_track_wait, pub);
    return;
  }
  pub->track_waited = TRUE;
  g_clear_handle_id (&pub->track_wait_id, g_source_remove);
  pub->session = session_new (pub, &error);
  if (pub->session == NULL) {
    publication_failed (pub, error);
    return;
  }
  pub->connect_timeout_id = g_timeout_add (SK_REMOTE_CONNECT_TIMEOUT_MS, on_connect_timeout, pub);
  SK_TIMING ("%s: session started (%u tracks)", pub->session->name, pub->tracks->len);
  publication_set_state (pub, SK_REMOTE_CONNECTING, NULL);
}

SkRemotePublication *
sk_remote_publication_new (const SkConfig *config, const char *room, const char *participant_json,
                           SkRemoteStateFunc state_func, gpointer user_data)
{
  static gsize debug_init = 0;
  if (g_once_init_enter (&debug_init)) {
    GST_DEBUG_CATEGORY_INIT (sk_remote_debug, "sk-remote", 0, "streamkeeper remote publication");
    g_once_init_leave (&debug_init, 1);
  }
  g_return_val_if_fail (config != NULL && room != NULL && participant_json != NULL, NULL);

  g_autoptr (JsonNode) node = json_from_string (participant_json, NULL);
  g_return_val_if_fail (node != NULL && JSON_NODE_HOLDS_OBJECT (node), NULL);
  JsonObject *o = json_node_get_object (node);
  const char *sid = json_object_get_string_member_with_default (o, "sid", NULL);
  g_return_val_if_fail (sid != NULL, NULL);

  SkRemotePublication *pub = g_new0 (SkRemotePublication, 1);
  pub->config = config;
  pub->room = g_strdup (room);
  pub->participant = json_object_ref (o);
  pub->sid = g_strdup (sid);
  pub->state_func = state_func;
  pub->user_data = user_data;
  pub->tracks = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_track_unref);
  pub->retry_ms = SK_REMOTE_RETRY_MIN_MS;
  pub->http = soup_session_new_with_options ("timeout", SK_REMOTE_HTTP_TIMEOUT_S, "idle-timeout",
                                             30, NULL);
  return pub;
}

void
sk_remote_publication_free (SkRemotePublication *pub)
{
  if (pub == NULL)
    return;
  pub->ended = TRUE;
  publication_drop_session (pub);
  g_clear_handle_id (&pub->retry_id, g_source_remove);
  g_clear_handle_id (&pub->track_wait_id, g_source_remove);
  g_ptr_array_unref (pub->tracks);
  json_object_unref (pub->participant);
  g_object_unref (pub->http);
  g_free (pub->location);
  g_free (pub->host_url);
  g_free (pub->sid);
  g_free (pub->room);
  g_free (pub);
}

void
sk_remote_publication_add_track (SkRemotePublication *pub, SkTrack *track)
{
  g_return_if_fail (pub != NULL && track != NULL);

  if (g_ptr_array_find (pub->tracks, track, NULL))
    return;
  /* One m-line per kind, as the host's WHIP receiver takes: a newer track of a kind replaces
   * the older one. */
  for (guint i = 0; i < pub->tracks->len; i++) {
    if (sk_track_get_kind (g_ptr_array_index (pub->tracks, i)) == sk_track_get_kind (track)) {
      g_ptr_array_remove_index (pub->tracks, i);
      break;
    }
  }
  g_ptr_array_add (pub->tracks, sk_track_ref (track));
  if (pub->host_url != NULL)
    publication_start (pub);
}

void
sk_remote_publication_expect_tracks (SkRemotePublication *pub, guint n_tracks)
{
  g_return_if_fail (pub != NULL);

  pub->expected_tracks = MIN (n_tracks, SK_REMOTE_MAX_TRACKS);
}

void
sk_remote_publication_remove_track (SkRemotePublication *pub, SkTrack *track)
{
  g_return_if_fail (pub != NULL && track != NULL);

  if (!g_ptr_array_remove (pub->tracks, track))
    return;
  if (pub->host_url != NULL)
    publication_start (pub);
}

void
sk_remote_publication_set_target (SkRemotePublication *pub, const char *host_url)
{
  g_return_if_fail (pub != NULL && host_url != NULL);
  g_return_if_fail (!pub->ended);

  /* No trailing slash: paths are appended. */
  g_autofree char *url = g_strdup (host_url);
  gsize len = strlen (url);
  while (len > 0 && url[len - 1] == '/')
    url[--len] = '\0';
  if (g_strcmp0 (url, pub->host_url) != 0)
    g_clear_pointer (&pub->location, g_free); /* the old host's resource is not ours to end */
  g_free (pub->host_url);
  pub->host_url = g_steal_pointer (&url);
  pub->retry_ms = SK_REMOTE_RETRY_MIN_MS;
  g_message ("remote publication %s of room %s: target %s", pub->sid, pub->room, pub->host_url);
  publication_start (pub);
}

void
sk_remote_publication_end (SkRemotePublication *pub, const char *reason)
{
  g_return_if_fail (pub != NULL);

  if (pub->ended)
    return;
  pub->ended = TRUE;
  g_clear_handle_id (&pub->retry_id, g_source_remove);
  g_clear_handle_id (&pub->track_wait_id, g_source_remove);
  if (reason == NULL)
    reason = "client_initiated";
  RemoteSession *s = pub->session;
  if (s != NULL && s->posted && !s->answered) {
    /* The POST is in flight: it DELETEs once the host answered. */
    s->delete_reason = g_strdup (reason);
  } else if (pub->location != NULL) {
    send_delete (pub->http, pub->location, pub->config->cluster_secret, reason);
  }
  g_message ("remote publication %s of room %s: ended (%s)", pub->sid, pub->room, reason);
  publication_drop_session (pub);
  g_clear_pointer (&pub->location, g_free);
}
