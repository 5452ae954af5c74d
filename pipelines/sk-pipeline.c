/*
 * streamkeeper: the ingress pipeline (see sk-pipeline.h).
 *
 * Threads: push_flv_tag, the bus watch and every user callback run on the creator's main
 * context. flvdemux pushes on appsrc's streaming thread; the transcode branch has its own
 * queue thread. Appsink callbacks (streaming threads) feed the SkTrack directly; anything
 * that must reach the user goes through an idle source on the main context, holding a
 * refcounted guard that sk_ingress_pipeline_free cancels.
 *
 * Start-up: tags are held until the set of outputs and the passthrough/transcode choice are
 * known (sequence headers seen, a few frames' composition times looked at, or 1.5 s of
 * stream time without the other kind); then the FLV header and the held tags go to appsrc.
 */
#include "pipelines/sk-pipeline.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <math.h>
#include <string.h>

#include "common/sk-common.h"
#include "pipelines/sk-flv.h"

GST_DEBUG_CATEGORY_STATIC (sk_pipeline_debug);
#define GST_CAT_DEFAULT sk_pipeline_debug

#define MAX_TAG_SIZE 0xffffff               /* FLV DataSize is 24 bits */
#define MAX_HELD_BYTES (16 * 1024 * 1024)   /* tags held before the start decision */
#define MAX_QUEUED_BYTES (32 * 1024 * 1024) /* appsrc backlog before we give up */
#define MAX_PENDING_OUTPUT_BUFFERS 600      /* output buffers held until track_ready answers */
#define KIND_WAIT_MS 1500                   /* stream time to wait for a kind that never comes */
#define DECISION_FRAMES 10
#define DECISION_MS 1000
#define FPS_RING 32
#define RATE_BUCKETS 8
#define RATE_WINDOW_S 5
#define H264_NAL_AUD 9

GQuark
sk_pipelines_error_quark (void)
{
  return g_quark_from_static_string ("sk-pipelines-error-quark");
}

gboolean
sk_transcode_mode_from_string (const char *s, SkTranscodeMode *out)
{
  static const char *const names[] = { "auto", "always", "never" };
  for (guint i = 0; s && i < G_N_ELEMENTS (names); i++) {
    if (g_ascii_strcasecmp (s, names[i]) == 0) {
      *out = (SkTranscodeMode)i;
      return TRUE;
    }
  }
  return FALSE;
}

const char *
sk_transcode_mode_to_string (SkTranscodeMode mode)
{
  switch (mode) {
    case SK_TRANSCODE_ALWAYS:
      return "always";
    case SK_TRANSCODE_NEVER:
      return "never";
    case SK_TRANSCODE_AUTO:
    default:
      return "auto";
  }
}

void
sk_input_info_clear (SkInputInfo *info)
{
  g_clear_pointer (&info->video_codec, g_free);
  g_clear_pointer (&info->audio_codec, g_free);
  memset (info, 0, sizeof *info);
}

static void
input_info_copy (SkInputInfo *dst, const SkInputInfo *src)
{
  *dst = *src;
  dst->video_codec = g_strdup (src->video_codec);
  dst->audio_codec = g_strdup (src->audio_codec);
}

/* ---- guard and main-context calls --------------------------------------------------------- */

/* Outlives the pipeline while calls are queued; only touched on the main context except
 * for the refcount. */
typedef struct {
  gint ref;
  gboolean cancelled;
  SkIngressPipeline *self;
} Guard;

static Guard *
guard_ref (Guard *g)
{
  g_atomic_int_inc (&g->ref);
  return g;
}

static void
guard_unref (Guard *g)
{
  if (g_atomic_int_dec_and_test (&g->ref))
    g_free (g);
}

typedef enum {
  CALL_TRACK_READY,
  CALL_PUBLISHING,
  CALL_INPUT_INFO,
} CallType;

typedef struct {
  Guard *guard;
  CallType type;
  SkTrackKind kind;
  GstCaps *caps;
  SkInputInfo info;
} Call;

static void
call_free (gpointer data)
{
  Call *call = data;
  guard_unref (call->guard);
  gst_clear_caps (&call->caps);
  sk_input_info_clear (&call->info);
  g_free (call);
}

/* ---- outputs ------------------------------------------------------------------------------ */

typedef enum {
  OUTPUT_WAIT_CAPS,
  OUTPUT_WAIT_TRACK,
  OUTPUT_LIVE,
  OUTPUT_DROPPED,
} OutputState;

typedef struct {
  SkIngressPipeline *self;
  SkTrackKind kind;
  GMutex lock;
  OutputState state;
  GstCaps *caps;  /* latest caps seen on the appsink */
  SkTrack *track; /* owned ref once LIVE */
  GQueue held;    /* buffers while WAIT_TRACK */
  gint done;      /* atomic: flowed into its track, or dropped */
  gint flowed;    /* atomic */
} Output;

typedef struct {
  guint32 sec;
  guint64 bytes;
} RateBucket;

struct _SkIngressPipeline {
  char *name;
  SkTranscodeMode mode;
  SkIngressPipelineCallbacks cb;
  gpointer user_data;
  GMainContext *context;
  Guard *guard;

  GstElement *pipeline, *appsrc, *demux;
  GstElement *video_encoder, *audio_encoder; /* parsed bins, owned until added */
  GSource *bus_source;

  /* Main-context state below. */
  char *failure; /* set once the pipeline has failed: every later push fails with it */
  gint failure_code;
  gboolean started;
  GQueue held_tags; /* GstBuffer, FLV tags before the start decision */
  gsize held_bytes;
  gboolean have_first_ts;
  guint32 first_ts;
  guint32 last_rel_ts;

  gboolean have_meta;
  SkFlvMetadata meta;

  gboolean video_seen, audio_seen;
  gboolean video_configured, audio_configured;
  guint8 audio_format;
  gboolean have_sps;
  SkH264Sps sps;

  /* AUTO decision. */
  guint decision_frames;
  guint32 decision_first_ts;
  gboolean saw_cto;
  gboolean decided, transcode;
  gboolean want_video, want_audio; /* fixed at start; read by streaming threads after */
  GstClockTime rt_offset;          /* pipeline running time when the first tag went in */

  Output video, audio;
  gint publishing_sent;

  /* Input figures. */
  SkInputInfo info;
  gboolean info_sent;
  guint64 info_sent_at_ms;
  guint64 sent_video_bps, sent_audio_bps;
  double sent_fps;
  guint32 fps_ring[FPS_RING];
  guint fps_count;
  RateBucket rate[2][RATE_BUCKETS]; /* [0] video, [1] audio; one bucket per second */
};

static void dispatch (SkIngressPipeline *self, Call *call);

static Output *
output_for (SkIngressPipeline *self, SkTrackKind kind)
{
  return kind == SK_TRACK_KIND_VIDEO ? &self->video : &self->audio;
}

static void
output_init (SkIngressPipeline *self, Output *out, SkTrackKind kind)
{
  out->self = self;
  out->kind = kind;
  g_mutex_init (&out->lock);
  g_queue_init (&out->held);
}

static void
output_clear (Output *out)
{
  g_queue_clear_full (&out->held, (GDestroyNotify)gst_buffer_unref);
  gst_clear_caps (&out->caps);
  g_clear_pointer (&out->track, sk_track_unref);
  g_mutex_clear (&out->lock);
}

/* Any thread: tell the user once every output that will exist has media flowing. */
static void
maybe_publishing (SkIngressPipeline *self)
{
  if ((self->want_video && !g_atomic_int_get (&self->video.done))
      || (self->want_audio && !g_atomic_int_get (&self->audio.done)))
    return;
  if (!g_atomic_int_get (&self->video.flowed) && !g_atomic_int_get (&self->audio.flowed))
    return;
  if (!g_atomic_int_compare_and_exchange (&self->publishing_sent, 0, 1))
    return;
  Call *call = g_new0 (Call, 1);
  call->type = CALL_PUBLISHING;
  dispatch (self, call);
}

/* Called with out->lock held. */
static void
output_push_locked (Output *out, GstBuffer *buf)
{
  sk_track_push (out->track, buf);
  gst_buffer_unref (buf);
  if (!g_atomic_int_get (&out->flowed)) {
    g_atomic_int_set (&out->flowed, 1);
    g_atomic_int_set (&out->done, 1);
  }
}

static GstClockTime
to_running_time (SkIngressPipeline *self, const GstSegment *segment, GstClockTime ts)
{
  if (!GST_CLOCK_TIME_IS_VALID (ts) || !segment || segment->format != GST_FORMAT_TIME)
    return ts;
  guint64 rt;
  int sign = gst_segment_to_running_time_full (segment, GST_FORMAT_TIME, ts, &rt);
  if (sign > 0)
    return rt + self->rt_offset;
  if (sign < 0 && rt <= self->rt_offset)
    return self->rt_offset - rt; /* a DTS slightly before the segment start */
  return sign < 0 ? 0 : GST_CLOCK_TIME_NONE;
}

/* h264parse puts an access unit delimiter in front of every byte-stream access unit it
 * outputs (GStreamer 1.22 has no property against it). In RTP that delimiter is a packet of
 * its own per frame, which the receiver discards: a tenth of a stream's packets, each costing
 * a trip through the subscriber's RTP session, SRTP and a sendmsg. Trims it off (no copy). */
static void
strip_leading_aud (GstBuffer *buf)
{
  guint8 head[16];
  gsize n = gst_buffer_extract (buf, 0, head, sizeof head);
  gsize nal = n >= 5 && head[0] == 0 && head[1] == 0 && head[2] == 0 && head[3] == 1 ? 4
              : n >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 1               ? 3
                                                                                     : 0;
  if (nal == 0 || (head[nal] & 0x1f) != H264_NAL_AUD)
    return;
  for (gsize i = nal + 1; i + 2 < n; i++) {
    if (head[i] == 0 && head[i + 1] == 0 && head[i + 2] == 1) {
      gsize next = head[i - 1] == 0 ? i - 1 : i;
      gst_buffer_resize (buf, (gssize)next, -1);
      return;
    }
  }
}

/* Streaming thread. */
static GstFlowReturn
on_new_sample (GstAppSink *sink, gpointer user_data)
{
  Output *out = user_data;
  SkIngressPipeline *self = out->self;
  g_autoptr (GstSample) sample = gst_app_sink_pull_sample (sink);
  if (!sample)
    return GST_FLOW_EOS;
  GstBuffer *in = gst_sample_get_buffer (sample);
  GstCaps *caps = gst_sample_get_caps (sample);
  if (!in || !caps)
    return GST_FLOW_OK;

  /* A metadata-only copy: the media memory is shared, not copied. */
  GstBuffer *buf = gst_buffer_copy (in);
  const GstSegment *segment = gst_sample_get_segment (sample);
  GST_BUFFER_PTS (buf) = to_running_time (self, segment, GST_BUFFER_PTS (in));
  GST_BUFFER_DTS (buf) = to_running_time (self, segment, GST_BUFFER_DTS (in));
  if (out->kind == SK_TRACK_KIND_VIDEO)
    strip_leading_aud (buf);

  g_mutex_lock (&out->lock);
  gboolean new_caps = !out->caps || !gst_caps_is_equal (out->caps, caps);
  if (new_caps)
    gst_caps_replace (&out->caps, caps);
  switch (out->state) {
    case OUTPUT_WAIT_CAPS: {
      GST_INFO ("%s: %s output caps %" GST_PTR_FORMAT, self->name,
                sk_track_kind_to_string (out->kind), caps);
      out->state = OUTPUT_WAIT_TRACK;
      SK_TIMING ("pipeline %s: %s output caps", self->name, sk_track_kind_to_string (out->kind));
      Call *call = g_new0 (Call, 1);
      call->type = CALL_TRACK_READY;
      call->kind = out->kind;
      call->caps = gst_caps_ref (caps);
      dispatch (self, call);
    }
      G_GNUC_FALLTHROUGH;
    case OUTPUT_WAIT_TRACK:
      if (out->held.length < MAX_PENDING_OUTPUT_BUFFERS)
        g_queue_push_tail (&out->held, buf);
      else
        gst_buffer_unref (buf);
      break;
    case OUTPUT_LIVE:
      if (new_caps)
        sk_track_set_caps (out->track, caps);
      output_push_locked (out, buf);
      break;
    case OUTPUT_DROPPED:
      gst_buffer_unref (buf);
      break;
  }
  gboolean check = out->state == OUTPUT_LIVE;
  g_mutex_unlock (&out->lock);
  if (check)
    maybe_publishing (self);
  return GST_FLOW_OK;
}

/* A subscriber's RTCP thread asks the transcoded video for a keyframe: x264enc (any
 * GstVideoEncoder) honours an upstream GstForceKeyUnit on its src pad. Passthrough video
 * installs no func: RTMP has no way to ask the encoder upstream of us. */
static void
output_force_key_unit (SkTrack *track, gpointer user_data)
{
  Output *out = user_data;
  g_autoptr (GstElement) enc = gst_bin_get_by_name (GST_BIN (out->self->pipeline), "venc");
  if (enc == NULL)
    return;
  g_autoptr (GstPad) src = gst_element_get_static_pad (enc, "src");
  GstStructure *s
      = gst_structure_new ("GstForceKeyUnit", "all-headers", G_TYPE_BOOLEAN, TRUE, NULL);
  if (src != NULL)
    gst_pad_send_event (src, gst_event_new_custom (GST_EVENT_CUSTOM_UPSTREAM, s));
  else
    gst_structure_free (s);
  GST_DEBUG ("%s: keyframe forced for a subscriber", out->self->name);
}

/* Main context: the user answered which track an output feeds. */
static void
output_set_track (Output *out, SkTrack *track, GstCaps *announced)
{
  if (track != NULL && out->kind == SK_TRACK_KIND_VIDEO && out->self->transcode)
    sk_track_set_keyframe_func (track, output_force_key_unit, out, NULL);
  g_mutex_lock (&out->lock);
  if (track) {
    out->track = sk_track_ref (track);
    if (out->caps && !gst_caps_is_equal (out->caps, announced))
      sk_track_set_caps (track, out->caps);
    out->state = OUTPUT_LIVE;
    GstBuffer *buf;
    while ((buf = g_queue_pop_head (&out->held)))
      output_push_locked (out, buf);
  } else {
    out->state = OUTPUT_DROPPED;
    g_queue_clear_full (&out->held, (GDestroyNotify)gst_buffer_unref);
    g_atomic_int_set (&out->done, 1);
  }
  g_mutex_unlock (&out->lock);
}

static gboolean
call_run (gpointer data)
{
  Call *call = data;
  Guard *guard = call->guard;
  if (guard->cancelled)
    return G_SOURCE_REMOVE;
  SkIngressPipeline *self = guard->self;
  switch (call->type) {
    case CALL_TRACK_READY: {
      SkTrack *track = NULL;
      if (self->cb.track_ready)
        track = self->cb.track_ready (self, call->kind, call->caps, self->user_data);
      if (guard->cancelled) /* the callback freed us */
        return G_SOURCE_REMOVE;
      output_set_track (output_for (self, call->kind), track, call->caps);
      maybe_publishing (self);
      break;
    }
    case CALL_PUBLISHING:
      GST_INFO ("%s: publishing", self->name);
      if (self->cb.publishing)
        self->cb.publishing (self, self->user_data);
      break;
    case CALL_INPUT_INFO:
      if (self->cb.input_info)
        self->cb.input_info (self, &call->info, self->user_data);
      break;
  }
  return G_SOURCE_REMOVE;
}

/* Always through an idle source, even from the main context itself: a user callback must
 * never run inside push_flv_tag (it may free the pipeline). Same-priority idles run FIFO. */
static void
dispatch (SkIngressPipeline *self, Call *call)
{
  call->guard = guard_ref (self->guard);
  GSource *source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, call_run, call, call_free);
  g_source_set_static_name (source, "sk-pipeline-call");
  g_source_attach (source, self->context);
  g_source_unref (source);
}

/* ---- failure ------------------------------------------------------------------------------ */

/* Streaming thread or main: report through the bus so there is one error path. */
static void post_error (SkIngressPipeline *self, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static void
post_error (SkIngressPipeline *self, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autoptr (GError) err = g_error_new_literal (SK_ERROR, SK_ERROR_INTERNAL, msg);
  gst_element_post_message (self->pipeline,
                            gst_message_new_error (GST_OBJECT (self->pipeline), err, NULL));
}

static gboolean
on_bus_message (GstBus *bus, GstMessage *msg, gpointer user_data)
{
  SkIngressPipeline *self = user_data;
  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_ERROR: {
      g_autoptr (GError) err = NULL;
      g_autofree char *debug = NULL;
      gst_message_parse_error (msg, &err, &debug);
      GST_WARNING ("%s: error from %s: %s (%s)", self->name, GST_OBJECT_NAME (msg->src),
                   err->message, debug ? debug : "");
      if (self->failure)
        break;
      self->failure = g_strdup (err->message);
      self->failure_code = SK_ERROR_INTERNAL;
      gst_element_set_state (self->pipeline, GST_STATE_NULL);
      if (self->cb.error)
        self->cb.error (self, err->message, self->user_data);
      /* The callback may have freed us; the bus source is destroyed then, so stop here. */
      return G_SOURCE_CONTINUE;
    }
    case GST_MESSAGE_WARNING: {
      g_autoptr (GError) err = NULL;
      gst_message_parse_warning (msg, &err, NULL);
      GST_WARNING ("%s: warning from %s: %s", self->name, GST_OBJECT_NAME (msg->src), err->message);
      break;
    }
    default:
      break;
  }
  return G_SOURCE_CONTINUE;
}

/* ---- branches (built on the demuxer's streaming thread) ------------------------------------ */

static GstElement *
make (const char *factory, const char *name)
{
  GstElement *e = gst_element_factory_make (factory, name);
  if (!e)
    GST_ERROR ("element %s is not available", factory);
  return e;
}

static GstElement *
make_appsink (Output *out, const char *caps_str)
{
  GstElement *sink = make ("appsink", out->kind == SK_TRACK_KIND_VIDEO ? "vsink" : "asink");
  if (!sink)
    return NULL;
  g_autoptr (GstCaps) caps = gst_caps_from_string (caps_str);
  /* No clock sync and no preroll: buffers leave as soon as they are made. */
  g_object_set (sink, "caps", caps, "sync", FALSE, "async", FALSE, "enable-last-sample", FALSE,
                "qos", FALSE, NULL);
  GstAppSinkCallbacks cbs = { .new_sample = on_new_sample };
  gst_app_sink_set_callbacks (GST_APP_SINK (sink), &cbs, out, NULL);
  return sink;
}

/* Adds @elems (NULL-terminated count @n) to the pipeline, links them in order and starts
 * them. On failure everything is released. */
static gboolean
add_chain (SkIngressPipeline *self, GstElement **elems, guint n, GstPad *src_pad)
{
  for (guint i = 0; i < n; i++) {
    if (!elems[i]) {
      for (guint j = 0; j < n; j++)
        if (elems[j])
          gst_object_unref (gst_object_ref_sink (elems[j]));
      return FALSE;
    }
  }
  for (guint i = 0; i < n; i++)
    gst_bin_add (GST_BIN (self->pipeline), elems[i]);
  for (guint i = 0; i + 1 < n; i++) {
    if (!gst_element_link (elems[i], elems[i + 1])) {
      GST_ERROR ("%s: cannot link %s to %s", self->name, GST_ELEMENT_NAME (elems[i]),
                 GST_ELEMENT_NAME (elems[i + 1]));
      return FALSE;
    }
  }
  /* Start from the sink so no element pushes into a stopped one. */
  for (guint i = n; i-- > 0;)
    gst_element_sync_state_with_parent (elems[i]);
  g_autoptr (GstPad) sink_pad = gst_element_get_static_pad (elems[0], "sink");
  return gst_pad_link (src_pad, sink_pad) == GST_PAD_LINK_OK;
}

/* ---- the transcode path, shared with WHIP ------------------------------------------------- */

/* The configured gst-launch fragment, or the built-in one (no config, or the key left empty). */
static const char *
encoder_description (const char *configured, const char *builtin)
{
  return configured != NULL && configured[0] != '\0' ? configured : builtin;
}

GstElement *
sk_pipeline_make_video_encoder (const SkConfig *config, GError **error)
{
  const char *desc = encoder_description (config != NULL ? config->video_encoder : NULL,
                                          SK_CONFIG_DEFAULT_VIDEO_ENCODER);
  g_autoptr (GError) local = NULL;
  GstElement *bin = gst_parse_bin_from_description (desc, TRUE, &local);
  if (bin == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "video_encoder \"%s\": %s", desc,
                 local->message);
    return NULL;
  }
  g_object_set (bin, "name", "venc", NULL);
  return gst_object_ref_sink (bin);
}

GstElement *
sk_pipeline_make_video_transcoder (const char *name, const char *decoder, GstElement *encoder,
                                   GError **error)
{
  g_return_val_if_fail (decoder != NULL && GST_IS_ELEMENT (encoder), NULL);

  /* The queue moves decoding and encoding off the input's thread, so audio never waits. */
  GstElement *queue = gst_element_factory_make ("queue", "vqueue");
  GstElement *dec = gst_element_factory_make (decoder, "vdec");
  GstElement *conv = gst_element_factory_make ("videoconvert", "vconv");
  GstElement *format = gst_element_factory_make ("capsfilter", "vformat");
  GstElement *reparse = gst_element_factory_make ("h264parse", "vreparse");
  GstElement *elems[] = { queue, dec, conv, format, encoder, reparse };

  for (guint i = 0; i < G_N_ELEMENTS (elems); i++) {
    if (elems[i] == NULL) {
      g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "cannot transcode: %s is not installed",
                   i == 1 ? decoder : "a core element");
      for (guint j = 0; j < G_N_ELEMENTS (elems); j++)
        if (elems[j] != NULL && elems[j] != encoder)
          gst_object_unref (gst_object_ref_sink (elems[j]));
      return NULL;
    }
  }
  g_object_set (queue, "max-size-buffers", 0, "max-size-bytes", 0, "max-size-time",
                (guint64)2 * GST_SECOND, NULL);
  /* Frame threading would add a frame of latency per thread. */
  if (g_object_class_find_property (G_OBJECT_GET_CLASS (dec), "thread-type") != NULL)
    gst_util_set_object_arg (G_OBJECT (dec), "thread-type", "slice");
  /* 4:2:0 8 bit: the only format every WebRTC H.264 decoder takes. */
  g_autoptr (GstCaps) i420 = gst_caps_from_string ("video/x-raw,format=I420");
  g_object_set (format, "caps", i420, NULL);
  /* SPS/PPS before every IDR, so any keyframe starts a decodable stream. */
  g_object_set (reparse, "config-interval", -1, NULL);

  GstElement *bin = gst_bin_new (name);
  /* The bin takes its own reference to @encoder (already sunk: that is the caller's). */
  gst_bin_add_many (GST_BIN (bin), queue, dec, conv, format, encoder, reparse, NULL);
  if (!gst_element_link_many (queue, dec, conv, format, encoder, reparse, NULL)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "cannot link the %s transcoder", decoder);
    gst_object_unref (gst_object_ref_sink (bin));
    return NULL;
  }
  g_autoptr (GstPad) sink = gst_element_get_static_pad (queue, "sink");
  g_autoptr (GstPad) src = gst_element_get_static_pad (reparse, "src");
  gst_element_add_pad (bin, gst_ghost_pad_new ("sink", sink));
  gst_element_add_pad (bin, gst_ghost_pad_new ("src", src));
  return bin;
}

static gboolean
build_video_branch (SkIngressPipeline *self, GstPad *pad)
{
  Output *out = &self->video;
  const char *out_caps = "video/x-h264,stream-format=byte-stream,alignment=au";
  GstElement *parse = make ("h264parse", "vparse");
  if (!self->transcode) {
    GstElement *sink = make_appsink (out, out_caps);
    if (parse)
      g_object_set (parse, "config-interval", -1, NULL);
    GstElement *chain[] = { parse, sink };
    return add_chain (self, chain, G_N_ELEMENTS (chain), pad);
  }
  GstElement *enc = g_steal_pointer (&self->video_encoder);
  g_autoptr (GError) error = NULL;
  GstElement *transcoder
      = sk_pipeline_make_video_transcoder ("vtranscode", "avdec_h264", enc, &error);
  g_clear_pointer (&enc, gst_object_unref); /* the transcoder took its own reference */
  if (transcoder == NULL)
    GST_ERROR ("%s: %s", self->name, error->message);
  GstElement *sink = make_appsink (out, out_caps);
  GstElement *chain[] = { parse, transcoder, sink };
  return add_chain (self, chain, G_N_ELEMENTS (chain), pad);
}

static gboolean
build_audio_branch (SkIngressPipeline *self, GstPad *pad)
{
  Output *out = &self->audio;
  GstElement *parse, *dec;
  if (self->audio_format == SK_FLV_SOUND_MP3) {
    parse = make ("mpegaudioparse", "aparse");
    dec = gst_element_factory_make ("mpg123audiodec", "adec");
    if (!dec)
      dec = make ("avdec_mp3", "adec");
  } else {
    parse = make ("aacparse", "aparse");
    dec = make ("avdec_aac", "adec");
  }
  GstElement *conv = make ("audioconvert", "aconv");
  GstElement *resample = make ("audioresample", "aresample");
  GstElement *enc = g_steal_pointer (&self->audio_encoder);
  GstElement *sink = make_appsink (out, "audio/x-opus");
  GstElement *chain[] = { parse, dec, conv, resample, enc, sink };
  gboolean ok = add_chain (self, chain, G_N_ELEMENTS (chain), pad);
  g_clear_pointer (&enc, gst_object_unref); /* as in build_video_branch */
  return ok;
}

/* Streaming thread (flvdemux found a stream). */
static void
on_pad_added (GstElement *demux, GstPad *pad, gpointer user_data)
{
  SkIngressPipeline *self = user_data;
  g_autofree char *name = gst_pad_get_name (pad);
  gboolean ok = TRUE;
  if (g_str_equal (name, "video") && self->want_video)
    ok = build_video_branch (self, pad);
  else if (g_str_equal (name, "audio") && self->want_audio)
    ok = build_audio_branch (self, pad);
  else
    GST_INFO ("%s: ignoring demuxer pad %s", self->name, name);
  if (!ok)
    post_error (self, "could not build the %s branch of the ingress pipeline", name);
}

/* ---- input figures ------------------------------------------------------------------------ */

static void
rate_add (SkIngressPipeline *self, int kind, guint32 rel_ts, gsize bytes)
{
  guint32 sec = rel_ts / 1000;
  RateBucket *b = &self->rate[kind][sec % RATE_BUCKETS];
  if (b->sec != sec) {
    b->sec = sec;
    b->bytes = 0;
  }
  b->bytes += bytes;
}

/* Bits per second over the last complete seconds (up to RATE_WINDOW_S). */
static guint64
rate_get (SkIngressPipeline *self, int kind, guint32 rel_ts)
{
  guint32 now = rel_ts / 1000;
  guint window = MIN (now, RATE_WINDOW_S);
  if (window == 0)
    return 0;
  guint64 bytes = 0;
  for (guint i = 1; i <= window; i++) {
    RateBucket *b = &self->rate[kind][(now - i) % RATE_BUCKETS];
    if (b->sec == now - i)
      bytes += b->bytes;
  }
  return bytes * 8 / window;
}

static double
measured_fps (SkIngressPipeline *self)
{
  guint n = MIN (self->fps_count, FPS_RING);
  if (n < 8)
    return 0;
  guint32 newest = self->fps_ring[(self->fps_count - 1) % FPS_RING];
  guint32 oldest = self->fps_ring[(self->fps_count - n) % FPS_RING];
  if (newest <= oldest)
    return 0;
  return round ((n - 1) * 100000.0 / (newest - oldest)) / 100.0;
}

static gboolean
bitrate_moved (guint64 sent, guint64 now)
{
  guint64 diff = sent > now ? sent - now : now - sent;
  return diff * 10 > sent; /* more than 10% */
}

/* Main context: refresh SkInputInfo and tell the user if something changed. Bitrates alone
 * are reported at most every 2 s of stream time and only when they move by >10%. */
static void
update_info (SkIngressPipeline *self)
{
  SkInputInfo *info = &self->info;
  if (!info->video_codec && !info->audio_codec)
    return;
  gboolean changed = !self->info_sent;

  if (self->video_configured && self->have_sps) {
    if (info->width != self->sps.width || info->height != self->sps.height) {
      info->width = self->sps.width;
      info->height = self->sps.height;
      changed = TRUE;
    }
  } else if (self->have_meta && info->width == 0 && self->meta.width > 0 && self->meta.width < 65536
             && self->meta.height > 0 && self->meta.height < 65536) {
    info->width = self->meta.width;
    info->height = self->meta.height;
    changed = TRUE;
  }
  double fps = self->have_sps ? sk_h264_sps_get_fps (&self->sps) : 0;
  if (fps <= 0 || fps > 1000)
    fps = measured_fps (self);
  if (fps <= 0 && self->have_meta && self->meta.framerate > 0 && self->meta.framerate < 1000)
    fps = self->meta.framerate;
  if (fps > 0 && fabs (fps - self->sent_fps) >= 0.5) {
    info->fps = fps;
    self->sent_fps = fps;
    changed = TRUE;
  }
  if (info->video_has_bframes != self->saw_cto) {
    info->video_has_bframes = self->saw_cto;
    changed = TRUE;
  }

  info->video_bitrate_bps = rate_get (self, 0, self->last_rel_ts);
  info->audio_bitrate_bps = rate_get (self, 1, self->last_rel_ts);
  if ((self->last_rel_ts >= self->info_sent_at_ms + 2000
       || self->last_rel_ts < self->info_sent_at_ms)
      && (bitrate_moved (self->sent_video_bps, info->video_bitrate_bps)
          || bitrate_moved (self->sent_audio_bps, info->audio_bitrate_bps)))
    changed = TRUE;

  if (!changed)
    return;
  self->info_sent = TRUE;
  self->info_sent_at_ms = self->last_rel_ts;
  self->sent_video_bps = info->video_bitrate_bps;
  self->sent_audio_bps = info->audio_bitrate_bps;
  Call *call = g_new0 (Call, 1);
  call->type = CALL_INPUT_INFO;
  input_info_copy (&call->info, info);
  dispatch (self, call);
}

static void
set_codec (char **field, const char *codec)
{
  if (g_strcmp0 (*field, codec) != 0) {
    g_free (*field);
    *field = g_strdup (codec);
  }
}

/* ---- feeding ------------------------------------------------------------------------------ */

static gboolean fail (SkIngressPipeline *self, GError **error, gint code, const char *fmt, ...)
    G_GNUC_PRINTF (4, 5);

static gboolean
fail (SkIngressPipeline *self, GError **error, gint code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  GST_WARNING ("%s: %s", self->name, msg);
  if (!self->failure) {
    self->failure = g_strdup (msg);
    self->failure_code = code;
  }
  g_set_error_literal (error, SK_ERROR, code, msg);
  return FALSE;
}

/* One FLV tag (header + [legacy AVC header] + body + previous tag size) as a buffer. */
static GstBuffer *
make_tag (guint8 type, guint32 ts, const guint8 *prefix, gsize prefix_size, const guint8 *body,
          gsize body_size)
{
  gsize data_size = prefix_size + body_size;
  GstBuffer *buf = gst_buffer_new_allocate (NULL, 11 + data_size + 4, NULL);
  GstMapInfo map;
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  sk_flv_write_tag_header (map.data, type, ts, data_size);
  if (prefix_size)
    memcpy (map.data + 11, prefix, prefix_size);
  memcpy (map.data + 11 + prefix_size, body, body_size);
  sk_flv_write_previous_tag_size (map.data + 11 + data_size, data_size);
  gst_buffer_unmap (buf, &map);
  return buf;
}

static gboolean
appsrc_push (SkIngressPipeline *self, GstBuffer *buf, GError **error)
{
  if (gst_app_src_get_current_level_bytes (GST_APP_SRC (self->appsrc)) > MAX_QUEUED_BYTES) {
    gst_buffer_unref (buf);
    return fail (self, error, SK_ERROR_LIMIT, "the ingress pipeline cannot keep up with the input");
  }
  GstFlowReturn ret = gst_app_src_push_buffer (GST_APP_SRC (self->appsrc), buf);
  if (ret != GST_FLOW_OK)
    return fail (self, error, SK_ERROR_INTERNAL, "the ingress pipeline stopped (%s)",
                 gst_flow_get_name (ret));
  return TRUE;
}

static gboolean
auto_decision_ready (SkIngressPipeline *self)
{
  switch (self->mode) {
    case SK_TRANSCODE_ALWAYS:
      self->transcode = TRUE;
      return TRUE;
    case SK_TRANSCODE_NEVER:
      self->transcode = FALSE;
      return TRUE;
    case SK_TRANSCODE_AUTO:
    default:
      break;
  }
  /* A format browsers cannot decode (4:4:4, 10 bit, …) is re-encoded whatever its frames. */
  if (self->have_sps && !sk_h264_sps_is_webrtc_decodable (&self->sps)) {
    self->transcode = TRUE;
    return TRUE;
  }
  if (self->have_sps && sk_h264_sps_forbids_reordering (&self->sps)) {
    self->transcode = FALSE;
    return TRUE;
  }
  if (self->saw_cto) {
    self->transcode = TRUE;
    return TRUE;
  }
  if (self->decision_frames >= DECISION_FRAMES
      || (self->decision_frames > 0
          && self->last_rel_ts - self->decision_first_ts >= DECISION_MS)) {
    self->transcode = FALSE;
    return TRUE;
  }
  return FALSE;
}

/* Main context: once the outputs are known, write the FLV header and release held tags. */
static gboolean
maybe_start (SkIngressPipeline *self, gboolean force, GError **error)
{
  gboolean waited = self->last_rel_ts >= KIND_WAIT_MS || force;
  gboolean video_absent
      = !self->video_configured && ((self->have_meta && !self->meta.has_video_codec) || waited);
  gboolean audio_absent
      = !self->audio_configured && ((self->have_meta && !self->meta.has_audio_codec) || waited);

  if (self->video_configured && !self->decided) {
    self->decided = auto_decision_ready (self);
    if (!self->decided && force) {
      self->transcode = self->saw_cto;
      self->decided = TRUE;
    }
  }
  gboolean video_ready = (self->video_configured && self->decided) || video_absent;
  gboolean audio_ready = self->audio_configured || audio_absent;
  if (!video_ready || !audio_ready || (!self->video_configured && !self->audio_configured))
    return TRUE;

  self->want_video = self->video_configured;
  self->want_audio = self->audio_configured;
  self->started = TRUE;
  SK_TIMING ("pipeline %s: started at stream time %u ms (%u tags held)", self->name,
             self->last_rel_ts, g_queue_get_length (&self->held_tags));
  GST_INFO ("%s: starting with%s%s, video %s", self->name, self->want_video ? " video" : "",
            self->want_audio ? " audio" : "",
            !self->want_video ? "none"
            : self->transcode ? "transcoded"
                              : "passed through");
  if (!self->want_video)
    g_atomic_int_set (&self->video.done, 1);
  if (!self->want_audio)
    g_atomic_int_set (&self->audio.done, 1);

  guint8 header[13];
  sk_flv_write_file_header (header, self->want_audio, self->want_video);
  if (!appsrc_push (self, gst_buffer_new_memdup (header, sizeof header), error))
    return FALSE;
  GstBuffer *buf;
  while ((buf = g_queue_pop_head (&self->held_tags))) {
    if (!appsrc_push (self, buf, error))
      return FALSE;
  }
  self->held_bytes = 0;
  return TRUE;
}

static gboolean
handle_video (SkIngressPipeline *self, guint32 rel_ts, const guint8 *data, gsize size,
              GstBuffer **out, GError **error)
{
  SkFlvVideoTag tag;
  g_autoptr (GError) local = NULL;
  if (!sk_flv_parse_video_tag (data, size, &tag, &local))
    return fail (self, error, SK_ERROR_INVALID, "malformed video tag: %s", local->message);
  if (!sk_flv_video_tag_is_avc (&tag)) {
    const char *codec = sk_flv_video_codec_name (&tag);
    set_codec (&self->info.video_codec, codec);
    if (tag.is_ex_header)
      return fail (self, error, SK_ERROR_UNSUPPORTED,
                   "%s over enhanced RTMP is not supported; configure the encoder for H.264",
                   codec);
    return fail (self, error, SK_ERROR_UNSUPPORTED,
                 "video codec %s (FLV codec id %u) is not supported; configure the encoder "
                 "for H.264",
                 codec, tag.codec_id);
  }
  self->video_seen = TRUE;
  if (self->started && !self->want_video)
    return TRUE;

  if (sk_flv_video_tag_is_avc_config (&tag)) {
    SkFlvAvcConfig config;
    if (!sk_flv_parse_avc_config (tag.body, tag.body_size, &config, &local)
        || !sk_h264_parse_sps (config.sps, config.sps_size, &self->sps, &local))
      return fail (self, error, SK_ERROR_INVALID, "malformed H.264 sequence header: %s",
                   local->message);
    self->have_sps = TRUE;
    self->video_configured = TRUE;
    set_codec (&self->info.video_codec, "H264");
    GST_INFO ("%s: H.264 profile %u level %u %ux%u reorder %s%u", self->name, self->sps.profile_idc,
              self->sps.level_idc, self->sps.width, self->sps.height,
              self->sps.bitstream_restriction ? "" : "unknown/", self->sps.max_num_reorder_frames);
  } else if (sk_flv_video_tag_is_avc_frame (&tag)) {
    if (!self->video_configured)
      return TRUE; /* undecodable without its sequence header */
    if (tag.composition_time != 0 && !self->saw_cto) {
      self->saw_cto = TRUE;
      if (self->started && !self->transcode)
        GST_WARNING ("%s: B-frames appeared after H.264 passthrough was chosen", self->name);
    }
    if (self->decision_frames++ == 0)
      self->decision_first_ts = rel_ts;
    self->fps_ring[self->fps_count++ % FPS_RING] = rel_ts;
    rate_add (self, 0, rel_ts, size);
  } else {
    return TRUE; /* end of sequence, command frames: nothing flvdemux needs */
  }

  if (tag.is_ex_header) {
    /* Enhanced 'avc1' becomes a legacy AVC tag, which flvdemux understands. */
    gboolean key = tag.frame_type == SK_FLV_FRAME_KEY;
    guint8 legacy[5]
        = { (key ? 0x10 : 0x20) | SK_FLV_VIDEO_CODEC_AVC,
            sk_flv_video_tag_is_avc_config (&tag) ? SK_FLV_AVC_SEQUENCE_HEADER : SK_FLV_AVC_NALU,
            (guint32)tag.composition_time >> 16, (guint32)tag.composition_time >> 8,
            (guint32)tag.composition_time };
    *out = make_tag (SK_FLV_TAG_VIDEO, rel_ts, legacy, sizeof legacy, tag.body, tag.body_size);
  } else {
    *out = make_tag (SK_FLV_TAG_VIDEO, rel_ts, NULL, 0, data, size);
  }
  return TRUE;
}

static gboolean
handle_audio (SkIngressPipeline *self, guint32 rel_ts, const guint8 *data, gsize size,
              GstBuffer **out, GError **error)
{
  SkFlvAudioTag tag;
  g_autoptr (GError) local = NULL;
  if (!sk_flv_parse_audio_tag (data, size, &tag, &local))
    return fail (self, error, SK_ERROR_INVALID, "malformed audio tag: %s", local->message);
  const char *codec = sk_flv_audio_codec_name (&tag);
  if (tag.is_ex_header
      || (tag.sound_format != SK_FLV_SOUND_AAC && tag.sound_format != SK_FLV_SOUND_MP3)) {
    set_codec (&self->info.audio_codec, codec);
    return fail (self, error, SK_ERROR_UNSUPPORTED,
                 "audio codec %s%s is not supported; configure the encoder for AAC", codec,
                 tag.is_ex_header ? " over enhanced RTMP" : "");
  }
  if (self->audio_seen && tag.sound_format != self->audio_format)
    return fail (self, error, SK_ERROR_UNSUPPORTED, "audio codec changed mid-stream to %s", codec);
  self->audio_seen = TRUE;
  self->audio_format = tag.sound_format;
  if (self->started && !self->want_audio)
    return TRUE;

  if (tag.sound_format == SK_FLV_SOUND_AAC && tag.packet_type == SK_FLV_AAC_SEQUENCE_HEADER) {
    SkAacConfig asc;
    if (!sk_aac_parse_audio_specific_config (tag.body, tag.body_size, &asc, &local))
      return fail (self, error, SK_ERROR_INVALID, "malformed AAC sequence header: %s",
                   local->message);
    self->audio_configured = TRUE;
    set_codec (&self->info.audio_codec, "AAC");
    self->info.sample_rate = asc.sample_rate;
    self->info.channels = asc.channels ? asc.channels : (tag.sound_type ? 2 : 1);
  } else if (tag.sound_format == SK_FLV_SOUND_MP3 && !self->audio_configured) {
    /* MP3 needs no sequence header; its first frame configures it. */
    static const guint rates[4] = { 5512, 11025, 22050, 44100 };
    self->audio_configured = TRUE;
    set_codec (&self->info.audio_codec, "MP3");
    self->info.sample_rate = rates[tag.sound_rate];
    self->info.channels = tag.sound_type ? 2 : 1;
  } else if (!self->audio_configured) {
    return TRUE; /* raw AAC before its AudioSpecificConfig */
  }
  if (tag.sound_format != SK_FLV_SOUND_AAC || tag.packet_type == SK_FLV_AAC_RAW)
    rate_add (self, 1, rel_ts, size);
  *out = make_tag (SK_FLV_TAG_AUDIO, rel_ts, NULL, 0, data, size);
  return TRUE;
}

gboolean
sk_ingress_pipeline_push_flv_tag (SkIngressPipeline *self, guint8 tag_type, guint32 timestamp_ms,
                                  const guint8 *data, gsize size, GError **error)
{
  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  if (self->failure) {
    g_set_error_literal (error, SK_ERROR, self->failure_code, self->failure);
    return FALSE;
  }
  if (size > MAX_TAG_SIZE)
    return fail (self, error, SK_ERROR_TOO_LARGE, "FLV tag of %zu bytes exceeds the FLV limit",
                 size);

  /* Rebase so the stream starts at 0 in flvdemux; a tag slightly older than the first one
   * (audio/video interleaving) is clamped rather than wrapped. Metadata carries no media time
   * (stamped 0 even when the media that follows continues an earlier connection's clock, as
   * after a reconnect): the first audio or video tag sets the origin. */
  if (tag_type == SK_FLV_TAG_SCRIPT && !self->have_first_ts)
    timestamp_ms = 0;
  else if (!self->have_first_ts) {
    self->have_first_ts = TRUE;
    self->first_ts = timestamp_ms;
    SK_TIMING ("pipeline %s: first media tag", self->name);
    self->rt_offset = gst_element_get_current_running_time (self->pipeline);
    if (!GST_CLOCK_TIME_IS_VALID (self->rt_offset))
      self->rt_offset = 0;
  }
  gint32 delta = self->have_first_ts ? (gint32)(timestamp_ms - self->first_ts) : 0;
  guint32 rel_ts = delta < 0 ? 0 : (guint32)delta;
  if (rel_ts > self->last_rel_ts)
    self->last_rel_ts = rel_ts;

  GstBuffer *tag = NULL;
  switch (tag_type) {
    case SK_FLV_TAG_SCRIPT: {
      g_autoptr (GError) local = NULL;
      SkFlvMetadata meta;
      /* Metadata only informs; a broken one is not worth ending the stream for. */
      if (sk_flv_parse_metadata (data, size, &meta, &local)) {
        self->meta = meta;
        self->have_meta = TRUE;
      } else if (local) {
        GST_INFO ("%s: ignoring script data: %s", self->name, local->message);
      }
      break;
    }
    case SK_FLV_TAG_VIDEO:
      if (!handle_video (self, rel_ts, data, size, &tag, error))
        return FALSE;
      break;
    case SK_FLV_TAG_AUDIO:
      if (!handle_audio (self, rel_ts, data, size, &tag, error))
        return FALSE;
      break;
    default:
      return fail (self, error, SK_ERROR_INVALID, "unknown FLV tag type %u", tag_type);
  }

  if (tag) {
    if (self->started) {
      if (!appsrc_push (self, tag, error))
        return FALSE;
    } else {
      self->held_bytes += gst_buffer_get_size (tag);
      g_queue_push_tail (&self->held_tags, tag);
    }
  }
  if (!self->started && !maybe_start (self, self->held_bytes > MAX_HELD_BYTES, error))
    return FALSE;
  update_info (self);
  return TRUE;
}

gboolean
sk_ingress_pipeline_is_transcoding (SkIngressPipeline *self)
{
  return self->started && self->want_video && self->transcode;
}

guint
sk_ingress_pipeline_get_n_outputs (SkIngressPipeline *self)
{
  return self->started ? (guint)self->want_video + (guint)self->want_audio : 0;
}

/* ---- life cycle --------------------------------------------------------------------------- */

static GstElement *
parse_encoder (const char *desc, const char *what, GError **error)
{
  g_autoptr (GError) local = NULL;
  GstElement *bin = gst_parse_bin_from_description (desc, TRUE, &local);
  if (!bin) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "%s \"%s\": %s", what, desc, local->message);
    return NULL;
  }
  return gst_object_ref_sink (bin);
}

void
sk_pipeline_warm_up (const SkConfig *config)
{
  static const char *const factories[] = {
    "appsrc",         "flvdemux",       "h264parse",  "aacparse",     "avdec_aac",
    "mpegaudioparse", "mpg123audiodec", "avdec_h264", "audioconvert", "audioresample",
    "videoconvert",   "capsfilter",     "queue",      "appsink",
  };
  const char *aenc = encoder_description (config != NULL ? config->audio_encoder : NULL,
                                          SK_CONFIG_DEFAULT_AUDIO_ENCODER);
  gint64 start = g_get_monotonic_time ();

  for (guint i = 0; i < G_N_ELEMENTS (factories); i++) {
    GstElement *e = gst_element_factory_make (factories[i], NULL);
    if (e != NULL)
      gst_object_unref (gst_object_ref_sink (e));
  }
  /* The configured encoders (their errors are the first stream's to report). */
  GstElement *venc = sk_pipeline_make_video_encoder (config, NULL);
  if (venc != NULL)
    gst_object_unref (venc);
  GstElement *abin = parse_encoder (aenc, "audio_encoder", NULL);
  if (abin != NULL)
    gst_object_unref (abin);
  g_debug ("ingress pipeline plugins loaded in %" G_GINT64_FORMAT " ms",
           (g_get_monotonic_time () - start) / 1000);
}

SkIngressPipeline *
sk_ingress_pipeline_new_flv (const char *name, SkTranscodeMode mode, const SkConfig *config,
                             const SkIngressPipelineCallbacks *callbacks, gpointer user_data,
                             GError **error)
{
  static gsize debug_once;
  if (g_once_init_enter (&debug_once)) {
    if (!gst_is_initialized ())
      gst_init (NULL, NULL);
    GST_DEBUG_CATEGORY_INIT (sk_pipeline_debug, "sk-pipeline", 0, "streamkeeper ingress pipeline");
    g_once_init_leave (&debug_once, 1);
  }

  const char *aenc = encoder_description (config != NULL ? config->audio_encoder : NULL,
                                          SK_CONFIG_DEFAULT_AUDIO_ENCODER);
  g_autoptr (GstElement) video_encoder = sk_pipeline_make_video_encoder (config, error);
  if (!video_encoder)
    return NULL;
  g_autoptr (GstElement) audio_encoder = parse_encoder (aenc, "audio_encoder", error);
  if (!audio_encoder)
    return NULL;
  g_object_set (audio_encoder, "name", "aenc", NULL);

  g_autoptr (GstElement) pipeline = gst_pipeline_new (name);
  GstElement *src = gst_element_factory_make ("appsrc", "src");
  GstElement *demux = gst_element_factory_make ("flvdemux", "demux");
  if (!src || !demux) {
    g_clear_object (&src);
    g_clear_object (&demux);
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "appsrc or flvdemux is not installed");
    return NULL;
  }
  g_autoptr (GstCaps) caps = gst_caps_new_empty_simple ("video/x-flv");
  g_object_set (src, "caps", caps, "is-live", TRUE, "format", GST_FORMAT_BYTES, "stream-type",
                GST_APP_STREAM_TYPE_STREAM, "max-bytes", (guint64)MAX_QUEUED_BYTES, "block", FALSE,
                NULL);
  gst_bin_add_many (GST_BIN (pipeline), src, demux, NULL);
  if (!gst_element_link (src, demux)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "cannot link appsrc to flvdemux");
    return NULL;
  }

  SkIngressPipeline *self = g_new0 (SkIngressPipeline, 1);
  self->name = g_strdup (name ? name : "ingress");
  self->mode = mode;
  if (callbacks)
    self->cb = *callbacks;
  self->user_data = user_data;
  self->context = g_main_context_ref_thread_default ();
  self->guard = g_new0 (Guard, 1);
  self->guard->ref = 1;
  self->guard->self = self;
  self->pipeline = g_steal_pointer (&pipeline);
  self->appsrc = src;
  self->demux = demux;
  self->video_encoder = g_steal_pointer (&video_encoder);
  self->audio_encoder = g_steal_pointer (&audio_encoder);
  g_queue_init (&self->held_tags);
  output_init (self, &self->video, SK_TRACK_KIND_VIDEO);
  output_init (self, &self->audio, SK_TRACK_KIND_AUDIO);
  g_signal_connect (demux, "pad-added", G_CALLBACK (on_pad_added), self);

  g_autoptr (GstBus) bus = gst_element_get_bus (self->pipeline);
  self->bus_source = gst_bus_create_watch (bus);
  g_source_set_callback (self->bus_source, G_SOURCE_FUNC (on_bus_message), self, NULL);
  g_source_attach (self->bus_source, self->context);

  if (gst_element_set_state (self->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "the ingress pipeline did not start");
    sk_ingress_pipeline_free (self);
    return NULL;
  }
  GST_INFO ("%s: created (transcode %s)", self->name, sk_transcode_mode_to_string (mode));
  return self;
}

void
sk_ingress_pipeline_free (SkIngressPipeline *self)
{
  if (!self)
    return;
  self->guard->cancelled = TRUE;
  self->guard->self = NULL;
  /* Waits for a keyframe request in flight; none reaches our encoder after this. */
  if (self->video.track != NULL && self->transcode)
    sk_track_set_keyframe_func (self->video.track, NULL, NULL, NULL);
  if (self->bus_source) {
    g_source_destroy (self->bus_source);
    g_source_unref (self->bus_source);
  }
  /* Joins the streaming threads: no appsink callback runs after this. Only then may the
   * guard go, as those callbacks still queue calls that take a reference on it. */
  gst_element_set_state (self->pipeline, GST_STATE_NULL);
  gst_object_unref (self->pipeline);
  guard_unref (self->guard);
  g_clear_pointer (&self->video_encoder, gst_object_unref);
  g_clear_pointer (&self->audio_encoder, gst_object_unref);
  output_clear (&self->video);
  output_clear (&self->audio);
  g_queue_clear_full (&self->held_tags, (GDestroyNotify)gst_buffer_unref);
  sk_input_info_clear (&self->info);
  g_main_context_unref (self->context);
  g_free (self->failure);
  g_free (self->name);
  g_free (self);
}
