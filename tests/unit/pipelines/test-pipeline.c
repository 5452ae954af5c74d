/*
 * Ingress pipeline tests: FLV files made by ffmpeg are fed tag by tag, as the RTMP server
 * would, and what reaches the SkTracks is checked (real GStreamer elements throughout).
 */
#include <gst/gst.h>
#include <string.h>

#include "common/sk-common.h"
#include "pipelines/sk-flv.h"
#include "pipelines/sk-pipeline.h"
#include "flv-file.h"

static char *tmp_dir;
static char *file_bf0, *file_bf2, *file_audio, *file_video, *file_mp3, *file_444;

typedef struct {
  GMutex lock; /* sink callbacks run on streaming threads */
  SkTrack *tracks[2];
  GstCaps *caps[2];
  guint track_ready_calls[2];
  guint buffers[2];
  guint keyframes, keyframes_with_params;
  guint access_unit_delimiters; /* video buffers holding one: none should reach a track */
  gboolean first_video_seen, first_video_is_key;
  GstClockTime last_video_pts;
  gboolean video_pts_monotonic;
  guint publishing;
  guint info_calls;
  SkInputInfo info;
  guint errors;
  char *error;
  gboolean freed; /* set right after sk_ingress_pipeline_free */
  guint calls_after_free;
} Ctx;

static void
ctx_init (Ctx *ctx)
{
  memset (ctx, 0, sizeof *ctx);
  g_mutex_init (&ctx->lock);
  ctx->video_pts_monotonic = TRUE;
  ctx->last_video_pts = GST_CLOCK_TIME_NONE;
}

static void
ctx_clear (Ctx *ctx)
{
  for (int i = 0; i < 2; i++) {
    g_clear_pointer (&ctx->tracks[i], sk_track_unref);
    gst_clear_caps (&ctx->caps[i]);
  }
  sk_input_info_clear (&ctx->info);
  g_free (ctx->error);
  g_mutex_clear (&ctx->lock);
}

/* Which NAL unit types a byte-stream access unit holds (bit per type). */
static guint32
nal_types (GstBuffer *buf)
{
  GstMapInfo map;
  guint32 types = 0;
  gst_buffer_map (buf, &map, GST_MAP_READ);
  for (gsize i = 0; i + 3 < map.size; i++) {
    if (map.data[i] == 0 && map.data[i + 1] == 0 && map.data[i + 2] == 1) {
      types |= 1u << (map.data[i + 3] & 0x1f);
      i += 2;
    }
  }
  gst_buffer_unmap (buf, &map);
  return types;
}

static void
on_sink_buffer (SkTrack *track, GstBuffer *buf, gpointer user_data)
{
  Ctx *ctx = user_data;
  SkTrackKind kind = sk_track_get_kind (track);
  g_mutex_lock (&ctx->lock);
  ctx->buffers[kind]++;
  if (kind == SK_TRACK_KIND_VIDEO) {
    gboolean key = !GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
    if (!ctx->first_video_seen) {
      ctx->first_video_seen = TRUE;
      ctx->first_video_is_key = key;
    }
    guint32 t = nal_types (buf);
    if (t & (1 << 9))
      ctx->access_unit_delimiters++;
    if (key) {
      ctx->keyframes++;
      if ((t & (1 << 7)) && (t & (1 << 8)) && (t & (1 << 5)))
        ctx->keyframes_with_params++;
    }
    GstClockTime pts = GST_BUFFER_PTS (buf);
    if (!GST_CLOCK_TIME_IS_VALID (pts)
        || (GST_CLOCK_TIME_IS_VALID (ctx->last_video_pts) && pts <= ctx->last_video_pts))
      ctx->video_pts_monotonic = FALSE;
    ctx->last_video_pts = pts;
  }
  g_mutex_unlock (&ctx->lock);
}

static SkTrack *
on_track_ready (SkIngressPipeline *p, SkTrackKind kind, GstCaps *caps, gpointer user_data)
{
  Ctx *ctx = user_data;
  if (ctx->freed)
    ctx->calls_after_free++;
  ctx->track_ready_calls[kind]++;
  gst_caps_replace (&ctx->caps[kind], caps);
  g_autofree char *sid = g_strdup_printf ("TR_%s", sk_track_kind_to_string (kind));
  SkTrack *track = sk_track_new (kind, sid, caps);
  sk_track_add_sink (track, on_sink_buffer, NULL, ctx, NULL);
  ctx->tracks[kind] = track;
  return track;
}

static void
on_publishing (SkIngressPipeline *p, gpointer user_data)
{
  Ctx *ctx = user_data;
  if (ctx->freed)
    ctx->calls_after_free++;
  ctx->publishing++;
}

static void
on_input_info (SkIngressPipeline *p, const SkInputInfo *info, gpointer user_data)
{
  Ctx *ctx = user_data;
  if (ctx->freed)
    ctx->calls_after_free++;
  ctx->info_calls++;
  sk_input_info_clear (&ctx->info);
  ctx->info = *info;
  ctx->info.video_codec = g_strdup (info->video_codec);
  ctx->info.audio_codec = g_strdup (info->audio_codec);
}

static void
on_error (SkIngressPipeline *p, const char *message, gpointer user_data)
{
  Ctx *ctx = user_data;
  if (ctx->freed)
    ctx->calls_after_free++;
  ctx->errors++;
  g_free (ctx->error);
  ctx->error = g_strdup (message);
}

static const SkIngressPipelineCallbacks callbacks = {
  .track_ready = on_track_ready,
  .publishing = on_publishing,
  .input_info = on_input_info,
  .error = on_error,
};

static SkIngressPipeline *
new_pipeline (Ctx *ctx, SkTranscodeMode mode)
{
  g_autoptr (GError) error = NULL;
  SkIngressPipeline *p = sk_ingress_pipeline_new_flv ("test", mode, NULL, &callbacks, ctx, &error);
  g_assert_no_error (error);
  g_assert_nonnull (p);
  return p;
}

/* Converts a legacy AVC video tag to its enhanced RTMP 'avc1' form. */
static GBytes *
to_enhanced_avc1 (GBytes *legacy)
{
  gsize size;
  const guint8 *d = g_bytes_get_data (legacy, &size);
  g_assert_cmpuint (size, >=, 5);
  guint8 frame_type = (d[0] >> 4) & 7, packet = d[1];
  GByteArray *out = g_byte_array_new ();
  guint8 head[5] = { 0x80 | frame_type << 4, 'a', 'v', 'c', '1' };
  if (packet == SK_FLV_AVC_SEQUENCE_HEADER) {
    head[0] |= SK_FLV_EX_SEQUENCE_START;
    g_byte_array_append (out, head, 5);
  } else if (d[2] == 0 && d[3] == 0 && d[4] == 0) {
    head[0] |= SK_FLV_EX_CODED_FRAMES_X;
    g_byte_array_append (out, head, 5);
  } else {
    head[0] |= SK_FLV_EX_CODED_FRAMES;
    g_byte_array_append (out, head, 5);
    g_byte_array_append (out, d + 2, 3);
  }
  g_byte_array_append (out, d + 5, size - 5);
  return g_byte_array_free_to_bytes (out);
}

/* Feeds @path's tags as RTMP would; @enhanced rewrites video to enhanced RTMP 'avc1',
 * @skip_script drops onMetaData (so the pipeline cannot know which kinds to expect). */
static void
feed_file_full (SkIngressPipeline *p, const char *path, gboolean enhanced, gboolean skip_script)
{
  g_autoptr (GPtrArray) tags = flv_file_read (path);
  g_assert_nonnull (tags);
  for (guint i = 0; i < tags->len; i++) {
    FlvFileTag *t = tags->pdata[i];
    if (skip_script && t->type == SK_FLV_TAG_SCRIPT)
      continue;
    g_autoptr (GBytes) data = enhanced && t->type == SK_FLV_TAG_VIDEO ? to_enhanced_avc1 (t->data)
                                                                      : g_bytes_ref (t->data);
    gsize size;
    const guint8 *d = g_bytes_get_data (data, &size);
    g_autoptr (GError) error = NULL;
    g_assert_true (sk_ingress_pipeline_push_flv_tag (p, t->type, t->timestamp_ms, d, size, &error));
    g_assert_no_error (error);
  }
}

static void
feed_file (SkIngressPipeline *p, const char *path, gboolean enhanced)
{
  feed_file_full (p, path, enhanced, FALSE);
}

static gboolean
counts_reached (Ctx *ctx, guint video, guint audio)
{
  g_mutex_lock (&ctx->lock);
  gboolean done = ctx->buffers[0] >= video && ctx->buffers[1] >= audio;
  g_mutex_unlock (&ctx->lock);
  return done;
}

/* Iterates the default context until @video/@audio buffers arrived (or @max_ms passed),
 * then a little longer so late or duplicate callbacks would show. */
static void
wait_for (Ctx *ctx, guint video, guint audio, guint max_ms)
{
  gint64 deadline = g_get_monotonic_time () + max_ms * G_TIME_SPAN_MILLISECOND;
  while (!counts_reached (ctx, video, audio) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, FALSE) || (g_usleep (2000), TRUE);
  gint64 settle = g_get_monotonic_time () + 300 * G_TIME_SPAN_MILLISECOND;
  while (g_get_monotonic_time () < settle)
    g_main_context_iteration (NULL, FALSE) || (g_usleep (2000), TRUE);
}

static void
assert_video_caps (Ctx *ctx)
{
  g_assert_nonnull (ctx->caps[SK_TRACK_KIND_VIDEO]);
  GstStructure *s = gst_caps_get_structure (ctx->caps[SK_TRACK_KIND_VIDEO], 0);
  g_assert_cmpstr (gst_structure_get_name (s), ==, "video/x-h264");
  g_assert_cmpstr (gst_structure_get_string (s, "stream-format"), ==, "byte-stream");
  g_assert_cmpstr (gst_structure_get_string (s, "alignment"), ==, "au");
  int w = 0, h = 0;
  g_assert_true (gst_structure_get_int (s, "width", &w));
  g_assert_true (gst_structure_get_int (s, "height", &h));
  g_assert_cmpint (w, ==, 640);
  g_assert_cmpint (h, ==, 360);
  g_assert_cmpstr (sk_track_get_codec (ctx->tracks[SK_TRACK_KIND_VIDEO]), ==, "H264");
}

static void
assert_audio_caps (Ctx *ctx)
{
  g_assert_nonnull (ctx->caps[SK_TRACK_KIND_AUDIO]);
  GstStructure *s = gst_caps_get_structure (ctx->caps[SK_TRACK_KIND_AUDIO], 0);
  g_assert_cmpstr (gst_structure_get_name (s), ==, "audio/x-opus");
  g_assert_cmpstr (sk_track_get_codec (ctx->tracks[SK_TRACK_KIND_AUDIO]), ==, "opus");
}

static void
assert_video_info (Ctx *ctx)
{
  g_assert_cmpuint (ctx->info_calls, >=, 1);
  g_assert_cmpstr (ctx->info.video_codec, ==, "H264");
  g_assert_cmpuint (ctx->info.width, ==, 640);
  g_assert_cmpuint (ctx->info.height, ==, 360);
  g_assert_cmpfloat (ctx->info.fps, >, 29.5);
  g_assert_cmpfloat (ctx->info.fps, <, 30.5);
}

static void
assert_audio_info (Ctx *ctx)
{
  g_assert_cmpstr (ctx->info.audio_codec, ==, "AAC");
  g_assert_cmpuint (ctx->info.sample_rate, ==, 44100);
  g_assert_cmpuint (ctx->info.channels, ==, 1);
}

#define SKIP_WITHOUT(file)                                                                         \
  if (!(file)) {                                                                                   \
    g_test_skip ("ffmpeg could not make the test media");                                          \
    return;                                                                                        \
  }

static void
run_passthrough (gboolean enhanced)
{
  SKIP_WITHOUT (file_bf0);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_bf0, enhanced);
  wait_for (&ctx, 90, 70, 10000);

  g_assert_false (sk_ingress_pipeline_is_transcoding (p));
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_VIDEO], ==, 1);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_AUDIO], ==, 1);
  assert_video_caps (&ctx);
  assert_audio_caps (&ctx);
  /* Passthrough: every access unit, the 3 IDRs (-g 30), each with SPS and PPS in front. */
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], ==, 90);
  g_assert_true (ctx.first_video_is_key);
  g_assert_cmpuint (ctx.keyframes, ==, 3);
  g_assert_cmpuint (ctx.keyframes_with_params, ==, 3);
  g_assert_cmpuint (ctx.access_unit_delimiters, ==, 0);
  g_assert_true (ctx.video_pts_monotonic);
  /* 3 s of Opus in 40 ms frames: ~75 (the encoder may hold the last few). */
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_AUDIO], >=, 70);
  g_assert_cmpuint (ctx.publishing, ==, 1);
  g_assert_cmpuint (ctx.errors, ==, 0);
  assert_video_info (&ctx);
  assert_audio_info (&ctx);
  g_assert_false (ctx.info.video_has_bframes);
  g_assert_cmpuint (ctx.info.video_bitrate_bps, >, 0);

  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

static void
test_passthrough (void)
{
  run_passthrough (FALSE);
}

static void
test_enhanced_avc1 (void)
{
  run_passthrough (TRUE);
}

static void
test_transcode_bframes (void)
{
  SKIP_WITHOUT (file_bf2);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_bf2, FALSE);
  /* The decoder keeps its reorder delay without EOS: not every frame comes out. */
  wait_for (&ctx, 80, 70, 20000);

  g_assert_true (sk_ingress_pipeline_is_transcoding (p));
  assert_video_caps (&ctx);
  assert_audio_caps (&ctx);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], >=, 80);
  g_assert_true (ctx.first_video_is_key);
  g_assert_cmpuint (ctx.keyframes, >=, 1);
  g_assert_cmpuint (ctx.keyframes_with_params, ==, ctx.keyframes);
  g_assert_cmpuint (ctx.access_unit_delimiters, ==, 0);
  /* Re-encoded without B-frames: decode order is presentation order. */
  g_assert_true (ctx.video_pts_monotonic);
  g_assert_cmpuint (ctx.publishing, ==, 1);
  g_assert_cmpuint (ctx.errors, ==, 0);
  assert_video_info (&ctx);
  g_assert_true (ctx.info.video_has_bframes);

  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

static void
test_forced_modes (void)
{
  SKIP_WITHOUT (file_bf0);
  SKIP_WITHOUT (file_bf2);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_ALWAYS);
  feed_file (p, file_bf0, FALSE);
  wait_for (&ctx, 60, 0, 20000);
  g_assert_true (sk_ingress_pipeline_is_transcoding (p));
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], >=, 60);
  g_assert_cmpuint (ctx.keyframes_with_params, ==, ctx.keyframes);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);

  ctx_init (&ctx);
  p = new_pipeline (&ctx, SK_TRANSCODE_NEVER);
  feed_file (p, file_bf2, FALSE);
  wait_for (&ctx, 90, 0, 10000);
  g_assert_false (sk_ingress_pipeline_is_transcoding (p));
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], ==, 90);
  g_assert_true (ctx.info.video_has_bframes);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

static void
test_audio_only (void)
{
  SKIP_WITHOUT (file_audio);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_audio, FALSE);
  wait_for (&ctx, 0, 70, 10000);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_VIDEO], ==, 0);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_AUDIO], ==, 1);
  assert_audio_caps (&ctx);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_AUDIO], >=, 70);
  g_assert_cmpuint (ctx.publishing, ==, 1);
  assert_audio_info (&ctx);
  g_assert_null (ctx.info.video_codec);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

static void
test_video_only (void)
{
  SKIP_WITHOUT (file_video);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_video, FALSE);
  wait_for (&ctx, 90, 0, 10000);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_VIDEO], ==, 1);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_AUDIO], ==, 0);
  assert_video_caps (&ctx);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], ==, 90);
  g_assert_cmpuint (ctx.publishing, ==, 1);
  assert_video_info (&ctx);
  g_assert_null (ctx.info.audio_codec);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

/* Without onMetaData an audio-only stream starts once 1.5 s of audio showed no video. */
static void
test_no_metadata (void)
{
  SKIP_WITHOUT (file_audio);
  SKIP_WITHOUT (file_video);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file_full (p, file_audio, FALSE, TRUE);
  wait_for (&ctx, 0, 70, 10000);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_VIDEO], ==, 0);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_AUDIO], >=, 70);
  g_assert_cmpuint (ctx.publishing, ==, 1);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);

  ctx_init (&ctx);
  p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file_full (p, file_video, FALSE, TRUE);
  wait_for (&ctx, 90, 0, 10000);
  g_assert_cmpuint (ctx.track_ready_calls[SK_TRACK_KIND_AUDIO], ==, 0);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], ==, 90);
  g_assert_cmpuint (ctx.publishing, ==, 1);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

/* High 4:4:4 has no B-frames here but browsers cannot decode it: AUTO re-encodes. */
static void
test_transcode_444 (void)
{
  SKIP_WITHOUT (file_444);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_444, FALSE);
  wait_for (&ctx, 60, 0, 20000);
  g_assert_true (sk_ingress_pipeline_is_transcoding (p));
  GstStructure *s = gst_caps_get_structure (ctx.caps[SK_TRACK_KIND_VIDEO], 0);
  g_assert_cmpstr (gst_structure_get_string (s, "chroma-format"), ==, "4:2:0");
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_VIDEO], >=, 60);
  g_assert_false (ctx.info.video_has_bframes);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

/* A failure inside the running pipeline (an encoder fragment that does not produce Opus)
 * reaches the error callback once, and later pushes fail. */
static void
test_runtime_error (void)
{
  SKIP_WITHOUT (file_audio);
  SkConfig config = { 0 };
  config.audio_encoder = (char *)"identity";
  Ctx ctx;
  ctx_init (&ctx);
  g_autoptr (GError) error = NULL;
  SkIngressPipeline *p
      = sk_ingress_pipeline_new_flv ("err", SK_TRANSCODE_AUTO, &config, &callbacks, &ctx, &error);
  g_assert_no_error (error);
  g_autoptr (GPtrArray) tags = flv_file_read (file_audio);
  gboolean failed = FALSE;
  gint64 deadline = g_get_monotonic_time () + 10 * G_TIME_SPAN_SECOND;
  for (guint i = 0; !failed && g_get_monotonic_time () < deadline; i = (i + 1) % tags->len) {
    FlvFileTag *t = tags->pdata[i];
    gsize size;
    const guint8 *d = g_bytes_get_data (t->data, &size);
    failed = !sk_ingress_pipeline_push_flv_tag (p, t->type, t->timestamp_ms, d, size, &error);
    while (g_main_context_iteration (NULL, FALSE))
      ;
  }
  g_assert_true (failed);
  g_assert_nonnull (error);
  g_assert_cmpuint (ctx.errors, ==, 1);
  g_assert_nonnull (ctx.error);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_AUDIO], ==, 0);
  wait_for (&ctx, 0, 0, 0);
  g_assert_cmpuint (ctx.errors, ==, 1);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

static void
test_mp3 (void)
{
  SKIP_WITHOUT (file_mp3);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_mp3, FALSE);
  wait_for (&ctx, 0, 70, 10000);
  assert_audio_caps (&ctx);
  g_assert_cmpuint (ctx.buffers[SK_TRACK_KIND_AUDIO], >=, 70);
  g_assert_cmpstr (ctx.info.audio_codec, ==, "MP3");
  g_assert_cmpuint (ctx.publishing, ==, 1);
  sk_ingress_pipeline_free (p);
  ctx_clear (&ctx);
}

static void
test_unsupported (void)
{
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  g_autoptr (GError) error = NULL;
  /* Enhanced RTMP HEVC sequence start (what OBS 30 sends with HEVC selected). */
  static const guint8 hevc[] = { 0x90, 'h', 'v', 'c', '1', 0x01, 0x01, 0x60, 0x00, 0x00 };
  g_assert_false (sk_ingress_pipeline_push_flv_tag (p, 9, 0, hevc, sizeof hevc, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED);
  g_assert_cmpstr (error->message, ==,
                   "HEVC over enhanced RTMP is not supported; configure the encoder for H.264");
  g_clear_error (&error);
  /* The session is over: anything later fails too. */
  static const guint8 aac_config[] = { 0xaf, 0x00, 0x12, 0x08 };
  g_assert_false (
      sk_ingress_pipeline_push_flv_tag (p, 8, 0, aac_config, sizeof aac_config, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  sk_ingress_pipeline_free (p);

  /* Speex audio. */
  p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  static const guint8 speex[] = { 0xb2, 0x01, 0x02 };
  g_assert_false (sk_ingress_pipeline_push_flv_tag (p, 8, 0, speex, sizeof speex, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "Speex"));
  g_clear_error (&error);
  sk_ingress_pipeline_free (p);

  /* Malformed AVC sequence header. */
  p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  static const guint8 bad_avc[] = { 0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00 };
  g_assert_false (sk_ingress_pipeline_push_flv_tag (p, 9, 0, bad_avc, sizeof bad_avc, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);
  sk_ingress_pipeline_free (p);

  wait_for (&ctx, 0, 0, 0);
  g_assert_cmpuint (ctx.track_ready_calls[0] + ctx.track_ready_calls[1], ==, 0);
  ctx_clear (&ctx);
}

static void
test_free_cancels_callbacks (void)
{
  SKIP_WITHOUT (file_bf0);
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p = new_pipeline (&ctx, SK_TRANSCODE_AUTO);
  feed_file (p, file_bf0, FALSE);
  /* Let the streaming thread queue track_ready calls without running them. */
  g_usleep (300 * G_TIME_SPAN_MILLISECOND);
  sk_ingress_pipeline_free (p);
  ctx.freed = TRUE;
  wait_for (&ctx, 0, 0, 0);
  g_assert_cmpuint (ctx.calls_after_free, ==, 0);
  ctx_clear (&ctx);
}

static void
test_bad_encoder (void)
{
  SkConfig config = { 0 };
  config.video_encoder = (char *)"no-such-element-here bitrate=1";
  g_autoptr (GError) error = NULL;
  Ctx ctx;
  ctx_init (&ctx);
  SkIngressPipeline *p
      = sk_ingress_pipeline_new_flv ("bad", SK_TRANSCODE_AUTO, &config, &callbacks, &ctx, &error);
  g_assert_null (p);
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "video_encoder"));
  ctx_clear (&ctx);
}

static void
test_mode_strings (void)
{
  SkTranscodeMode m;
  g_assert_true (sk_transcode_mode_from_string ("never", &m));
  g_assert_cmpint (m, ==, SK_TRANSCODE_NEVER);
  g_assert_true (sk_transcode_mode_from_string ("always", &m));
  g_assert_cmpint (m, ==, SK_TRANSCODE_ALWAYS);
  g_assert_true (sk_transcode_mode_from_string ("auto", &m));
  g_assert_cmpint (m, ==, SK_TRANSCODE_AUTO);
  g_assert_false (sk_transcode_mode_from_string ("sometimes", &m));
  g_assert_false (sk_transcode_mode_from_string (NULL, &m));
  g_assert_cmpstr (sk_transcode_mode_to_string (SK_TRANSCODE_NEVER), ==, "never");
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("sk-pipeline-XXXXXX", NULL);
  file_bf0 = flv_file_make (tmp_dir, "bf0.flv", FLV_AV_IN,
                            "-c:v libx264 -pix_fmt yuv420p -bf 0 -g 30 -c:a aac");
  file_bf2 = flv_file_make (tmp_dir, "bf2.flv", FLV_AV_IN,
                            "-c:v libx264 -pix_fmt yuv420p -bf 2 -g 30 -c:a aac");
  file_audio = flv_file_make (tmp_dir, "audio.flv", FLV_AUDIO_IN, "-c:a aac");
  file_video = flv_file_make (tmp_dir, "video.flv", FLV_VIDEO_IN,
                              "-c:v libx264 -pix_fmt yuv420p -bf 0 -g 30");
  file_444 = flv_file_make (tmp_dir, "444.flv", FLV_VIDEO_IN,
                            "-c:v libx264 -pix_fmt yuv444p -bf 0 -g 30");
  file_mp3 = flv_file_make (tmp_dir, "mp3.flv", FLV_AUDIO_IN, "-c:a libmp3lame -ar 44100");

  g_test_add_func ("/pipeline/mode-strings", test_mode_strings);
  g_test_add_func ("/pipeline/passthrough", test_passthrough);
  g_test_add_func ("/pipeline/enhanced-avc1", test_enhanced_avc1);
  g_test_add_func ("/pipeline/transcode-bframes", test_transcode_bframes);
  g_test_add_func ("/pipeline/forced-modes", test_forced_modes);
  g_test_add_func ("/pipeline/audio-only", test_audio_only);
  g_test_add_func ("/pipeline/video-only", test_video_only);
  g_test_add_func ("/pipeline/no-metadata", test_no_metadata);
  g_test_add_func ("/pipeline/transcode-444", test_transcode_444);
  g_test_add_func ("/pipeline/runtime-error", test_runtime_error);
  g_test_add_func ("/pipeline/mp3", test_mp3);
  g_test_add_func ("/pipeline/unsupported", test_unsupported);
  g_test_add_func ("/pipeline/free-cancels-callbacks", test_free_cancels_callbacks);
  g_test_add_func ("/pipeline/bad-encoder", test_bad_encoder);
  int ret = g_test_run ();

  char **files[] = { &file_bf0, &file_bf2, &file_audio, &file_video, &file_mp3, &file_444 };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++) {
    if (*files[i])
      g_unlink (*files[i]);
    g_clear_pointer (files[i], g_free);
  }
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return ret;
}
