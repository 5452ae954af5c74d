/*
 * sk-stamp.h: a glass-to-glass mark drawn into each video frame by a test publisher and read
 * back by the subscriber that decodes it, on the same machine (CLOCK_MONOTONIC).
 *
 * The top SK_STAMP_BLOCK rows of the luma plane carry 32 blocks of SK_STAMP_BLOCK x
 * SK_STAMP_BLOCK pixels, black or white: 24 bits of the capture time in ms (wrapping every
 * 4.6 h) and an 8-bit check. Blocks that size survive any sane encoder; a frame that is too
 * small, or whose check does not match (a frame without a stamp), yields nothing.
 */
#pragma once

#include <gst/video/video.h>

#define SK_STAMP_BLOCK 16
#define SK_STAMP_BITS 32
#define SK_STAMP_MIN_WIDTH (SK_STAMP_BLOCK * SK_STAMP_BITS)

static inline guint32
sk_stamp_check (guint32 ms24)
{
  return ((ms24 ^ (ms24 >> 8) ^ (ms24 >> 16)) & 0xff) ^ 0x5a;
}

/* The frame's first plane must be luma (any planar or semi-planar YUV format). */
static inline gboolean
sk_stamp_fits (const GstVideoFrame *frame)
{
  return GST_VIDEO_FORMAT_INFO_IS_YUV (frame->info.finfo)
         && GST_VIDEO_FRAME_COMP_PLANE (frame, 0) == 0
         && GST_VIDEO_FRAME_COMP_PSTRIDE (frame, 0) == 1
         && GST_VIDEO_FRAME_WIDTH (frame) >= SK_STAMP_MIN_WIDTH
         && GST_VIDEO_FRAME_HEIGHT (frame) >= SK_STAMP_BLOCK;
}

static inline void
sk_stamp_write (GstVideoFrame *frame, gint64 mono_us)
{
  guint32 ms24 = (guint32)(mono_us / 1000) & 0xffffff;
  guint32 word = (ms24 << 8) | sk_stamp_check (ms24);
  guint8 *y = GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
  int stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);

  if (!sk_stamp_fits (frame))
    return;
  for (int row = 0; row < SK_STAMP_BLOCK; row++)
    for (int bit = 0; bit < SK_STAMP_BITS; bit++)
      memset (y + row * stride + bit * SK_STAMP_BLOCK,
              (word >> (SK_STAMP_BITS - 1 - bit)) & 1 ? 235 : 16, SK_STAMP_BLOCK);
}

/* The stamp's capture time in ms (24 bits), or -1. Reads the middle of each block. */
static inline gint64
sk_stamp_read (const GstVideoFrame *frame)
{
  const guint8 *y = GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
  int stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  guint32 word = 0;

  if (!sk_stamp_fits (frame))
    return -1;
  for (int bit = 0; bit < SK_STAMP_BITS; bit++) {
    guint sum = 0;
    for (int row = SK_STAMP_BLOCK / 4; row < SK_STAMP_BLOCK * 3 / 4; row++)
      for (int x = SK_STAMP_BLOCK / 4; x < SK_STAMP_BLOCK * 3 / 4; x++)
        sum += y[row * stride + bit * SK_STAMP_BLOCK + x];
    word = (word << 1) | (sum > 128u * (SK_STAMP_BLOCK / 2) * (SK_STAMP_BLOCK / 2));
  }
  guint32 ms24 = word >> 8;
  return (word & 0xff) == sk_stamp_check (ms24) ? (gint64)ms24 : -1;
}

/* Milliseconds from a stamp to @now_us, modulo the stamp's 24 bits. */
static inline gint64
sk_stamp_age_ms (gint64 stamp_ms24, gint64 now_us)
{
  return ((now_us / 1000) - stamp_ms24) & 0xffffff;
}
