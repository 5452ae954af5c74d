/* streamkeeper: a published track — fan-out of encoded buffers with a GOP cache. */
#include "rooms/sk-track.h"

#include "rooms/sk-rtp.h"

#include <string.h>

/* A GOP longer than this is not worth replaying (and would pin memory): drop it and wait
 * for the next keyframe. 300 frames is 10 s at 30 fps, far above any sane key-int. A track of
 * RTP packets counts the packets that end a frame (marker bit, GST_BUFFER_FLAG_MARKER). */
#define SK_TRACK_GOP_MAX_FRAMES 300
#define SK_TRACK_GOP_MAX_PACKETS 8192
#define SK_TRACK_GOP_MAX_BYTES (8 * 1024 * 1024)

typedef struct {
  guint id;
  SkTrackSinkFunc func;
  SkTrackCapsFunc caps_func;
  gpointer user_data;
  GDestroyNotify destroy;
} SkTrackSink;

struct _SkTrack {
  gint refcount;
  SkTrackKind kind;
  char *sid;

  GMutex lock; /* everything below */
  GstCaps *caps;
  const char *codec; /* interned: callers may keep the pointer across caps changes */
  GArray *sinks;     /* SkTrackSink */
  guint next_sink_id;
  gboolean rtp; /* caps are application/x-rtp: buffers are packets */
  GQueue gop;   /* GstBuffer*, from the newest keyframe on; empty while no valid GOP */
  gsize gop_bytes;
  guint gop_frames;
  gboolean ended;
  guint64 buffers_pushed;
  guint64 bytes_pushed;

  /* Its own lock: a request comes from a subscriber's RTCP thread and must neither wait for
   * a push nor run the producer's func under the lock that pushes hold. */
  GMutex keyframe_lock; /* the fields below */
  SkTrackKeyframeFunc keyframe_func;
  gpointer keyframe_data;
  GDestroyNotify keyframe_destroy;
  gint64 last_keyframe_us;
  guint64 keyframe_requests, keyframe_dropped;
};

const char *
sk_track_codec_from_caps (GstCaps *caps)
{
  if (caps == NULL || gst_caps_is_empty (caps) || gst_caps_is_any (caps))
    return g_intern_static_string ("unknown");

  const GstStructure *st = gst_caps_get_structure (caps, 0);
  const char *name = gst_structure_get_name (st);
  if (g_str_equal (name, "application/x-rtp")) {
    /* Forwarded packets: the codec is the encoding's. */
    const char *encoding = gst_structure_get_string (st, "encoding-name");
    if (encoding == NULL)
      return g_intern_static_string ("unknown");
    if (g_ascii_strcasecmp (encoding, "OPUS") == 0)
      return g_intern_static_string ("opus");
    g_autofree char *upper = g_ascii_strup (encoding, -1);
    return g_intern_string (upper);
  }
  if (g_str_equal (name, "video/x-h264"))
    return g_intern_static_string ("H264");
  if (g_str_equal (name, "video/x-vp8"))
    return g_intern_static_string ("VP8");
  if (g_str_equal (name, "video/x-vp9"))
    return g_intern_static_string ("VP9");
  if (g_str_equal (name, "audio/x-opus"))
    return g_intern_static_string ("opus");
  /* Unknown media: keep the subtype so the API still says something useful. */
  const char *slash = strchr (name, '/');
  return g_intern_string (slash != NULL ? slash + 1 : name);
}

static void
gop_clear_locked (SkTrack *track)
{
  GstBuffer *buf;

  while ((buf = g_queue_pop_head (&track->gop)) != NULL)
    gst_buffer_unref (buf);
  track->gop_bytes = 0;
  track->gop_frames = 0;
}

SkTrack *
sk_track_new (SkTrackKind kind, const char *sid, GstCaps *caps)
{
  g_return_val_if_fail (sid != NULL, NULL);

  SkTrack *track = g_new0 (SkTrack, 1);
  track->refcount = 1;
  track->kind = kind;
  track->sid = g_strdup (sid);
  g_mutex_init (&track->lock);
  g_mutex_init (&track->keyframe_lock);
  track->caps = caps != NULL ? gst_caps_ref (caps) : NULL;
  track->codec = sk_track_codec_from_caps (caps);
  track->rtp = sk_rtp_caps_is_rtp (caps);
  track->sinks = g_array_new (FALSE, TRUE, sizeof (SkTrackSink));
  track->next_sink_id = 1;
  g_queue_init (&track->gop);
  return track;
}

SkTrack *
sk_track_ref (SkTrack *track)
{
  g_return_val_if_fail (track != NULL, NULL);
  g_atomic_int_inc (&track->refcount);
  return track;
}

void
sk_track_unref (SkTrack *track)
{
  if (track == NULL || !g_atomic_int_dec_and_test (&track->refcount))
    return;

  /* Last reference: nobody else can push or add sinks any more. */
  for (guint i = 0; i < track->sinks->len; i++) {
    SkTrackSink *sink = &g_array_index (track->sinks, SkTrackSink, i);
    if (sink->destroy != NULL)
      sink->destroy (sink->user_data);
  }
  g_array_unref (track->sinks);
  if (track->keyframe_destroy != NULL)
    track->keyframe_destroy (track->keyframe_data);
  g_mutex_clear (&track->keyframe_lock);
  gop_clear_locked (track);
  gst_clear_caps (&track->caps);
  g_mutex_clear (&track->lock);
  g_free (track->sid);
  g_free (track);
}

SkTrackKind
sk_track_get_kind (SkTrack *track)
{
  return track->kind;
}

const char *
sk_track_get_sid (SkTrack *track)
{
  return track->sid;
}

const char *
sk_track_get_codec (SkTrack *track)
{
  g_mutex_lock (&track->lock);
  const char *codec = track->codec;
  g_mutex_unlock (&track->lock);
  return codec;
}

GstCaps *
sk_track_get_caps (SkTrack *track)
{
  g_mutex_lock (&track->lock);
  GstCaps *caps = track->caps != NULL ? gst_caps_ref (track->caps) : NULL;
  g_mutex_unlock (&track->lock);
  return caps;
}

void
sk_track_set_caps (SkTrack *track, GstCaps *caps)
{
  g_return_if_fail (caps != NULL);

  g_mutex_lock (&track->lock);
  if (track->caps != NULL && gst_caps_is_equal (track->caps, caps)) {
    g_mutex_unlock (&track->lock);
    return;
  }
  gst_caps_replace (&track->caps, caps);
  track->codec = sk_track_codec_from_caps (caps);
  track->rtp = sk_rtp_caps_is_rtp (caps);
  /* The cached GOP belongs to the old stream: a new sink must wait for a keyframe of the
   * new one rather than get a mix. */
  gop_clear_locked (track);
  for (guint i = 0; i < track->sinks->len; i++) {
    SkTrackSink *sink = &g_array_index (track->sinks, SkTrackSink, i);
    if (sink->caps_func != NULL)
      sink->caps_func (track, caps, sink->user_data);
  }
  g_mutex_unlock (&track->lock);
}

static void
gop_store_locked (SkTrack *track, GstBuffer *buffer)
{
  gsize size = gst_buffer_get_size (buffer);

  if (!GST_BUFFER_FLAG_IS_SET (buffer, GST_BUFFER_FLAG_DELTA_UNIT)) {
    gop_clear_locked (track);
  } else if (g_queue_is_empty (&track->gop)) {
    return; /* no keyframe seen since the cache was dropped: nothing decodable to keep */
  }

  gboolean ends_frame = !track->rtp || GST_BUFFER_FLAG_IS_SET (buffer, GST_BUFFER_FLAG_MARKER);
  if (track->gop_frames + ends_frame > SK_TRACK_GOP_MAX_FRAMES
      || track->gop.length + 1 > SK_TRACK_GOP_MAX_PACKETS
      || track->gop_bytes + size > SK_TRACK_GOP_MAX_BYTES) {
    g_debug ("track %s: GOP exceeds %u frames / %u bytes, not caching it", track->sid,
             SK_TRACK_GOP_MAX_FRAMES, SK_TRACK_GOP_MAX_BYTES);
    gop_clear_locked (track);
    return;
  }
  g_queue_push_tail (&track->gop, gst_buffer_ref (buffer));
  track->gop_bytes += size;
  track->gop_frames += ends_frame;
}

void
sk_track_push (SkTrack *track, GstBuffer *buffer)
{
  g_return_if_fail (track != NULL && GST_IS_BUFFER (buffer));

  g_mutex_lock (&track->lock);
  if (track->ended) {
    g_mutex_unlock (&track->lock);
    return;
  }
  track->buffers_pushed++;
  track->bytes_pushed += gst_buffer_get_size (buffer);
  if (track->kind == SK_TRACK_KIND_VIDEO)
    gop_store_locked (track, buffer);
  for (guint i = 0; i < track->sinks->len; i++) {
    SkTrackSink *sink = &g_array_index (track->sinks, SkTrackSink, i);
    sink->func (track, buffer, sink->user_data);
  }
  g_mutex_unlock (&track->lock);
}

guint
sk_track_add_sink (SkTrack *track, SkTrackSinkFunc func, SkTrackCapsFunc caps_func,
                   gpointer user_data, GDestroyNotify destroy)
{
  g_return_val_if_fail (track != NULL && func != NULL, 0);

  SkTrackSink sink = {
    .func = func,
    .caps_func = caps_func,
    .user_data = user_data,
    .destroy = destroy,
  };

  g_mutex_lock (&track->lock);
  sink.id = track->next_sink_id++;
  if (track->next_sink_id == 0)
    track->next_sink_id = 1;
  /* Replay under the lock: the next push waits for us, so the sink sees the GOP and then
   * the live stream with no gap and no duplicate. */
  for (GList *l = track->gop.head; l != NULL; l = l->next)
    func (track, l->data, user_data);
  g_array_append_val (track->sinks, sink);
  g_mutex_unlock (&track->lock);
  return sink.id;
}

void
sk_track_remove_sink (SkTrack *track, guint sink_id)
{
  g_return_if_fail (track != NULL);

  SkTrackSink removed = { 0 };

  g_mutex_lock (&track->lock);
  for (guint i = 0; i < track->sinks->len; i++) {
    if (g_array_index (track->sinks, SkTrackSink, i).id == sink_id) {
      removed = g_array_index (track->sinks, SkTrackSink, i);
      g_array_remove_index (track->sinks, i);
      break;
    }
  }
  g_mutex_unlock (&track->lock);

  /* Outside the lock: the destroy notify may drop the last ref of something that pushes. */
  if (removed.id != 0 && removed.destroy != NULL)
    removed.destroy (removed.user_data);
}

void
sk_track_end (SkTrack *track)
{
  g_return_if_fail (track != NULL);

  g_mutex_lock (&track->lock);
  track->ended = TRUE;
  gop_clear_locked (track);
  g_mutex_unlock (&track->lock);
}

gboolean
sk_track_is_ended (SkTrack *track)
{
  g_mutex_lock (&track->lock);
  gboolean ended = track->ended;
  g_mutex_unlock (&track->lock);
  return ended;
}

guint64
sk_track_get_buffers_pushed (SkTrack *track)
{
  g_mutex_lock (&track->lock);
  guint64 n = track->buffers_pushed;
  g_mutex_unlock (&track->lock);
  return n;
}

guint64
sk_track_get_bytes_pushed (SkTrack *track)
{
  g_mutex_lock (&track->lock);
  guint64 n = track->bytes_pushed;
  g_mutex_unlock (&track->lock);
  return n;
}

void
sk_track_set_keyframe_func (SkTrack *track, SkTrackKeyframeFunc func, gpointer user_data,
                            GDestroyNotify destroy)
{
  g_return_if_fail (track != NULL);

  g_mutex_lock (&track->keyframe_lock);
  gpointer old_data = track->keyframe_data;
  GDestroyNotify old_destroy = track->keyframe_destroy;
  track->keyframe_func = func;
  track->keyframe_data = user_data;
  track->keyframe_destroy = destroy;
  g_mutex_unlock (&track->keyframe_lock);

  if (old_destroy != NULL)
    old_destroy (old_data);
}

gboolean
sk_track_request_keyframe (SkTrack *track)
{
  g_return_val_if_fail (track != NULL, FALSE);

  gint64 now = g_get_monotonic_time ();
  gboolean sent = FALSE;

  /* The func runs under keyframe_lock, so that set_keyframe_func (NULL) waits for a call in
   * flight and the producer may free what @keyframe_data points to right after it. */
  g_mutex_lock (&track->keyframe_lock);
  if (track->keyframe_func != NULL
      && (track->last_keyframe_us == 0
          || now - track->last_keyframe_us
                 >= SK_TRACK_KEYFRAME_INTERVAL_MS * G_TIME_SPAN_MILLISECOND)) {
    track->last_keyframe_us = now;
    track->keyframe_requests++;
    track->keyframe_func (track, track->keyframe_data);
    sent = TRUE;
  } else {
    /* Many subscribers joining at once all ask: one request per interval is plenty. */
    track->keyframe_dropped++;
  }
  g_mutex_unlock (&track->keyframe_lock);
  if (sent)
    g_debug ("track %s: keyframe requested from the producer", track->sid);
  return sent;
}

guint64
sk_track_get_keyframe_requests (SkTrack *track, guint64 *dropped)
{
  g_mutex_lock (&track->keyframe_lock);
  guint64 n = track->keyframe_requests;
  if (dropped != NULL)
    *dropped = track->keyframe_dropped;
  g_mutex_unlock (&track->keyframe_lock);
  return n;
}
