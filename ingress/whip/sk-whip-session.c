/*
 * streamkeeper: one WHIP publisher's media pipeline.
 *
 * By default nothing is decoded: the publisher's encoding goes to the room as it is
 * (passthrough), and its RTP packets too. What comes out of webrtcbin's jitter buffer (in
 * order, losses retransmitted where the publisher can) goes into the tracks as it is, and
 * each subscriber rewrites the packets for its own stream (rooms/sk-rtp.h): an SFU's path,
 * with no depayloader, parser or payloader per packet.
 *
 *   webrtcbin (recvonly, max-bundle) → [probe: keyframe starts, frame ends] → SkTrack
 *
 * That needs H.264's SPS/PPS in the packets in front of each IDR. A publisher that sends an
 * IDR without them (it gave them in its offer's sprop-parameter-sets) is depayloaded from
 * then on, and h264parse puts them in front of each IDR:
 *
 *   webrtcbin → rtph264depay ! h264parse (byte-stream/au, SPS/PPS at each IDR) → appsink
 *
 * With the ingress's transcode mode "always" the video is decoded and re-encoded to H.264 by
 * the RTMP path's transcoder (pipelines/sk-pipeline.h):
 *
 *   rtph264depay ! h264parse | rtpvp8depay → queue ! decoder ! … ! x264enc ! h264parse → appsink
 *
 * Opus audio is passed through in every mode: it is what WebRTC viewers take anyway.
 *
 * Keyframe requests from the room's subscribers (SkTrack keyframe func) become an upstream
 * GstForceKeyUnit from the video appsink: in passthrough it reaches rtpsession, which sends
 * the publisher a PLI; when transcoding the encoder makes the keyframe itself. The
 * appsinks run on webrtcbin's streaming threads and push into tracks (thread-safe); everything
 * that touches the registry or the room (publishing a track, the state, figures) is marshalled
 * to the main context. Until its track exists a video output keeps the buffers from its first
 * keyframe on, so the first subscriber gets a decodable GOP at once.
 */
#include "ingress/whip/sk-whip-session.h"

#include <string.h>

#include <gst/app/gstappsink.h>
#include <gst/webrtc/webrtc.h>

#include "common/sk-common.h"
#include "rooms/sk-rtp.h"
#include "rooms/sk-webrtc.h"

GST_DEBUG_CATEGORY_STATIC (sk_whip_debug);
#define GST_CAT_DEFAULT sk_whip_debug

#define SK_WHIP_GATHER_TIMEOUT_MS 3000
/* Buffers kept while a track is being published: ~1 s of video packets, or 2 s of Opus. */
#define SK_WHIP_MAX_PENDING 400
/* How often media activity and figures are reported to the registry. */
#define SK_WHIP_TICK_MS 250
#define SK_WHIP_INFO_TICKS 8
/* At most one keyframe request (PLI) per this interval. */
#define SK_WHIP_KEYFRAME_INTERVAL_US (500 * G_TIME_SPAN_MILLISECOND)
/* Packets in sequence after which a jitter buffer lets a new stream go (rtpjitterbuffer's
 * faststart-min-packets). */
#define SK_WHIP_FASTSTART_PACKETS 2u

typedef struct {
  SkWhipSession *session;
  SkTrackKind kind;
  SkWhipCodec codec;
  gboolean expected;  /* the offer has this kind */
  gboolean transcode; /* decode and re-encode to H.264 (video, transcode: always) */
  GstElement *sink;   /* appsink, or a fakesink behind the forwarding probe */

  /* Forwarding RTP (streaming thread only) */
  gboolean forward;
  SkRtpCodec rtp_codec;
  GstSegment segment;
  gboolean frame_started;
  guint32 frame_ts;
  gboolean frame_has_key;
  guint16 next_seq; /* video: the packet expected next */
  gboolean seq_known;
  gboolean broken;          /* video: a packet was lost for good, held until a keyframe */
  GstStructure *rtp_fields; /* the track's caps but the size: media, encoding, clock-rate, … */
  guint width, height;
  const char *profile;
  GstCaps *fwd_caps; /* forward_caps () of the newest packet */

  /* Streaming thread ↔ main, under session->lock. */
  SkTrack *track;
  GPtrArray *pending;
  gboolean publish_requested;
  gboolean have_keyframe;
  GstCaps *caps; /* caps of the newest buffer */
  GstClockTime last_pts;
  gint64 last_keyframe_request_us;

  /* Counters for the bitrate and the start-up timeline. */
  guint64 bytes; /* g_atomic_pointer is awkward for 64 bits: guarded by lock too */
  guint buffers;
  guint64 frames; /* forwarded video: frames seen, for the frame rate */
} SkWhipMedia;

struct _SkWhipSession {
  gint refcount;
  gboolean closed; /* set on the main context, under lock: no callback runs any more */
  char *name;
  GMainContext *context;
  SkWhipSessionTarget target;
  gpointer target_data;
  const SkConfig *config;
  SkWhipSessionCallbacks callbacks;
  gpointer user_data;

  GstElement *pipeline;
  GstElement *webrtcbin;
  GstClockTime base_time;
  guint bus_watch;
  GMutex lock;
  SkWhipMedia media[2]; /* indexed by SkTrackKind */
  /* The offer's video payload type, when it asks for NACK retransmission (-1: none). */
  gint nack_pt;

  gboolean local_set, gathered, answered, publishing;
  SkWebrtcReceiveBypass *receive_bypass; /* under lock */
  guint gather_timeout;
  guint tick_id, ticks;
  gint rtp_packets; /* atomic: RTP out of the jitter buffers, the session's sign of life */
  gint last_rtp_packets;
  guint64 last_bytes[2];
  guint64 last_frames;
  gint64 last_info_us;
  SkInputInfo info;
};

/* ---------------------------------------------------------------------------------------- */
/* Lifetime and main-context calls */

static SkWhipSession *
session_ref (SkWhipSession *ws)
{
  g_atomic_int_inc (&ws->refcount);
  return ws;
}

static gboolean
session_free_on_main (gpointer data)
{
  SkWhipSession *ws = data;

  for (guint i = 0; i < G_N_ELEMENTS (ws->media); i++) {
    SkWhipMedia *m = &ws->media[i];
    g_clear_pointer (&m->track, sk_track_unref);
    g_clear_pointer (&m->pending, g_ptr_array_unref);
    gst_clear_caps (&m->caps);
    gst_clear_object (&m->sink);
    g_clear_pointer (&m->rtp_fields, gst_structure_free);
    gst_clear_caps (&m->fwd_caps);
  }
  if (ws->pipeline != NULL) {
    gst_element_set_state (ws->pipeline, GST_STATE_NULL);
    gst_object_unref (ws->pipeline);
  }
  gst_clear_object (&ws->webrtcbin);
  sk_input_info_clear (&ws->info);
  g_mutex_clear (&ws->lock);
  g_main_context_unref (ws->context);
  g_free (ws->name);
  g_free (ws);
  return G_SOURCE_REMOVE;
}

static void
session_unref (SkWhipSession *ws)
{
  if (!g_atomic_int_dec_and_test (&ws->refcount))
    return;
  /* The last ref may go on one of the pipeline's own threads: dispose it on main. */
  g_main_context_invoke (ws->context, session_free_on_main, ws);
}

/* Start-up timeline (GST_DEBUG=sk-whip:5): the moments between the offer and the first
 * tracks, on CLOCK_MONOTONIC like the test tools' "mono_us" (bench/bench_whip.py --timeline). */
static void session_mark (SkWhipSession *ws, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
session_mark (SkWhipSession *ws, const char *format, ...)
{
  if (gst_debug_category_get_threshold (sk_whip_debug) < GST_LEVEL_DEBUG)
    return;
  gint64 now = g_get_monotonic_time ();
  va_list args;
  va_start (args, format);
  g_autofree char *what = g_strdup_vprintf (format, args);
  va_end (args);
  GST_DEBUG ("%s: timeline mono_us=%" G_GINT64_FORMAT " %s", ws->name, now, what);
}

typedef void (*SessionFunc) (SkWhipSession *ws, gpointer arg);

typedef struct {
  SkWhipSession *ws;
  SessionFunc func;
  gpointer arg;
  GDestroyNotify arg_free;
} SessionCall;

static gboolean
session_call_dispatch (gpointer data)
{
  SessionCall *call = data;
  if (!call->ws->closed)
    call->func (call->ws, call->arg);
  return G_SOURCE_REMOVE;
}

static void
session_call_free (gpointer data)
{
  SessionCall *call = data;
  if (call->arg_free != NULL)
    call->arg_free (call->arg);
  session_unref (call->ws);
  g_free (call);
}

/* Runs @func on the main context unless the session was freed in between. */
static void
session_call_on_main (SkWhipSession *ws, SessionFunc func, gpointer arg, GDestroyNotify arg_free)
{
  SessionCall *call = g_new0 (SessionCall, 1);
  call->ws = session_ref (ws);
  call->func = func;
  call->arg = arg;
  call->arg_free = arg_free;
  GSource *source = g_idle_source_new ();
  /* Not at idle priority: under load some default-priority source (an RTMP socket) is ready
   * at every main-loop iteration and an idle would wait past the answer's own timeout. */
  g_source_set_priority (source, G_PRIORITY_HIGH);
  g_source_set_callback (source, session_call_dispatch, call, session_call_free);
  g_source_attach (source, ws->context);
  g_source_unref (source);
}

static void
closure_unref (gpointer data, GClosure *closure)
{
  session_unref (data);
}

static void
session_fail_main (SkWhipSession *ws, gpointer message)
{
  if (!ws->answered) {
    ws->answered = TRUE;
    g_clear_handle_id (&ws->gather_timeout, g_source_remove);
    ws->callbacks.answered (ws, NULL, message, ws->user_data);
  } else {
    ws->callbacks.failed (ws, message, ws->user_data);
  }
}

static void
session_fail (SkWhipSession *ws, const char *message)
{
  session_call_on_main (ws, session_fail_main, g_strdup (message), g_free);
}

/* ---------------------------------------------------------------------------------------- */
/* Media: appsink or forwarding probe (streaming thread) → track */

static void
request_keyframe_locked (SkWhipMedia *m)
{
  gint64 now = g_get_monotonic_time ();

  if (m->sink == NULL || now - m->last_keyframe_request_us < SK_WHIP_KEYFRAME_INTERVAL_US)
    return;
  m->last_keyframe_request_us = now;
  session_mark (m->session, "keyframe request");
  /* Upstream GstForceKeyUnit: the RTP session turns it into a PLI to the publisher. */
  GstStructure *s
      = gst_structure_new ("GstForceKeyUnit", "all-headers", G_TYPE_BOOLEAN, TRUE, NULL);
  gst_element_send_event (m->sink, gst_event_new_custom (GST_EVENT_CUSTOM_UPSTREAM, s));
}

/* A subscriber of the track asks for a keyframe (any thread; the track rate-limits). */
static void
media_keyframe_requested (SkTrack *track, gpointer user_data)
{
  SkWhipMedia *m = user_data;

  g_mutex_lock (&m->session->lock);
  request_keyframe_locked (m);
  g_mutex_unlock (&m->session->lock);
  GST_DEBUG ("%s: keyframe requested by a subscriber of %s (%s)", m->session->name,
             sk_track_get_sid (track), m->transcode ? "encoder" : "PLI to the publisher");
}

static void
media_flush_pending_locked (SkWhipMedia *m)
{
  for (guint i = 0; i < m->pending->len; i++)
    sk_track_push (m->track, g_ptr_array_index (m->pending, i));
  g_ptr_array_set_size (m->pending, 0);
}

static void
fill_video_info (SkInputInfo *info, SkWhipCodec codec, GstCaps *caps)
{
  const GstStructure *s = gst_caps_get_structure (caps, 0);
  int w = 0, h = 0, fn = 0, fd = 1;

  g_free (info->video_codec);
  info->video_codec = g_strdup (sk_whip_codec_to_string (codec));
  if (gst_structure_get_int (s, "width", &w) && gst_structure_get_int (s, "height", &h)) {
    info->width = w;
    info->height = h;
  }
  if (gst_structure_get_fraction (s, "framerate", &fn, &fd) && fn > 0 && fd > 0)
    info->fps = (double)fn / fd;
}

static void
fill_audio_info (SkInputInfo *info, GstCaps *caps)
{
  const GstStructure *s = gst_caps_get_structure (caps, 0);
  int rate = 0, channels = 0;

  g_free (info->audio_codec);
  info->audio_codec = g_strdup ("opus");
  if (gst_structure_get_int (s, "rate", &rate))
    info->sample_rate = rate;
  if (gst_structure_get_int (s, "channels", &channels))
    info->channels = channels;
}

static void
session_set_input_info (SkWhipSession *ws)
{
  if (ws->target.input_info != NULL)
    ws->target.input_info (ws->target_data, &ws->info);
}

static void
session_maybe_publishing (SkWhipSession *ws)
{
  for (guint i = 0; i < G_N_ELEMENTS (ws->media); i++)
    if (ws->media[i].expected && ws->media[i].track == NULL)
      return;
  if (ws->publishing)
    return;
  ws->publishing = TRUE;
  GST_INFO ("%s: every track is flowing", ws->name);
  ws->target.publishing (ws->target_data);
}

/* Main context: the first buffer of @m arrived, publish its track. */
static void
media_publish_main (SkWhipSession *ws, gpointer arg)
{
  SkWhipMedia *m = arg;
  g_autoptr (GError) error = NULL;
  g_autoptr (GstCaps) caps = NULL;

  g_mutex_lock (&ws->lock);
  caps = m->caps != NULL ? gst_caps_ref (m->caps) : NULL;
  g_mutex_unlock (&ws->lock);
  if (caps == NULL)
    return;

  SkTrack *track = ws->target.publish_track (ws->target_data, m->kind, caps, &error);
  if (track == NULL) {
    GST_WARNING ("%s: cannot publish the %s track: %s", ws->name, sk_track_kind_to_string (m->kind),
                 error->message);
    return; /* the registry is ending the session */
  }
  session_mark (ws, "%s track published", sk_track_kind_to_string (m->kind));
  GST_INFO ("%s: %s track %s published (%" GST_PTR_FORMAT ")", ws->name,
            sk_track_kind_to_string (m->kind), sk_track_get_sid (track), caps);

  /* Outside ws->lock: a request takes the track's keyframe lock and then ws->lock. */
  if (m->kind == SK_TRACK_KIND_VIDEO)
    sk_track_set_keyframe_func (track, media_keyframe_requested, m, NULL);
  g_mutex_lock (&ws->lock);
  m->track = sk_track_ref (track);
  media_flush_pending_locked (m);
  g_mutex_unlock (&ws->lock);

  if (m->kind == SK_TRACK_KIND_VIDEO)
    fill_video_info (&ws->info, m->codec, caps);
  else
    fill_audio_info (&ws->info, caps);
  session_set_input_info (ws);
  session_maybe_publishing (ws);
}

static void media_output (SkWhipMedia *m, GstBuffer *buf, GstClockTime pts, GstCaps *caps);

static GstFlowReturn
on_new_sample (GstAppSink *appsink, gpointer user_data)
{
  SkWhipMedia *m = user_data;
  g_autoptr (GstSample) sample = gst_app_sink_pull_sample (appsink);

  if (sample == NULL)
    return GST_FLOW_EOS;
  GstBuffer *in = gst_sample_get_buffer (sample);
  GstCaps *caps = gst_sample_get_caps (sample);
  const GstSegment *segment = gst_sample_get_segment (sample);
  if (in == NULL || caps == NULL)
    return GST_FLOW_OK;

  /* Tracks carry PTS in the running time of the publisher's pipeline. */
  GstClockTime pts = GST_BUFFER_PTS (in);
  if (segment != NULL && segment->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (pts))
    pts = gst_segment_to_running_time (segment, GST_FORMAT_TIME, pts);
  media_output (m, gst_buffer_copy (in) /* shares the memory */, pts, caps);
  return GST_FLOW_OK;
}

/* Streaming thread: @buf (owned) for the track, with @pts in the pipeline's running time. */
static void
media_output (SkWhipMedia *m, GstBuffer *buf, GstClockTime pts, GstCaps *caps)
{
  SkWhipSession *ws = m->session;

  g_mutex_lock (&ws->lock);
  /* A picture the depayloader split in two (GStreamer's rtph264pay repeats SPS/PPS before
   * each slice of an IDR, which starts a new access unit) leaves h264parse with no time for
   * the second part: it is the same picture, so it gets the same time rather than dropped. */
  if (GST_CLOCK_TIME_IS_VALID (pts))
    m->last_pts = pts;
  else
    pts = m->last_pts;
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DTS (buf) = GST_CLOCK_TIME_NONE;
  gboolean keyframe = !GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
  gsize size = gst_buffer_get_size (buf);

  m->buffers++;
  m->bytes += size;
  if (GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_MARKER))
    m->frames++;
  if (m->caps == NULL || !gst_caps_is_equal (m->caps, caps)) {
    gst_caps_replace (&m->caps, caps);
    if (m->track != NULL)
      sk_track_set_caps (m->track, caps);
  }
  if (m->buffers == 1)
    session_mark (ws, "first %s buffer (%s)", sk_track_kind_to_string (m->kind),
                  keyframe ? "keyframe" : "delta");
  if (m->kind == SK_TRACK_KIND_VIDEO && !m->have_keyframe) {
    if (!keyframe) {
      /* Nothing decodable yet: ask the publisher for a keyframe instead of waiting a GOP. */
      request_keyframe_locked (m);
      gst_buffer_unref (buf);
      g_mutex_unlock (&ws->lock);
      return;
    }
    m->have_keyframe = TRUE;
    session_mark (ws, "first keyframe");
  }
  if (m->track != NULL) {
    media_flush_pending_locked (m);
    sk_track_push (m->track, buf);
    gst_buffer_unref (buf);
  } else {
    if (m->pending->len < SK_WHIP_MAX_PENDING)
      g_ptr_array_add (m->pending, buf);
    else
      gst_buffer_unref (buf);
    if (!m->publish_requested) {
      m->publish_requested = TRUE;
      session_call_on_main (ws, media_publish_main, m, NULL);
    }
  }
  g_mutex_unlock (&ws->lock);
}

/* Depayloader (@depay_desc) → transcoder → appsink, in one bin with a "sink" ghost pad. */
static GstElement *
build_transcode_bin (SkWhipSession *ws, const char *depay_desc, SkWhipCodec codec, GError **error)
{
  g_autoptr (GstElement) encoder = sk_pipeline_make_video_encoder (ws->config, error);
  if (encoder == NULL)
    return NULL;
  GstElement *transcoder = sk_pipeline_make_video_transcoder (
      "vtranscode", codec == SK_WHIP_CODEC_VP8 ? "vp8dec" : "avdec_h264", encoder, error);
  if (transcoder == NULL)
    return NULL;
  GstElement *depay = gst_parse_bin_from_description (depay_desc, TRUE, error);
  if (depay == NULL) {
    gst_object_unref (gst_object_ref_sink (transcoder));
    return NULL;
  }
  GstElement *sink = gst_element_factory_make ("appsink", "sink");
  g_autoptr (GstCaps) caps
      = gst_caps_from_string ("video/x-h264,stream-format=byte-stream,alignment=au");
  g_object_set (sink, "caps", caps, NULL);

  GstElement *bin = gst_bin_new (NULL);
  gst_bin_add_many (GST_BIN (bin), depay, transcoder, sink, NULL);
  if (!gst_element_link_many (depay, transcoder, sink, NULL)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "cannot link the transcoder");
    gst_object_unref (gst_object_ref_sink (bin));
    return NULL;
  }
  g_autoptr (GstPad) target = gst_element_get_static_pad (depay, "sink");
  gst_element_add_pad (bin, gst_ghost_pad_new ("sink", target));
  return bin;
}

/* Media activity is RTP that arrives, not what the depayloader lets through: after a loss it
 * holds the video until the keyframe it asked for, which a lossy link may take seconds to get
 * through whole, and the publisher is not lost meanwhile. */
static GstPadProbeReturn
count_rtp (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  g_atomic_int_inc (&ws->rtp_packets);
  return GST_PAD_PROBE_OK;
}

/* The depayloading bin for @m's stream of @encoding, or NULL if it is not the negotiated one. */
static const char *
depay_description (SkWhipMedia *m, const char *encoding)
{
  /* Passthrough: H.264 as byte-stream access units with SPS/PPS at each IDR (what tracks
   * carry); transcoding: whatever the decoder takes, the transcoder does the rest.
   * The depayloader gives avc: its access units end at the RTP marker. In byte-stream it
   * also starts one at each SPS, and a publisher that repeats SPS/PPS before every slice of
   * an IDR (rtph264pay config-interval=-1) would have each multi-slice keyframe cut into
   * pictures that each lack some slices, and every frame up to the next IDR decoded wrong. */
#define SK_WHIP_H264_DEPAY "rtph264depay name=depay ! video/x-h264,stream-format=avc,alignment=au"
  if (m->codec == SK_WHIP_CODEC_H264 && g_ascii_strcasecmp (encoding, "H264") == 0)
    return m->transcode ? SK_WHIP_H264_DEPAY " ! h264parse ! "
                                             "video/x-h264,stream-format=byte-stream,alignment=au"
                        : SK_WHIP_H264_DEPAY
               " ! h264parse config-interval=-1 ! "
               "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink";
  if (m->codec == SK_WHIP_CODEC_VP8 && g_ascii_strcasecmp (encoding, "VP8") == 0)
    return m->transcode ? "rtpvp8depay name=depay" : "rtpvp8depay name=depay ! appsink name=sink";
  if (m->codec == SK_WHIP_CODEC_OPUS && g_ascii_strcasecmp (encoding, "OPUS") == 0)
    return "rtpopusdepay name=depay ! appsink name=sink";
  return NULL;
}

/* Links webrtcbin's @pad to a new bin of @desc that ends in an appsink (any thread). */
static void
depay_start (SkWhipSession *ws, SkWhipMedia *m, GstPad *pad, const char *desc)
{
  g_autoptr (GError) error = NULL;
  GstElement *bin = m->transcode ? build_transcode_bin (ws, desc, m->codec, &error)
                                 : gst_parse_bin_from_description (desc, TRUE, &error);
  if (bin == NULL) {
    g_autofree char *message = g_strdup_printf ("cannot build the %s depayloader: %s",
                                                sk_track_kind_to_string (m->kind), error->message);
    session_fail (ws, message);
    return;
  }
  g_autoptr (GstElement) depay = gst_bin_get_by_name (GST_BIN (bin), "depay");
  /* Ask the publisher for a keyframe after a loss instead of forwarding garbage. */
  if (g_object_class_find_property (G_OBJECT_GET_CLASS (depay), "request-keyframe") != NULL)
    g_object_set (depay, "request-keyframe", TRUE, NULL);
  if (g_object_class_find_property (G_OBJECT_GET_CLASS (depay), "wait-for-keyframe") != NULL)
    g_object_set (depay, "wait-for-keyframe", TRUE, NULL);
  GstElement *appsink = gst_bin_get_by_name (GST_BIN (bin), "sink");
  g_object_set (appsink, "sync", FALSE, "async", FALSE, "enable-last-sample", FALSE, "max-buffers",
                (guint)0, "drop", FALSE, NULL);
  GstAppSinkCallbacks cbs = { .new_sample = on_new_sample };
  gst_app_sink_set_callbacks (GST_APP_SINK (appsink), &cbs, m, NULL);

  g_mutex_lock (&ws->lock);
  gst_clear_object (&m->sink);
  m->sink = appsink; /* owns the ref from get_by_name */
  g_mutex_unlock (&ws->lock);

  gst_bin_add (GST_BIN (ws->pipeline), bin);
  gst_element_sync_state_with_parent (bin);
  g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (bin, "sink");
  if (gst_pad_link (pad, sinkpad) != GST_PAD_LINK_OK)
    session_fail (ws, "cannot link an incoming stream");
  /* Like the appsink callbacks, it runs only while the pipeline does, which ends before ws. */
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST, count_rtp, ws,
                     NULL);
}

/* Streaming thread, in forward_probe: an H.264 publisher sent an IDR without an SPS in front
 * of it, which a viewer that starts there could not decode. From now on the stream is
 * depayloaded, and h264parse puts the SPS/PPS it has seen (or those of the offer's
 * sprop-parameter-sets) in front of each IDR. The track's caps change to frames with the
 * next buffer, and its subscribers follow. */
static void
forward_stop_for_depay (SkWhipSession *ws, SkWhipMedia *m, GstPad *pad)
{
  GST_WARNING ("%s: the publisher sends IDR frames without SPS/PPS in front: depayloading its "
               "video from now on (more CPU)",
               ws->name);
  session_mark (ws, "video: forwarding → depayloading");
  g_autoptr (GstPad) peer = gst_pad_get_peer (pad);
  g_autoptr (GstElement) fakesink = peer != NULL ? gst_pad_get_parent_element (peer) : NULL;
  if (peer != NULL)
    gst_pad_unlink (pad, peer);
  if (fakesink != NULL) {
    gst_element_set_state (fakesink, GST_STATE_NULL);
    gst_bin_remove (GST_BIN (ws->pipeline), fakesink);
  }
  m->forward = FALSE;
  depay_start (ws, m, pad, depay_description (m, "H264"));
}

/* Streaming thread: the caps of a forwarded track, with the size once the stream told it. */
static GstCaps *
forward_caps (SkWhipMedia *m)
{
  GstStructure *s = gst_structure_copy (m->rtp_fields);
  if (m->width > 0 && m->height > 0)
    gst_structure_set (s, "width", G_TYPE_INT, (int)m->width, "height", G_TYPE_INT, (int)m->height,
                       NULL);
  if (m->profile != NULL)
    gst_structure_set (s, "profile", G_TYPE_STRING, m->profile, NULL);
  return gst_caps_new_full (s, NULL);
}

/* Streaming thread: one packet out of the jitter buffer (transfer none). A video packet starts
 * a keyframe if it is the first of its frame (RTP timestamp) to carry an SPS or IDR slice (or
 * a VP8 key frame's start); the SPS or key frame header gives the size. */
static gboolean
forward_packet (SkWhipMedia *m, GstBuffer *in, GstCaps **caps)
{
  GstMapInfo map;
  SkRtpHeader h;
  SkRtpPayloadInfo info;

  g_atomic_int_inc (&m->session->rtp_packets);
  if (!gst_buffer_map (in, &map, GST_MAP_READ))
    return TRUE;
  if (!sk_rtp_parse_header (map.data, map.size, &h)) {
    gst_buffer_unmap (in, &map);
    return TRUE; /* rtpbin let it through, so never */
  }
  /* A malformed payload is forwarded all the same: the subscribers' decoders judge it. */
  sk_rtp_inspect_payload (m->rtp_codec, h.payload, h.payload_len, &info);
  if (!m->frame_started || h.timestamp != m->frame_ts) {
    m->frame_started = TRUE;
    m->frame_ts = h.timestamp;
    m->frame_has_key = FALSE;
  }
  gboolean key_start = m->kind == SK_TRACK_KIND_VIDEO && info.keyframe && !m->frame_has_key;
  m->frame_has_key = m->frame_has_key || info.keyframe;
  /* What the jitter buffer lets through with a gap was not repaired in time: the pictures up
   * to the next keyframe would be broken, for viewers now and for the GOP cache. Hold them and
   * ask for that keyframe, as a depayloader with request-keyframe would. */
  gboolean gap = m->seq_known && h.seq != m->next_seq;
  m->seq_known = TRUE;
  m->next_seq = h.seq + 1;
  if (m->kind == SK_TRACK_KIND_VIDEO && (gap || m->broken) && !key_start) {
    gst_buffer_unmap (in, &map);
    g_mutex_lock (&m->session->lock);
    if (!m->broken)
      session_mark (m->session, "video: packet lost, held until a keyframe");
    m->broken = TRUE;
    request_keyframe_locked (m);
    g_mutex_unlock (&m->session->lock);
    return TRUE;
  }
  m->broken = FALSE;

  guint width = info.width, height = info.height;
  const char *profile = m->profile;
  if (info.sps != NULL)
    sk_rtp_h264_sps_info (info.sps, info.sps_len, &width, &height, &profile);
  gboolean marker = h.marker;
  gst_buffer_unmap (in, &map);
  /* Forwarding needs the SPS in the packets of every keyframe (see forward_stop_for_depay). */
  if (key_start && m->rtp_codec == SK_RTP_CODEC_H264 && info.sps == NULL)
    return FALSE;

  if (*caps == NULL || (width > 0 && height > 0 && (width != m->width || height != m->height))
      || profile != m->profile) {
    if (width > 0 && height > 0) {
      m->width = width;
      m->height = height;
    }
    m->profile = profile;
    gst_clear_caps (caps);
    *caps = forward_caps (m);
  }

  GstBuffer *buf = gst_buffer_copy (in); /* shares the memory */
  if (key_start)
    GST_BUFFER_FLAG_UNSET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
  else
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
  if (marker)
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_MARKER);
  else
    GST_BUFFER_FLAG_UNSET (buf, GST_BUFFER_FLAG_MARKER);
  GstClockTime pts = GST_BUFFER_PTS (in);
  if (GST_CLOCK_TIME_IS_VALID (pts))
    pts = gst_segment_to_running_time (&m->segment, GST_FORMAT_TIME, pts);
  media_output (m, buf, pts, *caps);
  return TRUE;
}

/* On webrtcbin's source pad of a forwarded stream: packets go to the track, not downstream
 * (a fakesink there takes the events). Runs only while the pipeline does, which ends before
 * the session. */
static GstPadProbeReturn
forward_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  SkWhipMedia *m = user_data;

  if (info->type & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
    GstEvent *event = GST_PAD_PROBE_INFO_EVENT (info);
    if (GST_EVENT_TYPE (event) == GST_EVENT_SEGMENT)
      gst_event_copy_segment (event, &m->segment);
    return GST_PAD_PROBE_OK;
  }
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST) {
    /* rtpjitterbuffer pushes packets one by one; a list is forwarded as it is. */
    GstBufferList *list = GST_PAD_PROBE_INFO_BUFFER_LIST (info);
    for (guint i = 0; i < gst_buffer_list_length (list); i++)
      forward_packet (m, gst_buffer_list_get (list, i), &m->fwd_caps);
  } else if (!forward_packet (m, GST_PAD_PROBE_INFO_BUFFER (info), &m->fwd_caps)) {
    /* Relinked here, on the streaming thread, before this packet goes on to the new bin. */
    forward_stop_for_depay (m->session, m, pad);
    return GST_PAD_PROBE_REMOVE;
  }
  return GST_PAD_PROBE_DROP;
}

/* The stream @caps (webrtcbin's source pad) goes to its track as RTP packets. */
static void
forward_start (SkWhipSession *ws, SkWhipMedia *m, GstPad *pad, const GstStructure *s)
{
  const char *encoding = gst_structure_get_string (s, "encoding-name");
  int clock_rate = 0;

  if (!gst_structure_get_int (s, "clock-rate", &clock_rate) || clock_rate <= 0)
    clock_rate = (int)sk_rtp_clock_rate_of (m->kind);
  g_autofree char *upper = g_ascii_strup (encoding, -1);
  m->rtp_fields = gst_structure_new (
      "application/x-rtp", "media", G_TYPE_STRING, sk_track_kind_to_string (m->kind),
      "encoding-name", G_TYPE_STRING, upper, "clock-rate", G_TYPE_INT, clock_rate, NULL);
  if (m->kind == SK_TRACK_KIND_AUDIO) {
    /* Opus is always signalled as 48000/2 (RFC 7587); the figures of the input say so too. */
    const char *params = gst_structure_get_string (s, "encoding-params");
    int channels = params != NULL ? atoi (params) : 0;
    gst_structure_set (m->rtp_fields, "rate", G_TYPE_INT, clock_rate, "channels", G_TYPE_INT,
                       channels > 0 && channels <= 8 ? channels : 2, NULL);
  }
  m->rtp_codec = sk_rtp_codec_from_name (encoding);
  gst_segment_init (&m->segment, GST_FORMAT_TIME);
  m->forward = TRUE;

  GstElement *sink = gst_element_factory_make ("fakesink", NULL);
  g_object_set (sink, "sync", FALSE, "async", FALSE, "enable-last-sample", FALSE, NULL);
  g_mutex_lock (&ws->lock);
  m->sink = gst_object_ref (sink);
  g_mutex_unlock (&ws->lock);
  gst_pad_add_probe (pad,
                     GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST
                         | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
                     forward_probe, m, NULL);
  gst_bin_add (GST_BIN (ws->pipeline), sink);
  gst_element_sync_state_with_parent (sink);
  g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (sink, "sink");
  if (gst_pad_link (pad, sinkpad) != GST_PAD_LINK_OK)
    session_fail (ws, "cannot link an incoming stream");
}

/* webrtcbin exposes a src pad per incoming stream: its packets go to the track as they are,
 * or it is depayloaded into an appsink. */
static void
on_pad_added (GstElement *webrtcbin, GstPad *pad, gpointer user_data)
{
  SkWhipSession *ws = user_data;

  if (GST_PAD_DIRECTION (pad) != GST_PAD_SRC)
    return;
  g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
  if (caps == NULL)
    caps = gst_pad_query_caps (pad, NULL);
  const GstStructure *s = gst_caps_get_structure (caps, 0);
  const char *media = gst_structure_get_string (s, "media");
  const char *encoding = gst_structure_get_string (s, "encoding-name");
  SkTrackKind kind = g_strcmp0 (media, "video") == 0 ? SK_TRACK_KIND_VIDEO : SK_TRACK_KIND_AUDIO;
  SkWhipMedia *m = &ws->media[kind];
  const char *desc = encoding != NULL ? depay_description (m, encoding) : NULL;

  g_mutex_lock (&ws->lock);
  gboolean taken = m->sink != NULL;
  g_mutex_unlock (&ws->lock);
  if (desc == NULL || taken) {
    /* Not negotiated (or a second stream of a kind): let it go nowhere. */
    GST_WARNING ("%s: ignoring an incoming %s stream %" GST_PTR_FORMAT, ws->name,
                 media ? media : "?", caps);
    GstElement *sink = gst_element_factory_make ("fakesink", NULL);
    g_object_set (sink, "sync", FALSE, "async", FALSE, NULL);
    gst_bin_add (GST_BIN (ws->pipeline), sink);
    gst_element_sync_state_with_parent (sink);
    g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (sink, "sink");
    gst_pad_link (pad, sinkpad);
    return;
  }

  if (!m->transcode) {
    forward_start (ws, m, pad, s);
    session_mark (ws, "pad-added %s (forwarding)", sk_track_kind_to_string (kind));
    GST_INFO ("%s: receiving %s (%s), forwarding its packets", ws->name,
              sk_track_kind_to_string (kind), encoding);
    return;
  }
  depay_start (ws, m, pad, desc);
  session_mark (ws, "pad-added %s", sk_track_kind_to_string (kind));
  GST_INFO ("%s: receiving %s (%s)", ws->name, sk_track_kind_to_string (kind), encoding);
}

/* Main context, every SK_WHIP_TICK_MS: media activity keeps the session alive (the registry
 * ends it with publisher_lost when this stops), and the bitrates are measured. */
static gboolean
on_tick (gpointer data)
{
  SkWhipSession *ws = data;
  SkWhipMedia *video = &ws->media[SK_TRACK_KIND_VIDEO];
  guint64 bytes[2];

  g_mutex_lock (&ws->lock);
  for (guint i = 0; i < G_N_ELEMENTS (ws->media); i++)
    bytes[i] = ws->media[i].bytes;
  guint64 frames = video->frames;
  g_mutex_unlock (&ws->lock);

  gint packets = g_atomic_int_get (&ws->rtp_packets);
  if (packets != ws->last_rtp_packets) {
    ws->last_rtp_packets = packets;
    ws->target.media_received (ws->target_data);
  }
  if (++ws->ticks % SK_WHIP_INFO_TICKS == 0 && ws->publishing) {
    gint64 now = g_get_monotonic_time ();
    double secs = (now - ws->last_info_us) / (double)G_USEC_PER_SEC;
    if (ws->last_info_us != 0 && secs > 0) {
      ws->info.video_bitrate_bps
          = (guint64)((bytes[SK_TRACK_KIND_VIDEO] - ws->last_bytes[SK_TRACK_KIND_VIDEO]) * 8
                      / secs);
      ws->info.audio_bitrate_bps
          = (guint64)((bytes[SK_TRACK_KIND_AUDIO] - ws->last_bytes[SK_TRACK_KIND_AUDIO]) * 8
                      / secs);
      /* Forwarded video has no parser to read a frame rate from the stream: count frames. */
      if (video->forward)
        ws->info.fps = (double)(frames - ws->last_frames) / secs;
      session_set_input_info (ws);
    }
    ws->last_frames = frames;
    ws->last_info_us = now;
    ws->last_bytes[0] = bytes[0];
    ws->last_bytes[1] = bytes[1];
  }
  return G_SOURCE_CONTINUE;
}

/* ---------------------------------------------------------------------------------------- */
/* Signalling */

static gboolean
promise_ok (GstPromise *promise, const char *what, SkWhipSession *ws, char **message)
{
  if (gst_promise_wait (promise) != GST_PROMISE_RESULT_REPLIED) {
    *message = g_strdup_printf ("%s did not complete", what);
    return FALSE;
  }
  const GstStructure *reply = gst_promise_get_reply (promise);
  if (reply != NULL && gst_structure_has_field (reply, "error")) {
    g_autoptr (GError) error = NULL;
    gst_structure_get (reply, "error", G_TYPE_ERROR, &error, NULL);
    *message = g_strdup_printf ("%s failed: %s", what, error != NULL ? error->message : "?");
    GST_WARNING ("%s: %s", ws->name, *message);
    return FALSE;
  }
  return TRUE;
}

static void
session_reply_answer (SkWhipSession *ws)
{
  GstWebRTCSessionDescription *local = NULL;

  if (ws->answered)
    return;
  g_clear_handle_id (&ws->gather_timeout, g_source_remove);
  g_object_get (ws->webrtcbin, "local-description", &local, NULL);
  if (local == NULL) {
    session_fail_main (ws, (gpointer) "no local description");
    return;
  }
  g_autofree char *text = gst_sdp_message_as_text (local->sdp);
  gst_webrtc_session_description_free (local);
  ws->answered = TRUE;
  session_mark (ws, "answered");
  GST_INFO ("%s: answered (%s)", ws->name, ws->gathered ? "all candidates" : "gathering timed out");
  ws->callbacks.answered (ws, text, NULL, ws->user_data);
}

static void
gathering_done_main (SkWhipSession *ws, gpointer arg)
{
  ws->gathered = TRUE;
  if (ws->local_set)
    session_reply_answer (ws);
}

static void
on_gathering_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  GstWebRTCICEGatheringState state;

  g_object_get (webrtcbin, "ice-gathering-state", &state, NULL);
  if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
    session_call_on_main (ws, gathering_done_main, NULL, NULL);
}

static gboolean
on_gather_timeout (gpointer data)
{
  SkWhipSession *ws = data;

  ws->gather_timeout = 0;
  if (ws->local_set) {
    GST_WARNING ("%s: ICE gathering not complete after %u ms, answering anyway", ws->name,
                 SK_WHIP_GATHER_TIMEOUT_MS);
    session_reply_answer (ws);
  } else {
    session_fail_main (ws, (gpointer) "timed out creating the answer");
  }
  return G_SOURCE_REMOVE;
}

static void
connection_failed_main (SkWhipSession *ws, gpointer arg)
{
  session_fail_main (ws, arg);
}

static void
on_connection_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  GstWebRTCPeerConnectionState state;

  g_object_get (webrtcbin, "connection-state", &state, NULL);
  session_mark (ws, "connection-state %d", state);
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED) {
    g_mutex_lock (&ws->lock);
    if (!ws->closed && ws->receive_bypass == NULL)
      ws->receive_bypass = sk_webrtc_bypass_receive_queues (webrtcbin);
    g_mutex_unlock (&ws->lock);
  }
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_FAILED)
    session_call_on_main (ws, connection_failed_main, (gpointer) "the peer connection failed",
                          NULL);
}

static void
on_ice_connection_state (GstElement *webrtcbin, GParamSpec *pspec, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  GstWebRTCICEConnectionState state;

  g_object_get (webrtcbin, "ice-connection-state", &state, NULL);
  session_mark (ws, "ice-connection-state %d", state);
}

/* The first packet of an SSRC tells its jitter buffer whether to ask for lost packets: webrtcbin
 * (1.22) gives every jitter buffer of a bundle the NACK setting of the first m-line's
 * transceiver, whichever kind that is. */
static GstPadProbeReturn
on_first_rtp (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  gint nack_pt = GPOINTER_TO_INT (user_data);
  guint8 header[2];

  if (gst_buffer_extract (GST_PAD_PROBE_INFO_BUFFER (info), 0, header, 2) == 2) {
    g_autoptr (GstObject) jitterbuffer = gst_pad_get_parent (pad);
    if (jitterbuffer != NULL)
      g_object_set (jitterbuffer, "do-retransmission", (header[1] & 0x7f) == nack_pt, NULL);
  }
  return GST_PAD_PROBE_REMOVE;
}

/* Any element of the pipeline, webrtcbin's insides included. */
static void
on_deep_element_added (GstBin *bin, GstBin *sub_bin, GstElement *element, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  GstElementFactory *factory = gst_element_get_factory (element);
  const char *name = factory != NULL ? GST_OBJECT_NAME (factory) : "";

  if (g_str_equal (name, "rtpsession") && ws->nack_pt >= 0) {
    sk_webrtc_prompt_feedback (element);
    return;
  }
  /* rtpbin makes a jitter buffer for an SSRC when its first packet arrives. */
  if (!g_str_equal (name, "rtpjitterbuffer"))
    return;
  session_mark (ws, "first RTP of an SSRC");
  /* The jitter buffer holds a stream's first packet for its whole latency (100 ms), in case
   * older ones are still on their way; a few in sequence are proof enough that they are not.
   * The latency still covers reordering and retransmissions afterwards. */
  g_object_set (element, "faststart-min-packets", SK_WHIP_FASTSTART_PACKETS, NULL);
  g_autoptr (GstPad) sink = gst_element_get_static_pad (element, "sink");
  gst_pad_add_probe (sink, GST_PAD_PROBE_TYPE_BUFFER, on_first_rtp, GINT_TO_POINTER (ws->nack_pt),
                     NULL);
}

static void
local_set_main (SkWhipSession *ws, gpointer arg)
{
  ws->local_set = TRUE;
  if (ws->gathered)
    session_reply_answer (ws);
}

static void
on_local_set (GstPromise *promise, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  g_autofree char *message = NULL;

  if (promise_ok (promise, "set-local-description", ws, &message))
    session_call_on_main (ws, local_set_main, NULL, NULL);
  else
    session_fail (ws, message);
}

static void
on_answer_created (GstPromise *promise, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  GstWebRTCSessionDescription *answer = NULL;
  g_autofree char *message = NULL;

  if (promise_ok (promise, "create-answer", ws, &message))
    gst_structure_get (gst_promise_get_reply (promise), "answer",
                       GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &answer, NULL);
  if (answer == NULL) {
    session_fail (ws, message != NULL ? message : "webrtcbin made no answer");
    return;
  }
  GstPromise *next = gst_promise_new_with_change_func (on_local_set, session_ref (ws),
                                                       (GDestroyNotify)session_unref);
  g_signal_emit_by_name (ws->webrtcbin, "set-local-description", answer, next);
  gst_promise_unref (next);
  gst_webrtc_session_description_free (answer);
}

static void
on_remote_set (GstPromise *promise, gpointer user_data)
{
  SkWhipSession *ws = user_data;
  g_autofree char *message = NULL;
  gboolean ok = promise_ok (promise, "set-remote-description", ws, &message);

  if (!ok) {
    session_fail (ws, message);
    return;
  }
  GstPromise *next = gst_promise_new_with_change_func (on_answer_created, session_ref (ws),
                                                       (GDestroyNotify)session_unref);
  g_signal_emit_by_name (ws->webrtcbin, "create-answer", NULL, next);
  gst_promise_unref (next);
}

static gboolean
on_bus (GstBus *bus, GstMessage *message, gpointer user_data)
{
  SkWhipSession *ws = user_data;

  if (GST_MESSAGE_TYPE (message) == GST_MESSAGE_ERROR) {
    g_autoptr (GError) error = NULL;
    g_autofree char *debug = NULL;
    gst_message_parse_error (message, &error, &debug);
    GST_WARNING ("%s: error from %s: %s (%s)", ws->name,
                 GST_OBJECT_NAME (GST_MESSAGE_SRC (message)), error->message, debug ? debug : "");
    g_autofree char *text = g_strdup_printf ("pipeline error: %s", error->message);
    if (!ws->closed)
      session_fail_main (ws, text);
  }
  return G_SOURCE_CONTINUE;
}

static void
set_remote (SkWhipSession *ws, const GstSDPMessage *sdp)
{
  GstSDPMessage *copy = NULL;
  gst_sdp_message_copy (sdp, &copy);
  GstWebRTCSessionDescription *desc
      = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_OFFER, copy);
  GstPromise *promise = gst_promise_new_with_change_func (on_remote_set, session_ref (ws),
                                                          (GDestroyNotify)session_unref);
  g_signal_emit_by_name (ws->webrtcbin, "set-remote-description", desc, promise);
  /* webrtcbin holds its own reference until it replies; if it never does (closed first),
   * dropping ours lets the promise and the session ref in its destroy notify go. */
  gst_promise_unref (promise);
  gst_webrtc_session_description_free (desc);
}

/* A recvonly transceiver whose codec preferences are the offer's chosen payload type: the
 * answer then names exactly that codec. Added in m-line order, so webrtcbin associates each
 * with the offer's section of its kind. */
static gboolean
add_transceiver (SkWhipSession *ws, const SkWhipOffer *offer, const SkWhipOfferMedia *om,
                 GError **error)
{
  g_autoptr (GstCaps) caps = sk_whip_offer_get_caps (offer, om);
  GstWebRTCRTPTransceiver *trans = NULL;

  if (caps == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED, "no caps for payload type %u", om->pt);
    return FALSE;
  }
  g_signal_emit_by_name (ws->webrtcbin, "add-transceiver",
                         GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_RECVONLY, caps, &trans);
  if (trans == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "webrtcbin refused a transceiver");
    return FALSE;
  }
  /* Video lost on the way in is asked for again (RFC 4585 generic NACK; the publisher answers
   * with RTX or the packet itself), so one loss does not spoil the picture for every viewer
   * until the next keyframe. Audio is not: a late Opus packet is worth less than the delay. */
  const GstSDPMedia *m = gst_sdp_message_get_media (offer->sdp, om->mline);
  if (om == &offer->video && sk_webrtc_media_has_nack (m, om->pt)) {
    g_object_set (trans, "do-nack", TRUE, NULL);
    ws->nack_pt = om->pt;
  }
  gst_object_unref (trans);
  return TRUE;
}

/* The public WHIP endpoint's target: the registry's ingress session. */
static SkTrack *
ingress_publish_track (gpointer data, SkTrackKind kind, GstCaps *caps, GError **error)
{
  return sk_ingress_session_publish_track (data, kind, caps, error);
}

static void
ingress_publishing (gpointer data)
{
  sk_ingress_session_set_publishing (data);
}

static void
ingress_media_received (gpointer data)
{
  sk_ingress_session_media_received (data);
}

static void
ingress_input_info (gpointer data, const SkInputInfo *info)
{
  sk_ingress_session_set_input_info (data, info);
}

static gboolean
ingress_transcode_video (gpointer data)
{
  return sk_ingress_session_get_transcode (data) == SK_TRANSCODE_ALWAYS;
}

static const SkWhipSessionTarget ingress_target = {
  .transcode_video = ingress_transcode_video,
  .publish_track = ingress_publish_track,
  .publishing = ingress_publishing,
  .media_received = ingress_media_received,
  .input_info = ingress_input_info,
};

SkWhipSession *
sk_whip_session_new (const char *name, const SkWhipOffer *offer, SkIngressSession *ingress,
                     const SkConfig *config, const SkWhipSessionCallbacks *callbacks,
                     gpointer user_data, GError **error)
{
  return sk_whip_session_new_for_target (name, offer, &ingress_target, ingress, GST_CLOCK_TIME_NONE,
                                         config, callbacks, user_data, error);
}

GstClockTime
sk_whip_session_get_base_time (SkWhipSession *ws)
{
  return ws->base_time;
}

SkWhipSession *
sk_whip_session_new_for_target (const char *name, const SkWhipOffer *offer,
                                const SkWhipSessionTarget *target, gpointer data,
                                GstClockTime base_time, const SkConfig *config,
                                const SkWhipSessionCallbacks *callbacks, gpointer user_data,
                                GError **error)
{
  static gsize debug_init = 0;
  if (g_once_init_enter (&debug_init)) {
    GST_DEBUG_CATEGORY_INIT (sk_whip_debug, "sk-whip", 0, "streamkeeper WHIP ingest");
    g_once_init_leave (&debug_init, 1);
  }

  SkWhipSession *ws = g_new0 (SkWhipSession, 1);
  ws->refcount = 1;
  ws->nack_pt = -1;
  ws->name = g_strdup (name);
  ws->context = g_main_context_ref_thread_default ();
  ws->target = *target;
  ws->target_data = data;
  ws->config = config;
  ws->callbacks = *callbacks;
  ws->user_data = user_data;
  session_mark (ws, "offer");
  g_mutex_init (&ws->lock);
  for (guint i = 0; i < G_N_ELEMENTS (ws->media); i++) {
    ws->media[i].session = ws;
    ws->media[i].kind = i;
    ws->media[i].pending = g_ptr_array_new_with_free_func ((GDestroyNotify)gst_buffer_unref);
    ws->media[i].last_pts = GST_CLOCK_TIME_NONE;
  }
  ws->media[SK_TRACK_KIND_VIDEO].codec = offer->video.codec;
  ws->media[SK_TRACK_KIND_VIDEO].expected = offer->video.mline >= 0;
  ws->media[SK_TRACK_KIND_VIDEO].transcode
      = target->transcode_video != NULL && target->transcode_video (data);
  ws->media[SK_TRACK_KIND_AUDIO].codec = offer->audio.codec;
  ws->media[SK_TRACK_KIND_AUDIO].expected = offer->audio.mline >= 0;

  ws->pipeline = gst_object_ref_sink (gst_pipeline_new (name));
  /* The system clock and a base time of our choosing: a publisher's next session can continue
   * this one's running time. */
  g_autoptr (GstClock) clock = gst_system_clock_obtain ();
  gst_pipeline_use_clock (GST_PIPELINE (ws->pipeline), clock);
  ws->base_time = GST_CLOCK_TIME_IS_VALID (base_time) ? base_time : gst_clock_get_time (clock);
  gst_element_set_start_time (ws->pipeline, GST_CLOCK_TIME_NONE);
  gst_element_set_base_time (ws->pipeline, ws->base_time);
  GstElement *webrtcbin = gst_element_factory_make ("webrtcbin", "webrtc");
  if (webrtcbin == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "webrtcbin is not available");
    sk_whip_session_free (ws);
    return NULL;
  }
  ws->webrtcbin = gst_object_ref (webrtcbin);
  sk_webrtc_use_own_srtp (webrtcbin);
  gst_bin_add (GST_BIN (ws->pipeline), webrtcbin);
  gst_util_set_object_arg (G_OBJECT (webrtcbin), "bundle-policy", "max-bundle");
  /* A live ingest: a small jitter buffer keeps glass-to-glass latency low on good links. */
  g_object_set (webrtcbin, "latency", 100u, NULL);
  if (config->stun_servers != NULL && config->stun_servers[0] != NULL)
    g_object_set (webrtcbin, "stun-server", config->stun_servers[0], NULL);
  sk_webrtc_configure_ice (webrtcbin, (const char *const *)config->ice_addresses,
                           config->ice_port_min, config->ice_port_max);

  /* Transceivers in the offer's m-line order. */
  const SkWhipOfferMedia *first = &offer->video, *second = &offer->audio;
  if (offer->audio.mline >= 0
      && (offer->video.mline < 0 || offer->audio.mline < offer->video.mline)) {
    first = &offer->audio;
    second = &offer->video;
  }
  if ((first->mline >= 0 && !add_transceiver (ws, offer, first, error))
      || (second->mline >= 0 && !add_transceiver (ws, offer, second, error))) {
    sk_whip_session_free (ws);
    return NULL;
  }

  g_autoptr (GstBus) bus = gst_pipeline_get_bus (GST_PIPELINE (ws->pipeline));
  ws->bus_watch = gst_bus_add_watch_full (bus, G_PRIORITY_DEFAULT, on_bus, session_ref (ws),
                                          (GDestroyNotify)session_unref);
  g_signal_connect_data (webrtcbin, "pad-added", G_CALLBACK (on_pad_added), session_ref (ws),
                         closure_unref, 0);
  g_signal_connect_data (webrtcbin, "notify::ice-gathering-state", G_CALLBACK (on_gathering_state),
                         session_ref (ws), closure_unref, 0);
  g_signal_connect_data (webrtcbin, "notify::connection-state", G_CALLBACK (on_connection_state),
                         session_ref (ws), closure_unref, 0);
  g_signal_connect_data (webrtcbin, "notify::ice-connection-state",
                         G_CALLBACK (on_ice_connection_state), session_ref (ws), closure_unref, 0);
  g_signal_connect_data (ws->pipeline, "deep-element-added", G_CALLBACK (on_deep_element_added),
                         session_ref (ws), closure_unref, 0);

  if (gst_element_set_state (ws->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "the WHIP pipeline did not start");
    sk_whip_session_free (ws);
    return NULL;
  }
  set_remote (ws, offer->sdp);
  ws->gather_timeout = g_timeout_add (SK_WHIP_GATHER_TIMEOUT_MS, on_gather_timeout, ws);
  ws->tick_id = g_timeout_add (SK_WHIP_TICK_MS, on_tick, ws);
  return ws;
}

void
sk_whip_session_add_candidate (SkWhipSession *ws, guint mline, const char *candidate)
{
  g_signal_emit_by_name (ws->webrtcbin, "add-ice-candidate", mline, candidate);
}

gboolean
sk_whip_session_restart_ice (SkWhipSession *ws, const char *ufrag, const char *pwd,
                             char **local_ufrag, char **local_pwd, char **local_candidates,
                             GError **error)
{
  g_autofree char *new_ufrag = NULL, *new_pwd = NULL;

  if (!ws->answered) {
    g_set_error (error, SK_ERROR, SK_ERROR_CONFLICT, "the session is not answered yet");
    return FALSE;
  }
  if (!sk_webrtc_ice_restart (ws->webrtcbin, &new_ufrag, &new_pwd, error))
    return FALSE;
  if (!sk_webrtc_ice_set_remote_credentials (ws->webrtcbin, ufrag, pwd, error))
    return FALSE;
  GST_INFO ("%s: ICE restarted (remote ufrag %s, local ufrag %s)", ws->name, ufrag, new_ufrag);
  *local_ufrag = g_steal_pointer (&new_ufrag);
  *local_pwd = g_steal_pointer (&new_pwd);
  *local_candidates = sk_webrtc_ice_get_local_candidates (ws->webrtcbin);
  return TRUE;
}

void
sk_whip_session_free (SkWhipSession *ws)
{
  if (ws == NULL)
    return;
  g_mutex_lock (&ws->lock);
  ws->closed = TRUE;
  SkWebrtcReceiveBypass *receive_bypass = g_steal_pointer (&ws->receive_bypass);
  g_mutex_unlock (&ws->lock);
  /* Its thread pushes into the pipeline like a streaming thread; it ends while all is running. */
  sk_webrtc_receive_bypass_free (receive_bypass);
  /* The room keeps the track after us: no keyframe request may reach this session now. */
  for (guint i = 0; i < G_N_ELEMENTS (ws->media); i++)
    if (ws->media[i].track != NULL)
      sk_track_set_keyframe_func (ws->media[i].track, NULL, NULL, NULL);
  g_clear_handle_id (&ws->gather_timeout, g_source_remove);
  g_clear_handle_id (&ws->tick_id, g_source_remove);
  g_clear_handle_id (&ws->bus_watch, g_source_remove);
  if (ws->webrtcbin != NULL)
    g_signal_handlers_disconnect_by_data (ws->webrtcbin, ws);
  if (ws->pipeline != NULL)
    g_signal_handlers_disconnect_by_data (ws->pipeline, ws);
  /* Synchronously: after this no streaming thread pushes into a track. */
  if (ws->pipeline != NULL)
    gst_element_set_state (ws->pipeline, GST_STATE_NULL);
  for (guint i = 0; i < G_N_ELEMENTS (ws->media); i++) {
    SkWhipMedia *m = &ws->media[i];
    g_mutex_lock (&ws->lock);
    g_clear_pointer (&m->track, sk_track_unref);
    if (m->pending != NULL)
      g_ptr_array_set_size (m->pending, 0);
    g_mutex_unlock (&ws->lock);
  }
  session_unref (ws);
}
