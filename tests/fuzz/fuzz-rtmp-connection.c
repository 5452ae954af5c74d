/* libFuzzer target: a whole server-side connection (handshake, chunks, commands, data
 * messages) from one byte stream, with callbacks that accept every key except "bad". */
#include <stdlib.h>
#include <string.h>

#include "ingress/rtmp/sk-rtmp-connection.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static gboolean
on_publish (gpointer user_data, const char *app, const char *key, GError **error)
{
  if (strcmp (key, "bad") == 0) {
    g_set_error_literal (error, SK_RTMP_ERROR, SK_RTMP_ERROR_BAD_NAME, "bad");
    return FALSE;
  }
  return TRUE;
}

static gboolean
on_media (gpointer user_data, guint8 tag, guint32 ts, const guint8 *d, gsize n, GError **error)
{
  /* Touch every byte so ASan sees any out-of-bounds slice. */
  volatile guint8 sum = 0;
  for (gsize i = 0; i < n; i++)
    sum += d[i];
  (void)sum;
  return TRUE;
}

static void
on_unpublish (gpointer user_data)
{
}

static const SkRtmpConnectionCallbacks callbacks = { on_publish, on_media, on_unpublish };

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  static const SkRtmpChunkLimits limits = { 65536, 1 << 20, 16 };
  g_autoptr (SkRtmpConnection) conn = sk_rtmp_connection_new (&limits, &callbacks, NULL);
  gsize consumed, needed;
  if (sk_rtmp_connection_feed (conn, data, size, &consumed, &needed, NULL) && consumed > size)
    abort ();
  return 0;
}
