/* Unit tests for SkTrack: fan-out, GOP replay, concurrent removal, caps changes. */
#include <gst/gst.h>

#include "rooms/sk-track.h"

typedef struct {
  GPtrArray *seen; /* GstBuffer* refs, in order */
  guint caps_changes;
  gint destroyed;
  gint removed; /* set by the test after remove_sink returned */
  gint calls_after_remove;
  gint calls;
} Recorder;

static Recorder *
recorder_new (void)
{
  Recorder *r = g_new0 (Recorder, 1);
  r->seen = g_ptr_array_new_with_free_func ((GDestroyNotify)gst_buffer_unref);
  return r;
}

static void
recorder_free (Recorder *r)
{
  g_ptr_array_unref (r->seen);
  g_free (r);
}

static void
record_buffer (SkTrack *track, GstBuffer *buffer, gpointer user_data)
{
  Recorder *r = user_data;
  g_ptr_array_add (r->seen, gst_buffer_ref (buffer));
}

static void
record_caps (SkTrack *track, GstCaps *caps, gpointer user_data)
{
  Recorder *r = user_data;
  r->caps_changes++;
}

static void
mark_destroyed (gpointer user_data)
{
  Recorder *r = user_data;
  g_atomic_int_inc (&r->destroyed);
}

static GstBuffer *
make_buffer (gboolean keyframe, guint64 pts, gsize size)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, size, NULL);
  GST_BUFFER_PTS (buf) = pts;
  if (!keyframe)
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
  return buf;
}

static void
push_new (SkTrack *track, gboolean keyframe, guint64 pts)
{
  GstBuffer *buf = make_buffer (keyframe, pts, 100);
  sk_track_push (track, buf);
  gst_buffer_unref (buf);
}

static GstCaps *
h264_caps (void)
{
  return gst_caps_from_string ("video/x-h264,stream-format=byte-stream,alignment=au");
}

static void
test_codec_names (void)
{
  struct {
    const char *caps;
    SkTrackKind kind;
    const char *codec;
  } cases[] = {
    { "video/x-h264,stream-format=byte-stream,alignment=au", SK_TRACK_KIND_VIDEO, "H264" },
    { "video/x-vp8", SK_TRACK_KIND_VIDEO, "VP8" },
    { "audio/x-opus", SK_TRACK_KIND_AUDIO, "opus" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GstCaps) caps = gst_caps_from_string (cases[i].caps);
    g_autoptr (SkTrack) track = sk_track_new (cases[i].kind, "TR_x", caps);
    g_assert_cmpstr (sk_track_get_codec (track), ==, cases[i].codec);
    g_assert_cmpstr (sk_track_get_sid (track), ==, "TR_x");
    g_assert_cmpint (sk_track_get_kind (track), ==, cases[i].kind);
    g_autoptr (GstCaps) got = sk_track_get_caps (track);
    g_assert_true (gst_caps_is_equal (got, caps));
  }
  g_assert_cmpstr (sk_track_kind_to_string (SK_TRACK_KIND_VIDEO), ==, "video");
  g_assert_cmpstr (sk_track_kind_to_string (SK_TRACK_KIND_AUDIO), ==, "audio");
}

static void
test_fan_out (void)
{
  g_autoptr (GstCaps) caps = gst_caps_from_string ("audio/x-opus");
  g_autoptr (SkTrack) track = sk_track_new (SK_TRACK_KIND_AUDIO, "TR_a", caps);
  Recorder *a = recorder_new (), *b = recorder_new ();

  guint ida = sk_track_add_sink (track, record_buffer, NULL, a, mark_destroyed);
  guint idb = sk_track_add_sink (track, record_buffer, NULL, b, mark_destroyed);
  g_assert_cmpuint (ida, >, 0);
  g_assert_cmpuint (idb, >, 0);
  g_assert_cmpuint (ida, !=, idb);

  for (guint i = 0; i < 10; i++)
    push_new (track, TRUE, i * GST_MSECOND * 20);
  g_assert_cmpuint (a->seen->len, ==, 10);
  g_assert_cmpuint (b->seen->len, ==, 10);
  for (guint i = 0; i < 10; i++) {
    g_assert_cmpuint (GST_BUFFER_PTS (g_ptr_array_index (a->seen, i)), ==, i * GST_MSECOND * 20);
    g_assert_true (g_ptr_array_index (a->seen, i) == g_ptr_array_index (b->seen, i));
  }

  sk_track_remove_sink (track, ida);
  g_assert_cmpint (a->destroyed, ==, 1);
  push_new (track, TRUE, 0);
  g_assert_cmpuint (a->seen->len, ==, 10);
  g_assert_cmpuint (b->seen->len, ==, 11);

  /* Removing twice or an unknown id is harmless. */
  sk_track_remove_sink (track, ida);
  sk_track_remove_sink (track, 9999);
  g_assert_cmpint (a->destroyed, ==, 1);

  g_assert_cmpuint (sk_track_get_buffers_pushed (track), ==, 11);
  g_assert_cmpuint (sk_track_get_bytes_pushed (track), ==, 1100);

  /* An ended track delivers nothing more. */
  sk_track_end (track);
  g_assert_true (sk_track_is_ended (track));
  push_new (track, TRUE, 0);
  g_assert_cmpuint (b->seen->len, ==, 11);

  /* The last unref destroys the remaining sink. */
  g_clear_pointer (&track, sk_track_unref);
  g_assert_cmpint (b->destroyed, ==, 1);
  recorder_free (a);
  recorder_free (b);
}

static void
test_gop_replay (void)
{
  g_autoptr (GstCaps) caps = h264_caps ();
  g_autoptr (SkTrack) track = sk_track_new (SK_TRACK_KIND_VIDEO, "TR_v", caps);

  /* Deltas before any keyframe are not decodable: never replayed. */
  push_new (track, FALSE, 1);
  push_new (track, FALSE, 2);
  Recorder *early = recorder_new ();
  guint id = sk_track_add_sink (track, record_buffer, NULL, early, mark_destroyed);
  g_assert_cmpuint (early->seen->len, ==, 0);
  sk_track_remove_sink (track, id);

  /* K D D K D: the cache starts again at the second keyframe. */
  push_new (track, TRUE, 10);
  push_new (track, FALSE, 11);
  push_new (track, FALSE, 12);
  push_new (track, TRUE, 20);
  push_new (track, FALSE, 21);

  Recorder *r = recorder_new ();
  id = sk_track_add_sink (track, record_buffer, NULL, r, mark_destroyed);
  g_assert_cmpuint (r->seen->len, ==, 2);
  g_assert_cmpuint (GST_BUFFER_PTS (g_ptr_array_index (r->seen, 0)), ==, 20);
  g_assert_false (
      GST_BUFFER_FLAG_IS_SET (g_ptr_array_index (r->seen, 0), GST_BUFFER_FLAG_DELTA_UNIT));
  g_assert_cmpuint (GST_BUFFER_PTS (g_ptr_array_index (r->seen, 1)), ==, 21);

  /* Then the live stream follows with no gap and no duplicate. */
  push_new (track, FALSE, 22);
  g_assert_cmpuint (r->seen->len, ==, 3);
  g_assert_cmpuint (GST_BUFFER_PTS (g_ptr_array_index (r->seen, 2)), ==, 22);
  sk_track_remove_sink (track, id);

  /* A GOP over the buffer cap is dropped until the next keyframe. */
  push_new (track, TRUE, 100);
  for (guint i = 0; i < 400; i++)
    push_new (track, FALSE, 101 + i);
  Recorder *late = recorder_new ();
  id = sk_track_add_sink (track, record_buffer, NULL, late, mark_destroyed);
  g_assert_cmpuint (late->seen->len, ==, 0);
  sk_track_remove_sink (track, id);

  /* A GOP over the byte cap too (one 9 MiB keyframe). */
  GstBuffer *big = make_buffer (TRUE, 1000, 9 * 1024 * 1024);
  sk_track_push (track, big);
  gst_buffer_unref (big);
  Recorder *huge = recorder_new ();
  id = sk_track_add_sink (track, record_buffer, NULL, huge, mark_destroyed);
  g_assert_cmpuint (huge->seen->len, ==, 0);
  sk_track_remove_sink (track, id);

  /* Audio tracks never replay. */
  g_autoptr (GstCaps) acaps = gst_caps_from_string ("audio/x-opus");
  g_autoptr (SkTrack) audio = sk_track_new (SK_TRACK_KIND_AUDIO, "TR_a", acaps);
  push_new (audio, TRUE, 1);
  Recorder *ar = recorder_new ();
  id = sk_track_add_sink (audio, record_buffer, NULL, ar, mark_destroyed);
  g_assert_cmpuint (ar->seen->len, ==, 0);
  sk_track_remove_sink (audio, id);

  recorder_free (early);
  recorder_free (r);
  recorder_free (late);
  recorder_free (huge);
  recorder_free (ar);
}

static void
test_caps_change (void)
{
  g_autoptr (GstCaps) caps = h264_caps ();
  g_autoptr (SkTrack) track = sk_track_new (SK_TRACK_KIND_VIDEO, "TR_v", caps);
  Recorder *r = recorder_new ();
  guint id = sk_track_add_sink (track, record_buffer, record_caps, r, mark_destroyed);

  push_new (track, TRUE, 1);
  const char *old_codec = sk_track_get_codec (track);

  /* Same caps: no notification. */
  g_autoptr (GstCaps) same = h264_caps ();
  sk_track_set_caps (track, same);
  g_assert_cmpuint (r->caps_changes, ==, 0);

  g_autoptr (GstCaps) vp8 = gst_caps_from_string ("video/x-vp8");
  sk_track_set_caps (track, vp8);
  g_assert_cmpuint (r->caps_changes, ==, 1);
  g_assert_cmpstr (sk_track_get_codec (track), ==, "VP8");
  /* The old codec string stays valid for whoever kept it. */
  g_assert_cmpstr (old_codec, ==, "H264");
  g_autoptr (GstCaps) got = sk_track_get_caps (track);
  g_assert_true (gst_caps_is_equal (got, vp8));

  /* The old GOP is not replayed into the new stream. */
  Recorder *late = recorder_new ();
  guint id2 = sk_track_add_sink (track, record_buffer, NULL, late, mark_destroyed);
  g_assert_cmpuint (late->seen->len, ==, 0);

  sk_track_remove_sink (track, id);
  sk_track_remove_sink (track, id2);
  recorder_free (r);
  recorder_free (late);
}

/* Pushers on several threads while the main thread adds and removes sinks. */

typedef struct {
  SkTrack *track;
  gint stop;
} PushCtx;

static gpointer
pusher_thread (gpointer data)
{
  PushCtx *ctx = data;
  guint64 n = 0;

  while (!g_atomic_int_get (&ctx->stop)) {
    push_new (ctx->track, n % 30 == 0, n);
    n++;
  }
  return NULL;
}

static void
count_buffer (SkTrack *track, GstBuffer *buffer, gpointer user_data)
{
  Recorder *r = user_data;
  if (g_atomic_int_get (&r->removed))
    g_atomic_int_inc (&r->calls_after_remove);
  g_atomic_int_inc (&r->calls);
}

static void
test_concurrent_remove (void)
{
  g_autoptr (GstCaps) caps = h264_caps ();
  SkTrack *track = sk_track_new (SK_TRACK_KIND_VIDEO, "TR_v", caps);
  PushCtx ctx = { .track = track };
  GThread *threads[4];
  guint total_calls = 0;

  for (guint i = 0; i < G_N_ELEMENTS (threads); i++)
    threads[i] = g_thread_new ("pusher", pusher_thread, &ctx);

  for (guint round = 0; round < 200; round++) {
    Recorder *r = recorder_new ();
    guint id = sk_track_add_sink (track, count_buffer, NULL, r, mark_destroyed);
    g_usleep (200);
    sk_track_remove_sink (track, id);
    g_atomic_int_set (&r->removed, 1);
    g_assert_cmpint (g_atomic_int_get (&r->destroyed), ==, 1);
    g_usleep (100);
    g_assert_cmpint (g_atomic_int_get (&r->calls_after_remove), ==, 0);
    total_calls += g_atomic_int_get (&r->calls);
    recorder_free (r);
  }

  g_atomic_int_set (&ctx.stop, 1);
  for (guint i = 0; i < G_N_ELEMENTS (threads); i++)
    g_thread_join (threads[i]);

  /* The sinks really were fed while the threads ran. */
  g_assert_cmpuint (total_calls, >, 0);
  g_assert_cmpuint (sk_track_get_buffers_pushed (track), >, 0);
  sk_track_unref (track);
}

static void
count_keyframe_request (SkTrack *track, gpointer user_data)
{
  Recorder *r = user_data;
  g_atomic_int_inc (&r->calls);
}

/* Keyframe requests reach the producer at most once per interval, nothing reaches a track
 * without a producer, and the producer's data is released when it is replaced. */
static void
test_keyframe_requests (void)
{
  g_autoptr (GstCaps) caps = gst_caps_from_string ("video/x-vp8");
  SkTrack *track = sk_track_new (SK_TRACK_KIND_VIDEO, "TR_kf", caps);
  Recorder *r = recorder_new ();
  guint64 dropped = 0;

  g_assert_false (sk_track_request_keyframe (track)); /* no producer: dropped */
  g_assert_cmpuint (sk_track_get_keyframe_requests (track, &dropped), ==, 0);
  g_assert_cmpuint (dropped, ==, 1);

  sk_track_set_keyframe_func (track, count_keyframe_request, r, mark_destroyed);
  g_assert_true (sk_track_request_keyframe (track));
  for (guint i = 0; i < 10; i++)
    g_assert_false (sk_track_request_keyframe (track)); /* within the interval */
  g_assert_cmpint (g_atomic_int_get (&r->calls), ==, 1);
  g_assert_cmpuint (sk_track_get_keyframe_requests (track, &dropped), ==, 1);
  g_assert_cmpuint (dropped, ==, 11);

  g_usleep ((SK_TRACK_KEYFRAME_INTERVAL_MS + 20) * 1000);
  g_assert_true (sk_track_request_keyframe (track));
  g_assert_cmpint (g_atomic_int_get (&r->calls), ==, 2);

  /* Removing the producer releases its data once, and nothing is called after it. */
  sk_track_set_keyframe_func (track, NULL, NULL, NULL);
  g_assert_cmpint (g_atomic_int_get (&r->destroyed), ==, 1);
  g_usleep ((SK_TRACK_KEYFRAME_INTERVAL_MS + 20) * 1000);
  g_assert_false (sk_track_request_keyframe (track));
  g_assert_cmpint (g_atomic_int_get (&r->calls), ==, 2);

  /* A producer still installed when the track goes is released with it. */
  sk_track_set_keyframe_func (track, count_keyframe_request, r, mark_destroyed);
  sk_track_unref (track);
  g_assert_cmpint (g_atomic_int_get (&r->destroyed), ==, 2);
  recorder_free (r);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/track/codec-names", test_codec_names);
  g_test_add_func ("/track/fan-out", test_fan_out);
  g_test_add_func ("/track/gop-replay", test_gop_replay);
  g_test_add_func ("/track/caps-change", test_caps_change);
  g_test_add_func ("/track/concurrent-remove", test_concurrent_remove);
  g_test_add_func ("/track/keyframe-requests", test_keyframe_requests);
  return g_test_run ();
}
