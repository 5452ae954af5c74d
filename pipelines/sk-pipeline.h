/*
 * streamkeeper: ingress pipelines. An FLV tag stream (from the RTMP server) goes
 *   appsrc ! flvdemux ! h264parse ! [passthrough | avdec_h264 ! <video_encoder>] ! appsink
 *                     ! aacparse ! avdec_aac ! audioconvert ! audioresample ! <audio_encoder>
 *                     ! appsink
 * and each appsink feeds one SkTrack. H.264 is passed through when WebRTC-safe (no B-frames:
 * every FLV composition-time offset is 0 and the profile allows it), else transcoded.
 * Any error ends the pipeline with a message via the error callback; never the daemon.
 */
#pragma once

#include <gst/gst.h>

#include "common/sk-config.h"
#include "rooms/sk-track.h"

G_BEGIN_DECLS

#define SK_PIPELINES_ERROR (sk_pipelines_error_quark ())
GQuark sk_pipelines_error_quark (void);

typedef enum {
  SK_TRANSCODE_AUTO,
  SK_TRANSCODE_ALWAYS,
  SK_TRANSCODE_NEVER,
} SkTranscodeMode;

gboolean sk_transcode_mode_from_string (const char *s, SkTranscodeMode *out);
const char *sk_transcode_mode_to_string (SkTranscodeMode mode);

/* Input figures measured from the stream (0 / NULL while unknown). */
typedef struct {
  char *video_codec; /* "H264", "HEVC", "AV1", … as recognised from the tags */
  guint width, height;
  double fps;
  gboolean video_has_bframes;
  char *audio_codec; /* "AAC", "MP3", "opus" */
  guint sample_rate, channels;
  guint64 video_bitrate_bps, audio_bitrate_bps; /* measured over the last seconds */
} SkInputInfo;

void sk_input_info_clear (SkInputInfo *info);

typedef struct _SkIngressPipeline SkIngressPipeline;

/* All callbacks run on the main context the pipeline was created on. */
typedef struct {
  /* An output's format is known: return the track to feed (borrowed, ref taken by the
   * pipeline) or NULL to drop that kind. */
  SkTrack *(*track_ready) (SkIngressPipeline *pipeline, SkTrackKind kind, GstCaps *caps,
                           gpointer user_data);
  /* Media is flowing on every output that will exist: the ingress is PUBLISHING. */
  void (*publishing) (SkIngressPipeline *pipeline, gpointer user_data);
  void (*input_info) (SkIngressPipeline *pipeline, const SkInputInfo *info, gpointer user_data);
  /* Fatal: the pipeline stopped; @message is for the ingress state's error field. */
  void (*error) (SkIngressPipeline *pipeline, const char *message, gpointer user_data);
} SkIngressPipelineCallbacks;

SkIngressPipeline *sk_ingress_pipeline_new_flv (const char *name, SkTranscodeMode mode,
                                                const SkConfig *config,
                                                const SkIngressPipelineCallbacks *callbacks,
                                                gpointer user_data, GError **error);

/*
 * Feeds one RTMP media message as an FLV tag: @tag_type 8 (audio), 9 (video) or 18 (script
 * data), @timestamp_ms the RTMP timestamp, @data the message payload. Returns FALSE with an
 * error for input that ends the session (e.g. enhanced-RTMP HEVC when unsupported); the
 * caller then ends the ingress with ENDPOINT_ERROR.
 */
gboolean sk_ingress_pipeline_push_flv_tag (SkIngressPipeline *self, guint8 tag_type,
                                           guint32 timestamp_ms, const guint8 *data, gsize size,
                                           GError **error);

/* TRUE once the video output was set up to be decoded and re-encoded (B-frames, unsafe
 * profile or SK_TRANSCODE_ALWAYS); FALSE while undecided, for passthrough and without video. */
gboolean sk_ingress_pipeline_is_transcoding (SkIngressPipeline *self);

/* How many tracks the pipeline will output (1 or 2) once it started; 0 before. */
guint sk_ingress_pipeline_get_n_outputs (SkIngressPipeline *self);

/*
 * The transcode path, shared by RTMP and WHIP ingest.
 *
 * sk_pipeline_make_video_encoder: the configured video_encoder (default: x264enc
 * tune=zerolatency, key-int 60, no B-frames) as a bin named "venc", sunk (transfer full).
 * sk_pipeline_make_video_transcoder: a bin with "sink" and "src" pads,
 *   queue ! @decoder ! videoconvert ! I420 ! @encoder ! h264parse config-interval=-1
 * taking what @decoder takes (avdec_h264 H.264 au, vp8dec VP8 frames) and giving
 * video/x-h264 with SPS/PPS before each IDR. The queue gives decoding a thread of its own.
 * @encoder: borrowed (the bin takes its own reference). Upstream GstForceKeyUnit events sent
 * into the "src" pad reach the encoder: that is how a subscriber's PLI gets a keyframe.
 */
GstElement *sk_pipeline_make_video_encoder (const SkConfig *config, GError **error);

/* Loads every plugin an ingress pipeline uses (gst-libav alone takes ~100 ms the first time),
 * so that the first stream a node takes (after a restart: often an encoder reconnecting
 * from a dead node) does not wait for it. */
void sk_pipeline_warm_up (const SkConfig *config);
GstElement *sk_pipeline_make_video_transcoder (const char *name, const char *decoder,
                                               GstElement *encoder, GError **error);

/* Stops the pipeline (synchronously) and frees it; no callback runs after it returns. */
void sk_ingress_pipeline_free (SkIngressPipeline *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkIngressPipeline, sk_ingress_pipeline_free)

G_END_DECLS
