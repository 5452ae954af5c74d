/*
 * libFuzzer target for the FLV tag parsers. The first input byte picks the tag type the
 * rest is parsed as (as the RTMP message type would); everything a tag leads to (AVC
 * configuration record → SPS, AudioSpecificConfig) is parsed further, like the pipeline does.
 */
#include <glib.h>
#include <stdint.h>

#include "pipelines/sk-flv.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
fuzz_video (const guint8 *data, gsize size)
{
  SkFlvVideoTag tag;
  SkFlvAvcConfig avc;
  SkH264Sps sps;
  if (!sk_flv_parse_video_tag (data, size, &tag, NULL))
    return;
  (void)sk_flv_video_codec_name (&tag);
  if (sk_flv_video_tag_is_avc_config (&tag)
      && sk_flv_parse_avc_config (tag.body, tag.body_size, &avc, NULL)
      && sk_h264_parse_sps (avc.sps, avc.sps_size, &sps, NULL)) {
    (void)sk_h264_sps_get_fps (&sps);
    (void)sk_h264_sps_forbids_reordering (&sps);
    g_assert (sps.width > 0 && sps.height > 0);
  }
  /* Also read the whole body as an SPS: that reaches the bit reader with any bytes. */
  if (sk_h264_parse_sps (tag.body, tag.body_size, &sps, NULL))
    g_assert (sps.width > 0 && sps.height > 0);
}

static void
fuzz_audio (const guint8 *data, gsize size)
{
  SkFlvAudioTag tag;
  SkAacConfig asc;
  if (!sk_flv_parse_audio_tag (data, size, &tag, NULL))
    return;
  (void)sk_flv_audio_codec_name (&tag);
  if (sk_aac_parse_audio_specific_config (tag.body, tag.body_size, &asc, NULL))
    g_assert (asc.sample_rate > 0);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  /* A private copy of exactly @size bytes so any over-read lands outside the allocation. */
  g_autofree guint8 *copy = g_memdup2 (data + 1, size - 1);
  gsize n = size - 1;
  switch (data[0] % 3) {
    case 0:
      fuzz_video (copy, n);
      break;
    case 1:
      fuzz_audio (copy, n);
      break;
    default: {
      SkFlvMetadata meta;
      g_autoptr (GError) error = NULL;
      if (!sk_flv_parse_metadata (copy, n, &meta, &error))
        g_assert (error == NULL || error->domain != 0);
      break;
    }
  }
  return 0;
}
