/*
 * streamkeeper: FLV tag payload parsing, as carried in RTMP audio/video/data messages
 * (the tag body only: no FLV file header, no tag header, no previous-tag-size).
 *
 * Everything here reads untrusted bytes: every read is bounds-checked, nothing allocates
 * from a size the peer chose, and malformed input is an SK_ERROR_INVALID error. Parsed
 * structures point into the caller's buffer (borrowed), so they live as long as it does.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SK_FLV_TAG_AUDIO 8
#define SK_FLV_TAG_VIDEO 9
#define SK_FLV_TAG_SCRIPT 18

/* Legacy FLV video CodecID (low nibble of the first byte). */
#define SK_FLV_VIDEO_CODEC_AVC 7

/* Legacy AVCPacketType. */
#define SK_FLV_AVC_SEQUENCE_HEADER 0
#define SK_FLV_AVC_NALU 1
#define SK_FLV_AVC_END_OF_SEQUENCE 2

/* Enhanced RTMP video PacketType (low nibble when IsExHeader is set). */
#define SK_FLV_EX_SEQUENCE_START 0
#define SK_FLV_EX_CODED_FRAMES 1
#define SK_FLV_EX_SEQUENCE_END 2
#define SK_FLV_EX_CODED_FRAMES_X 3 /* composition time implied 0 */
#define SK_FLV_EX_METADATA 4
#define SK_FLV_EX_MPEG2TS_SEQUENCE_START 5
#define SK_FLV_EX_MULTITRACK 6
#define SK_FLV_EX_MOD_EX 7

/* FrameType */
#define SK_FLV_FRAME_KEY 1
#define SK_FLV_FRAME_INTER 2
#define SK_FLV_FRAME_DISPOSABLE 3
#define SK_FLV_FRAME_GENERATED_KEY 4
#define SK_FLV_FRAME_COMMAND 5

/* SoundFormat (high nibble of the first audio byte). */
#define SK_FLV_SOUND_MP3 2
#define SK_FLV_SOUND_EX_HEADER 9 /* enhanced RTMP v2: FourCC follows */
#define SK_FLV_SOUND_AAC 10

#define SK_FLV_AAC_SEQUENCE_HEADER 0
#define SK_FLV_AAC_RAW 1

#define SK_FLV_FOURCC(a, b, c, d)                                                                  \
  ((guint32)(guint8)(a) << 24 | (guint32)(guint8)(b) << 16 | (guint32)(guint8)(c) << 8             \
   | (guint32)(guint8)(d))

typedef struct {
  guint8 frame_type;       /* SK_FLV_FRAME_* */
  gboolean is_ex_header;   /* enhanced RTMP: @fourcc is set, @codec_id is not */
  guint8 codec_id;         /* legacy CodecID */
  guint32 fourcc;          /* enhanced: 'avc1', 'hvc1', 'av01', 'vp09', … */
  guint8 packet_type;      /* legacy AVCPacketType or enhanced PacketType */
  gint32 composition_time; /* ms, SI24; 0 where the format has none */
  const guint8 *body;      /* what follows the header (AVC: config record or AVCC NAL units) */
  gsize body_size;
} SkFlvVideoTag;

/* Parses the video tag header. For legacy AVC and for enhanced 'avc1'/'hvc1' coded frames the
 * composition time is read; other codecs' bodies are left for the caller. */
gboolean sk_flv_parse_video_tag (const guint8 *data, gsize size, SkFlvVideoTag *tag,
                                 GError **error);

/* True when @tag carries H.264 (legacy CodecID 7 or enhanced 'avc1'). */
gboolean sk_flv_video_tag_is_avc (const SkFlvVideoTag *tag);
/* True when @tag is an H.264 sequence header / coded frame, whatever the header flavour. */
gboolean sk_flv_video_tag_is_avc_config (const SkFlvVideoTag *tag);
gboolean sk_flv_video_tag_is_avc_frame (const SkFlvVideoTag *tag);

/* "H264", "HEVC", "AV1", "VP9", "VP6", … for logs and SkInputInfo; "unknown" otherwise. */
const char *sk_flv_video_codec_name (const SkFlvVideoTag *tag);

typedef struct {
  guint8 sound_format; /* SK_FLV_SOUND_* */
  guint8 sound_rate;   /* 0..3: 5.5/11/22/44 kHz (legacy, AAC always says 3) */
  guint8 sound_size;   /* 0: 8 bit, 1: 16 bit */
  guint8 sound_type;   /* 0: mono, 1: stereo */
  gboolean is_ex_header;
  guint8 packet_type; /* AACPacketType, or enhanced AudioPacketType */
  guint32 fourcc;     /* enhanced: 'Opus', 'fLaC', 'ac-3', 'ec-3', 'mp4a', '.mp3' */
  const guint8 *body;
  gsize body_size;
} SkFlvAudioTag;

gboolean sk_flv_parse_audio_tag (const guint8 *data, gsize size, SkFlvAudioTag *tag,
                                 GError **error);
/* "AAC", "MP3", "Opus", "Speex", … ; "unknown" otherwise. */
const char *sk_flv_audio_codec_name (const SkFlvAudioTag *tag);

/* AVCDecoderConfigurationRecord (ISO 14496-15). The first SPS and PPS are pointed at. */
typedef struct {
  guint8 profile_idc, profile_compat, level_idc;
  guint8 nal_length_size; /* 1, 2 or 4 */
  guint n_sps, n_pps;
  const guint8 *sps;
  gsize sps_size;
  const guint8 *pps;
  gsize pps_size;
} SkFlvAvcConfig;

gboolean sk_flv_parse_avc_config (const guint8 *data, gsize size, SkFlvAvcConfig *config,
                                  GError **error);

/* What the pipeline needs from an H.264 sequence parameter set. */
typedef struct {
  guint8 profile_idc, constraint_flags, level_idc; /* constraint_flags: set0 is bit 7 */
  guint chroma_format_idc;                         /* 1 = 4:2:0 */
  guint bit_depth_luma, bit_depth_chroma;
  guint width, height; /* after cropping */
  gboolean timing_info_present;
  guint32 num_units_in_tick, time_scale;
  gboolean fixed_frame_rate;
  gboolean bitstream_restriction;
  guint max_num_reorder_frames; /* only meaningful with @bitstream_restriction */
  guint max_dec_frame_buffering;
} SkH264Sps;

/* @nal: one SPS NAL unit including its 1-byte header, emulation prevention bytes included. */
gboolean sk_h264_parse_sps (const guint8 *nal, gsize size, SkH264Sps *sps, GError **error);

/* Frame rate from VUI timing (field-based tick, so time_scale / 2 / num_units_in_tick);
 * 0 when the SPS has none. */
double sk_h264_sps_get_fps (const SkH264Sps *sps);

/* True when the SPS itself guarantees no frame reordering (no B-frames): baseline or
 * constrained baseline, or a VUI bitstream restriction with max_num_reorder_frames == 0. */
gboolean sk_h264_sps_forbids_reordering (const SkH264Sps *sps);

/* True when browsers decode the stream's format over WebRTC: Baseline, Main or High profile,
 * 4:2:0, 8 bit (High 10, 4:2:2 and 4:4:4 profiles are not negotiable in WebRTC). */
gboolean sk_h264_sps_is_webrtc_decodable (const SkH264Sps *sps);

/* AudioSpecificConfig (ISO 14496-3). */
typedef struct {
  guint object_type;
  guint sample_rate; /* output rate: the SBR extension rate for HE-AAC when signalled */
  guint channels;    /* 0 when the channel configuration is in a PCE */
} SkAacConfig;

gboolean sk_aac_parse_audio_specific_config (const guint8 *data, gsize size, SkAacConfig *config,
                                             GError **error);

/* The figures an encoder announces in onMetaData (0 / FALSE when absent). */
typedef struct {
  gboolean has_video_codec, has_audio_codec; /* videocodecid / audiocodecid present */
  double video_codec_id, audio_codec_id;     /* numbers; enhanced RTMP uses the FourCC value */
  double width, height, framerate;
  double video_data_rate, audio_data_rate; /* kbit/s */
  double audio_sample_rate, audio_channels;
} SkFlvMetadata;

/*
 * Parses a script-data tag: ["@setDataFrame"] "onMetaData" followed by an ECMA array or
 * object. Returns FALSE (without error) for a well-formed tag that is not onMetaData;
 * values of other types are skipped, nesting is bounded.
 */
gboolean sk_flv_parse_metadata (const guint8 *data, gsize size, SkFlvMetadata *meta,
                                GError **error);

/* Writes the 9-byte FLV file header + PreviousTagSize0 (13 bytes) into @out. */
void sk_flv_write_file_header (guint8 out[13], gboolean has_audio, gboolean has_video);

/* Writes an 11-byte FLV tag header for @data_size bytes of payload at @timestamp_ms. The
 * caller appends the payload and then sk_flv_write_previous_tag_size. */
void sk_flv_write_tag_header (guint8 out[11], guint8 tag_type, guint32 timestamp_ms,
                              guint32 data_size);
void sk_flv_write_previous_tag_size (guint8 out[4], guint32 data_size);

G_END_DECLS
