/*
 * Benchmark: CPU cost of the passthrough path (720p30 H.264 at 2.5 Mbit/s + AAC → H.264
 * passthrough + Opus). Feeds 10 s of media as fast as it goes and prints CPU seconds per
 * media second, i.e. the share of one core the pipeline needs in real time.
 */
#include <gst/gst.h>
#include <sys/resource.h>

#include "pipelines/sk-pipeline.h"
#include "flv-file.h"

static gint video_buffers, audio_buffers;

static void
on_buffer (SkTrack *track, GstBuffer *buf, gpointer user_data)
{
  g_atomic_int_inc (sk_track_get_kind (track) == SK_TRACK_KIND_VIDEO ? &video_buffers
                                                                     : &audio_buffers);
}

static SkTrack *
on_track_ready (SkIngressPipeline *p, SkTrackKind kind, GstCaps *caps, gpointer user_data)
{
  GPtrArray *tracks = user_data;
  SkTrack *track = sk_track_new (kind, kind == SK_TRACK_KIND_VIDEO ? "TR_v" : "TR_a", caps);
  sk_track_add_sink (track, on_buffer, NULL, NULL, NULL);
  g_ptr_array_add (tracks, track);
  return track;
}

static double
cpu_seconds (void)
{
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
         + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double
run (const char *path, SkTranscodeMode mode, guint want_video)
{
  g_autoptr (GPtrArray) tracks = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_track_unref);
  g_autoptr (GPtrArray) tags = flv_file_read (path);
  SkIngressPipelineCallbacks cbs = { .track_ready = on_track_ready };
  g_atomic_int_set (&video_buffers, 0);
  g_atomic_int_set (&audio_buffers, 0);
  SkIngressPipeline *p = sk_ingress_pipeline_new_flv ("bench", mode, NULL, &cbs, tracks, NULL);
  double start = cpu_seconds ();
  gint64 wall = g_get_monotonic_time ();
  for (guint i = 0; i < tags->len; i++) {
    FlvFileTag *t = tags->pdata[i];
    gsize size;
    const guint8 *d = g_bytes_get_data (t->data, &size);
    if (!sk_ingress_pipeline_push_flv_tag (p, t->type, t->timestamp_ms, d, size, NULL))
      g_error ("push failed");
    while (g_main_context_iteration (NULL, FALSE))
      ;
  }
  gint64 deadline = g_get_monotonic_time () + 60 * G_TIME_SPAN_SECOND;
  while ((guint)g_atomic_int_get (&video_buffers) < want_video
         && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, FALSE) || (g_usleep (1000), TRUE);
  double cpu = cpu_seconds () - start;
  g_print ("%s: %d video / %d audio buffers, %.3f s CPU, %.3f s wall for 10 s of media: "
           "%.1f%% of a core in real time\n",
           sk_transcode_mode_to_string (mode), video_buffers, audio_buffers, cpu,
           (g_get_monotonic_time () - wall) / 1e6, cpu * 10);
  sk_ingress_pipeline_free (p);
  return cpu;
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_autofree char *dir = g_dir_make_tmp ("sk-bench-XXXXXX", NULL);
  char *path = g_build_filename (dir, "720p.flv", NULL);
  g_autofree char *cmd = g_strdup_printf (
      "ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 "
      "-f lavfi -i sine=frequency=440:sample_rate=48000 -t 10 -c:v libx264 -pix_fmt yuv420p "
      "-preset veryfast -b:v 2500k -maxrate 2500k -bufsize 5000k -bf 0 -g 60 -c:a aac -b:a 160k "
      "-ac 2 -f flv %s",
      path);
  int status;
  if (!g_spawn_command_line_sync (cmd, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    g_error ("ffmpeg failed");
  run (path, SK_TRANSCODE_NEVER, 300);
  if (argc > 1 && g_str_equal (argv[1], "--transcode"))
    run (path, SK_TRANSCODE_ALWAYS, 290);
  g_unlink (path);
  g_rmdir (dir);
  g_free (path);
  return 0;
}
