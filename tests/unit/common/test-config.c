/* Unit tests: config file, command line precedence, validation, finalize. */
#include <string.h>
#include <sys/stat.h>

#include <glib/gstdio.h>

#include "common/sk-common.h"
#include "common/sk-config.h"

typedef struct {
  char *dir;
  char *conf;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  f->dir = g_dir_make_tmp ("sk-config-XXXXXX", NULL);
  g_assert_nonnull (f->dir);
  f->conf = g_build_filename (f->dir, "streamkeeper.conf", NULL);
}

static void
rm_rf (const char *path)
{
  g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
  const char *name;

  while (d && (name = g_dir_read_name (d))) {
    g_autofree char *child = g_build_filename (path, name, NULL);
    if (g_file_test (child, G_FILE_TEST_IS_DIR))
      rm_rf (child);
    else
      g_unlink (child);
  }
  g_rmdir (path);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  rm_rf (f->dir);
  g_free (f->dir);
  g_free (f->conf);
}

static void
write_conf (Fixture *f, const char *text)
{
  g_assert_true (g_file_set_contents (f->conf, text, -1, NULL));
}

/* Runs sk_config_parse_args on a NULL-terminated list of arguments. */
static gboolean
parse (SkConfig *c, GError **error, ...)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func (g_free);
  va_list ap;
  const char *a;

  g_ptr_array_add (args, g_strdup ("streamkeeper"));
  va_start (ap, error);
  while ((a = va_arg (ap, const char *)))
    g_ptr_array_add (args, g_strdup (a));
  va_end (ap);

  int argc = (int)args->len;
  /* g_option_context_parse reorders argv in place: hand it a shallow copy. */
  g_autofree char **argv = g_new0 (char *, args->len + 1);
  memcpy (argv, args->pdata, args->len * sizeof (char *));
  char **argvp = argv;
  return sk_config_parse_args (c, &argc, &argvp, error);
}

static void
test_defaults (void)
{
  g_autoptr (SkConfig) c = sk_config_new ();

  g_assert_cmpstr (c->bind, ==, "0.0.0.0");
  g_assert_cmpuint (c->rtmp_port, ==, 1935);
  g_assert_cmpuint (c->http_port, ==, 8080);
  g_assert_cmpstr (c->store, ==, "memory");
  g_assert_cmpuint (c->rtmp_max_message_size, ==, 8 * 1024 * 1024);
  g_assert_cmpuint (c->publisher_timeout_ms, ==, 5000);
  g_assert_cmpint (c->on_duplicate_key, ==, SK_DUPLICATE_KEY_REPLACE);
  g_assert_cmpuint (c->room_empty_timeout_ms, ==, 10000);
  g_assert_cmpuint (g_strv_length (c->ice_addresses), ==, 0);
  g_assert_cmpuint (c->webhook_max_retries, ==, 8);
  g_assert_null (c->api_token);
}

static void
test_file_then_options (Fixture *f, gconstpointer data)
{
  g_autoptr (SkConfig) c = sk_config_new ();
  g_autoptr (GError) error = NULL;

  write_conf (f, "[node]\n"
                 "node_id = from-file\n"
                 "rtmp_port = 2935\n"
                 "http_port = 9080\n"
                 "[ingress]\n"
                 "on_duplicate_key = reject\n"
                 "[rooms]\n"
                 "whep_require_token = true\n"
                 "[webrtc]\n"
                 "ice_addresses = 10.0.0.1;10.0.0.2\n"
                 "[webhooks]\n"
                 "urls = http://127.0.0.1:1/a\n");
  g_assert_true (parse (c, &error, "--rtmp-port", "3935", "--config", f->conf, "--ice-address",
                        "127.0.0.1", "--webhook-url", "http://127.0.0.1:2/b", "--webhook-url",
                        "http://127.0.0.1:3/c", "--set", "rtmp.max_connections=7", NULL));
  g_assert_no_error (error);
  /* From the file, untouched by options. */
  g_assert_cmpstr (c->node_id, ==, "from-file");
  g_assert_cmpuint (c->http_port, ==, 9080);
  g_assert_cmpint (c->on_duplicate_key, ==, SK_DUPLICATE_KEY_REJECT);
  g_assert_true (c->whep_require_token);
  /* Options override the file even when given before --config. */
  g_assert_cmpuint (c->rtmp_port, ==, 3935);
  g_assert_cmpuint (g_strv_length (c->ice_addresses), ==, 1);
  g_assert_cmpstr (c->ice_addresses[0], ==, "127.0.0.1");
  g_assert_cmpuint (g_strv_length (c->webhook_urls), ==, 2);
  g_assert_cmpstr (c->webhook_urls[1], ==, "http://127.0.0.1:3/c");
  g_assert_cmpuint (c->rtmp_max_connections, ==, 7);
}

static void
test_set_and_dedicated_option (void)
{
  g_autoptr (SkConfig) c = sk_config_new ();
  g_autoptr (GError) error = NULL;

  /* The dedicated option wins over --set of the same key, whatever the order. */
  g_assert_true (parse (
      c, &error, "--publisher-timeout-ms", "1500", "--set", "ingress.publisher_timeout_ms=900",
      "--set", "webrtc.stun_servers=stun://a:1;stun://b:2", "--room-empty-timeout-ms", "0", NULL));
  g_assert_no_error (error);
  g_assert_cmpuint (c->publisher_timeout_ms, ==, 1500);
  g_assert_cmpuint (c->room_empty_timeout_ms, ==, 0);
  g_assert_cmpuint (g_strv_length (c->stun_servers), ==, 2);
  g_assert_cmpstr (c->stun_servers[1], ==, "stun://b:2");
}

static void
expect_parse_error (const char *needle, ...)
{
  g_autoptr (SkConfig) c = sk_config_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  va_list ap;
  const char *a;

  g_ptr_array_add (args, (gpointer) "streamkeeper");
  va_start (ap, needle);
  while ((a = va_arg (ap, const char *)))
    g_ptr_array_add (args, (gpointer)a);
  va_end (ap);
  g_ptr_array_add (args, NULL);

  int argc = (int)args->len - 1;
  g_autofree char **argv = g_memdup2 (args->pdata, args->len * sizeof (char *));
  char **argvp = argv;
  g_assert_false (sk_config_parse_args (c, &argc, &argvp, &error));
  g_assert_nonnull (error);
  if (strstr (error->message, needle) == NULL)
    g_error ("error “%s” does not mention “%s”", error->message, needle);
}

static void
test_bad_options (void)
{
  expect_parse_error ("rtmp_port", "--rtmp-port", "70000", NULL);
  expect_parse_error ("rtmp_port", "--rtmp-port", "12ab", NULL);
  expect_parse_error ("http_port", "--http-port", "-1", NULL);
  expect_parse_error ("unknown key", "--set", "node.nonsense=1", NULL);
  expect_parse_error ("GROUP.KEY=VALUE", "--set", "novalue", NULL);
  expect_parse_error ("GROUP.KEY=VALUE", "--set", ".key=1", NULL);
  expect_parse_error ("on_duplicate_key", "--set", "ingress.on_duplicate_key=maybe", NULL);
  expect_parse_error ("whep_require_token", "--set", "rooms.whep_require_token=perhaps", NULL);
  expect_parse_error ("bind", "--bind", "", NULL);
  expect_parse_error ("unexpected argument", "stray", NULL);
  expect_parse_error ("no-such-option", "--no-such-option", NULL);
  expect_parse_error ("nonexistent", "--config", "/nonexistent/streamkeeper.conf", NULL);
}

static void
test_bad_file (Fixture *f, gconstpointer data)
{
  g_autoptr (SkConfig) c = sk_config_new ();
  g_autoptr (GError) error = NULL;

  write_conf (f, "[rtmp]\nmax_chunk_size = 64\n");
  g_assert_false (sk_config_load_file (c, f->conf, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "max_chunk_size"));
  g_clear_error (&error);

  write_conf (f, "this is not a key file\n");
  g_assert_false (sk_config_load_file (c, f->conf, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);

  /* Unknown keys in a file are warned about, not fatal (forward compatibility). */
  write_conf (f, "[node]\nfuture_key = 1\nrtmp_port = 1936\n");
  g_test_expect_message ("sk-common", G_LOG_LEVEL_WARNING, "*unknown key [node] future_key*");
  g_assert_true (sk_config_load_file (c, f->conf, &error));
  g_test_assert_expected_messages ();
  g_assert_no_error (error);
  g_assert_cmpuint (c->rtmp_port, ==, 1936);
}

static void
test_finalize_token (Fixture *f, gconstpointer data)
{
  g_autofree char *state = g_build_filename (f->dir, "state", NULL);
  g_autofree char *token_path = g_build_filename (state, "api-token", NULL);
  g_autofree char *first = NULL;

  {
    g_autoptr (SkConfig) c = sk_config_new ();
    g_autoptr (GError) error = NULL;

    g_assert_true (parse (c, &error, "--state-dir", state, "--bind", "127.0.0.1", NULL));
    g_assert_true (sk_config_finalize (c, &error));
    g_assert_no_error (error);
    g_assert_nonnull (c->node_id);
    g_assert_cmpstr (c->public_host, ==, "127.0.0.1");
    g_assert_cmpuint (strlen (c->api_token), >=, 33); /* 192 bits of base62 */
    g_assert_cmpstr (c->webhook_secret, ==, c->api_token);
    first = g_strdup (c->api_token);

    GStatBuf st;
    g_assert_cmpint (g_stat (token_path, &st), ==, 0);
    g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  }
  {
    /* A second start reads the same token back. */
    g_autoptr (SkConfig) c = sk_config_new ();
    g_autoptr (GError) error = NULL;

    g_assert_true (parse (c, &error, "--state-dir", state, NULL));
    g_assert_true (sk_config_finalize (c, &error));
    g_assert_cmpstr (c->api_token, ==, first);
  }
  {
    /* A configured token wins over the file. */
    g_autoptr (SkConfig) c = sk_config_new ();
    g_autoptr (GError) error = NULL;

    g_assert_true (
        parse (c, &error, "--state-dir", state, "--api-token", "0123456789abcdef-test", NULL));
    g_assert_true (sk_config_finalize (c, &error));
    g_assert_cmpstr (c->api_token, ==, "0123456789abcdef-test");
  }
}

static void
expect_finalize_error (Fixture *f, const char *needle, ...)
{
  g_autoptr (SkConfig) c = sk_config_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func (g_free);
  va_list ap;
  const char *a;

  g_ptr_array_add (args, g_strdup ("streamkeeper"));
  g_ptr_array_add (args, g_strdup ("--state-dir"));
  g_ptr_array_add (args, g_build_filename (f->dir, "state", NULL));
  va_start (ap, needle);
  while ((a = va_arg (ap, const char *)))
    g_ptr_array_add (args, g_strdup (a));
  va_end (ap);

  int argc = (int)args->len;
  g_autofree char **argv = g_new0 (char *, args->len + 1);
  memcpy (argv, args->pdata, args->len * sizeof (char *));
  char **argvp = argv;
  g_assert_true (sk_config_parse_args (c, &argc, &argvp, &error));
  g_assert_false (sk_config_finalize (c, &error));
  if (strstr (error->message, needle) == NULL)
    g_error ("error “%s” does not mention “%s”", error->message, needle);
}

static void
test_finalize_errors (Fixture *f, gconstpointer data)
{
  expect_finalize_error (f, "both", "--rtmp-port", "8080", NULL);
  expect_finalize_error (f, "node_id", "--node-id", "bad id!", NULL);
  expect_finalize_error (f, "bind", "--bind", "not-an-address", NULL);
  expect_finalize_error (f, "store", "--store", "etcd://x", NULL);
  expect_finalize_error (f, "ice_addresses", "--ice-address", "localhost", NULL);
  expect_finalize_error (f, "urls", "--webhook-url", "ftp://127.0.0.1/x", NULL);
  expect_finalize_error (f, "ice_port", "--set", "webrtc.ice_port_min=5000", NULL);
  expect_finalize_error (f, "api_token", "--api-token", "has space", NULL);
}

/* The shipped example lists every key with its default: uncommented, it must load without a
 * warning and change nothing. */
static void
test_example_file (Fixture *f, gconstpointer data)
{
  g_autofree char *text = NULL;
  g_autoptr (GRegex) re = g_regex_new ("^#([a-z_]+ =)", G_REGEX_MULTILINE, 0, NULL);
  g_autoptr (SkConfig) c = sk_config_new ();
  g_autoptr (SkConfig) d = sk_config_new ();
  g_autoptr (GError) error = NULL;

  g_assert_true (g_file_get_contents (SK_EXAMPLE_CONF, &text, NULL, NULL));
  g_autofree char *uncommented = g_regex_replace (re, text, -1, 0, "\\1", 0, NULL);
  g_assert_cmpstr (uncommented, !=, text);
  write_conf (f, uncommented);
  g_assert_true (sk_config_load_file (c, f->conf, &error));
  g_assert_no_error (error);

  g_assert_cmpstr (c->bind, ==, d->bind);
  g_assert_cmpuint (c->rtmp_port, ==, d->rtmp_port);
  g_assert_cmpuint (c->http_port, ==, d->http_port);
  g_assert_cmpstr (c->store, ==, d->store);
  g_assert_null (c->node_id);
  g_assert_null (c->api_token);
  g_assert_cmpuint (c->rtmp_max_connections, ==, d->rtmp_max_connections);
  g_assert_cmpuint (c->rtmp_max_chunk_size, ==, d->rtmp_max_chunk_size);
  g_assert_cmpuint (c->rtmp_max_message_size, ==, d->rtmp_max_message_size);
  g_assert_cmpuint (c->rtmp_max_chunk_streams, ==, d->rtmp_max_chunk_streams);
  g_assert_cmpuint (c->rtmp_handshake_timeout_ms, ==, d->rtmp_handshake_timeout_ms);
  g_assert_cmpuint (c->rtmp_idle_timeout_ms, ==, d->rtmp_idle_timeout_ms);
  g_assert_cmpuint (c->publisher_timeout_ms, ==, d->publisher_timeout_ms);
  g_assert_cmpint (c->on_duplicate_key, ==, d->on_duplicate_key);
  g_assert_cmpstr (c->video_encoder, ==, d->video_encoder);
  g_assert_cmpstr (c->audio_encoder, ==, d->audio_encoder);
  g_assert_cmpuint (c->room_empty_timeout_ms, ==, d->room_empty_timeout_ms);
  g_assert_cmpuint (c->sse_keepalive_ms, ==, d->sse_keepalive_ms);
  g_assert_cmpuint (c->max_subscribers, ==, d->max_subscribers);
  g_assert_cmpint (c->whep_require_token, ==, d->whep_require_token);
  g_assert_cmpuint (g_strv_length (c->ice_addresses), ==, 0);
  g_assert_cmpuint (c->ice_port_min, ==, d->ice_port_min);
  g_assert_cmpuint (g_strv_length (c->webhook_urls), ==, 0);
  g_assert_null (c->webhook_secret);
  g_assert_cmpuint (c->webhook_max_retries, ==, d->webhook_max_retries);
  g_assert_cmpuint (c->webhook_queue_max, ==, d->webhook_queue_max);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/config/defaults", test_defaults);
  g_test_add ("/config/file-then-options", Fixture, NULL, fixture_setup, test_file_then_options,
              fixture_teardown);
  g_test_add_func ("/config/set-and-dedicated-option", test_set_and_dedicated_option);
  g_test_add_func ("/config/bad-options", test_bad_options);
  g_test_add ("/config/bad-file", Fixture, NULL, fixture_setup, test_bad_file, fixture_teardown);
  g_test_add ("/config/finalize-token", Fixture, NULL, fixture_setup, test_finalize_token,
              fixture_teardown);
  g_test_add ("/config/finalize-errors", Fixture, NULL, fixture_setup, test_finalize_errors,
              fixture_teardown);
  g_test_add ("/config/example-file", Fixture, NULL, fixture_setup, test_example_file,
              fixture_teardown);
  return g_test_run ();
}
