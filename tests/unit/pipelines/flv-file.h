/* Test helper: reads an FLV file (as written by ffmpeg) into its tags, and makes test media. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

typedef struct {
  guint8 type;
  guint32 timestamp_ms;
  GBytes *data;
} FlvFileTag;

static void
flv_file_tag_free (gpointer p)
{
  FlvFileTag *t = p;
  g_bytes_unref (t->data);
  g_free (t);
}

/* Returns the tags of @path in file order (NULL on a read or format error). */
static inline GPtrArray *
flv_file_read (const char *path)
{
  g_autofree guint8 *buf = NULL;
  gsize len;
  if (!g_file_get_contents (path, (char **)&buf, &len, NULL))
    return NULL;
  if (len < 13 || memcmp (buf, "FLV", 3) != 0)
    return NULL;
  guint32 header_size = (guint32)buf[5] << 24 | buf[6] << 16 | buf[7] << 8 | buf[8];
  gsize off = header_size + 4;
  GPtrArray *tags = g_ptr_array_new_with_free_func (flv_file_tag_free);
  while (off + 11 <= len) {
    const guint8 *h = buf + off;
    guint32 size = h[1] << 16 | h[2] << 8 | h[3];
    guint32 ts = (guint32)h[7] << 24 | h[4] << 16 | h[5] << 8 | h[6];
    if (off + 11 + size + 4 > len)
      break;
    FlvFileTag *t = g_new0 (FlvFileTag, 1);
    t->type = h[0] & 0x1f;
    t->timestamp_ms = ts;
    t->data = g_bytes_new (h + 11, size);
    g_ptr_array_add (tags, t);
    off += 11 + size + 4;
  }
  return tags;
}

/* Runs ffmpeg (lavfi test sources, 3 s) into @dir/@name; @args are the codec arguments. */
static inline char *
flv_file_make (const char *dir, const char *name, const char *inputs, const char *args)
{
  char *path = g_build_filename (dir, name, NULL);
  g_autofree char *cmd = g_strdup_printf ("ffmpeg -nostdin -hide_banner -loglevel error -y %s "
                                          "-t 3 %s -f flv %s",
                                          inputs, args, path);
  int status = 0;
  g_autoptr (GError) error = NULL;
  if (!g_spawn_command_line_sync (cmd, NULL, NULL, &status, &error)
      || !g_spawn_check_wait_status (status, NULL)) {
    g_printerr ("ffmpeg failed: %s\n", cmd);
    g_free (path);
    return NULL;
  }
  return path;
}

#define FLV_VIDEO_IN "-f lavfi -i testsrc=size=640x360:rate=30"
#define FLV_AUDIO_IN "-f lavfi -i sine=frequency=440"
#define FLV_AV_IN FLV_VIDEO_IN " " FLV_AUDIO_IN
