/*
 * streamkeeper: WHEP playback (draft-ietf-wish-whep).
 *
 * One subscriber = one GstPipeline: send pad → payloader → webrtcbin (sendonly). SkTrack sinks
 * push into the send pads on the publisher's streaming thread: no queue and no thread of ours
 * per m-line. That thread must never block, so a subscriber is bound to tracks only once its
 * DTLS is connected (webrtcbin blocks the send path until then); after that nothing on the send
 * path waits (nicesink: sync=FALSE, non-blocking UDP), so a slow viewer loses packets at its
 * socket and never stalls the track or another viewer. Every state change of a subscriber
 * (answer, teardown) happens on the main context, so a streaming thread never tears down a
 * pipeline, and a failing subscriber only ever affects itself.
 *
 * ICE restart through PATCH is not supported yet: a PATCH whose ice-ufrag differs from the
 * session's answers 422, as the draft allows a server without ICE restart support to do.
 */
#include "rooms/sk-whep.h"

#include <string.h>

#include <gst/sdp/sdp.h>
#include <gst/webrtc/webrtc.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "rooms/sk-rtp.h"
#include "rooms/sk-webrtc.h"

GST_DEBUG_CATEGORY_STATIC (sk_whep_debug);
#define GST_CAT_DEFAULT sk_whep_debug

#define SK_WHEP_MAX_OFFER_BYTES (64 * 1024)
#define SK_WHEP_MAX_PATCH_BYTES (16 * 1024)
#define SK_WHEP_MAX_PATCH_CANDS 64
#define SK_WHEP_GATHER_TIMEOUT_MS 5000
#define SK_WHEP_CONNECT_TIMEOUT_S 30
#define SK_WHEP_RETRY_AFTER_S "5"
#define SK_WHEP_OFFER_METHODS "POST, OPTIONS"
#define SK_WHEP_RESOURCE_METHODS "PATCH, DELETE, OPTIONS"
#define SK_WHEP_RESOURCE_PREFIX "/v1/whep/"

typedef struct _SkWhepSubscriber SkWhepSubscriber;
typedef struct _SkWhepBinding SkWhepBinding;

/* A published track of the room, as seen by one subscriber (main context only). */
typedef struct {
  SkTrack *track;
  char *participant_sid;
  char *identity;
} SkWhepKnownTrack;

/* One m-line we send. */
typedef struct {
  SkTrackKind kind;
  const char *codec; /* what this m-line carries: "H264", "VP8" or "opus" (static) */
  guint mline;
  guint pt;
  SkWhepSubscriber *sub; /* the subscriber outlives its pipeline */
  GstPad *srcpad;        /* sk_webrtc_add_send_pad: pushed into from the bound track's thread */
  /* Main context: the track we are bound to, and its sink. */
  SkTrack *track;
  guint sink_id;
  /* Touched only by the (single) live binding, under its lock: the last PTS pushed, and for a
   * track of forwarded RTP packets (srcpad switched to RTP) their rewriting. */
  GstClockTime last_out;
  gboolean rtp;
  SkRtpRewriter rewriter;
  GstBufferList *frame; /* forwarded video: the packets of the frame being received */
  guint32 frame_ts;
  /* The track a keyframe request (PLI/FIR from the viewer) goes to; under sub->keyframe_lock,
   * as requests arrive on webrtcbin's RTCP thread. */
  SkTrack *keyframe_track;
} SkWhepMedia;

/* A sink on one track. Its callbacks run on the publisher's thread with the track's lock
 * held; @lock additionally orders the GOP replay against the first live buffers. */
struct _SkWhepBinding {
  SkWhepSubscriber *sub; /* strong */
  SkWhepMedia *media;    /* owned by sub */
  char *participant_sid;
  GMutex lock;
  GThread *replay_thread; /* set while sk_track_add_sink replays the GOP to us */
  GPtrArray *pending;     /* replayed buffers, pushed once the live edge is known */
  guint replayed;         /* how many */
  gboolean discont;
  gboolean incompatible;   /* caps changed to a codec this m-line did not negotiate */
  GstFlowReturn last_flow; /* of the last push: an error is logged when it starts */
};

struct _SkWhepSubscriber {
  gint refcount;
  SkWhepServer *server; /* NULL once closed */
  GMainContext *context;
  char *id;
  char *etag;
  char *room;
  char *participant_filter; /* ?participant=IDENTITY, or NULL */
  gboolean closed;

  GstElement *pipeline;
  GstElement *webrtcbin;
  GstClock *clock;
  GstClockTime base_time;
  guint bus_watch;

  SkWhepMedia media[2]; /* indexed by SkTrackKind; srcpad NULL if the offer lacks it */
  char *offer_ufrag;
  GHashTable *mid_to_mline; /* char* → GUINT_TO_POINTER (mline + 1) */

  /* The offer being answered (main context). */
  SoupServerMessage *pending_msg;
  gulong pending_finished_id;
  gboolean local_set;
  gboolean gathered;
  guint gather_timeout;
  guint connect_timeout;
  gboolean connected; /* DTLS is up: tracks may be bound (main context) */

  guint watch_id;
  GPtrArray *known[2]; /* SkWhepKnownTrack, in order of publication */

  /* Re-stamping into this pipeline's running time, shared by audio and video so they stay in
   * sync. The offset is per publisher: a new publisher has a new running time. */
  GMutex stamp_lock;
  char *offset_owner;
  GstClockTimeDiff offset;

  GMutex keyframe_lock;
};

struct _SkWhepServer {
  SkRoomManager *rooms;
  const SkConfig *config;
  GMainContext *context;
  GHashTable *subscribers; /* id → SkWhepSubscriber (strong) */
};

static void sub_close (SkWhepSubscriber *sub, const char *reason);

/* ---------------------------------------------------------------------------------------- */
/* Lifetime */

static SkWhepSubscriber *
sub_ref (SkWhepSubscriber *sub)
{
  g_atomic_int_inc (&sub->refcount);
  return sub;
}

static gboolean
sub_free_on_main (gpointer data)
{
  SkWhepSubscriber *sub = data;

  GST_DEBUG ("freeing subscriber %s", sub->id);
  if (sub->pipeline != NULL)
    gst_element_set_state (sub->pipeline, GST_STATE_NULL);
  for (guint i = 0; i < G_N_ELEMENTS (sub->media); i++) {
    g_clear_pointer (&sub->media[i].srcpad, sk_webrtc_send_pad_release);
    g_clear_pointer (&sub->media[i].frame, gst_buffer_list_unref);
  }
  gst_clear_object (&sub->pipeline);
  g_clear_object (&sub->webrtcbin);
  g_clear_object (&sub->clock);
  g_clear_pointer (&sub->mid_to_mline, g_hash_table_unref);
  g_clear_pointer (&sub->known[0], g_ptr_array_unref);
  g_clear_pointer (&sub->known[1], g_ptr_array_unref);
  g_mutex_clear (&sub->stamp_lock);
  g_mutex_clear (&sub->keyframe_lock);
  g_main_context_unref (sub->context);
  g_free (sub->offset_owner);
  g_free (sub->offer_ufrag);
  g_free (sub->participant_filter);
  g_free (sub->room);
  g_free (sub->etag);
  g_free (sub->id);
  g_free (sub);
  return G_SOURCE_REMOVE;
}

static void
sub_unref (SkWhepSubscriber *sub)
{
  if (!g_atomic_int_dec_and_test (&sub->refcount))
    return;
  /* The last ref may go on one of our own pipeline's threads (a promise, a sink of an ended
   * track); disposing the pipeline there would join the thread we run on. */
  g_main_context_invoke (sub->context, sub_free_on_main, sub);
}

static void
sub_closure_unref (gpointer data, GClosure *closure)
{
  sub_unref (data);
}

static void
known_track_free (gpointer data)
{
  SkWhepKnownTrack *kt = data;
  sk_track_unref (kt->track);
  g_free (kt->participant_sid);
  g_free (kt->identity);
  g_free (kt);
}

/* Runs @func(sub) on the main context, holding a ref until it ran. */
typedef void (*SubFunc) (SkWhepSubscriber *sub);

typedef struct {
  SkWhepSubscriber *sub;
  SubFunc func;
} SubCall;

static gboolean
sub_call_dispatch (gpointer data)
{
  SubCall *call = data;
  if (!call->sub->closed)
    call->func (call->sub);
  return G_SOURCE_REMOVE;
}

static void
sub_call_free (gpointer data)
{
  SubCall *call = data;
  sub_unref (call->sub);
  g_free (call);
}

static void
sub_call_on_main (SkWhepSubscriber *sub, SubFunc func)
{
  SubCall *call = g_new0 (SubCall, 1);
  call->sub = sub_ref (sub);
  call->func = func;
  /* Not at idle priority: with a few busy publishers some default-priority source (an RTMP
   * socket, a pipeline call) is ready at every iteration of the main loop, so an idle waited
   * seconds and the answer's own timeout fired first. High, so signalling (cheap) also runs
   * before media I/O and before that timeout when both are ready. */
  GSource *source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_HIGH);
  g_source_set_callback (source, sub_call_dispatch, call, sub_call_free);
  g_source_attach (source, sub->context);
  g_source_unref (source);
}

/* ---------------------------------------------------------------------------------------- */
/* Media path: track sinks → re-stamp → send pad (publisher's streaming thread) */

static GstClockTime
sub_running_time (SkWhepSubscriber *sub)
{
  GstClockTime now = gst_clock_get_time (sub->clock);
  return now > sub->base_time ? now - sub->base_time : 0;
}

/* Maps a publisher PTS into our running time. @anchor is the publisher's live edge: it is
 * mapped to "now" when this publisher is seen first, so live media is never delayed and a
 * replayed GOP (older than the edge) goes out at once. */
static GstClockTime
sub_restamp (SkWhepSubscriber *sub, const char *owner, GstClockTime pts, GstClockTime anchor)
{
  g_mutex_lock (&sub->stamp_lock);
  if (g_strcmp0 (sub->offset_owner, owner) != 0) {
    g_free (sub->offset_owner);
    sub->offset_owner = g_strdup (owner);
    sub->offset = GST_CLOCK_DIFF (anchor, sub_running_time (sub));
    GST_DEBUG ("subscriber %s: publisher %s offset %" GST_STIME_FORMAT, sub->id, owner,
               GST_STIME_ARGS (sub->offset));
  }
  GstClockTimeDiff out = (GstClockTimeDiff)pts + sub->offset;
  g_mutex_unlock (&sub->stamp_lock);
  return out > 0 ? (GstClockTime)out : 0;
}

/* Pushes @buffer or @list (transfer full). Runs the payloader (if any), RTP session, SRTP and
 * the UDP send on this thread: cheaper than a queue and a wakeup per buffer. FLUSHING while
 * the subscriber closes, nothing to do. */
static void
binding_send_locked (SkWhepBinding *b, GstBuffer *buffer, GstBufferList *list)
{
  SkWhepMedia *media = b->media;
  GstFlowReturn ret = buffer != NULL ? gst_pad_push (media->srcpad, buffer)
                                     : gst_pad_push_list (media->srcpad, list);
  if (ret != GST_FLOW_OK && ret != GST_FLOW_FLUSHING && ret != b->last_flow)
    GST_WARNING ("subscriber %s: %s push: %s", b->sub->id, sk_track_kind_to_string (media->kind),
                 gst_flow_get_name (ret));
  b->last_flow = ret;
}

static void
binding_push_locked (SkWhepBinding *b, GstBuffer *buffer, GstClockTime anchor)
{
  SkWhepMedia *media = b->media;
  GstClockTime pts = GST_BUFFER_PTS (buffer);

  if (!GST_CLOCK_TIME_IS_VALID (pts))
    return; /* nothing to pace it by: a publisher bug, not worth a broken stream */

  GstClockTime out = sub_restamp (b->sub, b->participant_sid, pts, anchor);
  /* Keep each stream monotonic across rebinds and compressed replays. */
  if (GST_CLOCK_TIME_IS_VALID (media->last_out) && out <= media->last_out)
    out = media->last_out + 1;
  media->last_out = out;

  GstBuffer *copy = media->rtp ? sk_rtp_rewriter_process (&media->rewriter, buffer)
                               : gst_buffer_copy (buffer); /* shares the memory */
  if (copy == NULL)
    return; /* not RTP: the producer checked, so never */
  GST_BUFFER_PTS (copy) = out;
  GST_BUFFER_DTS (copy) = GST_CLOCK_TIME_NONE;
  if (b->discont) {
    GST_BUFFER_FLAG_SET (copy, GST_BUFFER_FLAG_DISCONT);
    b->discont = FALSE;
  }
  if (!media->rtp || media->kind != SK_TRACK_KIND_VIDEO) {
    binding_send_locked (b, copy, NULL);
    return;
  }
  /* Forwarded video goes out a frame at a time, as one buffer list (as the payloader's): the
   * RTP session, SRTP and the UDP send (one sendmmsg) then run once per frame, not once per
   * packet. A frame's packets come within a few milliseconds, and its picture cannot be
   * decoded before the last one. A frame whose last packet was lost ends at the next one. */
  guint32 ts = media->rewriter.last_ts;
  if (media->frame != NULL && ts != media->frame_ts)
    binding_send_locked (b, NULL, g_steal_pointer (&media->frame));
  if (media->frame == NULL) {
    media->frame = gst_buffer_list_new ();
    media->frame_ts = ts;
  }
  gst_buffer_list_add (media->frame, copy);
  if (GST_BUFFER_FLAG_IS_SET (buffer, GST_BUFFER_FLAG_MARKER))
    binding_send_locked (b, NULL, g_steal_pointer (&media->frame));
}

static void
binding_flush_pending_locked (SkWhepBinding *b)
{
  if (b->pending->len == 0)
    return;
  GstBuffer *newest = g_ptr_array_index (b->pending, b->pending->len - 1);
  GstClockTime anchor = GST_BUFFER_PTS (newest);
  for (guint i = 0; i < b->pending->len; i++)
    binding_push_locked (b, g_ptr_array_index (b->pending, i), anchor);
  g_ptr_array_set_size (b->pending, 0);
}

static void
binding_on_buffer (SkTrack *track, GstBuffer *buffer, gpointer user_data)
{
  SkWhepBinding *b = user_data;

  g_mutex_lock (&b->lock);
  if (b->incompatible) {
    /* drop */
  } else if (b->replay_thread == g_thread_self ()) {
    g_ptr_array_add (b->pending, gst_buffer_ref (buffer));
    b->replayed++;
  } else {
    binding_flush_pending_locked (b);
    binding_push_locked (b, buffer, GST_BUFFER_PTS (buffer));
  }
  g_mutex_unlock (&b->lock);
}

/* A negotiated m-line carries one codec: a track of another one cannot be sent on it. */
static gboolean
media_carries (const SkWhepMedia *media, const char *codec)
{
  return g_strcmp0 (codec, media->codec) == 0;
}

/* Publishers may announce a track with bare caps ("audio/x-opus") and refine them with the
 * first buffer; only caps the payloader accepts replace the send pad's defaults. A track of
 * RTP packets switches the pad to RTP, which has caps of its own. Caller: the thread that
 * pushes (or the main context before it may). */
static void
media_set_caps (SkWhepMedia *media, GstCaps *caps)
{
  gboolean rtp = sk_rtp_caps_is_rtp (caps);
  guint16 seq;
  guint32 ts;

  /* A frame begun by another track or form is of no use to the peer. */
  g_clear_pointer (&media->frame, gst_buffer_list_unref);
  if (sk_webrtc_send_pad_set_rtp (media->srcpad, rtp, &seq, &ts)) {
    GST_DEBUG ("subscriber %s: %s sends %s", media->sub->id, sk_track_kind_to_string (media->kind),
               rtp ? "forwarded RTP" : "payloaded frames");
    media->rtp = rtp;
    if (rtp)
      sk_rtp_rewriter_continue_after (&media->rewriter, seq, ts);
  }
  if (rtp)
    return;
  g_autoptr (GstCaps) current = gst_pad_get_current_caps (media->srcpad);
  if (current != NULL && gst_caps_is_equal (current, caps))
    return;
  g_autoptr (GstPad) peer = gst_pad_get_peer (media->srcpad);
  if (peer != NULL && gst_caps_is_fixed (caps) && gst_pad_query_accept_caps (peer, caps))
    gst_pad_push_event (media->srcpad, gst_event_new_caps (caps));
}

static void
binding_on_caps (SkTrack *track, GstCaps *caps, gpointer user_data)
{
  SkWhepBinding *b = user_data;

  g_mutex_lock (&b->lock);
  if (!media_carries (b->media, sk_track_codec_from_caps (caps))) {
    /* The m-line was negotiated for another codec: stay silent until a rebind. */
    GST_WARNING ("subscriber %s: track %s changed to %" GST_PTR_FORMAT ", not forwarding",
                 b->sub->id, sk_track_get_sid (track), caps);
    b->incompatible = TRUE;
  } else {
    b->incompatible = FALSE;
    media_set_caps (b->media, caps);
  }
  g_mutex_unlock (&b->lock);
}

static void
binding_free (gpointer data)
{
  SkWhepBinding *b = data;
  g_ptr_array_unref (b->pending);
  g_mutex_clear (&b->lock);
  g_free (b->participant_sid);
  sub_unref (b->sub);
  g_free (b);
}

/* ---------------------------------------------------------------------------------------- */
/* Following the room's tracks (main context) */

static void
media_unbind (SkWhepSubscriber *sub, SkWhepMedia *media)
{
  if (media->track == NULL)
    return;
  GST_INFO ("subscriber %s: %s unbound from %s", sub->id, sk_track_kind_to_string (media->kind),
            sk_track_get_sid (media->track));
  sk_track_remove_sink (media->track, media->sink_id);
  g_mutex_lock (&sub->keyframe_lock);
  g_clear_pointer (&media->keyframe_track, sk_track_unref);
  g_mutex_unlock (&sub->keyframe_lock);
  g_clear_pointer (&media->track, sk_track_unref);
  media->sink_id = 0;
}

static void
media_bind (SkWhepSubscriber *sub, SkWhepMedia *media, SkWhepKnownTrack *kt)
{
  g_autoptr (GstCaps) caps = sk_track_get_caps (kt->track);

  if (caps == NULL || !media_carries (media, sk_track_get_codec (kt->track))) {
    GST_WARNING ("subscriber %s: track %s has codec %s, which this session cannot carry", sub->id,
                 sk_track_get_sid (kt->track), sk_track_get_codec (kt->track));
    return;
  }

  SkWhepBinding *b = g_new0 (SkWhepBinding, 1);
  b->sub = sub_ref (sub);
  b->media = media;
  b->participant_sid = g_strdup (kt->participant_sid);
  g_mutex_init (&b->lock);
  b->pending = g_ptr_array_new_with_free_func ((GDestroyNotify)gst_buffer_unref);
  b->discont = TRUE;
  b->replay_thread = g_thread_self ();

  media_set_caps (media, caps);
  sk_rtp_rewriter_restart (&media->rewriter);
  media->track = sk_track_ref (kt->track);
  g_mutex_lock (&sub->keyframe_lock);
  media->keyframe_track = sk_track_ref (kt->track);
  g_mutex_unlock (&sub->keyframe_lock);
  media->sink_id
      = sk_track_add_sink (kt->track, binding_on_buffer, binding_on_caps, b, binding_free);

  /* The GOP replay is complete; unless a live buffer already flushed it, push it now. */
  g_mutex_lock (&b->lock);
  b->replay_thread = NULL;
  binding_flush_pending_locked (b);
  gboolean replayed = b->replayed > 0;
  g_mutex_unlock (&b->lock);
  /* No GOP to start from (a long one, or none yet): ask the producer for a keyframe now, rather
   * than wait for the viewer's PLI on the first frames it cannot decode. */
  if (media->kind == SK_TRACK_KIND_VIDEO && !replayed) {
    gboolean sent = sk_track_request_keyframe (kt->track);
    GST_DEBUG ("subscriber %s: no GOP cached for %s, keyframe request %s", sub->id,
               sk_track_get_sid (kt->track), sent ? "sent" : "dropped (rate limit or no producer)");
  }

  GST_INFO ("subscriber %s: %s bound to %s of %s", sub->id, sk_track_kind_to_string (media->kind),
            sk_track_get_sid (kt->track), kt->identity);
}

/* Binds @media to the newest track that matches the participant filter. */
static void
media_follow (SkWhepSubscriber *sub, SkWhepMedia *media)
{
  GPtrArray *known = sub->known[media->kind];
  SkWhepKnownTrack *best = NULL;

  /* Not before DTLS is up: pushing would block the track's thread (see the top). */
  if (media->srcpad == NULL || !sub->connected)
    return;
  for (guint i = known->len; i > 0 && best == NULL; i--) {
    SkWhepKnownTrack *kt = g_ptr_array_index (known, i - 1);
    if (sub->participant_filter == NULL || g_strcmp0 (kt->identity, sub->participant_filter) == 0)
      best = kt;
  }
  if (best != NULL && best->track == media->track)
    return;
  media_unbind (sub, media);
  if (best != NULL)
    media_bind (sub, media, best);
}

static void
sub_on_room_track (const char *room, SkParticipant *participant, SkTrack *track, gboolean published,
                   gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;
  SkTrackKind kind = sk_track_get_kind (track);
  GPtrArray *known = sub->known[kind];

  if (sub->closed)
    return;

  if (published) {
    SkWhepKnownTrack *kt = g_new0 (SkWhepKnownTrack, 1);
    kt->track = sk_track_ref (track);
    kt->participant_sid = g_strdup (sk_participant_get_sid (participant));
    kt->identity = g_strdup (sk_participant_get_identity (participant));
    g_ptr_array_add (known, kt);
  } else {
    for (guint i = 0; i < known->len; i++) {
      SkWhepKnownTrack *kt = g_ptr_array_index (known, i);
      if (kt->track == track) {
        g_ptr_array_remove_index (known, i);
        break;
      }
    }
  }
  media_follow (sub, &sub->media[kind]);
}

static void
sub_watch_destroy (gpointer data)
{
  sub_unref (data);
}

/* ---------------------------------------------------------------------------------------- */
/* Teardown */

static void
sub_on_pending_finished (SoupServerMessage *msg, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;

  /* The client went away before we answered: nobody will ever use this session. */
  if (sub->pending_msg == msg) {
    g_signal_handler_disconnect (msg, sub->pending_finished_id);
    sub->pending_finished_id = 0;
    g_clear_object (&sub->pending_msg);
    sub_close (sub, "client left before the answer");
  }
}

static void
sub_take_pending (SkWhepSubscriber *sub, SoupServerMessage **out)
{
  *out = sub->pending_msg;
  if (sub->pending_msg != NULL) {
    g_signal_handler_disconnect (sub->pending_msg, sub->pending_finished_id);
    sub->pending_finished_id = 0;
    sub->pending_msg = NULL;
  }
}

static void
sub_close (SkWhepSubscriber *sub, const char *reason)
{
  if (sub->closed)
    return;
  sub->closed = TRUE;
  g_message ("WHEP subscriber %s of room %s closed: %s", sub->id, sub->room, reason);

  SkWhepServer *server = sub->server;
  sub->server = NULL;

  g_autoptr (SoupServerMessage) msg = NULL;
  sub_take_pending (sub, &msg);
  if (msg != NULL) {
    sk_http_add_cors (msg, SK_WHEP_OFFER_METHODS);
    sk_http_reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "webrtc_failed",
                         "could not answer the offer: %s", reason);
    soup_server_message_unpause (msg);
  }

  g_clear_handle_id (&sub->gather_timeout, g_source_remove);
  g_clear_handle_id (&sub->connect_timeout, g_source_remove);
  if (sub->watch_id != 0 && server != NULL) {
    sk_room_manager_unwatch_tracks (server->rooms, sub->watch_id);
    sub->watch_id = 0;
  }
  for (guint i = 0; i < G_N_ELEMENTS (sub->media); i++)
    media_unbind (sub, &sub->media[i]);
  g_ptr_array_set_size (sub->known[0], 0);
  g_ptr_array_set_size (sub->known[1], 0);

  if (sub->webrtcbin != NULL)
    g_signal_handlers_disconnect_by_data (sub->webrtcbin, sub);
  if (sub->bus_watch != 0) {
    g_source_remove (sub->bus_watch);
    sub->bus_watch = 0;
  }
  if (sub->pipeline != NULL)
    gst_element_set_state (sub->pipeline, GST_STATE_NULL);

  if (server != NULL)
    g_hash_table_remove (server->subscribers, sub->id); /* drops the table's ref */
}

/* ---------------------------------------------------------------------------------------- */
/* Signalling (webrtcbin threads post to the main context) */

static void
sub_reply_answer (SkWhepSubscriber *sub)
{
  g_autoptr (SoupServerMessage) msg = NULL;
  GstWebRTCSessionDescription *local = NULL;

  g_clear_handle_id (&sub->gather_timeout, g_source_remove);
  sub_take_pending (sub, &msg);
  if (msg == NULL)
    return;

  g_object_get (sub->webrtcbin, "local-description", &local, NULL);
  if (local == NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "webrtc_failed",
                         "no local description");
    soup_server_message_unpause (msg);
    sub_close (sub, "no local description");
    return;
  }
  char *text = gst_sdp_message_as_text (local->sdp);
  gst_webrtc_session_description_free (local);

  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  g_autofree char *location = g_strconcat (SK_WHEP_RESOURCE_PREFIX, sub->id, NULL);
  soup_message_headers_replace (h, "Location", location);
  soup_message_headers_replace (h, "ETag", sub->etag);
  soup_message_headers_replace (h, "Accept-Patch", "application/trickle-ice-sdpfrag");
  const SkConfig *config = sub->server->config;
  for (guint i = 0; config->stun_servers != NULL && config->stun_servers[i] != NULL; i++) {
    const char *uri = config->stun_servers[i];
    /* Config says stun://host:port (webrtcbin's form); the Link header wants stun:host:port. */
    const char *rest = g_str_has_prefix (uri, "stun://") ? uri + 7 : uri;
    g_autofree char *link = g_strdup_printf ("<stun:%s>; rel=\"ice-server\"",
                                             g_str_has_prefix (rest, "stun:") ? rest + 5 : rest);
    soup_message_headers_append (h, "Link", link);
  }
  sk_http_add_cors (msg, SK_WHEP_OFFER_METHODS);
  soup_server_message_set_status (msg, SOUP_STATUS_CREATED, NULL);
  soup_server_message_set_response (msg, "application/sdp", SOUP_MEMORY_TAKE, text, strlen (text));
  soup_server_message_unpause (msg);
  GST_INFO ("subscriber %s: answered (%s)", sub->id,
            sub->gathered ? "all candidates" : "gathering timed out");
}

static void
sub_maybe_answer (SkWhepSubscriber *sub)
{
  if (sub->local_set && sub->gathered)
    sub_reply_answer (sub);
}

static gboolean
sub_on_gather_timeout (gpointer data)
{
  SkWhepSubscriber *sub = data;

  sub->gather_timeout = 0;
  if (sub->local_set) {
    GST_WARNING ("subscriber %s: ICE gathering not complete after %u ms, answering anyway", sub->id,
                 SK_WHEP_GATHER_TIMEOUT_MS);
    sub_reply_answer (sub);
  } else {
    sub_close (sub, "timed out creating the answer");
  }
  return G_SOURCE_REMOVE;
}

static gboolean
sub_on_connect_timeout (gpointer data)
{
  SkWhepSubscriber *sub = data;
  sub->connect_timeout = 0;
  sub_close (sub, "ICE/DTLS did not connect in time");
  return G_SOURCE_REMOVE;
}

static void
sub_gathering_done_main (SkWhepSubscriber *sub)
{
  sub->gathered = TRUE;
  sub_maybe_answer (sub);
}

static void
sub_on_gathering_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;
  GstWebRTCICEGatheringState state;

  g_object_get (webrtcbin, "ice-gathering-state", &state, NULL);
  if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
    sub_call_on_main (sub, sub_gathering_done_main);
}

static void
sub_connected_main (SkWhepSubscriber *sub)
{
  g_clear_handle_id (&sub->connect_timeout, g_source_remove);
  GST_INFO ("subscriber %s: connected", sub->id);
  /* webrtcbin reports CONNECTED once DTLS is: the SRTP keys are set and the send path no
   * longer blocks. Bind now; the GOP replay makes the viewer start at once. */
  if (!sub->connected) {
    sub->connected = TRUE;
    /* The send sessions exist by now; without a latency distributed to them rtpsession cannot
     * place its packets in running time (RTCP SR timing). A live appsrc used to trigger this. */
    gst_bin_recalculate_latency (GST_BIN (sub->pipeline));
    /* Our senders keep their default priority, which the filter relies on. */
    if (!sk_webrtc_filter_bundle_events (sub->webrtcbin))
      GST_DEBUG ("subscriber %s: no bundle funnel to filter", sub->id);
    for (guint i = 0; i < G_N_ELEMENTS (sub->media); i++)
      media_follow (sub, &sub->media[i]);
  }
}

static void
sub_failed_main (SkWhepSubscriber *sub)
{
  sub_close (sub, "peer connection failed or closed");
}

static void
sub_on_connection_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;
  GstWebRTCPeerConnectionState state;

  g_object_get (webrtcbin, "connection-state", &state, NULL);
  GST_DEBUG ("subscriber %s: connection state %d", sub->id, state);
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED)
    sub_call_on_main (sub, sub_connected_main);
  else if (state == GST_WEBRTC_PEER_CONNECTION_STATE_FAILED
           || state == GST_WEBRTC_PEER_CONNECTION_STATE_CLOSED)
    sub_call_on_main (sub, sub_failed_main);
}

static void
sub_on_ice_connection_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;
  GstWebRTCICEConnectionState state;

  g_object_get (webrtcbin, "ice-connection-state", &state, NULL);
  if (state == GST_WEBRTC_ICE_CONNECTION_STATE_FAILED)
    sub_call_on_main (sub, sub_failed_main);
}

static void
sub_local_set_main (SkWhepSubscriber *sub)
{
  sub->local_set = TRUE;
  sub_maybe_answer (sub);
}

static void
sub_answer_failed_main (SkWhepSubscriber *sub)
{
  sub_close (sub, "webrtcbin could not create an answer for this offer");
}

/* Promises: webrtcbin holds its own reference while it replies, so ours is dropped right after
 * the emit and change funcs never unref. A task webrtcbin drops unreplied when it closes then
 * frees the promise, and its destroy notify releases the subscriber (no leak). */
static gboolean
promise_ok (GstPromise *promise, const char *what, SkWhepSubscriber *sub)
{
  if (gst_promise_wait (promise) != GST_PROMISE_RESULT_REPLIED)
    return FALSE;
  const GstStructure *reply = gst_promise_get_reply (promise);
  if (reply != NULL && gst_structure_has_field (reply, "error")) {
    g_autoptr (GError) error = NULL;
    gst_structure_get (reply, "error", G_TYPE_ERROR, &error, NULL);
    GST_WARNING ("subscriber %s: %s failed: %s", sub->id, what,
                 error != NULL ? error->message : "?");
    return FALSE;
  }
  return TRUE;
}

static void
sub_on_local_set (GstPromise *promise, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;

  if (promise_ok (promise, "set-local-description", sub))
    sub_call_on_main (sub, sub_local_set_main);
  else
    sub_call_on_main (sub, sub_answer_failed_main);
}

static void
sub_on_answer_created (GstPromise *promise, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;
  GstWebRTCSessionDescription *answer = NULL;

  if (promise_ok (promise, "create-answer", sub))
    gst_structure_get (gst_promise_get_reply (promise), "answer",
                       GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &answer, NULL);
  if (answer == NULL) {
    sub_call_on_main (sub, sub_answer_failed_main);
    return;
  }
  GstPromise *next = gst_promise_new_with_change_func (sub_on_local_set, sub_ref (sub),
                                                       (GDestroyNotify)sub_unref);
  g_signal_emit_by_name (sub->webrtcbin, "set-local-description", answer, next);
  gst_promise_unref (next);
  gst_webrtc_session_description_free (answer);
}

static void
sub_on_remote_set (GstPromise *promise, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;
  gboolean ok = promise_ok (promise, "set-remote-description", sub);

  if (!ok) {
    sub_call_on_main (sub, sub_answer_failed_main);
    return;
  }
  GstPromise *next = gst_promise_new_with_change_func (sub_on_answer_created, sub_ref (sub),
                                                       (GDestroyNotify)sub_unref);
  g_signal_emit_by_name (sub->webrtcbin, "create-answer", NULL, next);
  gst_promise_unref (next);
}

static gboolean
sub_on_bus (GstBus *bus, GstMessage *message, gpointer user_data)
{
  SkWhepSubscriber *sub = user_data;

  switch (GST_MESSAGE_TYPE (message)) {
    case GST_MESSAGE_ERROR: {
      g_autoptr (GError) error = NULL;
      g_autofree char *debug = NULL;
      gst_message_parse_error (message, &error, &debug);
      GST_WARNING ("subscriber %s: error from %s: %s (%s)", sub->id,
                   GST_OBJECT_NAME (GST_MESSAGE_SRC (message)), error->message,
                   debug != NULL ? debug : "");
      g_autofree char *reason = g_strdup_printf ("pipeline error: %s", error->message);
      sub_close (sub, reason);
      break;
    }
    case GST_MESSAGE_WARNING: {
      g_autoptr (GError) error = NULL;
      gst_message_parse_warning (message, &error, NULL);
      GST_WARNING ("subscriber %s: warning from %s: %s", sub->id,
                   GST_OBJECT_NAME (GST_MESSAGE_SRC (message)), error->message);
      break;
    }
    case GST_MESSAGE_LATENCY:
      /* webrtcbin's send sessions appear after PLAYING; until a latency is distributed to them
       * rtpsession logs a warning for every RTP packet it sends. */
      gst_bin_recalculate_latency (GST_BIN (sub->pipeline));
      break;
    default:
      break;
  }
  return G_SOURCE_CONTINUE;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading the offer */

/* Whether an RFC 6184 profile-level-id carries the H.264 profile a track's caps name: the one
 * the payloader then accepts (42e0xx is "constrained-baseline", 4200xx "baseline", so the
 * constraint flag counts). No track yet: constrained-baseline, what WebRTC senders make. */
static gboolean
h264_plid_matches (guint64 plid, const char *profile)
{
  guint idc = plid >> 16, constrained = (plid >> 8) & 0x40;

  if (profile == NULL || g_str_equal (profile, "constrained-baseline"))
    return idc == 0x42 && constrained;
  if (g_str_equal (profile, "baseline"))
    return idc == 0x42 && !constrained;
  if (g_str_equal (profile, "main"))
    return idc == 0x4d;
  if (g_str_has_prefix (profile, "high"))
    return idc == 0x64;
  return FALSE;
}

/* An H.264 payload type with packetization-mode=1, preferring @profile. -1 if none. */
static int
pick_h264_pt (const GstSDPMedia *media, const char *profile)
{
  int fallback = -1;

  for (guint i = 0; i < gst_sdp_media_formats_len (media); i++) {
    guint64 pt = g_ascii_strtoull (gst_sdp_media_get_format (media, i), NULL, 10);
    char buf[64];
    if (pt > 127 || !sk_webrtc_media_rtpmap_is (media, pt, "H264"))
      continue;
    const char *pm = sk_webrtc_media_fmtp_get (media, pt, "packetization-mode", buf, sizeof buf);
    if (pm == NULL || g_strcmp0 (pm, "1") != 0)
      continue;
    const char *plid = sk_webrtc_media_fmtp_get (media, pt, "profile-level-id", buf, sizeof buf);
    if (plid != NULL && strlen (plid) == 6
        && h264_plid_matches (g_ascii_strtoull (plid, NULL, 16), profile))
      return pt;
    if (fallback < 0)
      fallback = pt;
  }
  return fallback;
}

static int
pick_vp8_pt (const GstSDPMedia *media)
{
  for (guint i = 0; i < gst_sdp_media_formats_len (media); i++) {
    guint64 pt = g_ascii_strtoull (gst_sdp_media_get_format (media, i), NULL, 10);
    if (pt <= 127 && sk_webrtc_media_rtpmap_is (media, pt, "VP8"))
      return pt;
  }
  return -1;
}

static int
pick_opus_pt (const GstSDPMedia *media)
{
  for (guint i = 0; i < gst_sdp_media_formats_len (media); i++) {
    guint64 pt = g_ascii_strtoull (gst_sdp_media_get_format (media, i), NULL, 10);
    if (pt <= 127 && sk_webrtc_media_rtpmap_is (media, pt, "opus"))
      return pt;
  }
  return -1;
}

static gboolean
media_is_receiving (const GstSDPMedia *media)
{
  /* Port 0 is a rejected m-line, unless it is bundle-only (RFC 8843), as max-bundle
   * offers from webrtcbin and browsers make every m-line after the first. */
  if (gst_sdp_media_get_port (media) == 0
      && gst_sdp_media_get_attribute_val (media, "bundle-only") == NULL)
    return FALSE;
  return gst_sdp_media_get_attribute_val (media, "sendonly") == NULL
         && gst_sdp_media_get_attribute_val (media, "inactive") == NULL;
}

/* The codec (and H.264 profile) of the newest matching video track of @room, for the choice
 * of codec and pt. */
typedef struct {
  const char *filter;
  const char *codec; /* interned; NULL while the room has no video */
  char *profile;
} ProfileProbe;

static void
probe_profile (const char *room, SkParticipant *participant, SkTrack *track, gboolean published,
               gpointer user_data)
{
  ProfileProbe *probe = user_data;
  if (!published || sk_track_get_kind (track) != SK_TRACK_KIND_VIDEO)
    return;
  if (probe->filter != NULL
      && g_strcmp0 (sk_participant_get_identity (participant), probe->filter) != 0)
    return;
  g_autoptr (GstCaps) caps = sk_track_get_caps (track);
  if (caps == NULL)
    return;
  probe->codec = sk_track_get_codec (track);
  g_free (probe->profile);
  probe->profile
      = g_strdup (gst_structure_get_string (gst_caps_get_structure (caps, 0), "profile"));
}

/* ---------------------------------------------------------------------------------------- */
/* Building a subscriber */

/* RTCP thread: the viewer sent a PLI or FIR, which rtpsession turned into an upstream
 * GstForceKeyUnit that the payloader passed on to our send pad. The track asks its producer
 * (rate-limited there, across all viewers). Other upstream events have nowhere to go. */
static gboolean
sub_on_upstream_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  SkWhepMedia *media = gst_pad_get_element_private (pad);
  SkWhepSubscriber *sub = media->sub;
  gboolean keyframe = GST_EVENT_TYPE (event) == GST_EVENT_CUSTOM_UPSTREAM
                      && gst_event_has_name (event, "GstForceKeyUnit");

  gst_event_unref (event);
  if (!keyframe)
    return TRUE;
  g_mutex_lock (&sub->keyframe_lock);
  SkTrack *track = media->keyframe_track != NULL ? sk_track_ref (media->keyframe_track) : NULL;
  g_mutex_unlock (&sub->keyframe_lock);
  if (track != NULL) {
    gboolean sent = sk_track_request_keyframe (track);
    GST_DEBUG ("subscriber %s: keyframe request for %s %s", sub->id, sk_track_get_sid (track),
               sent ? "sent to the producer" : "dropped (rate limit or no producer)");
    sk_track_unref (track);
  }
  return TRUE;
}

static gboolean
sub_add_media (SkWhepSubscriber *sub, SkTrackKind kind, const char *codec,
               const GstSDPMedia *offer_media, guint mline, guint pt, GError **error)
{
  SkWhepMedia *media = &sub->media[kind];
  gboolean video = kind == SK_TRACK_KIND_VIDEO;

  /* The offer's caps for our pt become the transceiver's codec preferences. */
  g_autoptr (GstCaps) rtp_caps = gst_sdp_media_get_caps_from_media (offer_media, pt);
  if (rtp_caps == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "no caps for payload type %u", pt);
    return FALSE;
  }
  rtp_caps = gst_caps_make_writable (rtp_caps);
  GstStructure *s = gst_caps_get_structure (rtp_caps, 0);
  gst_structure_set_name (s, "application/x-rtp");
  /* The profile is whatever the publisher sends (the pt choice preferred a match); pinning it
   * here would make webrtcbin refuse the payloader's caps when they differ. */
  gst_structure_remove_field (s, "profile-level-id");
  /* A viewer that offers NACK for our pt gets retransmissions: webrtcbin then answers the
   * offer's rtx pt (apt=pt) and puts an rtprtxsend on our send path. */
  g_autofree char *stream_id = g_strdup_printf ("%s/%s", sub->id, sk_track_kind_to_string (kind));
  GstPad *srcpad = sk_webrtc_add_send_pad (
      GST_BIN (sub->pipeline), sub->webrtcbin, kind, codec, mline, pt, rtp_caps,
      sk_webrtc_media_has_nack (offer_media, pt), stream_id, error);
  if (srcpad == NULL)
    return FALSE;

  media->kind = kind;
  media->codec = codec;
  media->mline = mline;
  media->pt = pt;
  media->sub = sub;
  media->srcpad = srcpad;
  media->last_out = GST_CLOCK_TIME_NONE;
  sk_rtp_rewriter_init (&media->rewriter, sk_webrtc_send_pad_get_ssrc (srcpad), pt,
                        sk_rtp_clock_rate_of (kind));
  if (video) {
    gst_pad_set_element_private (srcpad, media);
    gst_pad_set_event_function (srcpad, sub_on_upstream_event);
  }
  return TRUE;
}

static SkWhepSubscriber *
sub_new (SkWhepServer *server, const char *room, const char *filter)
{
  SkWhepSubscriber *sub = g_new0 (SkWhepSubscriber, 1);
  sub->refcount = 1;
  sub->server = server;
  sub->context = g_main_context_ref (server->context);
  sub->id = sk_cluster_new_resource_id (sub->server->config->node_id);
  g_autofree char *tag = sk_secret_new (64);
  sub->etag = g_strdup_printf ("\"%s\"", tag);
  sub->room = g_strdup (room);
  sub->participant_filter = g_strdup (filter);
  sub->mid_to_mline = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  sub->known[0] = g_ptr_array_new_with_free_func (known_track_free);
  sub->known[1] = g_ptr_array_new_with_free_func (known_track_free);
  g_mutex_init (&sub->stamp_lock);
  g_mutex_init (&sub->keyframe_lock);
  for (guint i = 0; i < G_N_ELEMENTS (sub->media); i++)
    sub->media[i].last_out = GST_CLOCK_TIME_NONE;
  return sub;
}

/* Builds the pipeline for @offer and starts the answer; the reply is sent later. */
static gboolean
sub_start (SkWhepSubscriber *sub, GstSDPMessage *offer, GError **error)
{
  const SkConfig *config = sub->server->config;
  int video_mline = -1, audio_mline = -1, video_pt = -1, audio_pt = -1;
  const char *video_codec = NULL;
  gboolean video_mismatch = FALSE;

  ProfileProbe probe = { .filter = sub->participant_filter };
  guint probe_id
      = sk_room_manager_watch_tracks (sub->server->rooms, sub->room, probe_profile, &probe, NULL);
  sk_room_manager_unwatch_tracks (sub->server->rooms, probe_id);
  g_autofree char *profile = g_steal_pointer (&probe.profile);

  for (guint i = 0; i < gst_sdp_message_medias_len (offer); i++) {
    const GstSDPMedia *m = gst_sdp_message_get_media (offer, i);
    const char *mid = gst_sdp_media_get_attribute_val (m, "mid");
    if (mid != NULL && g_hash_table_size (sub->mid_to_mline) < 64)
      g_hash_table_insert (sub->mid_to_mline, g_strdup (mid), GUINT_TO_POINTER (i + 1));
    if (sub->offer_ufrag == NULL)
      sub->offer_ufrag = g_strdup (gst_sdp_media_get_attribute_val (m, "ice-ufrag"));
    if (!media_is_receiving (m))
      continue;
    if (video_mline < 0 && g_strcmp0 (gst_sdp_media_get_media (m), "video") == 0) {
      /* The m-line carries the codec of the room's video (one codec for the session: no
       * renegotiation); with no video yet, H.264 (what RTMP gives) if offered, else VP8. */
      int h264 = pick_h264_pt (m, profile), vp8 = pick_vp8_pt (m);
      if (g_strcmp0 (probe.codec, "VP8") == 0 || (probe.codec == NULL && h264 < 0)) {
        video_codec = "VP8", video_pt = vp8;
      } else {
        video_codec = "H264", video_pt = h264;
      }
      if (video_pt >= 0)
        video_mline = i;
      else
        video_mismatch = probe.codec != NULL;
    } else if (audio_mline < 0 && g_strcmp0 (gst_sdp_media_get_media (m), "audio") == 0) {
      audio_pt = pick_opus_pt (m);
      if (audio_pt >= 0)
        audio_mline = i;
    }
  }
  if (sub->offer_ufrag == NULL)
    sub->offer_ufrag = g_strdup (gst_sdp_message_get_attribute_val (offer, "ice-ufrag"));
  /* A video m-line that cannot carry the room's codec is answered inactive (a negotiated
   * "no"), and audio plays; with nothing else to send the viewer gets an error that says why. */
  if (video_mline < 0 && audio_mline < 0 && video_mismatch) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                 "the room's video is %s and the offer does not accept %s%s", probe.codec,
                 probe.codec, g_str_equal (probe.codec, "H264") ? " (packetization-mode=1)" : "");
    return FALSE;
  }
  if (video_mline < 0 && audio_mline < 0) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                 "the offer has no receivable H.264 (packetization-mode=1) or VP8 video "
                 "or Opus audio");
    return FALSE;
  }
  if (video_mismatch)
    GST_INFO ("subscriber %s: the room's video is %s, not in the offer: audio only", sub->id,
              probe.codec);

  g_autofree char *name = g_strdup_printf ("whep-%.8s", sub->id);
  sub->pipeline = gst_object_ref_sink (gst_pipeline_new (name));
  GstElement *webrtcbin = gst_element_factory_make ("webrtcbin", "webrtc");
  if (webrtcbin == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "webrtcbin is not available");
    return FALSE;
  }
  sub->webrtcbin = gst_object_ref (webrtcbin);
  gst_bin_add (GST_BIN (sub->pipeline), webrtcbin);
  sk_webrtc_tune_send_path (webrtcbin);
  sk_webrtc_use_own_srtp (webrtcbin);
  gst_util_set_object_arg (G_OBJECT (webrtcbin), "bundle-policy", "max-bundle");
  if (config->stun_servers != NULL && config->stun_servers[0] != NULL)
    g_object_set (webrtcbin, "stun-server", config->stun_servers[0], NULL);
  sk_webrtc_configure_ice (webrtcbin, (const char *const *)config->ice_addresses,
                           config->ice_port_min, config->ice_port_max);

  /* Our own clock and base time, so buffers can be stamped before PLAYING completes. */
  sub->clock = gst_system_clock_obtain ();
  gst_pipeline_use_clock (GST_PIPELINE (sub->pipeline), sub->clock);
  sub->base_time = gst_clock_get_time (sub->clock);
  gst_element_set_start_time (sub->pipeline, GST_CLOCK_TIME_NONE);
  gst_element_set_base_time (sub->pipeline, sub->base_time);

  if (video_mline >= 0
      && !sub_add_media (sub, SK_TRACK_KIND_VIDEO, video_codec,
                         gst_sdp_message_get_media (offer, video_mline), video_mline, video_pt,
                         error))
    return FALSE;
  if (audio_mline >= 0
      && !sub_add_media (sub, SK_TRACK_KIND_AUDIO, "opus",
                         gst_sdp_message_get_media (offer, audio_mline), audio_mline, audio_pt,
                         error))
    return FALSE;

  g_autoptr (GstBus) bus = gst_pipeline_get_bus (GST_PIPELINE (sub->pipeline));
  sub->bus_watch = gst_bus_add_watch_full (bus, G_PRIORITY_DEFAULT, sub_on_bus, sub_ref (sub),
                                           (GDestroyNotify)sub_unref);

  /* Handlers hold a ref each; sub_close disconnects them all by data. */
  g_signal_connect_data (webrtcbin, "notify::ice-gathering-state",
                         G_CALLBACK (sub_on_gathering_state), sub_ref (sub), sub_closure_unref, 0);
  g_signal_connect_data (webrtcbin, "notify::connection-state",
                         G_CALLBACK (sub_on_connection_state), sub_ref (sub), sub_closure_unref, 0);
  g_signal_connect_data (webrtcbin, "notify::ice-connection-state",
                         G_CALLBACK (sub_on_ice_connection_state), sub_ref (sub), sub_closure_unref,
                         0);

  if (gst_element_set_state (sub->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "the subscriber pipeline did not start");
    return FALSE;
  }

  GstSDPMessage *copy = NULL;
  gst_sdp_message_copy (offer, &copy);
  GstWebRTCSessionDescription *desc
      = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_OFFER, copy);
  GstPromise *promise = gst_promise_new_with_change_func (sub_on_remote_set, sub_ref (sub),
                                                          (GDestroyNotify)sub_unref);
  g_signal_emit_by_name (webrtcbin, "set-remote-description", desc, promise);
  gst_promise_unref (promise);
  gst_webrtc_session_description_free (desc);

  sub->gather_timeout = g_timeout_add (SK_WHEP_GATHER_TIMEOUT_MS, sub_on_gather_timeout, sub);
  sub->connect_timeout
      = g_timeout_add_seconds (SK_WHEP_CONNECT_TIMEOUT_S, sub_on_connect_timeout, sub);

  /* Media starts whenever a publisher appears; the watch reports existing tracks now. */
  sub->watch_id = sk_room_manager_watch_tracks (sub->server->rooms, sub->room, sub_on_room_track,
                                                sub_ref (sub), sub_watch_destroy);
  return TRUE;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP */

static void
reply_options (SoupServerMessage *msg, const char *methods, gboolean offer)
{
  sk_http_add_cors (msg, methods);
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  if (offer)
    soup_message_headers_replace (h, "Accept-Post", "application/sdp");
  else
    soup_message_headers_replace (h, "Accept-Patch", "application/trickle-ice-sdpfrag");
  soup_server_message_set_status (msg, SOUP_STATUS_NO_CONTENT, NULL);
}

void
sk_whep_server_handle_offer (SkWhepServer *self, SoupServerMessage *msg, const char *room)
{
  const char *method = soup_server_message_get_method (msg);

  if (g_strcmp0 (method, "OPTIONS") == 0) {
    reply_options (msg, SK_WHEP_OFFER_METHODS, TRUE);
    return;
  }
  sk_http_add_cors (msg, SK_WHEP_OFFER_METHODS);
  if (g_strcmp0 (method, "POST") != 0) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow",
                                  SK_WHEP_OFFER_METHODS);
    sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                         "use POST with an SDP offer");
    return;
  }
  if (self->config->whep_require_token && !sk_http_require_token (msg, self->config->api_token))
    return;
  if (!sk_http_content_type_is (msg, "application/sdp")) {
    sk_http_reply_error (msg, SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                         "the offer must be sent as application/sdp");
    return;
  }
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  if (body->length > SK_WHEP_MAX_OFFER_BYTES) {
    sk_http_reply_error (msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                         "the offer exceeds %u bytes", SK_WHEP_MAX_OFFER_BYTES);
    return;
  }
  if (self->config->max_subscribers > 0
      && g_hash_table_size (self->subscribers) >= self->config->max_subscribers) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Retry-After",
                                  SK_WHEP_RETRY_AFTER_S);
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "limit",
                         "this node serves its maximum of %u subscribers",
                         self->config->max_subscribers);
    return;
  }

  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  GstSDPMessage *offer = NULL;
  g_autoptr (GError) error = NULL;
  if (!sk_webrtc_parse_sdp (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &offer,
                            &error)) {
    sk_http_reply_gerror (msg, error);
    return;
  }

  g_autofree char *filter = NULL;
  GUri *uri = soup_server_message_get_uri (msg);
  if (g_uri_get_query (uri) != NULL) {
    g_autoptr (GHashTable) params
        = g_uri_parse_params (g_uri_get_query (uri), -1, "&", G_URI_PARAMS_NONE, NULL);
    if (params != NULL && g_hash_table_lookup (params, "participant") != NULL)
      filter = g_strdup (g_hash_table_lookup (params, "participant"));
  }

  SkWhepSubscriber *sub = sub_new (self, room, filter);
  g_hash_table_insert (self->subscribers, sub->id, sub);
  sub->pending_msg = g_object_ref (msg);
  sub->pending_finished_id
      = g_signal_connect (msg, "finished", G_CALLBACK (sub_on_pending_finished), sub);
  soup_server_message_pause (msg);

  if (!sub_start (sub, offer, &error)) {
    g_autoptr (SoupServerMessage) pending = NULL;
    sub_take_pending (sub, &pending);
    sk_http_reply_gerror (msg, error);
    soup_server_message_unpause (msg);
    sub_close (sub, error->message);
  } else {
    GST_INFO ("subscriber %s: offer for room %s accepted%s%s", sub->id, room,
              filter != NULL ? ", participant " : "", filter != NULL ? filter : "");
  }
  gst_sdp_message_free (offer);
}

/* Trickle: a=candidate lines of an application/trickle-ice-sdpfrag body (RFC 8840). */
static void
sub_handle_patch (SkWhepSubscriber *sub, SoupServerMessage *msg)
{
  gboolean any_etag = FALSE;
  g_autoptr (GBytes) bytes = sk_http_read_trickle_patch (msg, sub->etag, SK_WHEP_MAX_PATCH_BYTES,
                                                         sk_http_reply_error, &any_etag);

  if (bytes == NULL)
    return;
  g_auto (SkTrickleFragment) frag = { 0 };
  g_autoptr (GError) error = NULL;
  if (!sk_webrtc_parse_trickle_fragment (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                                         sub->mid_to_mline, SK_WHEP_MAX_PATCH_CANDS, &frag,
                                         &error)) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid", "%s", error->message);
    return;
  }
  if (frag.ufrag != NULL && g_strcmp0 (frag.ufrag, sub->offer_ufrag) != 0) {
    sk_http_reply_error (msg, 422, "ice_restart_unsupported",
                         "ICE restart is not supported: start a new session");
    return;
  }
  if (frag.stop == SK_TRICKLE_UNKNOWN_MID) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid", "unknown mid");
    return;
  }
  if (frag.stop == SK_TRICKLE_TOO_MANY_CANDIDATES) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid", "too many candidates");
    return;
  }
  for (guint i = 0; i < frag.candidates->len; i++)
    g_signal_emit_by_name (sub->webrtcbin, "add-ice-candidate",
                           g_array_index (frag.mlines, guint, i),
                           (const char *)g_ptr_array_index (frag.candidates, i));
  soup_server_message_set_status (msg, SOUP_STATUS_NO_CONTENT, NULL);
}

static void
resource_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                  gpointer user_data)
{
  SkWhepServer *self = user_data;
  const char *method = soup_server_message_get_method (msg);

  if (!g_str_has_prefix (path, SK_WHEP_RESOURCE_PREFIX)) {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such WHEP session");
    return;
  }
  const char *id = path + strlen (SK_WHEP_RESOURCE_PREFIX);
  if (g_strcmp0 (method, "OPTIONS") == 0) {
    reply_options (msg, SK_WHEP_RESOURCE_METHODS, FALSE);
    return;
  }
  SkWhepSubscriber *sub = g_hash_table_lookup (self->subscribers, id);
  /* Another node's viewer (the load balancer picked us): that node answers. */
  if (sub == NULL && sk_cluster_forward (sk_room_manager_get_cluster (self->rooms), msg, id))
    return;
  sk_http_add_cors (msg, SK_WHEP_RESOURCE_METHODS);
  if (sub == NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such WHEP session");
    return;
  }
  if (g_strcmp0 (method, "DELETE") == 0) {
    sub_close (sub, "deleted by the client");
    soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  } else if (g_strcmp0 (method, "PATCH") == 0) {
    sub_handle_patch (sub, msg);
  } else {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow",
                                  SK_WHEP_RESOURCE_METHODS);
    sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                         "use PATCH or DELETE on a WHEP session");
  }
}

/* ---------------------------------------------------------------------------------------- */
/* Server */

static void
sub_table_unref (gpointer data)
{
  SkWhepSubscriber *sub = data;
  sub->server = NULL;
  sub_unref (sub);
}

SkWhepServer *
sk_whep_server_new (SkRoomManager *rooms, const SkConfig *config)
{
  GST_DEBUG_CATEGORY_INIT (sk_whep_debug, "sk-whep", 0, "streamkeeper WHEP playback");

  SkWhepServer *self = g_new0 (SkWhepServer, 1);
  self->rooms = rooms;
  self->config = config;
  self->context = g_main_context_ref_thread_default ();
  self->subscribers = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, sub_table_unref);
  return self;
}

void
sk_whep_server_free (SkWhepServer *self)
{
  if (self == NULL)
    return;

  GHashTableIter iter;
  gpointer value;
  g_autoptr (GPtrArray) subs = g_ptr_array_new_with_free_func ((GDestroyNotify)sub_unref);
  g_hash_table_iter_init (&iter, self->subscribers);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_ptr_array_add (subs, sub_ref (value));
  for (guint i = 0; i < subs->len; i++)
    sub_close (g_ptr_array_index (subs, i), "server shutdown");
  g_clear_pointer (&subs, g_ptr_array_unref);
  g_hash_table_unref (self->subscribers);
  g_main_context_unref (self->context);
  g_free (self);
}

void
sk_whep_server_attach_http (SkWhepServer *self, SoupServer *server)
{
  soup_server_add_handler (server, "/v1/whep", resource_handler, self, NULL);
}

guint
sk_whep_server_get_n_subscribers (SkWhepServer *self)
{
  return g_hash_table_size (self->subscribers);
}
