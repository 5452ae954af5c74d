/* FLV tag parser tests on real ffmpeg output plus hand-made enhanced RTMP and broken tags. */
#include <glib.h>
#include <string.h>

#include "common/sk-common.h"
#include "pipelines/sk-flv.h"
#include "flv-file.h"

static char *tmp_dir;
static GPtrArray *tags_bf0, *tags_bf2;

static GPtrArray *
read_or_skip (GPtrArray *tags)
{
  if (!tags)
    g_test_skip ("ffmpeg could not make the test media");
  return tags;
}

static const FlvFileTag *
first_tag (GPtrArray *tags, guint8 type)
{
  for (guint i = 0; i < tags->len; i++) {
    FlvFileTag *t = tags->pdata[i];
    if (t->type == type)
      return t;
  }
  return NULL;
}

static void
test_metadata (void)
{
  GPtrArray *tags = read_or_skip (tags_bf0);
  if (!tags)
    return;
  const FlvFileTag *t = first_tag (tags, SK_FLV_TAG_SCRIPT);
  g_assert_nonnull (t);
  gsize size;
  const guint8 *data = g_bytes_get_data (t->data, &size);
  SkFlvMetadata meta;
  g_autoptr (GError) error = NULL;
  g_assert_true (sk_flv_parse_metadata (data, size, &meta, &error));
  g_assert_no_error (error);
  g_assert_true (meta.has_video_codec);
  g_assert_true (meta.has_audio_codec);
  g_assert_cmpfloat (meta.video_codec_id, ==, 7);
  g_assert_cmpfloat (meta.audio_codec_id, ==, 10);
  g_assert_cmpfloat (meta.width, ==, 640);
  g_assert_cmpfloat (meta.height, ==, 360);
  g_assert_cmpfloat (meta.framerate, ==, 30);

  /* What RTMP carries: the same with "@setDataFrame" in front. */
  g_autoptr (GByteArray) rtmp = g_byte_array_new ();
  static const guint8 set_data_frame[]
      = { 0x02, 0x00, 0x0d, '@', 's', 'e', 't', 'D', 'a', 't', 'a', 'F', 'r', 'a', 'm', 'e' };
  g_byte_array_append (rtmp, set_data_frame, sizeof set_data_frame);
  g_byte_array_append (rtmp, data, size);
  g_assert_true (sk_flv_parse_metadata (rtmp->data, rtmp->len, &meta, &error));
  g_assert_cmpfloat (meta.width, ==, 640);

  /* Every truncation either parses (end marker optional) or fails cleanly. */
  for (gsize n = 0; n < size; n++) {
    g_autoptr (GError) e = NULL;
    if (!sk_flv_parse_metadata (data, n, &meta, &e))
      g_assert_nonnull (e);
  }
  /* Not onMetaData: FALSE without error. */
  static const guint8 other[] = { 0x02, 0x00, 0x03, 'f', 'o', 'o', 0x05 };
  g_assert_false (sk_flv_parse_metadata (other, sizeof other, &meta, &error));
  g_assert_no_error (error);
}

typedef struct {
  guint frames, keyframes, nonzero_cto, configs;
  SkH264Sps sps;
  SkFlvAvcConfig avc;
} VideoSummary;

static void
summarise_video (GPtrArray *tags, VideoSummary *s)
{
  memset (s, 0, sizeof *s);
  for (guint i = 0; i < tags->len; i++) {
    FlvFileTag *t = tags->pdata[i];
    if (t->type != SK_FLV_TAG_VIDEO)
      continue;
    gsize size;
    const guint8 *data = g_bytes_get_data (t->data, &size);
    SkFlvVideoTag tag;
    g_autoptr (GError) error = NULL;
    g_assert_true (sk_flv_parse_video_tag (data, size, &tag, &error));
    g_assert_false (tag.is_ex_header);
    g_assert_true (sk_flv_video_tag_is_avc (&tag));
    g_assert_cmpstr (sk_flv_video_codec_name (&tag), ==, "H264");
    if (sk_flv_video_tag_is_avc_config (&tag)) {
      s->configs++;
      g_assert_true (sk_flv_parse_avc_config (tag.body, tag.body_size, &s->avc, &error));
      g_assert_true (sk_h264_parse_sps (s->avc.sps, s->avc.sps_size, &s->sps, &error));
      g_assert_no_error (error);
    } else if (sk_flv_video_tag_is_avc_frame (&tag)) {
      s->frames++;
      s->keyframes += tag.frame_type == SK_FLV_FRAME_KEY;
      s->nonzero_cto += tag.composition_time != 0;
    }
  }
}

static void
test_avc_no_bframes (void)
{
  GPtrArray *tags = read_or_skip (tags_bf0);
  if (!tags)
    return;
  VideoSummary s;
  summarise_video (tags, &s);
  g_assert_cmpuint (s.configs, ==, 1);
  g_assert_cmpuint (s.frames, ==, 90);
  g_assert_cmpuint (s.keyframes, ==, 3);
  g_assert_cmpuint (s.nonzero_cto, ==, 0);
  g_assert_cmpuint (s.avc.nal_length_size, ==, 4);
  g_assert_cmpuint (s.avc.n_sps, ==, 1);
  g_assert_cmpuint (s.avc.n_pps, ==, 1);
  g_assert_cmpuint (s.avc.profile_idc, ==, s.sps.profile_idc);
  g_assert_cmpuint (s.sps.profile_idc, ==, 100); /* libx264 default for yuv420p: High */
  g_assert_cmpuint (s.sps.width, ==, 640);
  g_assert_cmpuint (s.sps.height, ==, 360); /* 368 coded, cropped */
  g_assert_true (s.sps.timing_info_present);
  g_assert_cmpfloat_with_epsilon (sk_h264_sps_get_fps (&s.sps), 30.0, 0.01);
  g_assert_true (s.sps.bitstream_restriction);
  g_assert_cmpuint (s.sps.max_num_reorder_frames, ==, 0);
  g_assert_true (sk_h264_sps_forbids_reordering (&s.sps));
  g_assert_true (sk_h264_sps_is_webrtc_decodable (&s.sps));
}

static void
test_avc_bframes (void)
{
  GPtrArray *tags = read_or_skip (tags_bf2);
  if (!tags)
    return;
  VideoSummary s;
  summarise_video (tags, &s);
  g_assert_cmpuint (s.frames, ==, 90);
  g_assert_cmpuint (s.nonzero_cto, >, 0);
  g_assert_cmpuint (s.sps.width, ==, 640);
  g_assert_cmpuint (s.sps.height, ==, 360);
  g_assert_false (sk_h264_sps_forbids_reordering (&s.sps));
  g_assert_cmpuint (s.sps.max_num_reorder_frames, >=, 1);
}

static void
test_aac (void)
{
  GPtrArray *tags = read_or_skip (tags_bf0);
  if (!tags)
    return;
  guint configs = 0, raw = 0;
  for (guint i = 0; i < tags->len; i++) {
    FlvFileTag *t = tags->pdata[i];
    if (t->type != SK_FLV_TAG_AUDIO)
      continue;
    gsize size;
    const guint8 *data = g_bytes_get_data (t->data, &size);
    SkFlvAudioTag tag;
    g_autoptr (GError) error = NULL;
    g_assert_true (sk_flv_parse_audio_tag (data, size, &tag, &error));
    g_assert_cmpuint (tag.sound_format, ==, SK_FLV_SOUND_AAC);
    g_assert_cmpstr (sk_flv_audio_codec_name (&tag), ==, "AAC");
    if (tag.packet_type == SK_FLV_AAC_SEQUENCE_HEADER) {
      SkAacConfig asc;
      g_assert_true (sk_aac_parse_audio_specific_config (tag.body, tag.body_size, &asc, &error));
      g_assert_cmpuint (asc.object_type, ==, 2);
      g_assert_cmpuint (asc.sample_rate, ==, 44100);
      g_assert_cmpuint (asc.channels, ==, 1);
      configs++;
    } else {
      raw++;
    }
  }
  g_assert_cmpuint (configs, ==, 1);
  g_assert_cmpuint (raw, >, 100); /* 3 s of 1024-sample frames at 44.1 kHz: ~130 */
}

static void
test_aac_config_variants (void)
{
  SkAacConfig asc;
  g_autoptr (GError) error = NULL;
  /* HE-AAC with explicit SBR: AOT 5, 24 kHz core, stereo, 48 kHz extension, AOT 2. */
  static const guint8 he[] = { 0x2b, 0x11, 0x88 };
  g_assert_true (sk_aac_parse_audio_specific_config (he, sizeof he, &asc, &error));
  g_assert_cmpuint (asc.object_type, ==, 5);
  g_assert_cmpuint (asc.sample_rate, ==, 48000);
  g_assert_cmpuint (asc.channels, ==, 2);
  /* AAC-LC 48 kHz stereo. */
  static const guint8 lc48[] = { 0x11, 0x90 };
  g_assert_true (sk_aac_parse_audio_specific_config (lc48, sizeof lc48, &asc, &error));
  g_assert_cmpuint (asc.sample_rate, ==, 48000);
  g_assert_cmpuint (asc.channels, ==, 2);
  /* Reserved sampling frequency index 13. */
  static const guint8 reserved[] = { 0x16, 0x90 };
  g_assert_false (sk_aac_parse_audio_specific_config (reserved, sizeof reserved, &asc, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);
  /* Escape to a 24-bit explicit rate that is cut short. */
  static const guint8 cut[] = { 0x17, 0x80 };
  g_assert_false (sk_aac_parse_audio_specific_config (cut, sizeof cut, &asc, &error));
  g_clear_error (&error);
}

static void
test_enhanced_rtmp (void)
{
  SkFlvVideoTag tag;
  g_autoptr (GError) error = NULL;
  /* HEVC sequence start: IsExHeader | key frame | SequenceStart, 'hvc1', record… */
  static const guint8 hevc_start[] = { 0x90, 'h', 'v', 'c', '1', 0x01, 0x01, 0x60 };
  g_assert_true (sk_flv_parse_video_tag (hevc_start, sizeof hevc_start, &tag, &error));
  g_assert_true (tag.is_ex_header);
  g_assert_cmpuint (tag.fourcc, ==, SK_FLV_FOURCC ('h', 'v', 'c', '1'));
  g_assert_cmpuint (tag.packet_type, ==, SK_FLV_EX_SEQUENCE_START);
  g_assert_cmpuint (tag.frame_type, ==, SK_FLV_FRAME_KEY);
  g_assert_false (sk_flv_video_tag_is_avc (&tag));
  g_assert_false (sk_flv_video_tag_is_avc_config (&tag));
  g_assert_cmpstr (sk_flv_video_codec_name (&tag), ==, "HEVC");
  g_assert_cmpuint (tag.body_size, ==, 3);

  /* HEVC coded frames carry a composition time: -2 as SI24. */
  static const guint8 hevc_frame[] = { 0xa1, 'h', 'v', 'c', '1', 0xff, 0xff, 0xfe, 0, 0, 0, 1 };
  g_assert_true (sk_flv_parse_video_tag (hevc_frame, sizeof hevc_frame, &tag, &error));
  g_assert_cmpint (tag.composition_time, ==, -2);
  g_assert_cmpuint (tag.frame_type, ==, SK_FLV_FRAME_INTER);
  g_assert_cmpuint (tag.body_size, ==, 4);

  /* AV1 CodedFrames: no composition time; the low nibble 7 must not read as legacy AVC. */
  static const guint8 av1[] = { 0x91, 'a', 'v', '0', '1', 0x12, 0x00 };
  g_assert_true (sk_flv_parse_video_tag (av1, sizeof av1, &tag, &error));
  g_assert_cmpstr (sk_flv_video_codec_name (&tag), ==, "AV1");
  g_assert_cmpuint (tag.body_size, ==, 2);
  static const guint8 vp9[] = { 0x93, 'v', 'p', '0', '9', 0x00 };
  g_assert_true (sk_flv_parse_video_tag (vp9, sizeof vp9, &tag, &error));
  g_assert_cmpstr (sk_flv_video_codec_name (&tag), ==, "VP9");
  g_assert_false (sk_flv_video_tag_is_avc (&tag));

  /* Enhanced 'avc1' is H.264: CodedFramesX means composition time 0. */
  static const guint8 avc1_x[] = { 0xa3, 'a', 'v', 'c', '1', 0, 0, 0, 2, 0x41, 0x9a };
  g_assert_true (sk_flv_parse_video_tag (avc1_x, sizeof avc1_x, &tag, &error));
  g_assert_true (sk_flv_video_tag_is_avc_frame (&tag));
  g_assert_cmpint (tag.composition_time, ==, 0);
  g_assert_cmpuint (tag.body_size, ==, 6);

  /* Truncated FourCC / composition time. */
  g_assert_false (sk_flv_parse_video_tag (hevc_frame, 3, &tag, &error));
  g_clear_error (&error);
  g_assert_false (sk_flv_parse_video_tag (hevc_frame, 6, &tag, &error));
  g_clear_error (&error);

  /* Legacy "HEVC" codec id 12 is recognised, not AVC. */
  static const guint8 legacy12[] = { 0x1c, 0x00, 0, 0, 0 };
  g_assert_true (sk_flv_parse_video_tag (legacy12, sizeof legacy12, &tag, &error));
  g_assert_false (sk_flv_video_tag_is_avc (&tag));
  g_assert_cmpstr (sk_flv_video_codec_name (&tag), ==, "HEVC");

  /* Enhanced audio (E-RTMP v2): SoundFormat 9 + FourCC. */
  SkFlvAudioTag atag;
  static const guint8 opus[] = { 0x91, 'O', 'p', 'u', 's', 0xfc };
  g_assert_true (sk_flv_parse_audio_tag (opus, sizeof opus, &atag, &error));
  g_assert_true (atag.is_ex_header);
  g_assert_cmpstr (sk_flv_audio_codec_name (&atag), ==, "Opus");
}

static void
test_malformed (void)
{
  SkFlvVideoTag tag;
  SkFlvAudioTag atag;
  SkFlvAvcConfig avc;
  SkH264Sps sps;
  g_autoptr (GError) error = NULL;

  g_assert_false (sk_flv_parse_video_tag (NULL, 0, &tag, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);
  static const guint8 short_avc[] = { 0x17, 0x01, 0x00 };
  g_assert_false (sk_flv_parse_video_tag (short_avc, sizeof short_avc, &tag, &error));
  g_clear_error (&error);
  static const guint8 bad_packet[] = { 0x17, 0x05, 0, 0, 0 };
  g_assert_false (sk_flv_parse_video_tag (bad_packet, sizeof bad_packet, &tag, &error));
  g_clear_error (&error);
  static const guint8 short_aac[] = { 0xaf };
  g_assert_false (sk_flv_parse_audio_tag (short_aac, sizeof short_aac, &atag, &error));
  g_clear_error (&error);

  /* SPS length pointing past the record. */
  static const guint8 overrun[] = { 1, 100, 0, 31, 0xff, 0xe1, 0x00, 0x40, 0x67, 0x64 };
  g_assert_false (sk_flv_parse_avc_config (overrun, sizeof overrun, &avc, &error));
  g_clear_error (&error);
  /* Not an SPS NAL. */
  static const guint8 pps[] = { 0x68, 0xee, 0x3c, 0x80 };
  g_assert_false (sk_h264_parse_sps (pps, sizeof pps, &sps, &error));
  g_clear_error (&error);
  /* An SPS of all 0 bits after the header: unbounded Exp-Golomb prefix. */
  static const guint8 zeros[] = { 0x67, 0x64, 0, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0 };
  g_assert_false (sk_h264_parse_sps (zeros, sizeof zeros, &sps, &error));
  g_clear_error (&error);

  /* Every truncation of a real sequence header fails or parses; never reads past the end
   * (run under valgrind/ASan to make that visible). */
  GPtrArray *tags = tags_bf0;
  if (!tags)
    return;
  const FlvFileTag *t = first_tag (tags, SK_FLV_TAG_VIDEO);
  gsize size;
  const guint8 *data = g_bytes_get_data (t->data, &size);
  for (gsize n = 0; n < size; n++) {
    g_autofree guint8 *copy = g_memdup2 (data, n);
    g_autoptr (GError) e = NULL;
    if (sk_flv_parse_video_tag (copy, n, &tag, &e)
        && sk_flv_parse_avc_config (tag.body, tag.body_size, &avc, &e))
      sk_h264_parse_sps (avc.sps, avc.sps_size, &sps, &e);
  }
  g_assert_true (sk_flv_parse_video_tag (data, size, &tag, NULL));
  g_assert_true (sk_flv_parse_avc_config (tag.body, tag.body_size, &avc, NULL));
  /* The config record without its PPS list is truncated. */
  g_assert_false (sk_flv_parse_avc_config (tag.body, 8 + avc.sps_size, &avc, &error));
  g_clear_error (&error);
}

static void
test_sps_emulation_prevention (void)
{
  /* Baseline 16x16, level_idc 0, so the RBSP has 00 00 right before the Exp-Golomb fields and
   * the NAL carries an emulation prevention byte there. RBSP bits after level_idc:
   * sps_id=0 "1", log2_max_frame_num-4=0 "1", poc_type=2 "011", max_num_ref_frames=0 "1",
   * gaps "0", width_mbs-1=0 "1", height-1=0 "1", frame_mbs_only "1", direct_8x8 "0",
   * cropping "0", vui "0", stop bit "1" → 1101 1101 1100 0100. Read with the 03 in place,
   * sps_id would be 0000 0011 … > 31 and the SPS rejected. */
  static const guint8 nal[] = { 0x67, 0x42, 0x00, 0x00, 0x03, 0xdd, 0xc4 };
  SkH264Sps out;
  g_autoptr (GError) error = NULL;
  g_assert_true (sk_h264_parse_sps (nal, sizeof nal, &out, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (out.profile_idc, ==, 66);
  g_assert_cmpuint (out.level_idc, ==, 0);
  g_assert_cmpuint (out.width, ==, 16);
  g_assert_cmpuint (out.height, ==, 16);
  g_assert_false (out.timing_info_present);
  g_assert_true (sk_h264_sps_forbids_reordering (&out));
}

static void
test_write_helpers (void)
{
  guint8 h[13], t[11], p[4];
  sk_flv_write_file_header (h, TRUE, FALSE);
  g_assert_cmpmem (h, 5, "FLV\x01\x04", 5);
  sk_flv_write_tag_header (t, 9, 0x12345678, 0x0a0b0c);
  static const guint8 want[] = { 9, 0x0a, 0x0b, 0x0c, 0x34, 0x56, 0x78, 0x12, 0, 0, 0 };
  g_assert_cmpmem (t, sizeof t, want, sizeof want);
  sk_flv_write_previous_tag_size (p, 5);
  static const guint8 want_p[] = { 0, 0, 0, 16 };
  g_assert_cmpmem (p, sizeof p, want_p, sizeof want_p);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("sk-flv-XXXXXX", NULL);
  g_autofree char *bf0 = flv_file_make (tmp_dir, "bf0.flv", FLV_AV_IN,
                                        "-c:v libx264 -pix_fmt yuv420p -bf 0 -g 30 -c:a aac");
  g_autofree char *bf2 = flv_file_make (tmp_dir, "bf2.flv", FLV_VIDEO_IN,
                                        "-c:v libx264 -pix_fmt yuv420p -bf 2 -g 30 -an");
  tags_bf0 = bf0 ? flv_file_read (bf0) : NULL;
  tags_bf2 = bf2 ? flv_file_read (bf2) : NULL;

  g_test_add_func ("/flv/metadata", test_metadata);
  g_test_add_func ("/flv/avc-no-bframes", test_avc_no_bframes);
  g_test_add_func ("/flv/avc-bframes", test_avc_bframes);
  g_test_add_func ("/flv/aac", test_aac);
  g_test_add_func ("/flv/aac-config-variants", test_aac_config_variants);
  g_test_add_func ("/flv/enhanced-rtmp", test_enhanced_rtmp);
  g_test_add_func ("/flv/malformed", test_malformed);
  g_test_add_func ("/flv/sps-emulation-prevention", test_sps_emulation_prevention);
  g_test_add_func ("/flv/write", test_write_helpers);
  int ret = g_test_run ();

  g_clear_pointer (&tags_bf0, g_ptr_array_unref);
  g_clear_pointer (&tags_bf2, g_ptr_array_unref);
  if (bf0)
    g_unlink (bf0);
  if (bf2)
    g_unlink (bf2);
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return ret;
}
