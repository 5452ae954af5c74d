/* streamkeeper: FLV tag payload parsers (see sk-flv.h). No GStreamer here: the fuzzer links
 * this file alone. */
#include "pipelines/sk-flv.h"

#include <string.h>

#include "common/sk-common.h"

#define INVALID(error, ...) (g_set_error (error, SK_ERROR, SK_ERROR_INVALID, __VA_ARGS__), FALSE)

static inline guint32
rb16 (const guint8 *p)
{
  return (guint32)p[0] << 8 | p[1];
}

static inline guint32
rb24 (const guint8 *p)
{
  return (guint32)p[0] << 16 | (guint32)p[1] << 8 | p[2];
}

static inline guint32
rb32 (const guint8 *p)
{
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static inline gint32
rb_si24 (const guint8 *p)
{
  guint32 v = rb24 (p);
  return (v & 0x800000) ? (gint32)v - 0x1000000 : (gint32)v;
}

/* ---- video ------------------------------------------------------------------------------ */

gboolean
sk_flv_parse_video_tag (const guint8 *data, gsize size, SkFlvVideoTag *tag, GError **error)
{
  memset (tag, 0, sizeof *tag);
  if (size < 1)
    return INVALID (error, "empty FLV video tag");

  tag->frame_type = (data[0] >> 4) & 0x07;
  if (data[0] & 0x80) {
    /* Enhanced RTMP: [1 IsExHeader][3 FrameType][4 PacketType][FourCC]… */
    tag->is_ex_header = TRUE;
    tag->packet_type = data[0] & 0x0f;
    if (size < 5)
      return INVALID (error, "enhanced RTMP video tag shorter than its FourCC");
    tag->fourcc = rb32 (data + 1);
    gsize off = 5;
    /* Only AVC and HEVC CodedFrames carry a composition time; CodedFramesX implies 0. */
    if (tag->packet_type == SK_FLV_EX_CODED_FRAMES
        && (tag->fourcc == SK_FLV_FOURCC ('a', 'v', 'c', '1')
            || tag->fourcc == SK_FLV_FOURCC ('h', 'v', 'c', '1'))) {
      if (size < off + 3)
        return INVALID (error, "enhanced RTMP coded frames without composition time");
      tag->composition_time = rb_si24 (data + off);
      off += 3;
    }
    tag->body = data + off;
    tag->body_size = size - off;
    return TRUE;
  }

  if (tag->frame_type == 0)
    return INVALID (error, "FLV video tag with frame type 0");
  tag->codec_id = data[0] & 0x0f;
  if (tag->codec_id != SK_FLV_VIDEO_CODEC_AVC || tag->frame_type == SK_FLV_FRAME_COMMAND) {
    /* Command frames carry one command byte, whatever the codec. */
    tag->body = data + 1;
    tag->body_size = size - 1;
    return TRUE;
  }
  if (size < 5)
    return INVALID (error, "AVC video tag shorter than its 5-byte header");
  tag->packet_type = data[1];
  if (tag->packet_type > SK_FLV_AVC_END_OF_SEQUENCE)
    return INVALID (error, "unknown AVCPacketType %u", tag->packet_type);
  tag->composition_time = rb_si24 (data + 2);
  tag->body = data + 5;
  tag->body_size = size - 5;
  return TRUE;
}

gboolean
sk_flv_video_tag_is_avc (const SkFlvVideoTag *tag)
{
  if (tag->is_ex_header)
    return tag->fourcc == SK_FLV_FOURCC ('a', 'v', 'c', '1');
  return tag->codec_id == SK_FLV_VIDEO_CODEC_AVC;
}

gboolean
sk_flv_video_tag_is_avc_config (const SkFlvVideoTag *tag)
{
  if (!sk_flv_video_tag_is_avc (tag) || tag->frame_type == SK_FLV_FRAME_COMMAND)
    return FALSE;
  /* Both header flavours number the sequence header 0. */
  return tag->packet_type == SK_FLV_AVC_SEQUENCE_HEADER;
}

gboolean
sk_flv_video_tag_is_avc_frame (const SkFlvVideoTag *tag)
{
  if (!sk_flv_video_tag_is_avc (tag) || tag->frame_type == SK_FLV_FRAME_COMMAND)
    return FALSE;
  if (tag->is_ex_header)
    return tag->packet_type == SK_FLV_EX_CODED_FRAMES
           || tag->packet_type == SK_FLV_EX_CODED_FRAMES_X;
  return tag->packet_type == SK_FLV_AVC_NALU;
}

const char *
sk_flv_video_codec_name (const SkFlvVideoTag *tag)
{
  if (tag->is_ex_header) {
    switch (tag->fourcc) {
      case SK_FLV_FOURCC ('a', 'v', 'c', '1'):
        return "H264";
      case SK_FLV_FOURCC ('h', 'v', 'c', '1'):
        return "HEVC";
      case SK_FLV_FOURCC ('a', 'v', '0', '1'):
        return "AV1";
      case SK_FLV_FOURCC ('v', 'p', '0', '9'):
        return "VP9";
      case SK_FLV_FOURCC ('v', 'p', '0', '8'):
        return "VP8";
      default:
        return "unknown";
    }
  }
  switch (tag->codec_id) {
    case 2:
      return "H263";
    case 3:
      return "ScreenVideo";
    case 4:
      return "VP6";
    case 5:
      return "VP6A";
    case 6:
      return "ScreenVideo2";
    case 7:
      return "H264";
    case 12: /* a pre-enhanced-RTMP convention some encoders use for HEVC */
      return "HEVC";
    default:
      return "unknown";
  }
}

/* ---- audio ------------------------------------------------------------------------------ */

gboolean
sk_flv_parse_audio_tag (const guint8 *data, gsize size, SkFlvAudioTag *tag, GError **error)
{
  memset (tag, 0, sizeof *tag);
  if (size < 1)
    return INVALID (error, "empty FLV audio tag");
  tag->sound_format = data[0] >> 4;
  gsize off = 1;
  if (tag->sound_format == SK_FLV_SOUND_EX_HEADER) {
    /* Enhanced RTMP v2: the low nibble is AudioPacketType, a FourCC follows. */
    tag->is_ex_header = TRUE;
    tag->packet_type = data[0] & 0x0f;
    if (size < 5)
      return INVALID (error, "enhanced RTMP audio tag shorter than its FourCC");
    tag->fourcc = rb32 (data + 1);
    off = 5;
  } else {
    tag->sound_rate = (data[0] >> 2) & 0x03;
    tag->sound_size = (data[0] >> 1) & 0x01;
    tag->sound_type = data[0] & 0x01;
    if (tag->sound_format == SK_FLV_SOUND_AAC) {
      if (size < 2)
        return INVALID (error, "AAC audio tag without AACPacketType");
      tag->packet_type = data[1];
      if (tag->packet_type > SK_FLV_AAC_RAW)
        return INVALID (error, "unknown AACPacketType %u", tag->packet_type);
      off = 2;
    }
  }
  tag->body = data + off;
  tag->body_size = size - off;
  return TRUE;
}

const char *
sk_flv_audio_codec_name (const SkFlvAudioTag *tag)
{
  if (tag->is_ex_header) {
    switch (tag->fourcc) {
      case SK_FLV_FOURCC ('O', 'p', 'u', 's'):
        return "Opus";
      case SK_FLV_FOURCC ('f', 'L', 'a', 'C'):
        return "FLAC";
      case SK_FLV_FOURCC ('a', 'c', '-', '3'):
        return "AC3";
      case SK_FLV_FOURCC ('e', 'c', '-', '3'):
        return "EAC3";
      case SK_FLV_FOURCC ('m', 'p', '4', 'a'):
        return "AAC";
      case SK_FLV_FOURCC ('.', 'm', 'p', '3'):
        return "MP3";
      default:
        return "unknown";
    }
  }
  static const char *const names[16] = {
    "PCM",        "ADPCM",   "MP3",   "PCM-LE",          "Nellymoser", "Nellymoser",
    "Nellymoser", "G711A",   "G711U", "unknown",         "AAC",        "Speex",
    "unknown",    "unknown", "MP3",   "device-specific",
  };
  return names[tag->sound_format & 0x0f];
}

/* ---- AVCDecoderConfigurationRecord ------------------------------------------------------- */

gboolean
sk_flv_parse_avc_config (const guint8 *data, gsize size, SkFlvAvcConfig *config, GError **error)
{
  memset (config, 0, sizeof *config);
  if (size < 7)
    return INVALID (error, "AVC decoder configuration record too short (%zu bytes)", size);
  if (data[0] != 1)
    return INVALID (error, "AVC decoder configuration record version %u", data[0]);
  config->profile_idc = data[1];
  config->profile_compat = data[2];
  config->level_idc = data[3];
  config->nal_length_size = (data[4] & 0x03) + 1;
  if (config->nal_length_size == 3)
    return INVALID (error, "AVC NAL length size 3 is not allowed");

  gsize off = 5;
  for (int list = 0; list < 2; list++) {
    if (off >= size)
      return INVALID (error, "AVC decoder configuration record truncated");
    guint n = list == 0 ? (data[off] & 0x1f) : data[off];
    off++;
    for (guint i = 0; i < n; i++) {
      if (size - off < 2)
        return INVALID (error, "AVC parameter set length truncated");
      gsize len = rb16 (data + off);
      off += 2;
      if (len == 0 || size - off < len)
        return INVALID (error, "AVC parameter set of %zu bytes overruns the record", len);
      if (i == 0) {
        if (list == 0) {
          config->sps = data + off;
          config->sps_size = len;
        } else {
          config->pps = data + off;
          config->pps_size = len;
        }
      }
      off += len;
    }
    if (list == 0)
      config->n_sps = n;
    else
      config->n_pps = n;
  }
  if (config->n_sps == 0)
    return INVALID (error, "AVC decoder configuration record without SPS");
  return TRUE;
}

/* ---- H.264 SPS ---------------------------------------------------------------------------- */

/* A bit reader over an RBSP that drops emulation prevention bytes (00 00 03) as it goes,
 * so the NAL unit is never copied. Reads past the end set @overrun and return zeros. */
typedef struct {
  const guint8 *data;
  gsize size, pos; /* next byte to load */
  guint zeros;     /* consecutive zero bytes loaded */
  guint32 cache;
  guint bits;    /* valid bits in cache (msb first) */
  gboolean rbsp; /* strip emulation prevention bytes */
  gboolean overrun;
} BitReader;

static void
br_init (BitReader *br, const guint8 *data, gsize size, gboolean rbsp)
{
  memset (br, 0, sizeof *br);
  br->data = data;
  br->size = size;
  br->rbsp = rbsp;
}

static gboolean
br_load_byte (BitReader *br)
{
  if (br->rbsp && br->pos < br->size && br->zeros >= 2 && br->data[br->pos] == 3) {
    br->pos++;
    br->zeros = 0;
  }
  if (br->pos >= br->size) {
    br->overrun = TRUE;
    return FALSE;
  }
  guint8 b = br->data[br->pos++];
  br->zeros = b == 0 ? br->zeros + 1 : 0;
  br->cache = (br->cache << 8) | b;
  br->bits += 8;
  return TRUE;
}

static guint32
br_bit (BitReader *br)
{
  if (br->bits == 0 && !br_load_byte (br))
    return 0;
  br->bits--;
  return (br->cache >> br->bits) & 1;
}

static guint32
br_bits (BitReader *br, guint n) /* n <= 32 */
{
  guint32 v = 0;
  for (guint i = 0; i < n; i++)
    v = (v << 1) | br_bit (br);
  return v;
}

/* Exp-Golomb; values beyond 32 bits are treated as an overrun (no legal SPS has them). */
static guint32
br_ue (BitReader *br)
{
  guint leading = 0;
  while (br_bit (br) == 0) {
    if (br->overrun || ++leading > 31) {
      br->overrun = TRUE;
      return 0;
    }
  }
  return ((1u << leading) - 1) + br_bits (br, leading);
}

static gint32
br_se (BitReader *br)
{
  guint32 k = br_ue (br);
  return (k & 1) ? (gint32)((k + 1) / 2) : -(gint32)(k / 2);
}

static void
skip_scaling_list (BitReader *br, guint n)
{
  gint32 last = 8, next = 8;
  for (guint j = 0; j < n && !br->overrun; j++) {
    if (next != 0) {
      gint32 delta = br_se (br);
      if (delta < -128 || delta > 127) { /* delta_scale's legal range (H.264 7.4.2.1.1.1) */
        br->overrun = TRUE;
        return;
      }
      next = (last + delta + 256) % 256;
    }
    last = next == 0 ? last : next;
  }
}

static void
skip_hrd_parameters (BitReader *br)
{
  guint cpb_cnt = br_ue (br) + 1;
  if (cpb_cnt > 32) {
    br->overrun = TRUE;
    return;
  }
  br_bits (br, 8); /* bit_rate_scale, cpb_size_scale */
  for (guint i = 0; i < cpb_cnt && !br->overrun; i++) {
    br_ue (br);  /* bit_rate_value_minus1 */
    br_ue (br);  /* cpb_size_value_minus1 */
    br_bit (br); /* cbr_flag */
  }
  br_bits (br, 20); /* four 5-bit delay/offset lengths */
}

static void
parse_vui (BitReader *br, SkH264Sps *sps)
{
  if (br_bit (br)) {            /* aspect_ratio_info_present_flag */
    if (br_bits (br, 8) == 255) /* aspect_ratio_idc == Extended_SAR */
      br_bits (br, 32);         /* sar_width, sar_height */
  }
  if (br_bit (br)) /* overscan_info_present_flag */
    br_bit (br);
  if (br_bit (br)) { /* video_signal_type_present_flag */
    br_bits (br, 4); /* video_format, video_full_range_flag */
    if (br_bit (br)) /* colour_description_present_flag */
      br_bits (br, 24);
  }
  if (br_bit (br)) { /* chroma_loc_info_present_flag */
    br_ue (br);
    br_ue (br);
  }
  sps->timing_info_present = br_bit (br);
  if (sps->timing_info_present) {
    sps->num_units_in_tick = br_bits (br, 32);
    sps->time_scale = br_bits (br, 32);
    sps->fixed_frame_rate = br_bit (br);
  }
  gboolean nal_hrd = br_bit (br);
  if (nal_hrd)
    skip_hrd_parameters (br);
  gboolean vcl_hrd = br_bit (br);
  if (vcl_hrd)
    skip_hrd_parameters (br);
  if (nal_hrd || vcl_hrd)
    br_bit (br); /* low_delay_hrd_flag */
  br_bit (br);   /* pic_struct_present_flag */
  sps->bitstream_restriction = br_bit (br);
  if (sps->bitstream_restriction) {
    br_bit (br); /* motion_vectors_over_pic_boundaries_flag */
    br_ue (br);  /* max_bytes_per_pic_denom */
    br_ue (br);  /* max_bits_per_mb_denom */
    br_ue (br);  /* log2_max_mv_length_horizontal */
    br_ue (br);  /* log2_max_mv_length_vertical */
    sps->max_num_reorder_frames = br_ue (br);
    sps->max_dec_frame_buffering = br_ue (br);
  }
}

static gboolean
profile_has_chroma_info (guint profile_idc)
{
  switch (profile_idc) {
    case 100:
    case 110:
    case 122:
    case 244:
    case 44:
    case 83:
    case 86:
    case 118:
    case 128:
    case 138:
    case 139:
    case 134:
    case 135:
      return TRUE;
    default:
      return FALSE;
  }
}

gboolean
sk_h264_parse_sps (const guint8 *nal, gsize size, SkH264Sps *sps, GError **error)
{
  memset (sps, 0, sizeof *sps);
  if (size < 4)
    return INVALID (error, "H.264 SPS too short");
  if ((nal[0] & 0x1f) != 7)
    return INVALID (error, "NAL unit type %u is not an SPS", nal[0] & 0x1f);

  BitReader br;
  br_init (&br, nal + 1, size - 1, TRUE);
  sps->profile_idc = br_bits (&br, 8);
  sps->constraint_flags = br_bits (&br, 8);
  sps->level_idc = br_bits (&br, 8);
  if (br_ue (&br) > 31)
    return INVALID (error, "H.264 SPS id out of range");

  sps->chroma_format_idc = 1;
  sps->bit_depth_luma = sps->bit_depth_chroma = 8;
  gboolean separate_colour_plane = FALSE;
  if (profile_has_chroma_info (sps->profile_idc)) {
    sps->chroma_format_idc = br_ue (&br);
    if (sps->chroma_format_idc > 3)
      return INVALID (error, "H.264 SPS chroma_format_idc %u", sps->chroma_format_idc);
    if (sps->chroma_format_idc == 3)
      separate_colour_plane = br_bit (&br);
    sps->bit_depth_luma = 8 + br_ue (&br);
    sps->bit_depth_chroma = 8 + br_ue (&br);
    if (sps->bit_depth_luma > 14 || sps->bit_depth_chroma > 14)
      return INVALID (error, "H.264 SPS bit depth out of range");
    br_bit (&br);       /* qpprime_y_zero_transform_bypass_flag */
    if (br_bit (&br)) { /* seq_scaling_matrix_present_flag */
      guint n = sps->chroma_format_idc != 3 ? 8 : 12;
      for (guint i = 0; i < n && !br.overrun; i++)
        if (br_bit (&br))
          skip_scaling_list (&br, i < 6 ? 16 : 64);
    }
  }
  if (br_ue (&br) > 12) /* log2_max_frame_num_minus4 */
    return INVALID (error, "H.264 SPS log2_max_frame_num out of range");
  guint poc_type = br_ue (&br);
  if (poc_type == 0) {
    if (br_ue (&br) > 12)
      return INVALID (error, "H.264 SPS log2_max_pic_order_cnt_lsb out of range");
  } else if (poc_type == 1) {
    br_bit (&br);
    br_se (&br);
    br_se (&br);
    guint n = br_ue (&br);
    if (n > 255)
      return INVALID (error, "H.264 SPS num_ref_frames_in_pic_order_cnt_cycle out of range");
    for (guint i = 0; i < n && !br.overrun; i++)
      br_se (&br);
  } else if (poc_type != 2) {
    return INVALID (error, "H.264 SPS pic_order_cnt_type %u", poc_type);
  }
  br_ue (&br);  /* max_num_ref_frames */
  br_bit (&br); /* gaps_in_frame_num_value_allowed_flag */
  guint32 width_mbs = br_ue (&br) + 1;
  guint32 height_map_units = br_ue (&br) + 1;
  gboolean frame_mbs_only = br_bit (&br);
  if (!frame_mbs_only)
    br_bit (&br); /* mb_adaptive_frame_field_flag */
  br_bit (&br);   /* direct_8x8_inference_flag */
  guint32 crop_l = 0, crop_r = 0, crop_t = 0, crop_b = 0;
  if (br_bit (&br)) {
    crop_l = br_ue (&br);
    crop_r = br_ue (&br);
    crop_t = br_ue (&br);
    crop_b = br_ue (&br);
  }
  if (br.overrun)
    return INVALID (error, "H.264 SPS truncated");

  /* Level 6.2 allows 139264 macroblocks a frame; anything far beyond is garbage. */
  if (width_mbs > 1024 || height_map_units > 1024)
    return INVALID (error, "H.264 SPS picture size out of range");
  guint chroma_array_type = separate_colour_plane ? 0 : sps->chroma_format_idc;
  guint crop_x = 1, crop_y = 2 - frame_mbs_only;
  if (chroma_array_type != 0) {
    crop_x = chroma_array_type == 3 ? 1 : 2;
    crop_y *= chroma_array_type == 1 ? 2 : 1;
  }
  guint64 w = (guint64)width_mbs * 16;
  guint64 h = (guint64)height_map_units * 16 * (2 - frame_mbs_only);
  guint64 cw = ((guint64)crop_l + crop_r) * crop_x;
  guint64 ch = ((guint64)crop_t + crop_b) * crop_y;
  if (cw >= w || ch >= h)
    return INVALID (error, "H.264 SPS cropping larger than the picture");
  sps->width = w - cw;
  sps->height = h - ch;

  if (br_bit (&br)) /* vui_parameters_present_flag */
    parse_vui (&br, sps);
  if (br.overrun) {
    /* A truncated VUI still gave us the size; just forget what it claimed. */
    sps->timing_info_present = FALSE;
    sps->bitstream_restriction = FALSE;
  }
  return TRUE;
}

double
sk_h264_sps_get_fps (const SkH264Sps *sps)
{
  if (!sps->timing_info_present || sps->num_units_in_tick == 0 || sps->time_scale == 0)
    return 0;
  return (double)sps->time_scale / (2.0 * sps->num_units_in_tick);
}

gboolean
sk_h264_sps_forbids_reordering (const SkH264Sps *sps)
{
  /* Baseline has no B slices; constraint_set1 means the stream also obeys constrained
   * baseline whatever profile_idc says. */
  if (sps->profile_idc == 66 || (sps->constraint_flags & 0x40))
    return TRUE;
  return sps->bitstream_restriction && sps->max_num_reorder_frames == 0;
}

gboolean
sk_h264_sps_is_webrtc_decodable (const SkH264Sps *sps)
{
  switch (sps->profile_idc) {
    case 66:  /* Baseline */
    case 77:  /* Main */
    case 100: /* High */
      break;
    default:
      return FALSE;
  }
  return sps->chroma_format_idc == 1 && sps->bit_depth_luma == 8 && sps->bit_depth_chroma == 8;
}

/* ---- AudioSpecificConfig ------------------------------------------------------------------ */

static const guint aac_rates[13]
    = { 96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350 };

static gboolean
read_aac_rate (BitReader *br, guint *rate)
{
  guint idx = br_bits (br, 4);
  if (idx == 15)
    *rate = br_bits (br, 24);
  else if (idx < G_N_ELEMENTS (aac_rates))
    *rate = aac_rates[idx];
  else
    return FALSE;
  return *rate > 0;
}

static guint
read_aac_object_type (BitReader *br)
{
  guint aot = br_bits (br, 5);
  return aot == 31 ? 32 + br_bits (br, 6) : aot;
}

gboolean
sk_aac_parse_audio_specific_config (const guint8 *data, gsize size, SkAacConfig *config,
                                    GError **error)
{
  memset (config, 0, sizeof *config);
  if (size < 2)
    return INVALID (error, "AAC AudioSpecificConfig too short");
  BitReader br;
  br_init (&br, data, size, FALSE);
  config->object_type = read_aac_object_type (&br);
  if (config->object_type == 0)
    return INVALID (error, "AAC audio object type 0");
  if (!read_aac_rate (&br, &config->sample_rate))
    return INVALID (error, "AAC sampling frequency index is reserved");
  guint chan = br_bits (&br, 4);
  static const guint channels[8] = { 0, 1, 2, 3, 4, 5, 6, 8 };
  if (chan >= G_N_ELEMENTS (channels))
    return INVALID (error, "AAC channel configuration %u is reserved", chan);
  config->channels = channels[chan];
  /* Explicit SBR/PS signalling: the decoder outputs the extension rate. */
  if (config->object_type == 5 || config->object_type == 29) {
    guint ext_rate;
    if (!read_aac_rate (&br, &ext_rate))
      return INVALID (error, "AAC SBR sampling frequency index is reserved");
    config->sample_rate = ext_rate;
    if (config->object_type == 29 && config->channels == 1)
      config->channels = 2;
  }
  if (br.overrun)
    return INVALID (error, "AAC AudioSpecificConfig truncated");
  return TRUE;
}

/* ---- onMetaData (AMF0) -------------------------------------------------------------------- */

#define AMF_MAX_DEPTH 8

typedef struct {
  const guint8 *p, *end;
} AmfReader;

static gboolean
amf_string (AmfReader *r, gboolean is_long, const guint8 **s, gsize *len)
{
  gsize need = is_long ? 4 : 2;
  if ((gsize)(r->end - r->p) < need)
    return FALSE;
  *len = is_long ? rb32 (r->p) : rb16 (r->p);
  r->p += need;
  if ((gsize)(r->end - r->p) < *len)
    return FALSE;
  *s = r->p;
  r->p += *len;
  return TRUE;
}

static gboolean amf_skip_value (AmfReader *r, guint depth);

/* Object/ECMA-array properties up to the end marker (00 00 09). */
static gboolean
amf_skip_properties (AmfReader *r, guint depth)
{
  for (;;) {
    const guint8 *key;
    gsize key_len;
    if (!amf_string (r, FALSE, &key, &key_len))
      return FALSE;
    if (key_len == 0) {
      if (r->p >= r->end || *r->p != 0x09)
        return FALSE;
      r->p++;
      return TRUE;
    }
    if (!amf_skip_value (r, depth))
      return FALSE;
  }
}

static gboolean
amf_skip_value (AmfReader *r, guint depth)
{
  if (r->p >= r->end || depth > AMF_MAX_DEPTH)
    return FALSE;
  guint8 type = *r->p++;
  const guint8 *s;
  gsize len;
  switch (type) {
    case 0x00: /* number */
      if (r->end - r->p < 8)
        return FALSE;
      r->p += 8;
      return TRUE;
    case 0x01: /* boolean */
      if (r->end - r->p < 1)
        return FALSE;
      r->p++;
      return TRUE;
    case 0x02: /* string */
      return amf_string (r, FALSE, &s, &len);
    case 0x0c: /* long string */
    case 0x0f: /* XML document */
      return amf_string (r, TRUE, &s, &len);
    case 0x03: /* object */
      return amf_skip_properties (r, depth + 1);
    case 0x08: /* ECMA array: count (advisory) then properties */
      if (r->end - r->p < 4)
        return FALSE;
      r->p += 4;
      return amf_skip_properties (r, depth + 1);
    case 0x0a: { /* strict array */
      if (r->end - r->p < 4)
        return FALSE;
      guint32 n = rb32 (r->p);
      r->p += 4;
      /* Each element is at least one byte: a count beyond what is left is a lie. */
      if (n > (gsize)(r->end - r->p))
        return FALSE;
      for (guint32 i = 0; i < n; i++)
        if (!amf_skip_value (r, depth + 1))
          return FALSE;
      return TRUE;
    }
    case 0x0b: /* date */
      if (r->end - r->p < 10)
        return FALSE;
      r->p += 10;
      return TRUE;
    case 0x05: /* null */
    case 0x06: /* undefined */
      return TRUE;
    default: /* references, movieclip, AMF3 switch: not in metadata */
      return FALSE;
  }
}

static double
rb_double (const guint8 *p)
{
  guint64 bits = (guint64)rb32 (p) << 32 | rb32 (p + 4);
  double d;
  memcpy (&d, &bits, sizeof d);
  return d;
}

static gboolean
key_is (const guint8 *key, gsize len, const char *name)
{
  return len == strlen (name) && memcmp (key, name, len) == 0;
}

static void
store_metadata_number (SkFlvMetadata *meta, const guint8 *key, gsize len, double v)
{
  if (key_is (key, len, "videocodecid")) {
    meta->has_video_codec = TRUE;
    meta->video_codec_id = v;
  } else if (key_is (key, len, "audiocodecid")) {
    meta->has_audio_codec = TRUE;
    meta->audio_codec_id = v;
  } else if (key_is (key, len, "width")) {
    meta->width = v;
  } else if (key_is (key, len, "height")) {
    meta->height = v;
  } else if (key_is (key, len, "framerate")) {
    meta->framerate = v;
  } else if (key_is (key, len, "videodatarate")) {
    meta->video_data_rate = v;
  } else if (key_is (key, len, "audiodatarate")) {
    meta->audio_data_rate = v;
  } else if (key_is (key, len, "audiosamplerate")) {
    meta->audio_sample_rate = v;
  } else if (key_is (key, len, "audiochannels")) {
    meta->audio_channels = v;
  }
}

gboolean
sk_flv_parse_metadata (const guint8 *data, gsize size, SkFlvMetadata *meta, GError **error)
{
  memset (meta, 0, sizeof *meta);
  if (size == 0) /* also keeps NULL + 0 out of the pointer arithmetic below */
    return INVALID (error, "empty script data");
  AmfReader r = { data, data + size };
  const guint8 *s;
  gsize len;

  if (r.p >= r.end || *r.p++ != 0x02 || !amf_string (&r, FALSE, &s, &len))
    return INVALID (error, "script data does not start with a name");
  if (key_is (s, len, "@setDataFrame")) {
    if (r.p >= r.end || *r.p++ != 0x02 || !amf_string (&r, FALSE, &s, &len))
      return INVALID (error, "@setDataFrame without a name");
  }
  if (!key_is (s, len, "onMetaData"))
    return FALSE;

  if (r.p >= r.end)
    return INVALID (error, "onMetaData without a value");
  guint8 type = *r.p++;
  if (type == 0x08) {
    if (r.end - r.p < 4)
      return INVALID (error, "onMetaData ECMA array truncated");
    r.p += 4;
  } else if (type != 0x03) {
    return INVALID (error, "onMetaData value is AMF0 type %u, not an object", type);
  }

  for (;;) {
    const guint8 *key;
    gsize key_len;
    if (!amf_string (&r, FALSE, &key, &key_len))
      return INVALID (error, "onMetaData truncated");
    if (key_len == 0) {
      /* The end marker; some encoders omit it at the end of the message. */
      if (r.p < r.end && *r.p != 0x09)
        return INVALID (error, "onMetaData object end marker missing");
      return TRUE;
    }
    if (r.p < r.end && *r.p == 0x00 && r.end - r.p >= 9) {
      store_metadata_number (meta, key, key_len, rb_double (r.p + 1));
      r.p += 9;
    } else if (r.p < r.end && *r.p == 0x01 && r.end - r.p >= 2 && key_is (key, key_len, "stereo")) {
      if (meta->audio_channels == 0)
        meta->audio_channels = r.p[1] ? 2 : 1;
      r.p += 2;
    } else if (!amf_skip_value (&r, 0)) {
      return INVALID (error, "onMetaData value malformed");
    }
  }
}

/* ---- writing ------------------------------------------------------------------------------ */

void
sk_flv_write_file_header (guint8 out[13], gboolean has_audio, gboolean has_video)
{
  static const guint8 head[13] = { 'F', 'L', 'V', 1, 0, 0, 0, 0, 9, 0, 0, 0, 0 };
  memcpy (out, head, sizeof head);
  out[4] = (has_audio ? 0x04 : 0) | (has_video ? 0x01 : 0);
}

void
sk_flv_write_tag_header (guint8 out[11], guint8 tag_type, guint32 timestamp_ms, guint32 data_size)
{
  out[0] = tag_type;
  out[1] = data_size >> 16;
  out[2] = data_size >> 8;
  out[3] = data_size;
  /* 24 low bits, then the extension byte with bits 24-31. */
  out[4] = timestamp_ms >> 16;
  out[5] = timestamp_ms >> 8;
  out[6] = timestamp_ms;
  out[7] = timestamp_ms >> 24;
  out[8] = out[9] = out[10] = 0; /* stream id */
}

void
sk_flv_write_previous_tag_size (guint8 out[4], guint32 data_size)
{
  guint32 v = data_size + 11;
  out[0] = v >> 24;
  out[1] = v >> 16;
  out[2] = v >> 8;
  out[3] = v;
}
