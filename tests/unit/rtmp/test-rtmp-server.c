/*
 * The RTMP server against real publishers: ffmpeg, GStreamer rtmp2sink and rtmpsink (librtmp),
 * run as subprocesses publishing to 127.0.0.1 only. A test registry (sk-test-registry.c) stands
 * in for the ingress module and records what the server hands it.
 */
#include <signal.h>
#include <string.h>

#include <gio/gio.h>
#include <libsoup/soup.h>

#include <glib/gstdio.h>

#include "common/sk-config.h"
#include "ingress/rtmp/sk-rtmp-server.h"
#include "sk-test-registry.h"

typedef struct {
  SkConfig *config;
  SkIngressRegistry *registry;
  SkRtmpServer *server;
  guint port;
} Fixture;

static void
fixture_start (Fixture *f)
{
  g_autoptr (GError) error = NULL;
  f->server = sk_rtmp_server_new (f->config, f->registry, &error);
  g_assert_no_error (error);
  f->port = sk_rtmp_server_get_port (f->server);
}

static void
setup (Fixture *f, gconstpointer data)
{
  f->config = sk_config_new ();
  g_free (f->config->bind);
  f->config->bind = g_strdup ("127.0.0.1");
  f->config->rtmp_port = 0;
  f->config->publisher_timeout_ms = 1000;
  f->config->rtmp_handshake_timeout_ms = 500;
  f->config->rtmp_idle_timeout_ms = 3000;
  f->registry = sk_test_registry_new ();
  fixture_start (f);
}

static void
teardown (Fixture *f, gconstpointer data)
{
  sk_rtmp_server_free (f->server);
  g_assert_cmpuint (f->registry->n_live, ==, 0);
  sk_test_registry_destroy (f->registry);
  sk_config_free (f->config);
}

typedef gboolean (*Condition) (Fixture *f);

/* Runs the main context until @cond holds; FALSE on timeout. */
static gboolean
wait_until (Fixture *f, Condition cond, guint timeout_s)
{
  gint64 end = g_get_monotonic_time () + timeout_s * G_USEC_PER_SEC;
  while (!cond (f)) {
    if (g_get_monotonic_time () > end)
      return FALSE;
    g_main_context_iteration (NULL, FALSE);
    g_usleep (1000);
  }
  return TRUE;
}

static gboolean
session_ended (Fixture *f)
{
  SkTestSessionLog *log = sk_test_registry_last (f->registry);
  return log != NULL && log->ended;
}

static gboolean
no_connections (Fixture *f)
{
  return sk_rtmp_server_get_n_connections (f->server) == 0;
}

static gboolean
has_30_video (Fixture *f)
{
  SkTestSessionLog *log = sk_test_registry_last (f->registry);
  return log != NULL && log->n_video >= 30;
}

static GSubprocess *
spawn (const char *const *argv)
{
  g_autoptr (GError) error = NULL;
  GSubprocessFlags flags = G_SUBPROCESS_FLAGS_STDOUT_SILENCE;
  if (g_getenv ("SK_TEST_VERBOSE") == NULL)
    flags |= G_SUBPROCESS_FLAGS_STDERR_SILENCE;
  GSubprocess *proc = g_subprocess_newv (argv, flags, &error);
  g_assert_no_error (error);
  return proc;
}

static GSubprocess *
spawn_ffmpeg (Fixture *f, const char *key, const char *seconds)
{
  g_autofree char *url = g_strdup_printf ("rtmp://127.0.0.1:%u/live/%s", f->port, key);
  const char *argv[] = { "ffmpeg",
                         "-nostdin",
                         "-hide_banner",
                         "-loglevel",
                         "error",
                         "-re",
                         "-f",
                         "lavfi",
                         "-i",
                         "testsrc=size=320x240:rate=30",
                         "-f",
                         "lavfi",
                         "-i",
                         "sine",
                         "-t",
                         seconds,
                         "-c:v",
                         "libx264",
                         "-preset",
                         "ultrafast",
                         "-g",
                         "30",
                         "-c:a",
                         "aac",
                         "-f",
                         "flv",
                         url,
                         NULL };
  return spawn (argv);
}

/* 2 s of video at 30 fps and AAC audio through flvmux into @sink. */
static GSubprocess *
spawn_gst (Fixture *f, const char *sink, const char *key)
{
  g_autofree char *pipeline = g_strdup_printf (
      "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 ! "
      "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse ! "
      "flvmux name=m streamable=true ! %s location=rtmp://127.0.0.1:%u/live/%s "
      "audiotestsrc num-buffers=86 ! audio/x-raw,rate=44100,channels=2 ! voaacenc ! aacparse ! m.",
      sink, f->port, key);
  g_auto (GStrv) args = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *cmd = g_strconcat ("gst-launch-1.0 -q -e ", pipeline, NULL);
  g_assert_true (g_shell_parse_argv (cmd, NULL, &args, &error));
  return spawn ((const char *const *)args);
}

static gboolean
proc_done (GSubprocess *proc)
{
  /* g_subprocess has no non-blocking poll: ask with a zero-wait waitpid through the API. */
  return g_subprocess_get_identifier (proc) == NULL;
}

static void
wait_proc (GSubprocess *proc, guint timeout_s)
{
  gint64 end = g_get_monotonic_time () + timeout_s * G_USEC_PER_SEC;
  while (!proc_done (proc)) {
    g_assert_cmpint (g_get_monotonic_time (), <, end);
    g_main_context_iteration (NULL, FALSE);
    g_usleep (1000);
  }
}

/* A whole clean publish: key, media with sane timestamps, metadata, clean end. */
static void
check_clean_publish (Fixture *f, GSubprocess *proc, const char *key)
{
  g_assert_true (wait_until (f, session_ended, 30));
  wait_proc (proc, 10);
  g_assert_true (g_subprocess_get_successful (proc));
  g_assert_true (wait_until (f, no_connections, 5));

  SkTestSessionLog *log = sk_test_registry_last (f->registry);
  g_assert_cmpuint (f->registry->logs->len, ==, 1);
  g_assert_cmpstr (log->key, ==, key);
  g_assert_true (g_str_has_prefix (log->remote, "127.0.0.1:"));
  g_assert_cmpuint (log->n_meta, >=, 1);
  g_assert_true (log->meta_is_onmetadata);
  g_assert_true (log->video_seq_first);
  g_assert_cmpuint (log->n_video, >=, 50);
  g_assert_cmpuint (log->n_audio, >=, 50);
  g_assert_false (log->ts_went_back);
  /* Two seconds of media: timestamps start near 0 and end near 2000 ms. */
  g_assert_cmpuint (log->first_video_ts, <, 200);
  g_assert_cmpuint (log->last_video_ts, >, 1500);
  g_assert_cmpuint (log->last_video_ts, <, 2500);
  g_assert_cmpuint (log->last_audio_ts, >, 1500);
  g_assert_cmpuint (log->last_audio_ts, <, 2500);
  g_assert_cmpstr (log->end_reason, ==, "client_initiated");
}

static void
test_ffmpeg (Fixture *f, gconstpointer data)
{
  g_autoptr (GSubprocess) proc = spawn_ffmpeg (f, "goodffmpeg?token=abc", "2");
  check_clean_publish (f, proc, "goodffmpeg");
}

static void
test_rtmp2sink (Fixture *f, gconstpointer data)
{
  g_autoptr (GSubprocess) proc = spawn_gst (f, "rtmp2sink", "goodrtmp2");
  check_clean_publish (f, proc, "goodrtmp2");
}

static void
test_rtmpsink (Fixture *f, gconstpointer data)
{
  g_autoptr (GSubprocess) proc = spawn_gst (f, "rtmpsink", "goodlibrtmp");
  check_clean_publish (f, proc, "goodlibrtmp");
}

static void
serve_swf (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
           gpointer user_data)
{
  /* An uncompressed SWF header and padding: librtmp only hashes it. */
  static const guint8 swf[64] = { 'F', 'W', 'S', 10, 64 };
  soup_server_message_set_status (msg, 200, NULL);
  soup_server_message_set_response (msg, "application/x-shockwave-flash", SOUP_MEMORY_STATIC,
                                    (const char *)swf, sizeof swf);
}

static void
test_rtmpsink_digest (Fixture *f, gconstpointer data)
{
  /* With swfVfy librtmp uses the Flash (FP9) handshake: it verifies S1's digest and S2's
   * signature and gives up on a server that gets them wrong. It fetches the SWF to hash from
   * a local HTTP server and caches it under $HOME. */
  g_autoptr (GError) error = NULL;
  g_autoptr (SoupServer) http = soup_server_new (NULL, NULL);
  soup_server_add_handler (http, "/a.swf", serve_swf, NULL, NULL);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  g_assert_true (soup_server_listen (http, addr, 0, &error));
  GSList *uris = soup_server_get_uris (http);
  int http_port = g_uri_get_port (uris->data);
  g_slist_free_full (uris, (GDestroyNotify)g_uri_unref);

  g_autofree char *home = g_dir_make_tmp ("sk-rtmp-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *key
      = g_strdup_printf ("gooddigest\\ swfUrl=http://127.0.0.1:%d/a.swf\\ swfVfy=1", http_port);
  g_setenv ("HOME", home, TRUE);
  g_autoptr (GSubprocess) proc = spawn_gst (f, "rtmpsink", key);
  check_clean_publish (f, proc, "gooddigest");

  g_autofree char *cache = g_build_filename (home, ".swfinfo", NULL);
  g_unlink (cache);
  g_rmdir (home);
}

static void
test_publisher_killed (Fixture *f, gconstpointer data)
{
  g_autoptr (GSubprocess) proc = spawn_ffmpeg (f, "goodkill", "30");
  g_assert_true (wait_until (f, has_30_video, 20));
  g_subprocess_force_exit (proc);
  g_assert_true (wait_until (f, session_ended, 5));
  g_assert_cmpstr (sk_test_registry_last (f->registry)->end_reason, ==, "publisher_lost");
  g_assert_true (wait_until (f, no_connections, 5));
  wait_proc (proc, 5);
}

static void
test_publisher_stalled (Fixture *f, gconstpointer data)
{
  /* A publisher that stops sending but keeps its socket open: publisher_timeout_ms (1 s). */
  g_autoptr (GSubprocess) proc = spawn_ffmpeg (f, "goodstall", "30");
  g_assert_true (wait_until (f, has_30_video, 20));
  g_subprocess_send_signal (proc, SIGSTOP);
  gint64 stopped = g_get_monotonic_time ();
  g_assert_true (wait_until (f, session_ended, 10));
  g_assert_cmpint (g_get_monotonic_time () - stopped, >=, 900 * 1000);
  g_assert_cmpstr (sk_test_registry_last (f->registry)->end_reason, ==, "publisher_lost");
  g_assert_true (wait_until (f, no_connections, 5));
  g_subprocess_force_exit (proc);
  g_subprocess_send_signal (proc, SIGCONT);
  wait_proc (proc, 5);
}

static void
test_bad_key (Fixture *f, gconstpointer data)
{
  /* Unknown key → NetStream.Publish.BadName and close: ffmpeg fails, no session exists. */
  g_autoptr (GSubprocess) proc = spawn_ffmpeg (f, "nope", "2");
  wait_proc (proc, 20);
  g_assert_false (g_subprocess_get_successful (proc));
  /* Refused again after one read of the store found nothing either. */
  g_assert_cmpuint (f->registry->n_refreshes, ==, 1);
  g_assert_cmpuint (f->registry->n_refused, ==, 2);
  g_assert_cmpuint (f->registry->logs->len, ==, 0);
  g_assert_true (wait_until (f, no_connections, 5));
}

static void
test_late_key (Fixture *f, gconstpointer data)
{
  /* A key this node learns only by reading the store (created through another node a moment
   * ago): publish waits for that read, then the whole stream goes through, nothing lost. */
  g_autoptr (GSubprocess) proc = spawn_gst (f, "rtmp2sink", "latekey");
  g_assert_true (wait_until (f, session_ended, 30));
  wait_proc (proc, 10);
  g_assert_true (g_subprocess_get_successful (proc));
  g_assert_cmpuint (f->registry->n_refreshes, ==, 1);
  g_assert_cmpuint (f->registry->n_refused, ==, 1);
  SkTestSessionLog *log = sk_test_registry_last (f->registry);
  g_assert_cmpstr (log->key, ==, "latekey");
  g_assert_true (log->video_seq_first);
  g_assert_cmpuint (log->n_video, >=, 61); /* 60 frames and the sequence header */
  g_assert_cmpuint (log->n_audio, >=, 50);
  g_assert_cmpstr (log->end_reason, ==, "client_initiated");
  g_assert_true (wait_until (f, no_connections, 5));
}

static void
test_registry_close (Fixture *f, gconstpointer data)
{
  /* The registry drops the transport (e.g. replaced): the server closes without ending the
   * session again; ffmpeg sees its connection go. */
  g_autoptr (GSubprocess) proc = spawn_ffmpeg (f, "goodreplaced", "30");
  g_assert_true (wait_until (f, has_30_video, 20));
  sk_test_registry_close_live (f->registry, "replaced");
  g_assert_true (wait_until (f, no_connections, 5));
  g_assert_cmpstr (sk_test_registry_last (f->registry)->end_reason, ==, "replaced");
  g_assert_cmpuint (f->registry->n_live, ==, 0);
  wait_proc (proc, 10);
}

static GSocket *
raw_connect (Fixture *f)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, f->port);
  GSocket *s = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, 0, &error);
  g_assert_no_error (error);
  g_assert_true (g_socket_connect (s, addr, NULL, &error));
  g_socket_set_blocking (s, FALSE);
  return s;
}

/* Whether the server closed @s (EOF or reset), after letting the main loop run. */
static gboolean
raw_is_closed (GSocket *s)
{
  char buf[4096];
  g_autoptr (GError) error = NULL;
  gssize n;
  while ((n = g_socket_receive (s, buf, sizeof buf, NULL, &error)) > 0)
    ;
  return n == 0 || !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
}

static void
spin (guint ms)
{
  gint64 end = g_get_monotonic_time () + ms * 1000;
  while (g_get_monotonic_time () < end) {
    g_main_context_iteration (NULL, FALSE);
    g_usleep (1000);
  }
}

static void
test_limits (Fixture *f, gconstpointer data)
{
  sk_rtmp_server_free (f->server);
  f->config->rtmp_max_connections = 2;
  fixture_start (f);

  g_autoptr (GSocket) a = raw_connect (f);
  g_autoptr (GSocket) b = raw_connect (f);
  spin (50);
  g_assert_cmpuint (sk_rtmp_server_get_n_connections (f->server), ==, 2);
  /* A third is closed at once. */
  g_autoptr (GSocket) c = raw_connect (f);
  spin (50);
  g_assert_true (raw_is_closed (c));
  g_assert_false (raw_is_closed (a));

  /* A wrong version byte closes that connection only. */
  g_assert_cmpint (g_socket_send (b, "\x06", 1, NULL, NULL), ==, 1);
  spin (50);
  g_assert_true (raw_is_closed (b));
  g_assert_false (raw_is_closed (a));

  /* A silent connection goes at the handshake timeout (500 ms). */
  spin (600);
  g_assert_true (raw_is_closed (a));
  g_assert_true (wait_until (f, no_connections, 2));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, func) g_test_add (path, Fixture, NULL, setup, func, teardown)
  ADD ("/rtmp/server/ffmpeg", test_ffmpeg);
  ADD ("/rtmp/server/rtmp2sink", test_rtmp2sink);
  ADD ("/rtmp/server/rtmpsink", test_rtmpsink);
  ADD ("/rtmp/server/rtmpsink-digest", test_rtmpsink_digest);
  ADD ("/rtmp/server/publisher-killed", test_publisher_killed);
  ADD ("/rtmp/server/publisher-stalled", test_publisher_stalled);
  ADD ("/rtmp/server/bad-key", test_bad_key);
  ADD ("/rtmp/server/late-key", test_late_key);
  ADD ("/rtmp/server/registry-close", test_registry_close);
  ADD ("/rtmp/server/limits", test_limits);
  return g_test_run ();
}
